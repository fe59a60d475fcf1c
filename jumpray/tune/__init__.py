"""jumpray.tune: Ray Tune sweeps over dotted config keys, one Ray Train run per trial.

:func:`jumpray.tune.sweep.run_sweep` is the entry point (``jumpray tune`` calls it); the space,
searchers, trial, tracking callback, outputs and Ray's books each have a module of their own.
"""
