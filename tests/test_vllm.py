"""The vLLM hand-off: the serve command for a run's adapter, and what in an adapter vLLM would refuse."""

import json
import shlex

import pytest

from conftest import run_cli
from ftlab.exports import vllm


def adapter_config(run) -> dict:
    return json.loads((run / "adapter" / "adapter_config.json").read_text())


def test_a_trained_adapter_is_served_with_its_rank_and_nothing_refused(trained):
    config = adapter_config(trained)
    assert vllm.problems(config, "llama") == []  # all-linear on Llama: the seven projections vLLM adapts
    adapted = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert adapted == vllm.LORA_MODULES["llama"] - {"embed_tokens", "lm_head"}
    words = shlex.split(vllm.command("ftlab/tiny-llama", "dates", str(trained / "adapter"), config))
    assert words[:3] == ["vllm", "serve", "ftlab/tiny-llama"] and "--enable-lora" in words
    assert words[words.index("--lora-modules") + 1] == f"dates={trained / 'adapter'}"
    assert words[words.index("--max-lora-rank") + 1] == str(config["r"]) == "16"


@pytest.mark.parametrize("r,rank", [(4, 8), (8, 8), (12, 16), (200, 256), (300, 320), (512, 512), (513, None)])
def test_max_lora_rank_is_the_smallest_vllm_choice_that_fits(r, rank):
    assert vllm.max_lora_rank(r) == rank


@pytest.mark.parametrize(
    "change,message",
    [
        ({"use_dora": True}, "vLLM does not serve DoRA adapters; train with lora.use_dora=false"),
        ({"modules_to_save": ["lm_head"]}, "(modules_to_save: lm_head); train with lora.modules_to_save=[]"),
        ({"rank_pattern": {"q_proj": 8}}, "vLLM serves one rank and one alpha for every module"),
        ({"r": 1024}, "vLLM serves ranks up to 512 (this adapter: lora.r=1024)"),
        ({"target_modules": ["q_proj", "rotary_emb"]}, "vLLM has no LoRA layer for 'rotary_emb' in llama models"),
    ],
)
def test_what_vllm_refuses_is_named_with_the_option_that_fixes_it(trained, change, message):
    config = {**adapter_config(trained), **change}
    (problem,) = vllm.problems(config, "llama")
    assert message in problem


def test_an_adapter_with_biases_needs_the_bias_flag(trained):
    config = {**adapter_config(trained), "bias": "lora_only"}
    assert vllm.command("base", "a", "dir", config).endswith("--enable-lora-bias")


@pytest.mark.process
def test_the_card_and_the_export_print_the_command(fresh_run, tmp_path):
    card = (fresh_run / "README.md").read_text()
    assert "## Serve it with vLLM" in card
    assert "vllm serve ftlab/tiny-llama --enable-lora --lora-modules " in card and "--max-lora-rank 16" in card
    result = run_cli(f"run={fresh_run}", f"output={tmp_path / 'merged'}", cwd=tmp_path, module="ftlab.export")
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if "vLLM" in x)
    assert line.startswith("serve the adapter unmerged with vLLM: vllm serve ftlab/tiny-llama --enable-lora")
    assert f"run={fresh_run / 'adapter'}" in line and line.endswith("--max-lora-rank 16")
