"""jumpray.train."""
