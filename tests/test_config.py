"""Every shipped config composes and validates; bad input fails fast, in one line, leaving nothing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, run_main
from ftlab.config.checks import validate
from ftlab.config.compose import compose, config_dir
from ftlab.utils.errors import ConfigError

GROUPS = ["model", "quant", "lora", "data", "tracker", "optim", "trainer"]


def shipped_options():
    conf = Path(config_dir())
    return [(g, f.stem) for g in GROUPS for f in sorted((conf / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", shipped_options())
def test_every_shipped_option_composes_and_validates(group, option):
    extra = {
        ("data", "local"): ["data.path=/data/train.jsonl"],
        ("data", "hub"): ["data.name=org/set"],
        ("data", "mix"): ["data.sources=[{path:/data/chats.jsonl},{name:org/set}]"],
    }.get((group, option), [])
    cfg = validate(compose([f"{group}={option}"] + extra))
    assert cfg[group] is not None


def test_shipped_sweeps_compose_and_validate():
    cfg = validate(compose(["sweep=lora", "lora.r=8"]))
    assert cfg.lora.alpha == 16  # tied to the rank by the sweep definition


def test_canonical_invocation_composes():
    cfg = validate(compose(["model=llama3", "quant=4bit"]))
    assert cfg.model.name == "meta-llama/Llama-3.1-8B-Instruct"
    assert (cfg.quant.bits, cfg.quant.quant_type, cfg.quant.double_quant) == (4, "nf4", True)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("lora.r=0", "lora.r must be > 0 (got 0)"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("lora.dropout=1.0", "lora.dropout must be < 1"),
        ("lora.dropout=-0.1", "lora.dropout must be >= 0"),
        ("data.batch_size=0", "data.batch_size must be > 0"),
        ("quant.bits=3", "quant.bits must be one of null, 4, 8"),
        ("trainer.precision=16-mixed", "trainer.precision=16-mixed needs a GPU"),
        ("lora.target_modules=[]", "lora.target_modules is empty"),
        ("lora.init_weights=pissa quant=4bit", "cannot be combined with quant.bits=4"),
        ("trainer.max_steps=-1 trainer.max_epochs=-1", "trainer.max_steps and trainer.max_epochs"),
        ("model.attn_implementation=flash_attention_2", "flash_attention_2 needs a CUDA GPU"),
    ],
)
def test_out_of_range_and_incompatible_values_are_rejected(override, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate(compose(override.split()))


@pytest.mark.parametrize(
    "override,expected",
    [
        ("lora.r=0", "lora.r must be > 0 (got 0); e.g. lora.r=16"),
        ("lora.r=abc", "lora.r: Value 'abc' of type 'str' could not be converted to Integer"),
        ("lora.rank=8", "unknown key lora.rank"),
        ("model=gpt5", "model=gpt5: no such option; choose one of: llama3, mistral, qwen2.5, smollm2, tiny"),
        ("data.val_size=abc", "data.val_size: Value 'abc'"),
        # Hydra's append syntax adds a key; it meets the same schema check as any other
        ("+lora.foo=1", "unknown key lora.foo: not an ftlab option; keys under lora: r, alpha"),
        ("+trainer.bogus=3", "unknown key trainer.bogus: not an ftlab option"),
        ("+extra=1", "unknown key extra: not an ftlab option; top-level keys: model, quant"),
        ("model=tiny +model.random_init.depth=3", "unknown key model.random_init.depth"),
        # command lines Hydra would run otherwise than meant
        ("data.system_prompt=You are terse", "'are' is not key=value; a value with spaces must be quoted as one word: "
                                            "'data.system_prompt=You are'"),
        ("sweep=lora", "sweep=lora sets up a sweep, which runs only with -m; without it this would be one run: "
                       "python -m ftlab -m sweep=lora"),
        ("hydra.sweeper.n_trials=20", "hydra.sweeper.n_trials=20 sets up a sweep, which runs only with -m"),
        ("-m sweep=lora --cfg job", "--cfg job with -m: a sweep has no one config to show; drop -m"),
    ],
)  # fmt: skip
def test_cli_rejects_bad_overrides_in_one_line_and_writes_nothing(override, expected, workdir, capsys):
    result = run_main(*override.split(), capsys=capsys)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (workdir / "outputs").exists()


def test_cli_prints_composed_config_offline(workdir):
    result = run_cli("model=llama3", "quant=4bit", "--cfg", "job", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "name: meta-llama/Llama-3.1-8B-Instruct" in result.stdout and "bits: 4" in result.stdout
    assert not (workdir / "outputs").exists()


def test_cli_help_lists_groups(workdir, capsys):
    result = run_main("--help", capsys=capsys)
    assert result.returncode == 0
    assert "model: llama3, mistral, qwen2.5, smollm2, tiny" in result.stdout
    assert "sweep: dpo, grpo, lora" in result.stdout and "method: dpo, grpo, kto, orpo, sft, simpo" in result.stdout
    assert "lora.r=16" in result.stdout and "Adapter rank." in result.stdout  # options with their docs
    # the sweeper's options are declared in the schema like any other, so --help shows them
    assert "hydra.sweeper.n_trials=10" in result.stdout and "hydra.sweeper.pruner.name=none" in result.stdout


def test_cli_help_shows_what_a_run_gets_and_what_the_groups_set(workdir, capsys):
    """The defaults --help shows are those of the default groups (data=demo's 256 and 8, not the schema's 512 and 8);
    a group option that sets a key otherwise is named beside it; the search space's forms, range included, are there."""
    lines = run_main("--help", capsys=capsys).stdout.splitlines()

    def row(key: str) -> str:
        return next(line for line in lines if line.startswith(f"  {key}="))

    def others(key: str) -> dict:
        """{value: [option, ...]} of the note after the default: (group=a|b: value; group=c: other)."""
        note = re.search(r"\(([a-z]+=[^()]*)\)", row(key).split("  ")[1])
        pairs = [part.split(": ", 1) for part in note.group(1).split("; ")] if note else []
        return {value: picks.split("=", 1)[1].split("|") for picks, value in pairs}

    cfg = validate(compose([]))
    assert row("data.max_seq_len").split()[0] == f"data.max_seq_len={cfg.data.max_seq_len}" == "data.max_seq_len=256"
    assert {"hub", "local"} <= set(others("data.max_seq_len")["1024"])
    assert {"hub", "local"} <= set(others("data.batch_size")["4"])
    assert row("data.test_size").startswith("  data.test_size=0.1 ") and "local" in others("data.test_size")["0.0"]
    assert others("trainer.accelerator") == {"gpu": ["ddp", "fsdp", "gpu"]}
    assert others("trainer.devices") == {"2": ["ddp", "fsdp"]}
    assert row("model.name").split()[0] == f"model.name={cfg.model.name}" and others("model.name") == {}
    assert row("lora.r").split()[0] == "lora.r=16" and others("lora.r") == {"8": ["dora"]}
    assert any("range(2, 9, step=2)" in line for line in lines) and any("tag(log, interval(" in line for line in lines)


