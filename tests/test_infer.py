"""python -m ftlab.infer: a prompt, a prompts file and a chat answer as the library does; prompts are tokenized as in
training; Hub ids round-trip through a fake Hub; bad runs, adapters and files fail in one line."""

import io
import json
import shutil
import sys

import pytest
from omegaconf import OmegaConf

from conftest import CHAT, run_cli, run_main
from ftlab import FineTune
from ftlab.config.schema import GenerationOptions
from ftlab.data import chat, templates
from ftlab.data.chat import IGNORE
from ftlab.data.sources import Problems, read_file
from ftlab.model import load, source
from ftlab.train.trained import Trained
from ftlab.use import generate, runs

GEN = GenerationOptions(max_new_tokens=6)


def cold_infer(*args, cwd, stdin=None, env_extra=None):
    """`python -m ftlab.infer` in a process of its own."""
    return run_cli(*args, cwd=cwd, module="ftlab.infer", stdin=stdin, env_extra=env_extra)


@pytest.fixture
def infer(capsys, monkeypatch):
    """The infer command in this process (its main), stdin given."""

    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return run_main(*args, module="ftlab.infer", capsys=capsys)

    return run


def library_answers(run_dir, conversations, base_only=False):
    """What the library answers, to hold the command's output against."""
    run = runs.locate(str(run_dir), ["generation.max_new_tokens=6"])
    trained = Trained(run, FineTune)
    loaded = trained.model(base_only=base_only)
    prompts = [trained.prompt(c) for c in conversations]
    return [a.output for a in generate.answers(loaded, trained.tokenizer, prompts, GEN, run.cfg.seed)]


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("ftlab.infer: error:")]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


