"""jumpray.data."""
