"""Save and load the full training state (model, optimizer, scheduler, flags, RNG)."""
