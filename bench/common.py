"""What bench/overhead.py and bench/train_throughput.py share.

Both compare an in-process baseline (plain transformers + peft + trl objects, built in the script) with a
`python -m harness` subprocess on the same weights, data and settings. This module holds the parts that must
be the same on both sides and in both scripts: the command-line options, the Hydra overrides and the config
they compose to, the train set formatted by the harness's own harness.core.data.prompt_messages, the baseline's
SFTConfig keywords (the harness's own sft_arguments from harness.cell.train, on the CPU; its LoraConfig keywords
are harness.cell.train.lora_arguments), the base weights, the ledger line the subprocess writes, the settings that
must match between the paths, and the table helpers (median, number formatting, the busy-CPU warning).

The scripts import it as `from common import ...`: Python puts a script's folder on sys.path when it runs
`python bench/<script>.py`, and each script also adds its folder explicitly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.cell.models import build_tiny_random, gguf_safetensors_cache, locate_gguf
from harness.cell.train import lora_arguments, sft_arguments
from harness.core.config import RunConfig
from harness.core.data import load_dataset, prompt_messages

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def argument_parser(
    description: str, *, max_length: int, r: int | None = None, lr: float | None = None, threads_help: str
) -> argparse.ArgumentParser:
    """The options both scripts take; r and lr left at None mean "the harness config's"."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="smollm2_135m")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=max_length)
    default = "(default: the harness config's)"
    p.add_argument("--r", type=int, default=r, help=None if r is not None else f"LoRA rank {default}")
    p.add_argument("--lr", type=float, default=lr, help=None if lr is not None else f"learning rate {default}")
    p.add_argument("--threads", type=int, default=None, help=threads_help)
    p.add_argument("--repeats", type=int, default=1)
    return p


def harness_overrides(args, *extra: str) -> list[str]:
    """The Hydra overrides both paths get: an instruct run with a 1-example, 1-token eval so that training
    dominates; `extra` is appended (the subprocess adds results_dir itself)."""
    o = [
        f"model={args.model}", "method=instruct", "tracker=none", "progress=false", "force=true",
        f"qlora.max_steps={args.steps}",
        f"qlora.batch_size={args.batch_size}",
        f"qlora.max_length={args.max_length}",
    ]  # fmt: skip
    if args.r is not None:
        o.append(f"qlora.r={args.r}")
    if args.lr is not None:
        o.append(f"qlora.lr={args.lr!r}")
    return [*o, "eval.num_examples=1", "eval.max_new_tokens=1", *extra]


def compose_config(overrides: list[str]) -> RunConfig:
    """The config `python -m harness <overrides>` would run with: the baseline reads its settings here."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(cfg)


def train_conversations(cfg: RunConfig) -> list[dict]:
    """The train set as conversational prompt/completion rows, formatted by the harness's own
    harness.core.data.prompt_messages exactly as harness.cell.train.instruct_dataset does it (no retrieval context)."""
    dataset = load_dataset(cfg.data)  # the train split as the harness reads it, and the label set a prompt lists
    return [
        {
            "prompt": prompt_messages(record, cfg.data, cfg.model, labels=dataset.labels),
            "completion": [{"role": "assistant", "content": record.answer}],
        }
        for record in dataset.train
    ]


def target_modules(cfg: RunConfig) -> list[str]:
    return lora_arguments(cfg)["target_modules"]


def baseline_sft_kwargs(cfg: RunConfig, output_dir: Path, **overrides) -> dict:
    """trl.SFTConfig keywords a baseline shares with the harness's training arguments (the harness's own
    sft_arguments, on the CPU: fp32), with what makes each script's baseline what it is (loss mask, padding,
    sampling) in `overrides`."""
    return {**sft_arguments(cfg, output_dir, on_cuda=False), **overrides}


def locate_weights(cfg: RunConfig) -> Path | None:
    """The safetensors cache the harness loads (converted from the GGUF once, untimed); None for
    tiny_random, whose weights load_base builds."""
    if cfg.model.name == "tiny_random":
        return None
    weights = gguf_safetensors_cache(cfg.model, Path(cfg.cache_dir).expanduser())
    print(f"weights: {weights} (from {locate_gguf(cfg.model).name})")
    return weights


def load_base(cfg: RunConfig, weights: Path | None):
    """The base model (fp32) and tokenizer, identical to the ones the harness trains."""
    if weights is None:
        model, tokenizer = build_tiny_random(cfg.model, cfg.qlora.seed)
    else:
        tokenizer = AutoTokenizer.from_pretrained(weights)
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def settings(q: dict, modules) -> dict:
    """The settings that must match between the paths; compared against the ledger's config."""
    return {
        "r": q["r"], "alpha": q["alpha"], "dropout": q["dropout"], "target_modules": sorted(modules),
        "lr": q["lr"], "max_steps": q["max_steps"], "batch_size": q["batch_size"], "grad_accum": q["grad_accum"],
        "max_length": q["max_length"], "warmup_ratio": q["warmup_ratio"], "weight_decay": q["weight_decay"],
        "lr_scheduler": q["lr_scheduler"], "seed": q["seed"],
    }  # fmt: skip


