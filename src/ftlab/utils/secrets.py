"""Secrets: the Hub token and the W&B API key. They never reach a file ftlab or its trackers write.

They are taken out before anything is recorded: out of the command line before Hydra saves its
overrides (take_from_overrides), out of a config passed to the API before it is saved or logged
(take_from_config). From then on they live only in this process's environment, under the names the
libraries read (HF_TOKEN, WANDB_API_KEY), so an override simply wins over the variable. Text that could
still carry one (log lines, tracker params, the model card) goes through redact() as a second guard.
"""

import logging
import os
from typing import List

from omegaconf import DictConfig, OmegaConf, open_dict

# config key -> the environment variable its library reads
KEYS = {"hub.token": "HF_TOKEN", "tracker.wandb.api_key": "WANDB_API_KEY"}
# also secret when set: older names huggingface_hub still reads
OTHER_VARIABLES = ("HUGGING_FACE_HUB_TOKEN",)
MASK = "***"
_SHORTEST = 6  # shorter values are not masked: replacing "abc" everywhere would garble logs, not protect


def take_from_overrides(argv: List[str]) -> List[str]:
    """The command line without its secret overrides (hub.token=..., +hub.token=...), whose values move
    into the environment. Hydra then never sees them, so .hydra/overrides.yaml cannot record them."""
    kept = []
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in KEYS:
            if value and value != "null":
                os.environ[KEYS[key]] = value.strip("'\"")
            continue
        kept.append(arg)
    return kept


def take_from_config(cfg: DictConfig) -> DictConfig:
    """A copy of cfg with its secret keys emptied, their values moved into the environment."""
    cfg = cfg.copy()
    with open_dict(cfg):
        for key, variable in KEYS.items():
            value = OmegaConf.select(cfg, key, default=None)
            if value:
                os.environ[variable] = str(value)
                OmegaConf.update(cfg, key, None, merge=False)
    return cfg


def values() -> List[str]:
    """The secrets this process holds now."""
    found = (os.environ.get(v, "") for v in (*KEYS.values(), *OTHER_VARIABLES))
    return sorted({s for s in found if len(s) >= _SHORTEST}, key=len, reverse=True)


def redact(text: str) -> str:
    for secret in values():
        text = text.replace(secret, MASK)
    return text


def redact_values(mapping: dict) -> dict:
    """A flat dict whose string values are redacted (tracker params and tags)."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in mapping.items()}


class Redact(logging.Filter):
    """Masks secrets in every record a handler writes (console, train.log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
