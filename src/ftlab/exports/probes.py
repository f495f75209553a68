"""How an exported model is proven before it appears: its logits on a few chat-formatted conversations, next to
the adapter model's, and (for GGUF) the token ids its rebuilt tokenizer gives them.

The conversations are tokenized exactly as training tokenizes, so the check covers the template's markers too.
The tolerance is relative to the logits' scale and set per stored dtype: rounding weights to f16 moves logits
further than float32 arithmetic does, and 8-bit blocks further still.
"""

from typing import List

import torch

from ftlab.data import batching, chat
from ftlab.utils.errors import FtlabError

# largest logit difference allowed, as a fraction of the largest logit (at least 1), by stored dtype
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2, "q8_0": 1e-1}
GGUF_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}  # gguf.dtype's names for the same
PROBES = [
    [
        {"role": "user", "content": "What is a low-rank adapter?"},
        {"role": "assistant", "content": "A small trainable update added to frozen weights."},
    ],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven."},
    ],
    [  # digits, punctuation runs, non-ASCII and a newline: where pre-tokenizers differ
        {"role": "user", "content": "Order 12345 shipped on 2001-05-03... déjà vu? 日本語\nOK!!"},
        {"role": "assistant", "content": "Noted: 12345 → shipped."},
    ],
]


def probe_texts(tokenizer) -> List[str]:
    """The probe conversations through the chat template, as text."""
    return [tokenizer.apply_chat_template(m, tokenize=False) for m in PROBES]


def probe_batch(tokenizer) -> dict:
    """The probe conversations, tokenized as in training, padded into one batch."""
    examples = [chat.tokenize_conversation(tokenizer, m, 512, "export probe", "all") for m in PROBES]
    return batching.pad(examples, tokenizer.pad_token_id)


def logits(model, batch: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    return out.logits.float().cpu()[batch["attention_mask"].bool()]  # real tokens only


def measure(reference: torch.Tensor, got: torch.Tensor, dtype: str) -> dict:
    """How far `got` is from `reference`, with the tolerance for weights stored as `dtype`."""
    diff = (got - reference).abs()
    scale = float(reference.abs().max())
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_scale": scale,
        "tolerance": TOLERANCE[GGUF_DTYPES.get(dtype, dtype)] * max(1.0, scale),
        "same_argmax": float((got.argmax(-1) == reference.argmax(-1)).float().mean()),
        "tokens": int(reference.shape[0]),
    }


def reloaded_logits(folder, batch: dict, gguf_file=None, config=None) -> torch.Tensor:
    """Logits of the model in `folder` (or its GGUF file) loaded by plain transformers, in float32; `config`
    replaces the one transformers rebuilds from the file (where its reader drops something, as rope scaling)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"config": config} if config is not None else {}
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32, **kwargs).eval()
    return logits(model, batch)


def tokenizer_problems(folder, gguf_file: str, tokenizer) -> List[str]:
    """Where the tokenizer transformers rebuilds from the GGUF differs from the trained one, on the probes."""
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    out = []
    for i, text in enumerate(probe_texts(tokenizer)):  # as training tokenizes: the template's text, nothing added
        want, got = (t(text, add_special_tokens=False)["input_ids"] for t in (tokenizer, rebuilt))
        if want != got:
            at = next((j for j, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))
            out.append(
                f"probe {i + 1} tokenizes differently from token {at} ({want[at : at + 3]} vs {got[at : at + 3]})"
            )
    if rebuilt.chat_template != tokenizer.chat_template:
        out.append("the chat template differs")
    for kind in ("bos_token", "eos_token", "pad_token"):
        if getattr(rebuilt, kind) != getattr(tokenizer, kind):
            out.append(f"{kind} is {getattr(rebuilt, kind)!r}, trained with {getattr(tokenizer, kind)!r}")
    return out


def refuse_beyond_tolerance(check: dict, what: str, fix: str) -> None:
    """Nothing is written when `what`'s logits (measure) are further off than its tolerance."""
    if check["max_abs_diff"] > check["tolerance"]:
        raise FtlabError(
            f"{what}'s logits differ from the adapter model's by up to {check['max_abs_diff']:.3g} (tolerance "
            f"{check['tolerance']:.3g}); nothing was written. {fix}"
        )
