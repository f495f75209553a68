"""Optuna searches over ftlab configs: the search space (space.py) and the Hydra sweeper (sweeper.py).

    python -m ftlab -m sweep=lora          the shipped search (sweeps/lora.yaml)
"""
