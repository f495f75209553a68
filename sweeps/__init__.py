# Sweep definitions; installed as the package ftlab.sweep_configs so the CLI finds them (see configure.py).
