"""ftlab: LoRA/QLoRA fine-tuning of causal language models from composed Hydra configuration.

    from ftlab import FineTune, compose
    stats = FineTune(compose(["model=tiny", "trainer.max_steps=2"])).run()

Importing ftlab stays light: torch and transformers load only when FineTune is first used.
"""

__version__ = "0.1.0"
__all__ = ["ConfigError", "FineTune", "FtlabError", "compose", "__version__"]

from ftlab.utils.errors import ConfigError, FtlabError


def __getattr__(name):
    # FineTune imports torch; it is looked up here, on first use, so `import ftlab` and --help stay fast
    if name == "FineTune":
        from ftlab.train.recipe import FineTune

        return FineTune
    if name == "compose":
        from ftlab.config.compose import compose

        return compose
    raise AttributeError(f"module 'ftlab' has no attribute {name!r}")