@pytest.mark.process
def test_a_prompt_on_the_command_line_prints_only_the_answer(trained, tmp_path):
    result = cold_infer(f"run={trained}", "prompt=What is 2 plus 3?", "generation.max_new_tokens=6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = library_answers(trained, [[{"role": "user", "content": "What is 2 plus 3?"}]])[0]
    assert expected and result.stdout == expected + "\n"  # stage lines went to stderr
    assert "[3/3] Generating" in result.stderr


def test_a_prompts_file_gives_one_output_line_per_input_line(trained, tmp_path, infer):
    conversation = [{"role": "user", "content": "What is 4 plus 4?"}, {"role": "assistant", "content": "8"}]
    lines = [
        {"prompt": "What is 1 plus 1?"},
        {"prompt": "Name a fruit.", "system": "Be brief."},
        {"messages": conversation},
        "What is 7 plus 2?",
        {"question": "What is 3 plus 3?", "answer": "6"},
    ]
    source = tmp_path / "prompts.jsonl"
    source.write_text(
        "\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + "\n".join(json.dumps(x) for x in lines[2:]) + "\n"
    )  # a blank line is skipped
    result = infer(f"run={trained}", f"input={source}", "generation.max_new_tokens=6")
    assert result.returncode == 0, result.stderr[-2000:]
    out = [json.loads(x) for x in (tmp_path / "prompts-outputs.jsonl").read_text().splitlines()]
    assert [o["line"] for o in out] == [1, 2, 4, 5, 6]
    asked = [
        [{"role": "user", "content": "What is 1 plus 1?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
        conversation[:1],
        [{"role": "user", "content": "What is 7 plus 2?"}],
        [{"role": "user", "content": "What is 3 plus 3?"}],
    ]
    assert [o["messages"] for o in out] == asked
    assert [o.get("reference") for o in out] == [None, None, "8", None, "6"]
    assert [o["output"] for o in out] == library_answers(trained, asked)
    tokenizer = load.load_tokenizer(
        str(trained / "adapter"), OmegaConf.create({"revision": "main", "trust_remote_code": False})
    )
    assert out[1]["prompt"] == tokenizer.apply_chat_template(asked[1], tokenize=False, add_generation_prompt=True)
    assert all(o["generation"] == {"max_new_tokens": 6, "do_sample": False, "repetition_penalty": 1.0} for o in out)
    assert all(o["model"] == str(trained) and o["adapter"] is True for o in out)
    again = infer(f"run={trained}", f"input={source}", "generation.max_new_tokens=6")
    assert again.returncode == 0 and (tmp_path / "prompts-outputs-2.jsonl").is_file()  # the first is kept


def test_sampling_is_seeded_and_recorded(trained, tmp_path, infer):
    source = tmp_path / "p.jsonl"
    source.write_text('{"prompt": "What is 5 plus 5?"}\n' * 3)
    args = [
        f"run={trained}",
        f"input={source}",
        "generation.do_sample=true",
        "generation.temperature=1.5",
        "generation.max_new_tokens=8",
    ]
    first, second = (infer(*args, f"output={tmp_path / name}") for name in ("a.jsonl", "b.jsonl"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
    a, b = ([json.loads(x) for x in (tmp_path / n).read_text().splitlines()] for n in ("a.jsonl", "b.jsonl"))
    assert [x["output"] for x in a] == [x["output"] for x in b]  # same seed, same samples
    assert a[0]["generation"] == {
        "max_new_tokens": 8,
        "do_sample": True,
        "repetition_penalty": 1.0,
        "temperature": 1.5,
        "top_p": 0.9,
        "top_k": 50,
        "seed": 42,
    }


def test_interactive_chat_keeps_the_history_until_reset(trained, tmp_path, infer):
    result = infer(
        f"run={trained}",
        "generation.max_new_tokens=6",
        stdin="What is 1 plus 2?\nAnd 2 plus 2?\n/reset\nAnd 2 plus 2?\n/exit\nnever read\n",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first = library_answers(trained, [[{"role": "user", "content": "What is 1 plus 2?"}]])[0]
    follow_up = [
        {"role": "user", "content": "What is 1 plus 2?"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And 2 plus 2?"},
    ]
    second, fresh = library_answers(trained, [follow_up, [{"role": "user", "content": "And 2 plus 2?"}]])
    assert result.stdout.splitlines() == [first, second, fresh]


def test_base_only_answers_without_the_adapter(trained, tmp_path, infer):
    source = tmp_path / "p.jsonl"
    source.write_text('{"prompt": "What is 6 plus 1?"}\n')
    result = infer(f"run={trained}", f"input={source}", "base_only=true", "generation.max_new_tokens=6")
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [json.loads(x) for x in (tmp_path / "p-outputs.jsonl").read_text().splitlines()]
    assert line["adapter"] is False and "base model alone" in result.stderr
    assert line["output"] == library_answers(trained, [line["messages"]], base_only=True)[0]


@pytest.mark.parametrize("template", [None, "llama3"], ids=["own-template", "llama3-markers-as-text"])
@pytest.mark.parametrize("tokenizer_of", ["tiny", "smollm2"])
def test_training_and_inference_tokenize_the_prompt_identically(tokenizer_of, template, cache_dir):
    """For every conversation, the tokens before the last answer in training equal the inference prompt."""
    from ftlab import compose

    cfg = compose([f"model={tokenizer_of}", f"cache_dir={cache_dir}"])
    where_from, gguf = source.tokenizer_source(cfg.model, cfg.cache_dir)  # (None, None) for tiny: byte tokenizer
    tokenizer = load.load_tokenizer(where_from, cfg.model, gguf)
    templates.apply(tokenizer, template, cfg.model.name)
    rows = read_file(CHAT, Problems())
    assert any(len(row["conversations"]) > 3 for _, row in rows)  # multi-turn conversations are among them
    for where, row in rows:
        messages = row["conversations"]
        example = chat.tokenize_conversation(tokenizer, messages, 4096, where, "assistant")
        last_answer = max(
            i
            for i, label in enumerate(example["labels"])
            if label != IGNORE and (i == 0 or example["labels"][i - 1] == IGNORE)
        )
        _, prompt = chat.prompt_ids(tokenizer, messages[:-1], where, "assistant")
        assert prompt == example["input_ids"][:last_answer], where


@pytest.mark.process
def test_a_pushed_adapter_is_used_by_its_hub_id(trained, tmp_path, fake_hub, monkeypatch):
    from ftlab.hub import card
    from ftlab.hub import push as hub

    run = shutil.copytree(trained, tmp_path / "run")
    card.write(run, OmegaConf.load(run / ".hydra" / "config.yaml"), {}, "python -m ftlab model=tiny")
    hub.push(run, "me/tiny-dates", private=True, token="hf_test", retries=0, retry_wait=0, log=print)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # a fresh download cache
    result = cold_infer(
        "run=me/tiny-dates",
        "prompt=What is 2 plus 3?",
        "generation.max_new_tokens=6",
        cwd=tmp_path,
        env_extra={"HF_HUB_OFFLINE": "0"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == library_answers(trained, [[{"role": "user", "content": "What is 2 plus 3?"}]])[0]
    assert any("/me/tiny-dates/resolve/" in p and p.endswith("ftlab_config.yaml") for p in fake_hub.paths("GET"))
    missing = cold_infer("run=me/no-such-repo", "prompt=hi", cwd=tmp_path, env_extra={"HF_HUB_OFFLINE": "0"})
    assert "run=me/no-such-repo: " in one_error_line(missing) and "check the id" in one_error_line(missing)


# ── errors: one line naming the file and the fix ─────────────────────────────────────────────────────────


def test_a_run_without_an_adapter_is_refused(trained, tmp_path, infer):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained / ".hydra", unfinished / ".hydra")
    line = one_error_line(infer(f"run={unfinished}", "prompt=hi"))
    assert f"{unfinished / 'adapter' / 'adapter_config.json'} is missing" in line and "resume=" in line


@pytest.mark.parametrize(
    "override,problem",
    [
        (["model.random_init.hidden_size=32", "model.random_init.intermediate_size=64"], "inputs, the adapter expects"),
        (["model.random_init.num_layers=1"], "which this base model does not have"),
    ],
)
def test_an_adapter_on_another_base_model_is_refused(override, problem, trained, tmp_path, infer):
    line = one_error_line(infer(f"run={trained}", "prompt=hi", *override))
    assert f"{trained / 'adapter' / 'adapter_config.json'}: the adapter was trained on" in line
    assert problem in line and "model.path=" in line


def test_a_prompts_file_in_the_wrong_shape_is_refused_before_loading(trained, tmp_path, infer):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"prompt": "fine"}\n{"text": "no prompt key"}\n')
    result = infer(f"run={trained}", f"input={source}")
    line = one_error_line(result)
    assert f"{source}:2: no prompt in this line (keys: text)" in line and '{"prompt": "..."}' in line
    assert "Loading the model" not in result.stderr and not (tmp_path / "bad-outputs.jsonl").exists()


def test_bad_command_lines_are_refused(trained, tmp_path, infer):
    assert "run=nowhere: no such directory" in one_error_line(infer("run=nowhere", "prompt=x"))
    assert "unknown option 'promt'" in one_error_line(infer(f"run={trained}", "promt=x"))
    both = infer(f"run={trained}", "prompt=x", "input=y.jsonl")
    assert one_error_line(both) and both.returncode == 2
    taken = tmp_path / "taken.jsonl"
    taken.write_text("keep me\n")
    source = tmp_path / "p.jsonl"
    source.write_text('{"prompt": "x"}\n')
    assert "already exists" in one_error_line(infer(f"run={trained}", f"input={source}", f"output={taken}"))
    assert taken.read_text() == "keep me\n"
