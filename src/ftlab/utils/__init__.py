"""The bottom layer: errors and the exit policy, atomic files and run-dir names, secrets, the console, options
that carry their constraints (options.py) and the rooms' registries (registry.py).

Everything above may import these; they import nothing of ftlab's outside utils/, and not torch.
"""
