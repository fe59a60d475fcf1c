"""jumpray.core."""
