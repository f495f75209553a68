"""Hydra finds ftlab's Optuna sweeper here (the hydra_plugins namespace); the work is done in ftlab.sweeps."""
