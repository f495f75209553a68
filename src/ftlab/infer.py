"""`python -m ftlab.infer run=RUN [prompt=... | input=prompts.jsonl] [generation.*=...]`: answer with a tuned model.

  prompt="..."          prints the answer to stdout (stage lines go to stderr)
  input=prompts.jsonl   writes one JSON line per input line: its messages, the exact prompt text, the output,
                        the reference if the line had one, and the generation settings
  neither               an interactive chat (/reset clears the history, /exit or Ctrl+D ends)

The base model is loaded and quantized as the run was trained (override with quant=..., for instance), and
prompts are rendered with the chat template saved beside the adapter, tokenized exactly as in training: all
through the recipe's stages (FineTune, or a subclass passed as `recipe_cls`).
"""

import json
import sys
from pathlib import Path
from typing import List, Optional

from ftlab.config.overrides import run_command
from ftlab.config.schema import InferCommand
from ftlab.use import prompts, runs
from ftlab.utils.console import Stages, info, setup_logging
from ftlab.utils.errors import ConfigError
from ftlab.utils.files import new_output, unused_path, write_jsonl

# torch, transformers and the recipe load inside infer() and chat(), once the command line is known to be good: a
# mistyped option is refused at once, not after seconds of imports


def output_path(options: InferCommand) -> Path:
    """Where `input`'s answers go: `output`, which must not exist, or <input>-outputs[-N].jsonl beside it."""
    if options.output is not None:
        return new_output(Path(options.output).expanduser(), "results")
    source = Path(options.input).expanduser()
    return unused_path(source.with_name(f"{source.stem}-outputs.jsonl"))


def record(prompt: prompts.Prompt, answer, run: runs.Run, options: InferCommand) -> dict:
    """One output line (`answer`: a generate.Answer): enough to see what was asked, what came back and how, without
    the run at hand."""
    from ftlab.use import generate

    gen = generate.settings(run.cfg.generation)
    if run.cfg.generation.do_sample:
        gen["seed"] = run.cfg.seed
    line = {
        "line": int(prompt.where.rsplit(":", 1)[1]),
        "messages": prompt.messages,
        "prompt": answer.prompt,
        "output": answer.output,
        "new_tokens": answer.new_tokens,
    }
    if prompt.reference is not None:
        line["reference"] = prompt.reference
    return {**line, "model": run.label, "adapter": run.adapter is not None and not options.base_only, "generation": gen}


def chat(trained, model, system: Optional[str]) -> None:
    """Read user turns from stdin until /exit or end of input; the history makes it a conversation. `trained`: the
    run (train/trained.py)."""
    from transformers import TextStreamer

    from ftlab.use import generate

    tokenizer, cfg = trained.tokenizer, trained.cfg
    start: List[dict] = [{"role": "system", "content": system}] if system else []
    history = list(start)
    tty = sys.stdin.isatty()
    info("chat: type a message; /reset clears the history, /exit or Ctrl+D ends")
    while True:
        if tty:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            break
        if not line.strip():
            continue
        if line.strip() == "/reset":
            history = list(start)
            info("history cleared")
            continue
        history.append({"role": "user", "content": line.strip()})
        # on a terminal the answer appears as it is generated; piped, it is printed whole
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if tty else None
        prompt = trained.prompt(history, f"turn {len(history) // 2 + 1}")
        answer = generate.answers(model, tokenizer, [prompt], cfg.generation, cfg.seed, streamer=streamer)[0]
        if not tty:
            print(answer.output, flush=True)
        history.append({"role": "assistant", "content": answer.output})


def infer(options: InferCommand, overrides: List[str], recipe_cls=None) -> None:
    """`recipe_cls`: FineTune, or the subclass whose stages trained the run."""
    if options.prompt is not None and options.input is not None:
        raise ConfigError("prompt= and input= both given; answer one prompt or a file of them")
    from ftlab.train.recipe import FineTune
    from ftlab.train.trained import Trained
    from ftlab.use import generate

    setup_logging(stream="stderr")  # stdout carries the answers
    stages = Stages(("Finding the run", "Loading the model", "Generating"))
    stages.start("Finding the run", options.run)
    run = runs.locate(options.run, overrides)
    trained = Trained(run, recipe_cls or FineTune)
    batch = target = None
    if options.input is not None:  # a bad file fails now, not after the model has loaded
        batch = trained.prompts(Path(options.input).expanduser(), options.system)
        target = output_path(options)
        info(f"{len(batch)} prompts from {options.input}")
    what = "base model alone" if options.base_only or run.adapter is None else f"adapter {run.adapter}"
    stages.start("Loading the model", f"{run.cfg.model.name}, {what}")
    model = trained.model(base_only=options.base_only)
    info(f"precision: {trained.stages.precision}; generation: {json.dumps(generate.settings(run.cfg.generation))}")
    stages.start("Generating")
    gen, seed = run.cfg.generation, run.cfg.seed
    if options.prompt is not None:
        messages = ([{"role": "system", "content": options.system}] if options.system else []) + [
            {"role": "user", "content": options.prompt}
        ]
        print(generate.answers(model, trained.tokenizer, [trained.prompt(messages)], gen, seed)[0].output, flush=True)
    elif batch is not None:
        encoded = [trained.prompt(p.messages, p.where) for p in batch]
        answers = generate.answers(model, trained.tokenizer, encoded, gen, seed, progress=True)
        write_jsonl(target, [record(p, a, run, options) for p, a in zip(batch, answers)])
        info(f"wrote {len(answers)} answers to {target}")
    else:
        chat(trained, model, options.system)
    stages.finish()


def main(argv: Optional[List[str]] = None) -> None:
    run_command(argv, InferCommand, "ftlab.infer", "answer prompts with a tuned model (or its base alone)", infer)


if __name__ == "__main__":
    main()
