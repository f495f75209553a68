"""Serving formats: what other tools load from a finished run.

  vllm.py         the `vllm serve --enable-lora` command for a run's adapter, and what vLLM would refuse in it
  gguf_model.py   the merged model as a GGUF file for llama.cpp and Ollama (metadata, tensor names, dtypes)
  gguf_tokenizer.py  the tokenizer as GGUF metadata (vocabulary, merges, special tokens, pre-tokenizer type)
  gguf_adapter.py the adapter alone as a llama.cpp LoRA GGUF
  ollama.py       the Ollama Modelfile: TEMPLATE, stop markers and PARAMETER lines
  probes.py       how an export is proven: probe conversations, logits, tolerances, the rebuilt tokenizer's ids

Below the commands and hub/, above data/ and model/: it reads tokenizers, configs and state dicts and writes
files; it trains nothing.
"""


def model_name(name: str) -> str:
    """`name` as a served model's name (vLLM's --lora-modules, Ollama's create): letters, digits and - _ . kept,
    anything else a -; "" when nothing is left."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
