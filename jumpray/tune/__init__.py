"""jumpray.tune."""
