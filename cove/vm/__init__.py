"""vm layer of Cove."""