def trainer_figures(trainer, train_s: float) -> dict:
    """A baseline's figures from its trainer, keyed as ledger_figures keys the harness's."""
    history = trainer.state.log_history
    losses = [float(h["loss"]) for h in history if "loss" in h]
    tokens = max((int(h["num_tokens"]) for h in history if "num_tokens" in h), default=0)
    return {
        "steps": trainer.state.global_step,
        "train_s": train_s,
        "tokens": tokens,
        "tokens_per_s": tokens / train_s,
        "final_loss": losses[-1] if losses else None,
        "threads": torch.get_num_threads(),
    }


def run_harness_cli(entry: list[str], overrides: list[str], results_dir: Path, env: dict | None = None):
    """Runs `python <entry> <overrides> results_dir=<results_dir>` from the repo root and returns the ledger
    line it wrote, the finished process and its wall time; exits with the stderr tail if the run failed."""
    cmd = [sys.executable, *entry, *overrides, f"results_dir={results_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    ledger = Path(results_dir) / "runs.jsonl"
    if proc.returncode != 0 or not ledger.is_file():
        sys.exit(f"harness run failed (rc={proc.returncode}):\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
    record = json.loads(ledger.read_text("utf-8").splitlines()[-1])
    if record.get("status") != "completed":
        sys.exit(f"harness run did not complete: {record.get('status')}: {record.get('error', '')[:2000]}")
    return record, proc, wall


def run_harness_sweep(overrides: list[str], results_dir: Path) -> tuple[float, list[dict]]:
    """Runs `python -m harness -m <overrides> results_dir=<results_dir>` offline from the repo root and returns
    its wall time and the ledger lines it added; exits with the output's tail if the sweep failed."""
    import os

    ledger = Path(results_dir) / "runs.jsonl"
    before = len(ledger.read_text("utf-8").splitlines()) if ledger.is_file() else 0
    cmd = [sys.executable, "-m", "harness", "-m", *overrides, f"results_dir={results_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed (rc={proc.returncode}):\n{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    lines = ledger.read_text("utf-8").splitlines() if ledger.is_file() else []
    return wall, [json.loads(line) for line in lines[before:]]


def ledger_figures(record: dict) -> dict:
    """The harness's figures from its ledger line, keyed as trainer_figures keys a baseline's."""
    train, config = record["train"], record["config"]
    losses = train.get("losses") or []
    return {
        "steps": int(train["steps"]),
        "train_s": float(train["train_s"]),
        "tokens": int(train["train_tokens"]),
        "tokens_per_s": float(train["tokens_per_s"]),
        "final_loss": float(losses[-1][1]) if losses else None,
        "threads": config["hardware"].get("num_threads"),
        "settings": settings(
            config["qlora"], config["qlora"]["target_modules"] or config["model"]["lora_target_modules"]
        ),
    }


def run_alternating(repeats: int, run_base: Callable[[], dict], run_harness: Callable[[], dict],
                    describe: Callable[[dict, dict], str]) -> tuple[list[dict], list[dict]]:
    """Runs the baseline and the harness `repeats` times, alternating, with a progress line per repeat."""
    base_runs, harness_runs = [], []
    for i in range(repeats):
        base_runs.append(run_base())
        harness_runs.append(run_harness())
        print(f"  repeat {i + 1}/{repeats}: {describe(base_runs[-1], harness_runs[-1])}")
    return base_runs, harness_runs


def warn_if_differ(base: dict, harness: dict, base_name: str) -> None:
    """Warns where the two paths ran different step counts or settings."""
    if base["steps"] != harness["steps"]:
        print(f"WARNING: optimizer steps differ: {base_name} {base['steps']} vs harness {harness['steps']}")
    if base["settings"] != harness["settings"]:
        b, h = base["settings"], harness["settings"]
        diff = {k: (v, h.get(k)) for k, v in b.items() if v != h.get(k)}
        print(f"WARNING: the paths trained with different settings ({base_name}, harness): {diff}")


def warn_if_busy(when: str) -> None:
    busy = psutil.cpu_percent(interval=1.0)  # system-wide, over 1 s while this process sleeps
    if busy > 20:
        print(f"WARNING: the CPU is {busy:.0f}% busy {when}: another process is using it, so the timings are "
              "inflated and noisy (on 2 cores, thread oversubscription can slow training 5-10x or more).")


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def formatter(default_spec: str, missing: str) -> Callable[..., str]:
    """fmt(value, spec=default_spec): the value formatted, or `missing` for None."""

    def fmt(value, spec: str = default_spec) -> str:
        return missing if value is None else format(value, spec)

    return fmt
