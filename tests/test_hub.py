"""Hub publishing against a fake Hub on 127.0.0.1: card, one-commit push, retries, auth errors, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftlab.config.compose import compose
from ftlab.config.schema import HubOptions
from ftlab.hub import card
from ftlab.hub import push as hub_push
from ftlab.hub.push import PublishError

ASSETS = Path(__file__).parent / "assets"
TOKEN = "hf_PlantedTestToken0123456789abcdefXYZ"
WANDB_KEY = "wandb-planted-key-0123456789abcdef"
STATS = {
    "val_loss_before": 5.4321,
    "val_loss_after": 3.2109,
    "steps": 2,
    "tokens_seen": 4096,
    "tokens_per_second": 812.5,
    "train_seconds": 5.04,
    "precision": "32-true",
    "data_format": "conversation",
}
ADAPTER = {
    "adapter_config.json": b'{"r": 16}',
    "adapter_model.safetensors": b"\x00\x01\x02safetensors\xff",
    "tokenizer.json": b'{"version": "1.0"}',
    "chat_template.jinja": b"{{ messages }}",
    "README.md": b"PEFT's generic card, replaced by the run's",
}


class hub:
    """hub.push and hub.preflight with the schema's defaults for what a test leaves out."""

    @staticmethod
    def _settings(kwargs: dict) -> dict:
        h = HubOptions()
        return {"retries": h.retries, "retry_wait": h.retry_wait, "log": print, **kwargs}

    @staticmethod
    def push(run, repo_id, **kwargs):
        return hub_push.push(run, repo_id, **{"private": HubOptions().private, "token": None, **hub._settings(kwargs)})

    @staticmethod
    def preflight(repo_id, token, **kwargs):
        return hub_push.preflight(repo_id, token, **hub._settings(kwargs))


def config(*overrides):
    return compose(
        [
            "model=tiny",
            f"data.path={ASSETS / 'chat.jsonl'}",
            "lora.r=8",
            "optim.lr=3e-4",
            "trainer.max_steps=2",
            *overrides,
        ]
    )


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """What a finished run leaves, by hand: adapter files, the saved config, metrics.json (no card yet)."""
    run = tmp_path / "run"
    for name, data in ADAPTER.items():
        (run / "adapter").mkdir(parents=True, exist_ok=True)
        (run / "adapter" / name).write_bytes(data)
    (run / ".hydra").mkdir()
    OmegaConf.save(config(), run / ".hydra" / "config.yaml")
    (run / "metrics.json").write_text(json.dumps(STATS))
    return run


@pytest.fixture
def carded(run_dir) -> Path:
    card.write(run_dir, config(), STATS, "python -m ftlab model=tiny trainer.max_steps=2")
    return run_dir


def pushed_files(run: Path) -> dict:
    files = {name: data for name, data in ADAPTER.items() if name != "README.md"}
    return dict(
        files,
        **{
            # the card as pushed: the run's own folder named by its name only (hub/private.py)
            "README.md": (run / "README.md").read_text().replace(str(run), run.name).encode(),
            # the config as pushed: the local data file named by its file name only (hub/private.py)
            "ftlab_config.yaml": (run / ".hydra" / "config.yaml")
            .read_text()
            .replace(str(ASSETS / "chat.jsonl"), "chat.jsonl")
            .encode(),
        },
    )


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and TOKEN not in message
    return message


# ── the card ──────────────────────────────────────────────────────────────────────────────────────────


