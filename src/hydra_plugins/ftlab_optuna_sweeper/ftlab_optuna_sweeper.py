"""`hydra/sweeper=ftlab_optuna`: the Sweeper class Hydra instantiates from the node config/schema.py declares
(SweeperOptions, registered by ftlab.config.compose.setup). Hydra accepts plugins defined under hydra_plugins
only; the implementation is ftlab.sweeps.sweeper."""

from hydra.plugins.sweeper import Sweeper


class FtlabOptunaSweeper(Sweeper):
    """ftlab's Optuna sweeper, under the name Hydra's plugin discovery requires."""

    def __init__(self, **settings):
        super().__init__()
        self.settings, self.sweeper = settings, None

    def setup(self, *, hydra_context, task_function, config) -> None:
        # Hydra's plugin scan imports this module on every command (--help, --cfg job, single runs): optuna
        # and the sweeper load only here, when a sweep starts
        from ftlab.sweeps.sweeper import OptunaSweeper

        self.sweeper = OptunaSweeper(**self.settings)
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments):
        return self.sweeper.sweep(arguments)
