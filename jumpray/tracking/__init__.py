"""jumpray.tracking."""
