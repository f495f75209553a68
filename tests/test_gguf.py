"""GGUF export: tiny llama, qwen2 and mistral models round-trip through model.gguf into plain transformers within
each dtype's tolerance; the tokenizer's ids survive; `ftlab.export format=gguf|gguf-adapter` proves what it
writes before it appears and refuses what it cannot write."""

import json
import shutil

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig, Qwen2Config

from conftest import run_main, train_tiny
from ftlab.exports import gguf_lora, gguf_model, gguf_tokenizer, probes
from ftlab.model.source import byte_tokenizer
from ftlab.utils.errors import FtlabError

CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
# what transformers builds from each file: llama.cpp (and so GGUF) has no Mistral architecture of its own
RELOADED_AS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "LlamaForCausalLM"}
GGUF_FILES = {"model.gguf", "Modelfile", "export.json"}


def tiny_model(arch: str, tokenizer, **extra):
    config = CONFIGS[arch](
        **extra,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=arch != "mistral",  # one untied model: output.weight is written and read back
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # biases (qwen2's q/k/v) start at zero; make them count
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_tiny_models_round_trip_through_gguf_within_the_dtype_tolerance(arch, dtype, tmp_path):
    tokenizer = byte_tokenizer()
    model = tiny_model(arch, tokenizer)
    batch = probes.probe_batch(tokenizer)
    reference = probes.logits(model, batch)
    written = gguf_model.write(tmp_path / "m.gguf", model, tokenizer, dtype, "tiny", "<|im_end|>")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    assert type(reloaded).__name__ == RELOADED_AS[arch]
    check = probes.measure(reference, probes.logits(reloaded, batch), dtype)
    assert check["max_abs_diff"] <= check["tolerance"], check
    if dtype == "f32":  # nothing rounded: the file holds exactly the model (Q/K permuted and back)
        assert check["max_abs_diff"] < 1e-5
    else:  # rounded, so not exact: the comparison can tell
        assert check["max_abs_diff"] > 1e-6
    matrices = 15 + (arch == "mistral")  # embedding + 7 per layer (+ output.weight when untied)
    vectors = 5 + (6 if arch == "qwen2" else 0)  # norms (+ qwen2's q/k/v biases): always f32
    expected = {"F32": matrices + vectors} if dtype == "f32" else {dtype.upper(): matrices, "F32": vectors}
    assert written["tensor_types"] == expected


def test_llama_3_rope_scaling_is_written_as_llama_cpps_rope_freqs(tmp_path):
    # Llama 3.1's scaling, with a short original context so the probes' positions reach the scaled frequencies
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64, "rope_theta": 10000.0}  # fmt: skip
    tokenizer = byte_tokenizer()
    model = tiny_model("llama", tokenizer, rope_scaling=rope)
    factors = gguf_model.rope_factors(model.config)  # head_dim 16: 8 frequencies, wavelengths 6.3 to 19,900
    assert factors[0] == 1.0 and 1.0 < factors[1] < factors[2] < 8.0 and factors[-1] == 8.0  # kept, blended, divided
    batch = probes.probe_batch(tokenizer)
    reference = probes.logits(model, batch)
    written = gguf_model.write(tmp_path / "m.gguf", model, tokenizer, "f32", "tiny", "<|im_end|>")
    assert written["tensor_types"] == {"F32": 21}  # + rope_freqs.weight
    assert gguf_model.rope_difference(tmp_path / "m.gguf", model.config) < 1e-6  # transformers' own divisors
    as_read = probes.reloaded_logits(tmp_path, batch, gguf_file="m.gguf")  # the reader drops the scaling
    assert (as_read - reference).abs().max() > 1e-3
    with_rope = probes.reloaded_logits(tmp_path, batch, gguf_file="m.gguf", config=model.config)
    assert (with_rope - reference).abs().max() < 1e-5