def test_an_unknown_key_in_a_saved_config_is_refused():
    """A config read back from YAML (a run dir's, edited by hand) is a plain mapping: the schema check catches it."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(compose(["model=tiny"])))
    cfg.lora.foo = 1
    with pytest.raises(ConfigError, match="unknown key lora.foo"):
        validate(cfg)


def test_composing_and_validating_do_not_import_torch():
    code = (
        "import sys; from ftlab.config.compose import compose; from ftlab.config.checks import validate; "
        "import ftlab.cli; validate(compose(['model=llama3', 'quant=4bit'])); "
        "heavy = [m for m in ('torch', 'transformers', 'lightning', 'peft') if m in sys.modules]; "
        "print(heavy); assert not heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_api_rejects_invalid_config_before_writing(workdir):
    from ftlab import FineTune

    with pytest.raises(ConfigError, match="lora.r must be > 0"):
        FineTune(compose(["lora.r=0"]))
    assert not (workdir / "outputs").exists()


def test_a_sweeps_best_trial_command_runs_as_one_run(cache_dir):
    """The best trial's command (sweep=NAME with every searched key set) is one run with the preset's settings; a
    sweep preset that leaves a searched key to the sampler is still refused without -m."""
    from hydra._internal.utils import get_args_parser

    from ftlab import cli

    searched = compose(["sweep=lora"], with_hydra=True).hydra.sweeper.params
    every = [f"{key}={_a_value(space)}" for key, space in searched.items()]
    cli.traps(get_args_parser().parse_args(["sweep=lora", *every]))
    with pytest.raises(ConfigError, match="sets up a sweep, which runs only with -m"):
        cli.traps(get_args_parser().parse_args(["sweep=lora", *every[1:]]))


def _a_value(space: str) -> str:
    inside = space[space.index("(") + 1 : space.rindex(")")]
    return inside.replace("log,", "").replace("interval(", "").split(",")[0].strip()


def test_command_lines_that_may_not_mean_what_they_say_are_warned_of(monkeypatch, cache_dir):
    import torch
    from hydra._internal.utils import get_args_parser

    from ftlab import cli

    def warned(*words):
        return cli.warnings_for(validate(compose(list(words))), get_args_parser().parse_args(list(words)))

    mine = "data.path=chats.jsonl"
    (line,) = warned(mine)
    assert line == (
        "data.path=chats.jsonl under data=demo keeps the demo's settings (data.max_seq_len=256, data.val_size=0.1, "
        "data.test_size=0.1, data.batch_size=8); add data=local for the settings of your own data"
    )
    assert warned("data=demo_pairs", mine)[0].startswith("data.path=chats.jsonl under data=demo_pairs keeps")
    assert warned("data=local", mine) == [] and warned("trainer.devices=2") == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    (line,) = warned("trainer.devices=2")
    assert line.startswith("trainer.devices=2 under trainer=cpu trains 2 CPU processes although CUDA GPUs are visible")
    assert line.endswith("add trainer=gpu (one GPU) or trainer=ddp (several)")
    assert warned("trainer=ddp") == []
