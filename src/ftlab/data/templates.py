"""Chat templates: the tokenizer's own, one shipped with ftlab (assets/templates/*.jinja), or a Jinja file.

The template chosen here is set on the tokenizer, which the run saves beside its adapter, so inference later
renders prompts with exactly the template training used.
"""

import re
from importlib import resources
from pathlib import Path
from typing import Optional

from ftlab.utils.console import info
from ftlab.utils.errors import FtlabError

_SHIPPED = resources.files("ftlab") / "assets" / "templates"


def shipped() -> list:
    return sorted(p.name[: -len(".jinja")] for p in _SHIPPED.iterdir() if p.name.endswith(".jinja"))


def read(spec: str) -> str:
    """The text of a shipped template by name, or of a Jinja file by path."""
    if spec in shipped():
        return (_SHIPPED / f"{spec}.jinja").read_text(encoding="utf-8")
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise FtlabError(
        f"data.chat_template={spec}: neither a shipped template ({', '.join(shipped())}) nor a "
        "file; give one of those names or a path to a .jinja file"
    )


def apply(tokenizer, spec: Optional[str], model_name: str) -> None:
    """Set the configured template on `tokenizer`, or check it has its own; say which is used."""
    if spec is not None:
        tokenizer.chat_template = read(spec)
        info(f"chat template: {spec} (data.chat_template)")
        _note_text_markers(tokenizer)
    elif not tokenizer.chat_template:
        raise FtlabError(
            f"the tokenizer of {model_name} has no chat template (a base model?); set "
            f"data.chat_template to one of {', '.join(shipped())} or a path to a .jinja file"
        )
    else:
        info("chat template: the tokenizer's own")


def _note_text_markers(tokenizer) -> None:
    """A template's markers (<|im_end|>, <end_of_turn> ...) that this vocabulary lacks are learnt as plain
    text, several tokens each. That works, but a user should know: stopping then needs the stop string."""
    sample = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rendered = tokenizer.apply_chat_template(sample, tokenize=False)
    vocab = tokenizer.get_vocab()
    missing = sorted({m for m in re.findall(r"<[^<>\s]+>|\[/?INST\]", rendered) if m not in vocab})
    if missing:
        info(f"note: {', '.join(missing)} are not tokens of this tokenizer; the model learns them as text")
