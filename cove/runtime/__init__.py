"""runtime layer of Cove."""
