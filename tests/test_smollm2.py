"""SmolLM2, the real model, end to end: one short run of the demo, exported merged and as a q8_0 GGUF, then held
against what users check: a real loss that falls, the base model's knowledge, the tuned answers, and the exports
answering as the adapter model does (in transformers, and in llama.cpp where it is installed). One module, so one
test process builds the run (make test runs the tests' files in two processes)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_main, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory, cache_dir) -> Path:
    """A 30-step run of the demo on SmolLM2, exported merged in float32 and as a q8_0 GGUF; this module's tests share
    it and must not write into it."""
    from ftlab import FineTune, compose
    from ftlab.config.schema import ExportCommand, GgufOptions
    from ftlab.export import export

    run = tmp_path_factory.mktemp("smollm2") / "run"
    FineTune(compose([f"cache_dir={cache_dir}", "trainer.max_steps=30", "data.batch_size=4"]), run_dir=run).run()
    export(ExportCommand(run=str(run), dtype="float32"), [])
    export(ExportCommand(run=str(run), format="gguf", gguf=GgufOptions(dtype="q8_0")), [])
    return run


@pytest.fixture
def infer(capsys):
    def run(*args):
        return run_main(*args, module="ftlab.infer", capsys=capsys)

    return run


def test_a_short_run_moves_the_real_model(smollm2_run):
    metrics = json.loads((smollm2_run / "metrics.json").read_text())
    assert metrics["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and metrics["steps"] == 30
    assert 0 < metrics["val_loss_after"] < metrics["val_loss_before"]


def test_smollm2_answers_before_and_after_and_exports(smollm2_run, infer):
    """The real model: its base knows Paris; the tuned adapter and its merged export answer alike."""
    base = infer(f"run={smollm2_run}", "base_only=true", "prompt=What is the capital of France?",
                 "generation.max_new_tokens=24")  # fmt: skip
    assert base.returncode == 0 and "Paris" in base.stdout, base.stderr[-2000:]
    assert json.loads((smollm2_run / "merged" / "export.json").read_text())["check"]["same_argmax"] == 1.0
    prompt = "prompt=The invoice was issued on 3 March 1998."
    tuned, merged = (
        infer(f"run={target}", prompt, "generation.max_new_tokens=16", "trainer.precision=32-true")
        for target in (smollm2_run, smollm2_run / "merged")
    )
    assert tuned.returncode == 0 and merged.returncode == 0, merged.stderr[-2000:]
    assert tuned.stdout.strip() and tuned.stdout == merged.stdout  # the merged model is the tuned model


def demo_prompts(tokenizer) -> list:
    """Demo conversations the run never saw, through the chat template up to the answer."""
    from ftlab.data import demo

    return [
        tokenizer.apply_chat_template(row["conversations"][:2], add_generation_prompt=True, tokenize=False)
        for row in demo.make_rows(8, seed=7)
    ]


def greedy(model, tokenizer, text: str) -> str:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=stop, pad_token_id=stop)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_the_smollm2_run_exported_to_q8_0_answers_the_demo_prompts_as_the_merged_model(smollm2_run):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_run / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(smollm2_run / "merged", dtype=torch.float32).eval()
    in_gguf = AutoModelForCausalLM.from_pretrained(smollm2_run / "gguf", gguf_file="model.gguf", dtype=torch.float32)
    for text in demo_prompts(tokenizer):
        answer = greedy(merged, tokenizer, text)
        assert answer.strip() and greedy(in_gguf.eval(), tokenizer, text) == answer
    report = json.loads((smollm2_run / "gguf" / "export.json").read_text())
    check = report["check"]  # q8_0 may flip a near-tie on the probes' positions; the answers above did not move
    assert check["max_abs_diff"] <= check["tolerance"] and check["same_argmax"] > 0.95
    assert report["tokenizer"]["pre"] == "gpt-2" and report["tensor_types"] == {"Q8_0": 211, "F32": 61}


def test_llama_cpp_loads_the_file_and_answers_as_transformers(smollm2_run):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e .[llama])")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_run / "adapter")
    in_gguf = AutoModelForCausalLM.from_pretrained(smollm2_run / "gguf", gguf_file="model.gguf", dtype=torch.float32)
    llm = llama_cpp.Llama(model_path=str(smollm2_run / "gguf" / "model.gguf"), n_ctx=512, verbose=False, seed=0)
    for text in demo_prompts(tokenizer):
        # llama.cpp's own tokenizer (pre-tokenizer by name, merges, special tokens) gives transformers' ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"]
        answer = llm.create_completion(text, max_tokens=24, temperature=0.0, top_k=1)["choices"][0]["text"]
        assert answer.strip() and answer == greedy(in_gguf.eval(), tokenizer, text)


def test_the_served_export_the_benchmark_and_a_judge_in_one_report(smollm2_run, tmp_path):
    """ftlab.evaluate as a user runs it on the real model: the run served by ftlab.serve answers over HTTP as it does
    in the library, the base model knows the shipped task's facts, and the base model, served, judges each pair
    twice (tests/test_evaluate_servers.py serves a merged export)."""
    from ftlab.config.overrides import parse
    from ftlab.config.schema import EvaluateCommand
    from ftlab.evaluate import evaluate

    rubric = tmp_path / "verdict_only.md"  # a rubric of one's own: a 135M judge is asked for its verdict alone
    rubric.write_text(
        "Question: {question}\nCorrect answer: {reference}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\n"
        "Which answer matches the correct answer? Reply with [[A]], [[B]] or [[C]] (a tie) and nothing else."
    )
    with serving(smollm2_run, "trainer.precision=32-true") as url:
        words = [f"run={smollm2_run}", f"output={tmp_path / 'report'}", f"endpoint={url}", "endpoint.model=run",
                 f"judge.endpoint={url}", "judge.model=base",
                 f"judge.rubric={rubric}", "judge.max_tokens=8", "harness.tasks=[ftlab_facts]", "harness.limit=20",
                 "eval.max_examples=8", "generation.max_new_tokens=24", "trainer.precision=32-true"]  # fmt: skip
        doc = evaluate(*parse(words, EvaluateCommand))
    assert doc["endpoint"]["identical"] == 8  # served over HTTP, greedy: the run's own answers
    assert doc["scores"]["endpoint"]["exact_match"] == doc["scores"]["tuned"]["exact_match"]
    acc = next(r for r in doc["harness"]["rows"] if r["metric"] == "acc")
    assert acc["n"] == 20 and acc["base"] >= 0.5  # chance is 0.25: the base model knows these facts
    assert acc["low"] <= acc["difference"] <= acc["high"]
    section = doc["judge"]
    assert section["pairs"] == 8 and section["asked"] + section["cached"] == 2 * (8 - section["identical"])
    assert {"win rate (tie = half a win)", "both orders agree"} <= {
        line.split(" | ")[0].strip("| ") for line in (tmp_path / "report" / "report.md").read_text().splitlines()
    }
