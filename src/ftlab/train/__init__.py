"""The pipeline: the FineTune recipe (recipe.py) and what it builds a run from: the LightningModule (module.py),
the Trainer (fit.py), callbacks, the run dir, the loss plot, and a finished run as an MLflow model (pyfunc.py).

Below the commands, above everything else: the recipe wires data/, model/, use/ and the services (tracking/,
hub/, sweeps/) into a run. Importing the package itself stays light (the CLI reads run dirs through rundir.py).
"""
