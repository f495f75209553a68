"""`python -m ftlab.preview` shows the data as the model will see it, from the tokenizer alone."""

import json
import os
import subprocess
import sys

import pytest

from conftest import qa_rows, run_main, write_rows


def preview(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "ftlab.preview", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.process
def test_preview_marks_supervised_tokens_and_reports_lengths_padding_and_drops(tmp_path):
    rows = qa_rows(30)
    rows[3]["question"] = "x" * 400  # too long for data.max_seq_len: its answer is truncated away
    lines = [json.dumps(r) for r in rows]
    lines[5] = '{"question": "q", "answer": ""}'
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    result = preview(
        "model=tiny",
        f"data.path={tmp_path / 'd.jsonl'}",
        f"cache_dir={tmp_path / 'cache'}",
        "data.max_seq_len=100",
        "data.skip_bad_rows=true",
        "-n",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "data format: qa (detected from the columns question, answer" in out
    assert "first 2 training examples; supervised tokens (those with a loss) [[like this]]" in out
    assert out.count("── example ") == 2
    assert "<|im_start|>assistant\n[[" in out and "<|im_end|>]]" in out
    assert "tokens per example: min " in out and "padding: " in out and "data.packing=true would make it" in out
    assert "1 dropped (every supervised token truncated away by data.max_seq_len=100)" in out
    assert "skipped 1 bad rows (data.skip_bad_rows=true)" in out and "d.jsonl:6: column 'answer' is an empty" in out
    assert not (tmp_path / "cache" / "random").exists()  # no model was built or loaded
    assert not (tmp_path / "outputs").exists()  # and no run dir made


def test_preview_reports_bad_input_in_one_line(tmp_path, capsys):
    result = run_main("model=tiny", "data.nope=1", module="ftlab.preview", capsys=capsys)
    assert result.returncode == 2 and result.stderr.startswith("ftlab.preview: error: unknown key data.nope")
    assert len(result.stderr.strip().splitlines()) == 1
    path = write_rows(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}] * 4)
    result = run_main("model=tiny", f"data.path={path}", module="ftlab.preview", capsys=capsys)
    assert result.returncode == 2 and "data.columns.question=prompt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_preview_of_smollm2_reads_only_the_tokenizer(tmp_path):
    result = preview(f"cache_dir={tmp_path / 'cache'}", "-n", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[[1999-07-02<|im_end|>]]" in result.stdout or "<|im_end|>]]" in result.stdout
    assert not (tmp_path / "cache" / "gguf").exists()  # the GGUF weights were never converted
