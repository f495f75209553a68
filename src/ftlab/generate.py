"""Answering prompts with a trained adapter: loading it with its base model, and greedy batched generation.

Prompts are rendered by the chat template saved with the adapter (the one training used), as text and
then tokenized without extra special tokens, exactly as chat.py renders training examples.
"""
from pathlib import Path
from typing import List

import torch


def load(adapter_dir: Path):
    """(model, tokenizer) of a saved adapter; the base model comes from its adapter_config.json
    (base_model_name_or_path: a Hub id, or the local path training loaded it from)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir)
    return model.eval(), tokenizer


def answers(model, tokenizer, conversations: List[List[dict]], max_new_tokens: int = 128,
            batch_size: int = 16) -> List[str]:
    """The model's reply to each conversation (the messages so far, ending with a user turn)."""
    tokenizer.padding_side = "left"  # generation continues from the right edge of every prompt
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for i in range(0, len(conversations), batch_size):
        prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations[i:i + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        out += tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out
