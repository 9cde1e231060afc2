"""cli layer of Cove."""
