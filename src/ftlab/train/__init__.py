"""The pipeline: the FineTune recipe (recipe.py) and what it builds a run from: the LightningModule (module.py),
the Trainer (fit.py), callbacks, the run dir (rundir.py), the loss plot; a finished run loaded for the commands
(trained.py) and as an MLflow model (pyfunc.py).

Below the commands, above everything else: the recipe wires data/, model/, methods/, use/ and the services
(tracking/, hub/, sweeps/) into a run. Importing the package itself stays light (the CLI reads run dirs through
rundir.py).
"""
