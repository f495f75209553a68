"""ftlab: LoRA/QLoRA fine-tuning of causal language models from composed Hydra configuration.

    from ftlab import FineTune, compose
    stats = FineTune(compose(["model=tiny", "trainer.max_steps=2"])).run()

Importing ftlab stays light: torch and transformers load only when a FineTune is built.
"""
__version__ = "0.1.0"
__all__ = ["FineTune", "compose", "__version__"]


def __getattr__(name):
    if name == "FineTune":
        from ftlab.finetune import FineTune

        return FineTune
    if name == "compose":
        from ftlab.configure import compose

        return compose
    raise AttributeError(f"module 'ftlab' has no attribute {name!r}")
