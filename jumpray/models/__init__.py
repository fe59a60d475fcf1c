"""jumpray.models."""