def test_q_and_k_rows_are_interleaved_per_head_as_llama_cpp_rotates_pairs():
    # one head of 4 rows: transformers keeps the rotary pairs as (r0, r2) and (r1, r3), llama.cpp side by side
    rows = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    assert gguf_model.permute_qk(rows, 1).tolist() == [[0, 1], [4, 5], [2, 3], [6, 7]]
    two_heads = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert gguf_model.permute_qk(two_heads, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_the_byte_tokenizer_is_rebuilt_from_the_file_with_the_same_ids(tmp_path):
    tokenizer = byte_tokenizer()
    gguf_model.write(tmp_path / "m.gguf", tiny_model("llama", tokenizer), tokenizer, "f16", "tiny", "<|im_end|>")
    assert probes.tokenizer_problems(tmp_path, "m.gguf", tokenizer) == []
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    text = {k: bytes(fields[k].parts[-1]).decode() for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre")}
    assert text == {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2"}
    assert bytes(fields["tokenizer.chat_template"].parts[-1]).decode() == tokenizer.chat_template
    types = fields["tokenizer.ggml.token_type"]
    control = [i for i, d in enumerate(types.data) if types.parts[d][0] == gguf.TokenType.CONTROL]
    assert control == [0, 1, 2]  # <|endoftext|>, <|im_start|>, <|im_end|>: kept whole, never split into bytes
    # its BOS is <|im_start|>, which ChatML writes as text, not as bos_token: Ollama must add no BOS of its own
    assert fields["tokenizer.ggml.add_bos_token"].parts[-1][0] == 0


def sentencepiece_tokenizer():
    """A Mistral-style tokenizer: BPE learnt over U+2581-marked words, byte fallback tokens, <s> and </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.llama.tokenization_llama import LlamaTokenizer

    from ftlab.data import templates

    texts = ["Hello world, the sky is blue.", "Order 12345 shipped on 2001-05-03", "the sea is blue too"] * 20
    learner = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    learner.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    model = json.loads(learner.to_str())["model"]
    tokenizer = LlamaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    tokenizer.chat_template, tokenizer.pad_token = templates.read("mistral"), "<unk>"
    return tokenizer


def test_a_sentencepiece_tokenizer_is_written_with_byte_tokens_and_rebuilt_with_the_same_ids(tmp_path):
    tokenizer = sentencepiece_tokenizer()
    written = gguf_model.write(tmp_path / "m.gguf", tiny_model("mistral", tokenizer), tokenizer, "f16", "spm", "</s>")
    assert written["tokenizer"]["model"] == "llama" and written["tokenizer"]["pre"] == "default"
    assert probes.tokenizer_problems(tmp_path, "m.gguf", tokenizer) == []
    rebuilt = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    for text in ["  two  spaces", "Hello\nworld", "ünïcode 日本語 falls back to bytes"]:  # as training: nothing added
        assert (
            rebuilt(text, add_special_tokens=False)["input_ids"]
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    assert rebuilt("hi")["input_ids"][0] == tokenizer.bos_token_id  # the mistral template begins with BOS: added
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    types = [fields["tokenizer.ggml.token_type"].parts[d][0] for d in fields["tokenizer.ggml.token_type"].data]
    assert types[3:259] == [gguf.TokenType.BYTE] * 256  # <0x00>..<0xFF>: llama.cpp's byte fallback
    scores = [fields["tokenizer.ggml.scores"].parts[d][0] for d in fields["tokenizer.ggml.scores"].data]
    first_merge = tokenizer.convert_tokens_to_ids(
        "".join(json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"][0])
    )
    assert scores[first_merge] == 0.0 and min(scores) < 0  # earlier merges score higher: llama.cpp merges them first


def test_the_generation_settings_become_llama_cpps_sampling_defaults(tmp_path):
    from ftlab.config.schema import GenerationOptions

    tokenizer, settings = byte_tokenizer(), GenerationOptions(do_sample=True, top_k=0, repetition_penalty=1.1)
    gguf_model.write(tmp_path / "m.gguf", tiny_model("llama", tokenizer), tokenizer, "f16", "t", "<|im_end|>", settings)
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    got = {k.removeprefix("general.sampling."): float(f.parts[-1][0]) for k, f in fields.items() if "sampling" in k}
    assert got == pytest.approx({"temp": 0.7, "top_p": 0.9, "top_k": 0, "penalty_repeat": 1.1, "penalty_last_n": -1})
    gguf_model.write(tmp_path / "g.gguf", tiny_model("llama", tokenizer), tokenizer, "f16", "t", "<|im_end|>",
                     GenerationOptions())  # fmt: skip
    fields = gguf.GGUFReader(tmp_path / "g.gguf").fields
    greedy = {k.removeprefix("general.sampling."): float(f.parts[-1][0]) for k, f in fields.items() if "sampling" in k}
    assert greedy == {"temp": 0.0, "penalty_repeat": 1.0}  # greedy: temperature 0, as llama.cpp spells it


def test_a_pre_tokenizer_without_a_gguf_name_is_refused():
    from tokenizers import pre_tokenizers

    tokenizer = byte_tokenizer()
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(FtlabError, match="pre-tokenizer .*Whitespace.* has no GGUF name.*format=merged"):
        gguf_tokenizer.pre_tokenizer_name(tokenizer)


def test_unsupported_architectures_and_rope_scaling_are_refused():
    from transformers import GPT2Config

    with pytest.raises(FtlabError, match="writes the llama, mistral, qwen2 architectures, and this model is gpt2"):
        gguf_model.check_supported(GPT2Config())
    scaled = LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(FtlabError, match="writes Llama 3's rope scaling but not linear"):
        gguf_model.check_supported(scaled)


def test_rslora_scale_becomes_the_alpha_llama_cpp_divides_by_the_rank():
    assert gguf_lora.scale({"r": 8, "lora_alpha": 16}) == 2.0
    assert gguf_lora.scale({"r": 16, "lora_alpha": 8, "use_rslora": True}) == 2.0  # 8 / sqrt(16)
    assert gguf_lora.refusals({"r": 8, "lora_alpha": 16, "use_dora": True, "bias": "all"}) == [
        "llama.cpp adapters are plain LoRA, not DoRA; train with lora.use_dora=false or export format=gguf",
        "llama.cpp adapters hold no biases; train with lora.bias=none or export format=gguf",
    ]


# ── the command ───────────────────────────────────────────────────────────────────────────────────────────


def export(*args, capsys):
    return run_main(*args, module="ftlab.export", capsys=capsys)


def reference_logits(run_dir, tokenizer):
    """The adapter model as PEFT builds it, computed here, not by the export."""
    from test_export import adapter_and_base_logits

    return adapter_and_base_logits(run_dir, probes.probe_batch(tokenizer))[0]


@pytest.mark.parametrize("which", ["plain", "4bit"])
def test_export_gguf_writes_a_checked_file_a_modelfile_and_the_numbers(which, trained, trained_4bit, tmp_path, capsys):
    run = shutil.copytree(trained if which == "plain" else trained_4bit, tmp_path / "run")
    result = export(f"run={run}", "format=gguf", "gguf.dtype=q8_0", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = run / "gguf"
    assert {p.name for p in folder.iterdir()} == GGUF_FILES
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    reloaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", dtype=torch.float32).eval()
    got = probes.logits(reloaded, probes.probe_batch(tokenizer))
    check = probes.measure(reference_logits(run, tokenizer), got, "q8_0")
    assert check["max_abs_diff"] <= check["tolerance"] and check["same_argmax"] > 0.9
    report = json.loads((folder / "export.json").read_text())
    assert report["dtype"] == "q8_0" and report["tokenizer_ids_equal"] is True
    assert report["check"]["max_abs_diff"] == pytest.approx(check["max_abs_diff"], rel=1e-3)
    assert (
        report["tensor_types"] == {"Q8_0": 15, "F32": 5} and report["bytes"] == (folder / "model.gguf").stat().st_size
    )
    assert report["dequantized_from_bits"] == (4 if which == "4bit" else None)
    assert (folder / "Modelfile").read_text().startswith("#") and "FROM ./model.gguf" in (
        folder / "Modelfile"
    ).read_text()
    assert "ollama create run -f Modelfile" in result.stdout
    fields = gguf.GGUFReader(folder / "model.gguf").fields
    assert int(fields["general.file_type"].parts[-1][0]) == gguf.LlamaFileType.MOSTLY_Q8_0


def test_a_run_on_a_llama_3_1_style_base_exports_with_its_rope_scaling(tmp_path, cache_dir, capsys):
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64, "rope_theta": 500000.0}  # fmt: skip
    tokenizer, base = byte_tokenizer(), tmp_path / "base"
    tiny_model("llama", tokenizer, rope_scaling=rope).save_pretrained(base)
    tokenizer.save_pretrained(base)
    run = train_tiny(
        tmp_path / "run", cache_dir, "model.random_init=null", f"model.path={base}", "trainer.max_steps=10"
    )
    result = export(f"run={run}", "format=gguf", "gguf.dtype=f32", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run / "gguf" / "export.json").read_text())
    assert report["check"]["rope_freqs_difference"] < 1e-6 and report["check"]["max_abs_diff"] < 1e-4
    assert report["tensor_types"] == {"F32": 21}


def test_export_gguf_adapter_adds_to_the_base_as_llama_cpp_does(trained, tmp_path, capsys):
    from omegaconf import OmegaConf

    from ftlab.model.source import resolve_source

    run = shutil.copytree(trained, tmp_path / "run")
    result = export(f"run={run}", "format=gguf-adapter", "gguf.dtype=f32", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = run / "gguf-adapter"
    assert {p.name for p in folder.iterdir()} == {"adapter.gguf", "export.json"}
    reader = gguf.GGUFReader(folder / "adapter.gguf")
    assert bytes(reader.fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(reader.fields["adapter.type"].parts[-1]).decode() == "lora"
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert float(reader.fields["adapter.lora.alpha"].parts[-1][0]) == config["lora_alpha"]  # scale = alpha / r
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    assert shapes["blk.0.attn_q.weight.lora_a"] == (config["r"], 64) and shapes["blk.0.attn_k.weight.lora_b"] == (
        32,
        config["r"],
    )
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    base = AutoModelForCausalLM.from_pretrained(resolve_source(cfg.model, cfg.cache_dir, cfg.seed), dtype=torch.float32)
    assert gguf_lora.apply(folder / "adapter.gguf", base) == len(shapes) // 2
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    got = probes.logits(base.eval(), probes.probe_batch(tokenizer))
    assert torch.allclose(got, reference_logits(run, tokenizer), atol=1e-4, rtol=1e-4)
    assert json.loads((folder / "export.json").read_text())["check"]["max_abs_diff"] < 1e-4


def test_export_refusals_name_the_option_and_write_nothing(trained, tmp_path, capsys):
    run = shutil.copytree(trained, tmp_path / "run")
    bad = export(f"run={run}", "format=gguf", "gguf.dtype=q4_0", capsys=capsys)
    assert bad.returncode != 0 and "gguf.dtype must be one of f32, f16, bf16, q8_0 (got q4_0)" in bad.stderr
    mixed = export(f"run={run}", "format=gguf", "dtype=float16", capsys=capsys)
    assert "dtype= sets format=merged's files; for format=gguf set gguf.*" in mixed.stderr
    typo = export(f"run={run}", "format=gguf", "gguf.dtpye=f16", capsys=capsys)
    assert "unknown option 'gguf.dtpye'; the gguf options are gguf.dtype" in typo.stderr
    assert not (run / "gguf").exists() and not (run / "gguf-adapter").exists()
    (run / "gguf").mkdir()
    taken = export(f"run={run}", "format=gguf", capsys=capsys)
    assert taken.returncode != 0 and "already exists" in taken.stderr and not any((run / "gguf").iterdir())


# ── SmolLM2, the real model (slow) ────────────────────────────────────────────────────────────────────────


def smollm2_dir(cache_dir):
    from ftlab import compose
    from ftlab.model.source import resolve_source

    cfg = compose([f"cache_dir={cache_dir}"])
    return resolve_source(cfg.model, cfg.cache_dir, cfg.seed)


@pytest.mark.slow
def test_smollm2s_tokenizer_survives_the_file(cache_dir, tmp_path):
    from ftlab.data import demo

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(cache_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    written = gguf_model.write(tmp_path / "m.gguf", model, tokenizer, "f16", "smollm2", "<|im_end|>")
    assert written["tokenizer"] == {"model": "gpt2", "pre": "gpt-2", "tokens": 49152, "merges": 48900}
    assert probes.tokenizer_problems(tmp_path, "m.gguf", tokenizer) == []
    rebuilt = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    for row in demo.make_rows(50, seed=1):  # the demo conversations, through the chat template
        text = tokenizer.apply_chat_template(row["conversations"], tokenize=False)
        assert (
            rebuilt(text, add_special_tokens=False)["input_ids"]
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
