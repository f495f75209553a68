"""A demo run's GGUF export in llama.cpp against its merged export in transformers: greedy answers to the test
prompts, exact match of each, how often the two answers are the same, and time per answer.

    python -m ftlab && python -m ftlab.export run=RUN && python -m ftlab.export run=RUN format=gguf gguf.dtype=q8_0
    .venv/bin/python benchmarks/gguf_answers.py RUN [--gguf RUN/gguf/model.gguf] [--merged RUN/merged] [--n 50]

Needs llama-cpp-python (pip install -e ".[llama]", which compiles llama.cpp). The figures are in docs/serving.md.
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab.data import demo, sources
from ftlab.use import runs


def test_rows(run: Path, n: int) -> list:
    """The run's test split, carved as training carved it."""
    cfg = runs.locate(str(run), []).cfg  # the saved config, resolved and validated as the commands do
    named = sources.open_source(cfg.data).read(sources.Problems())
    carved = sources.assign_splits(named, cfg.data.val_size, cfg.data.test_size, cfg.seed)
    return [row for _, row in carved["test"]][:n]


def transformers_answer(model, tokenizer, text: str, stop: int) -> str:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=stop, pad_token_id=stop)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--merged", type=Path)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    import llama_cpp

    gguf_file, merged_dir = args.gguf or args.run / "gguf" / "model.gguf", args.merged or args.run / "merged"
    tokenizer = AutoTokenizer.from_pretrained(args.run / "adapter")
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=512, n_threads=2, verbose=False, seed=0)
    rows = test_rows(args.run, args.n)
    scores = {"transformers (merged, f32)": [], f"llama.cpp ({gguf_file.name})": []}
    seconds = dict.fromkeys(scores, 0.0)
    same = 0
    for row in rows:
        text = tokenizer.apply_chat_template(row["conversations"][:-1], add_generation_prompt=True, tokenize=False)
        started = time.perf_counter()
        a = transformers_answer(merged, tokenizer, text, stop)
        seconds["transformers (merged, f32)"] += time.perf_counter() - started
        started = time.perf_counter()
        b = llm.create_completion(text, max_tokens=32, temperature=0.0, top_k=1)["choices"][0]["text"]
        seconds[f"llama.cpp ({gguf_file.name})"] += time.perf_counter() - started
        for name, answer in zip(scores, (a, b)):
            scores[name].append(demo.is_correct(row, answer))
        same += a.strip() == b.strip()
    print(f"{len(rows)} test prompts of {args.run}")
    for name, hits in scores.items():
        print(f"  {name:<34} exact match {sum(hits) / len(hits):6.1%}   {seconds[name] / len(rows):.2f} s/answer")
    print(f"  the same answer from both: {same}/{len(rows)}")


if __name__ == "__main__":
    main()
