"""oci layer of Cove."""
