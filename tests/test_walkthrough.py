"""Every ftlab command of docs/walkthrough.md (and of the pages it leads to: hyperparameters.md, troubleshooting.md)
composes and validates as its command would take it, in this process: training and preview commands compose and
validate their config, a sweep passes ftlab's multirun checks, and the commands that use a run parse their options
(overrides of the run's config applied to what the walkthrough's training command saves). The user's files
(chats.jsonl, train.jsonl) are a test asset here. No model loads."""

import shlex
from pathlib import Path

import pytest

from ftlab.config.checks import validate
from ftlab.config.compose import compose
from ftlab.config.overrides import apply_overrides, parse

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "walkthrough.md"
PAGES = [PAGE, ROOT / "docs" / "hyperparameters.md", ROOT / "docs" / "troubleshooting.md"]
DATA = ROOT / "tests" / "assets" / "chat.jsonl"
USER_FILES = ("data.path=chats.jsonl", "data.path=train.jsonl")
# commands the test knows of but does not check yet: a module here is skipped, named in the skip reason
PENDING: set = set()


def commands(text: str) -> list:
    """The `python -m ftlab...` command lines of the page's fenced shell blocks, as the shell splits them."""
    found, fence = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip()
            continue
        if fence in ("bash", "sh", "shell", "console") and stripped.startswith("python -m ftlab"):
            found.append(shlex.split(stripped, comments=True))
    return found


def user_file(args: list) -> list:
    return [f"data.path={DATA}" if a in USER_FILES else a for a in args]


def check_training(args: list) -> None:
    from ftlab import cli

    if "-m" in args:  # a sweep: ftlab's multirun checks (preset, search space, pins), then one trial's config
        from ftlab.sweeps.space import split_arguments

        cli.prepare(list(args))
        fixed, _ = split_arguments([a for a in args if a != "-m"])
        validate(compose([a for a in fixed if not a.startswith(("hydra.", "hydra/"))]))
    else:
        cli.prepare([*args, "--cfg", "job"])  # the command-line traps and the config's validation; no run dir


def check_preview(args: list) -> None:
    if "-n" in args:
        i = args.index("-n")
        assert args[i + 1].isdigit(), args
        args = args[:i] + args[i + 2 :]
    validate(compose(args))


def check_run_command(command_cls, args: list) -> object:
    options, overrides = parse(args, command_cls)
    apply_overrides(saved_config(), overrides)
    return options


def saved_config():
    """The config the walkthrough's first training command saves: what its run-using commands start from."""
    first = next(c for c in commands(PAGE.read_text()) if c[2] == "ftlab" and "-m" not in c[3:])
    return validate(compose(user_file(first[3:])))


def check_evaluate(args: list) -> None:
    from ftlab.config.schema import EvaluateCommand

    check_run_command(EvaluateCommand, args)


def check_export(args: list) -> None:
    from ftlab.config.schema import ExportCommand
    from ftlab.export import refuse_unread_options
    from ftlab.exports import EXPORTS

    options = check_run_command(ExportCommand, args)
    refuse_unread_options(options, EXPORTS.get(options.format))


def check_infer(args: list) -> None:
    from ftlab.config.schema import InferCommand

    check_run_command(InferCommand, args)


def check_plan(args: list) -> None:
    """The plan's options parse and its run keys compose; tracing the step is tests/test_plan.py's."""
    from ftlab.config.schema import PlanCommand
    from ftlab.train.limits import parse_size

    options, overrides = parse(args, PlanCommand)
    validate(compose(overrides))
    parse_size(options.plan.device_memory)


CHECKS = {
    "ftlab.plan": check_plan,
    "ftlab": check_training,
    "ftlab.preview": check_preview,
    "ftlab.evaluate": check_evaluate,
    "ftlab.export": check_export,
    "ftlab.infer": check_infer,
}
COMMANDS = commands(PAGE.read_text())
EVERY = [(page.name, c) for page in PAGES for c in commands(page.read_text())]


@pytest.mark.parametrize("page, command", EVERY, ids=[f"{p}: {' '.join(c[2:6])}" for p, c in EVERY])
def test_the_command_composes(page, command, workdir):
    module, args = command[2], user_file(command[3:])
    if module in PENDING:
        pytest.skip(f"{module}: its commands are not checked here yet")
    assert module in CHECKS, f"docs/{page} runs {module}: add a check for it to CHECKS (or to PENDING)"
    CHECKS[module](args)
    assert not (workdir / "outputs").exists()


def test_the_walkthrough_covers_its_path():
    """The steps the page promises are there as commands, so an edit that drops one (or a fence the extraction no
    longer reads) fails here rather than leaving fewer commands checked."""
    kinds = [(c[2], "-m" in c[3:]) for c in COMMANDS]
    for kind in [("ftlab", False), ("ftlab", True), ("ftlab.preview", False), ("ftlab.plan", False)]:
        assert kind in kinds, f"docs/walkthrough.md has no {kind[0]}{' -m' if kind[1] else ''} command"
    assert {"ftlab.evaluate", "ftlab.export"} <= {c[2] for c in COMMANDS}
    training = saved_config()
    assert (training.model.name, training.quant.bits) == ("meta-llama/Llama-3.1-8B-Instruct", 4)
    assert (training.trainer.strategy, training.trainer.devices, training.trainer.accelerator) == ("ddp", 2, "gpu")
    assert training.data.chat_template == "llama3"  # the template the Ollama export has a TEMPLATE for


def test_a_command_that_does_not_compose_fails_here():
    with pytest.raises(Exception, match="lora.r must be > 0"):
        check_training(["model=llama3", "lora.r=0"])
    with pytest.raises(Exception, match="unknown option 'gguf.bits'"):
        check_export(["run=outputs/DATE/TIME", "format=gguf", "gguf.bits=4"])
    sweep = commands("```bash\npython -m ftlab -m sweep=lora 'optim.lr=tag(log, interval(5e-5, 5e-4))'  # a note\n```")
    assert sweep == [["python", "-m", "ftlab", "-m", "sweep=lora", "optim.lr=tag(log, interval(5e-5, 5e-4))"]]


@pytest.mark.slow
def test_the_plan_runs_on_a_cpu_as_the_page_shows_it(capsys, workdir):
    """The page's plan of QLoRA Llama 3.1 8B (no weights here, no GPU), with the gradient checkpointing it advises:
    the split and the figures the page quotes."""
    from conftest import run_main

    (command,) = [c for c in COMMANDS if c[2] == "ftlab.plan"]
    args = [*user_file(command[3:]), "model.gradient_checkpointing=true", "plan.switches=false"]
    result = run_main(*args, module="ftlab.plan", capsys=capsys)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "config: ftlab's copy of its config.json" in out and "8.03B parameters" in out
    for row in ("weights", "adapter + gradients", "optimizer state", "activations", "logits + loss"):
        assert f"  {row} " in out
    assert "peak per device: 17.24 GiB (ddp, 2 devices)" in out and "20.12 GiB usable: fits" in out
    assert "largest micro-batch at 1024 tokens: 5\n" in out
    page = PAGE.read_text()
    assert "model.gradient_checkpointing=true            peak  17.24 GiB" in page and "up to 5 rows fit" in page
