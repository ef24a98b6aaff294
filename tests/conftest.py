"""Shared test setup: no hub access, no telemetry, tiny models, Hydra composition helper."""

import os

# Before any Hugging Face import anywhere in the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAGAS_DO_NOT_TRACK"] = "true"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_SILENT"] = "true"

import signal
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """`@pytest.mark.optional(available, why)`: a test of an optional part (a browser, an optional model package)
    is skipped where the part is missing, but fails in CI (CI set): a CI run must not pass without it."""
    for mark in item.iter_markers("optional"):
        available, why = mark.args
        if available:
            continue
        if in_ci():
            pytest.fail(f"{why}; CI (CI={os.environ['CI']}) must run this test: .ci/run and make test-all install it",
                        pytrace=False)
        pytest.skip(why)


@pytest.fixture
def compose_cfg():
    """Compose the real config tree with overrides, as `python -m harness key=value ...` would."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture
def run_harness(tmp_path):
    """Run `python -m harness` in a subprocess, as a user would; results land in tmp_path."""
    import subprocess

    def _run(*args: str, results_dir: Path | None = None, env: dict | None = None, timeout: int = 600):
        results = results_dir or tmp_path / "results"
        cmd = [sys.executable, "-m", "harness", *args, f"results_dir={results}"]
        return subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )

    return _run


TINY_CELL = ("model=tiny_random", "qlora.max_steps=3", "eval.num_examples=4", "eval.max_new_tokens=8", "progress=false",
             "tracker=wandb_offline")


@pytest.fixture(scope="session")
def offline_sweep(tmp_path_factory):
    """A real results folder with its ledger and offline W&B runs: four completed cells (base and instruct, two
    seeds each), one that failed in training and one the memory preflight refused, in three sweeps."""
    import subprocess

    results = tmp_path_factory.mktemp("sweep") / "results"
    env = {**os.environ, "WANDB_SILENT": "true"}
    for args in (("method=base,instruct", "qlora.seed=1,2"), ("method=instruct", "fail_at=train"),
                 ("method=base", "hardware.memory_gb=0.5")):
        subprocess.run([sys.executable, "-m", "harness", "-m", *TINY_CELL, *args, f"results_dir={results}"],
                       cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    ledger = (results / "runs.jsonl").read_text().splitlines()
    assert len(ledger) == 6, ledger  # a failed cell exits non-zero; the ledger says what happened
    return results


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node Slurm cluster for the session (tests/slurm_cluster.py): Debian's slurm-wlm and munge,
    installed when absent. Where that is impossible (not root, no apt) the tests that use it skip, saying why;
    under CI=1 they fail instead, so CI never passes without having run them."""
    import shutil

    import slurm_cluster as cluster_module

    reason = cluster_module.why_not()
    if reason:
        if in_ci():
            pytest.fail(f"CI={os.environ['CI']} needs the Slurm test cluster: {reason}", pytrace=False)
        pytest.skip(reason)
    # A SIGTERM to pytest (`timeout`, a CI runner giving up) becomes an interrupt, so the teardown below still
    # cancels the jobs and stops the daemons (the daemons also die with pytest: tests/slurm_cluster.py).
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    cluster = cluster_module.start_cluster()
    try:
        yield cluster
    finally:
        try:
            cluster.cancel_all()
        finally:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt(signum, frame):
    # Once: `timeout` signals pytest and then its whole process group, and a second interrupt would cut the
    # teardown short.
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def slurm(slurm_cluster):
    """The session's Slurm cluster, left with no job running for the next test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()