def test_card_shows_base_model_config_metrics_and_command_but_no_secret():
    cfg = config("quant=4bit", f"hub.token={TOKEN}", f"tracker.wandb.api_key={WANDB_KEY}", "hub.repo_id=me/tiny-lora")
    text = card.render(cfg, STATS, "python -m ftlab model=tiny lora.r=8")
    front = text.split("---")[1]
    assert "library_name: peft" in front and 'base_model: "ftlab/tiny-llama"' in front
    assert all(f"- {tag}" in front for tag in ("ftlab", "lora", "qlora")) and "pipeline_tag: text-generation" in front
    assert "LoRA adapter of [ftlab/tiny-llama]" in text
    for row in (
        "| `lora.r` | 8 |",
        "| `optim.lr` | 0.0003 |",
        "| `quant.bits` | 4 |",
        "| `seed` | 42 |",
        "| `trainer.max_steps` / steps done | 2 / 2 |",
        "| `trainer.precision` | 32-true |",
    ):
        assert row in text
    assert "chat.jsonl" in text and "`conversation` (detected" in text
    for row in (
        "| validation loss before training | 5.4321 |",
        "| validation loss after training | 3.2109 |",
        "| tokens seen | 4,096 |",
        "| tokens per second | 812.5 |",
        "| training time (s) | 5.0 |",
    ):
        assert row in text
    assert "```bash\npython -m ftlab model=tiny lora.r=8\n```" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/tiny-lora")' in text
    assert TOKEN not in text and WANDB_KEY not in text


def test_card_skips_missing_metrics_and_writes_atomically(run_dir):
    path = card.write(run_dir, config(), {"steps": 3}, "python -m ftlab")
    text = path.read_text()
    assert path == run_dir / "README.md" and "| optimizer steps | 3 |" in text
    assert "validation loss" not in text and "tokens seen" not in text
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".README")]  # no temp file left behind


# ── push ──────────────────────────────────────────────────────────────────────────────────────────────


def test_push_sends_adapter_and_card_in_one_commit_to_a_private_repo(carded, fake_hub):
    url = hub.push(carded, "me/tiny-lora", token=TOKEN, log=pytest.fail)
    assert url == f"{fake_hub.url}/me/tiny-lora"
    assert fake_hub.repos == {"me/tiny-lora": {"private": True}}
    assert fake_hub.commits == [pushed_files(carded)]  # one commit; the run's card replaced PEFT's README
    assert {r.authorization for r in fake_hub.requests} == {f"Bearer {TOKEN}"}


def test_push_retries_transient_failures_then_succeeds(carded, fake_hub):
    fake_hub.fail_commits = 2
    logged = []
    hub.push(carded, "me/tiny-lora", token=TOKEN, retry_wait=0.01, log=logged.append)
    assert fake_hub.count(r"/commit/") == 3 and len(fake_hub.commits) == 1
    assert logged == [
        "Hub upload failed (503 Service Unavailable); retry 1 of 4 in 0.01s",
        "Hub upload failed (503 Service Unavailable); retry 2 of 4 in 0.02s",
    ]


def test_push_gives_up_after_retries_with_the_command_to_push_again(carded, fake_hub):
    fake_hub.fail_commits = 100
    logged = []
    with pytest.raises(PublishError) as e:
        hub.push(carded, "me/tiny-lora", token=TOKEN, retries=3, retry_wait=0.01, log=logged.append)
    message = one_line(e.value)
    assert fake_hub.count(r"/commit/") == 4 and len(logged) == 3 and not fake_hub.commits
    assert "me/tiny-lora" in message and "after 3 retries (503 Service Unavailable)" in message
    assert f"the run's files are intact, push again with `python -m ftlab.publish {carded}`" in message


