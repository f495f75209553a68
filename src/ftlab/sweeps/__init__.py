"""Optuna sweeps: ftlab's own Hydra sweeper (sweeper.py; its options in config/schema.py), the checks before it
starts (precheck.py), the search space (space.py), workers sharing a study (workers.py), pruning (pruning.py,
trial.py), a trial with several ranks (alone.py) and the report (summary.py).

    python -m ftlab -m sweep=lora          the shipped search (conf/sweep/lora.yaml)

A side service: the recipe (train/) reads which trial a run is (env.py) and prunes it (trial.py); the sweeper
opens a sweep's parent run in tracking/. Nothing below train/ imports this package.
"""
