"""jumpray.score."""
