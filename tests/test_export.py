"""python -m ftlab.export: a merged model that plain transformers loads, whose logits are the adapter model's, for
plain and 4-bit runs; existing folders and adapter-less runs are refused."""

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from conftest import run_main
from ftlab.exports import probes
from ftlab.model.load import keep_4bit_trainable_on_cpu
from ftlab.model.source import resolve_source

MERGED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "export.json",
}


def run_export(*args, capsys):
    return run_main(*args, module="ftlab.export", capsys=capsys)


def adapter_and_base_logits(run_dir, batch):
    """The adapter model as PEFT builds it (base quantized as in training, computing in float32), and the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    kwargs = {"dtype": torch.float32}
    if cfg.quant.bits == 4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_quant_type=cfg.quant.quant_type,
            bnb_4bit_use_double_quant=cfg.quant.double_quant,
        )
    base = AutoModelForCausalLM.from_pretrained(resolve_source(cfg.model, cfg.cache_dir, cfg.seed), **kwargs).eval()
    keep_4bit_trainable_on_cpu(base)  # else bitsandbytes' CPU eval kernel computes in bfloat16, not float32
    base_logits = probes.logits(base, batch)
    tuned = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    return probes.logits(tuned, batch), base_logits


@pytest.mark.parametrize("which", ["plain", "4bit"])
def test_the_merged_model_loads_with_transformers_and_matches_the_adapter_model(
    which, trained, trained_4bit, tmp_path, capsys
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = shutil.copytree(trained if which == "plain" else trained_4bit, tmp_path / "run")
    result = run_export(f"run={run}", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    merged_dir = run / "merged"
    assert {p.name for p in merged_dir.iterdir()} == MERGED_FILES
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()  # plain transformers: no PEFT, no quantization
    assert type(merged).__name__ == "LlamaForCausalLM" and getattr(merged.config, "quantization_config", None) is None
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(run / "adapter").chat_template
    batch = probes.probe_batch(tokenizer)
    tuned, base = adapter_and_base_logits(run, batch)
    got = probes.logits(merged, batch)
    assert torch.allclose(got, tuned, atol=1e-4, rtol=1e-4)
    assert (got - base).abs().max() > 100 * (got - tuned).abs().max()  # the adapter is in there, not the bare base
    report = json.loads((merged_dir / "export.json").read_text())
    assert report["check"]["max_abs_diff"] <= report["check"]["tolerance"] and report["check"]["same_argmax"] == 1.0
    assert report["dequantized_from_bits"] == (4 if which == "4bit" else None)
    if which == "4bit":
        assert "dequantizing it to float32 before merging" in result.stdout


def test_export_to_bfloat16_is_checked_with_a_looser_tolerance(fresh_run, tmp_path, capsys):
    result = run_export(f"run={fresh_run}", "dtype=bfloat16", f"output={tmp_path / 'bf16'}", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    check = json.loads((tmp_path / "bf16" / "export.json").read_text())["check"]
    assert 0 < check["max_abs_diff"] <= check["tolerance"]


def test_export_never_writes_over_a_folder_or_exports_without_an_adapter(fresh_run, tmp_path, capsys):
    (fresh_run / "merged").mkdir()
    (fresh_run / "merged" / "keep.txt").write_text("mine")
    taken = run_export(f"run={fresh_run}", capsys=capsys)
    assert taken.returncode == 1 and f"{fresh_run / 'merged'} already exists" in taken.stderr
    assert [p.name for p in (fresh_run / "merged").iterdir()] == ["keep.txt"]
    shutil.rmtree(fresh_run / "adapter")
    missing = run_export(f"run={fresh_run}", f"output={tmp_path / 'out'}", capsys=capsys)
    assert missing.returncode == 1 and "adapter_config.json is missing" in missing.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
