"""sys layer of Cove."""
