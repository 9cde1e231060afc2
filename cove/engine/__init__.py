"""engine layer of Cove."""
