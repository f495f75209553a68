"""A transformers tokenizer as GGUF metadata: what llama.cpp, Ollama and transformers' GGUF loader rebuild it from.

A GGUF file has no tokenizer.json. It lists the vocabulary (token text and type per id), the BPE merges, the
special token ids, whether BOS/EOS are added, the chat template, and the pre-tokenizer by name: llama.cpp keeps
one regex per name and splits text with it before merging, so the name must be the one whose regex the
vocabulary was trained with. ftlab reads that regex off the tokenizer it trained with and names it; a
pre-tokenizer with no GGUF name is refused, since any name would tokenize differently from training.

Two vocabulary kinds are written:
  gpt2   byte-level BPE (SmolLM2, Llama 3, Qwen2, ftlab's byte tokenizer): tokens in the byte alphabet + merges
  llama  sentencepiece-style BPE with byte fallback (Mistral): tokens with U+2581 for spaces, <0xNN> byte
         tokens, and a score per token (-rank of the merge that makes it) that llama.cpp merges by
"""

import json
from typing import List, Optional

import gguf

from ftlab.utils.errors import FtlabError

# GGUF pre-tokenizer names and the split regexes llama.cpp (and transformers' GGUF loader) pair with them; a
# byte-level pre-tokenizer with its own regex (use_regex) is GPT-2's, "gpt-2"
_SPLITS = ("llama-bpe", "qwen2")


def _known_splits() -> dict:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    return {GGUF_PRE_TOKENIZER_SPLITS[name]: name for name in _SPLITS}


def pre_tokenizer_name(tokenizer) -> str:
    """The GGUF name of the tokenizer's pre-tokenizer, read from its tokenizer.json."""
    return _pre_tokenizer_name(_spec(tokenizer))


def _spec(tokenizer) -> dict:
    """The tokenizer's tokenizer.json, parsed (once per export: a large vocabulary makes it megabytes)."""
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _pre_tokenizer_name(spec: dict) -> str:
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        regex = parts[0].get("pattern", {}).get("Regex")
        if regex in _known_splits():
            return _known_splits()[regex]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"  # each digit alone, then GPT-2's regex: SmolLM's tokenizer.json
    if kinds in (["Metaspace"], [None]) and _is_sentencepiece(spec):
        return "default"
    raise FtlabError(
        f"the tokenizer's pre-tokenizer ({' + '.join(str(k) for k in kinds)}) has no GGUF name ftlab knows "
        "(gpt-2, llama-bpe, qwen2, smollm, sentencepiece), so llama.cpp would split text differently from "
        "training; export format=merged instead"
    )


def _is_sentencepiece(spec: dict) -> bool:
    return spec["model"].get("type") == "BPE" and bool(spec["model"].get("byte_fallback"))


def _merges(spec: dict) -> List[str]:
    # tokenizers writes merges as "a b" strings (older files) or [a, b] pairs
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def _token_types(tokenizer, tokens: List[str], vocab_size: int, sentencepiece: bool) -> List[int]:
    T = gguf.TokenType
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    types = []
    for i, token in enumerate(tokens[: len(tokenizer)]):
        if i in added:
            types.append(T.CONTROL if added[i].special else T.USER_DEFINED)
        elif sentencepiece and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types.append(T.BYTE)
        elif token == tokenizer.unk_token:
            types.append(T.UNKNOWN)
        else:
            types.append(T.NORMAL)
    return types + [T.UNUSED] * (vocab_size - len(tokenizer))


def writes_bos(chat_template: Optional[str]) -> bool:
    """Whether the chat template begins a conversation with `bos_token`: then llama.cpp and Ollama must add BOS
    (tokenizer.ggml.add_bos_token) to the prompt they render, and otherwise must not, since ftlab trains on the
    template's text with no special tokens added. A stand-in BOS tells the token apart from a template that
    spells the same text literally (ChatML's <|im_start|>, which is also SmolLM2's BOS)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    if not chat_template:
        return False
    probe = [{"role": "user", "content": "hi"}]
    rendered, _ = render_jinja_template(conversations=[probe], chat_template=chat_template, bos_token="<bos?>")
    return rendered[0].startswith("<bos?>")


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int, end_of_turn: Optional[str]) -> dict:
    """Write the tokenizer into `writer`'s metadata; `vocab_size` is the model's embedding rows (may exceed the
    tokenizer's length: the extra ids are written as unused [PADn] tokens, as llama.cpp's converter does)."""
    if len(tokenizer) > vocab_size:
        raise FtlabError(
            f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}; a tokenizer "
            "with tokens the model cannot embed cannot be exported"
        )
    spec = _spec(tokenizer)
    pre = _pre_tokenizer_name(spec)
    sentencepiece = pre == "default"
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    tokens += [f"[PAD{i}]" for i in range(len(tokenizer), vocab_size)]
    writer.add_tokenizer_model("llama" if sentencepiece else "gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(_token_types(tokenizer, tokens, vocab_size, sentencepiece))
    merges = _merges(spec)
    if sentencepiece:  # llama.cpp merges the adjacent pair whose result scores highest: -rank of its merge
        rank = {m.replace(" ", ""): -float(i) for i, m in reversed(list(enumerate(merges)))}
        writer.add_token_scores([rank.get(t, 0.0) for t in tokens])
    if merges:
        writer.add_token_merges(merges)
    elif not sentencepiece:
        # GGUF cannot hold an empty array, and a reader given neither merges nor scores derives merges from
        # scores: all-zero scores derive none, which is this vocabulary (ftlab's byte tokenizer). llama.cpp
        # itself wants merges for a gpt2 vocabulary and refuses such a file; transformers loads it.
        writer.add_token_scores([0.0] * len(tokens))
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    for kind, token_id in ids.items():
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    eot = tokenizer.convert_tokens_to_ids(end_of_turn) if end_of_turn else None
    if eot is not None and eot != tokenizer.unk_token_id and eot != tokenizer.eos_token_id:
        writer.add_eot_token_id(eot)  # the chat template's end-of-turn marker also ends generation
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one is what chat applications render
        template = template.get("default")
    writer.add_add_bos_token(tokenizer.bos_token is not None and writes_bos(template))
    writer.add_add_eos_token(False)  # an answer's end is the template's end-of-turn marker, not an added EOS
    if sentencepiece:
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer))
    if template:
        writer.add_chat_template(template)
    return {"model": "llama" if sentencepiece else "gpt2", "pre": pre, "tokens": len(tokens), "merges": len(merges)}


def _adds_space_prefix(tokenizer) -> bool:
    return tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"])[0].startswith(
        "\u2581"
    )