def test_push_retries_when_the_hub_cannot_be_reached(carded, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused
    logged = []
    with pytest.raises(PublishError) as e:
        hub.push(carded, "me/tiny-lora", token=TOKEN, retries=1, retry_wait=0.01, log=logged.append)
    assert "http://127.0.0.1:9 still failing after 1 retries (ConnectError)" in one_line(e.value)
    assert logged == ["Hub upload failed (ConnectError); retry 1 of 1 in 0.01s"] and not fake_hub.requests


def test_push_with_a_rejected_token_fails_at_once(carded, fake_hub):
    fake_hub.reject_all = 401
    with pytest.raises(PublishError) as e:
        hub.push(carded, "me/tiny-lora", token=TOKEN, retry_wait=0.01, log=pytest.fail)
    message = one_line(e.value)
    assert "me/tiny-lora" in message and "set HF_TOKEN or hub.token, or run `hf auth login`" in message
    assert fake_hub.count(r"^/api/repos/create$") == 1 and fake_hub.count(r"/commit/") == 0


def test_push_without_write_access_names_the_fix(carded, fake_hub):
    fake_hub.reject_all = 403
    with pytest.raises(PublishError) as e:
        hub.push(carded, "someone-else/model", token=TOKEN, log=pytest.fail)
    assert "the token cannot write to someone-else/model" in one_line(e.value)


def test_push_refuses_offline_mode_and_a_run_without_adapter(carded, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE=1 is set; unset it"):
        hub.push(carded, "me/x", token=TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(PublishError, match="adapter is missing"):
        hub.push(tmp_path / "nothing", "me/x", token=TOKEN)


# ── preflight ─────────────────────────────────────────────────────────────────────────────────────────


def test_preflight_accepts_a_write_token(fake_hub):
    assert "Hub token of me accepted" in hub.preflight("me/tiny-lora", TOKEN)
    assert fake_hub.paths() == ["/api/whoami-v2"] and fake_hub.requests[0].authorization == f"Bearer {TOKEN}"


def test_preflight_rejects_bad_read_only_and_missing_tokens(fake_hub, monkeypatch, tmp_path):
    fake_hub.reject_all = 401
    with pytest.raises(PublishError) as e:
        hub.preflight("me/tiny-lora", TOKEN, retry_wait=0.01, log=pytest.fail)
    assert "`hf auth login`" in one_line(e.value) and fake_hub.count("whoami") == 1
    fake_hub.reject_all, fake_hub.token_role = None, "read"
    with pytest.raises(PublishError, match="read-only"):
        hub.preflight("me/tiny-lora", TOKEN)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(PublishError, match="no Hugging Face token found"):
        hub.preflight("me/tiny-lora", None)
    with pytest.raises(PublishError, match="not a valid Hub repo id"):
        hub.preflight("me/not a repo", TOKEN)
    with pytest.raises(PublishError, match="no repo to push to: set hub.repo_id"):
        hub.preflight(None, TOKEN)


def test_preflight_retries_then_reports_the_network(fake_hub):
    fake_hub.reject_all = 502
    logged = []
    with pytest.raises(PublishError) as e:
        hub.preflight("me/tiny-lora", TOKEN, retries=2, retry_wait=0.01, log=logged.append)
    assert "after 2 retries (502 Bad Gateway)" in one_line(e.value) and len(logged) == 2


# ── python -m ftlab.publish ───────────────────────────────────────────────────────────────────────────


def publish_cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "ftlab.publish", *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )


def test_publish_cli_writes_the_card_and_pushes(run_dir, fake_hub):
    result = publish_cli(run_dir, "--repo-id", "me/x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{fake_hub.url}/me/x"
    text = (run_dir / "README.md").read_text()
    assert f"python -m ftlab --rerun {run_dir}" in text and 'from_pretrained("me/x")' in text
    assert fake_hub.commits == [pushed_files(run_dir)] and fake_hub.repos["me/x"]["private"] is True
    assert {r.authorization for r in fake_hub.requests} == {f"Bearer {TOKEN}"}


def test_publish_cli_reports_a_rejected_token_in_one_line(run_dir, fake_hub):
    fake_hub.reject_all = 401
    result = publish_cli(run_dir, "--repo-id", "me/x")
    assert result.returncode == 1
    assert result.stderr.startswith("ftlab.publish: error: ") and result.stderr.count("\n") == 1
    assert "`hf auth login`" in result.stderr and TOKEN not in result.stderr


def test_publish_cli_takes_repo_and_visibility_from_the_run_config(run_dir, fake_hub):
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.hub.repo_id, cfg.hub.private = "me/from-config", False
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    result = publish_cli(run_dir)
    assert result.returncode == 0, result.stderr
    assert fake_hub.repos == {"me/from-config": {"private": False}}


def test_no_pushed_file_names_a_local_path(tmp_path, fake_hub):
    """A run whose data, base model copy and cache sit in a user's project folder: the Hub gets none of those
    names, the card names the data file by its name and content hash, the config and adapter stay usable."""
    import hashlib

    secret = tmp_path / "home" / "alice-smith" / "acme-secret-project"
    (secret / "base").mkdir(parents=True)
    data = secret / "chats.jsonl"
    data.write_text((ASSETS / "chat.jsonl").read_text())
    cfg = config(f"data.path={data}", f"model.path={secret / 'base'}", f"cache_dir={secret / 'cache'}")
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    for name, content in ADAPTER.items():
        (run / "adapter" / name).write_bytes(content)
    (run / "adapter" / "adapter_config.json").write_text(
        json.dumps({"r": 16, "base_model_name_or_path": str(secret / "cache" / "gguf" / "base-0123")})
    )
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    card.write(run, cfg, STATS, f"python -m ftlab model=tiny data.path={data} model.path={secret / 'base'}")
    hub.push(run, "me/private-paths", token=TOKEN)
    pushed = fake_hub.files
    assert set(pushed) == {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                           "chat_template.jinja", "README.md", "ftlab_config.yaml"}  # fmt: skip
    for name, content in pushed.items():
        for planted in (b"alice-smith", b"acme-secret-project", str(tmp_path).encode()):
            assert planted not in content, (name, planted)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:12]
    assert f"- source: `chats.jsonl (sha256 {digest})`" in pushed["README.md"].decode()
    saved = OmegaConf.create(pushed["ftlab_config.yaml"].decode())
    assert (saved.data.path, saved.model.path, saved.model.name) == ("chats.jsonl", None, "ftlab/tiny-llama")
    assert json.loads(pushed["adapter_config.json"])["base_model_name_or_path"] == "ftlab/tiny-llama"
    assert (run / ".hydra" / "config.yaml").read_text() == OmegaConf.to_yaml(cfg)  # the run keeps its own paths


def test_no_pushed_file_names_a_local_path_of_a_mix(tmp_path, fake_hub):
    """Several local sources in a user's folder: the card lists each by its file name and content hash, the pushed
    config names each by its file name."""
    import hashlib

    secret = tmp_path / "home" / "alice-smith" / "acme-secret-project"
    secret.mkdir(parents=True)
    chats, faq = secret / "chats.jsonl", secret / "faq.jsonl"
    chats.write_text((ASSETS / "chat.jsonl").read_text())
    faq.write_text('{"question": "Hours?", "answer": "9 to 5."}\n')
    mix = ["data=mix", f"data.sources=[{{path:{chats},weight:3}},{{path:{faq}}}]", "data.mix=weighted"]
    cfg = config(*mix, "data.path=null", f"cache_dir={secret / 'cache'}")
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    for name, content in ADAPTER.items():
        (run / "adapter" / name).write_bytes(content)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    card.write(run, cfg, STATS, f"python -m ftlab model=tiny data=mix data.sources=[{{path:{chats}}},{{path:{faq}}}]")
    hub.push(run, "me/private-mix", token=TOKEN)
    for name, content in fake_hub.files.items():
        for planted in (b"alice-smith", b"acme-secret-project", str(tmp_path).encode()):
            assert planted not in content, (name, planted)
    text = fake_hub.files["README.md"].decode()
    for label, file, weight in (("chats", chats, 3), ("faq", faq, 1)):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
        assert f"  - {label}: `{file.name} (sha256 {digest})`, weight {weight}" in text
    saved = OmegaConf.create(fake_hub.files["ftlab_config.yaml"].decode())
    assert [s.path for s in saved.data.sources] == ["chats.jsonl", "faq.jsonl"]
