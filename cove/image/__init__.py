"""image layer of Cove."""
