"""What the harness costs on top of a bare TRL script for the same LoRA training.

Two paths train the same LoRA adapter on the same base weights and the same sample data
(harness/samples/hr_handbook/train.jsonl, prompt/completion chat pairs, loss on the completion only):

- bare: this process, plain transformers + peft + trl. Timed from before the model load to after the
  adapter is saved: load (tokenizer + model), build (rows + SFTConfig + SFTTrainer), train
  (trainer.train() only), save (adapter to a temp dir).
- harness: `python -m harness model=<m> method=instruct ...` in a subprocess, with a 1-example,
  1-token eval so that training dominates. Its figures come from the ledger line it writes:
  cost.load_s, train.train_s (trainer.train() only), train.tokens_per_s, cost.eval_s; "other" is the
  subprocess wall time minus those (interpreter start-up, imports, Hydra, data checks, trainer build,
  adapter save, scoring, ledger write).

harness.models is used only to locate/build the weights (gguf_safetensors_cache for smollm2_135m,
build_tiny_random for tiny_random), so both paths train on identical weights. The bare path's
hyperparameters come from the harness's own config files, composed by Hydra with the same overrides the
subprocess gets (conf/qlora/default.yaml, the optional conf/tuning/<m>.yaml, conf/model/<m>.yaml for
the LoRA target modules, conf/data/hr_handbook.yaml for the system prompt), so a preset that changes
alpha or the target modules changes both paths; the options below (steps, batch size, max length, r,
lr) are passed to both. The script checks the ledger's config against what the bare path used.

Run (from the repo root; the first smollm2 run converts the GGUF once, outside the timings):

    .venv/bin/python bench/overhead.py --model smollm2_135m --steps 10
    .venv/bin/python bench/overhead.py --model tiny_random --steps 5 --repeats 3

With --repeats N both paths run N times (alternating) and the table shows medians.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import time  # noqa: E402

_T_START = time.perf_counter()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import datasets  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from harness.config import DataConfig, ModelConfig, RunConfig, resolve_data_dir  # noqa: E402
from harness.models import build_tiny_random, gguf_safetensors_cache, locate_gguf  # noqa: E402

BARE_IMPORT_S = time.perf_counter() - _T_START  # torch, transformers, peft, trl, datasets (+ harness.models)

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="smollm2_135m")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=1)
    return p.parse_args()


def overrides(args) -> list[str]:
    """The Hydra overrides both paths get (the subprocess adds results_dir and the thread count)."""
    return [
        f"model={args.model}", "method=instruct", "tracker=none", "progress=false", "force=true",
        f"qlora.max_steps={args.steps}",
        f"qlora.batch_size={args.batch_size}",
        f"qlora.max_length={args.max_length}",
        f"qlora.r={args.r}",
        f"qlora.lr={args.lr!r}",
        "eval.num_examples=1",
        "eval.max_new_tokens=1",
    ]  # fmt: skip


def compose_config(args) -> RunConfig:
    """The config `python -m harness <overrides>` would run with: the bare path reads its settings here."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides(args))
    return OmegaConf.to_object(cfg)


def train_rows(data: DataConfig, model_cfg: ModelConfig) -> list[dict]:
    """The same prompt/completion rows harness.train.train_instruct builds."""
    path = resolve_data_dir(data) / data.train_file
    records = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    if data.max_train_examples is not None:
        records = records[: data.max_train_examples]
    rows = []
    for r in records:
        user = data.prompt_template.format(question=r["question"], context="")
        if not data.system_prompt:
            prompt = [{"role": "user", "content": user}]
        elif model_cfg.supports_system_role:
            prompt = [{"role": "system", "content": data.system_prompt}, {"role": "user", "content": user}]
        else:
            prompt = [{"role": "user", "content": f"{data.system_prompt}\n\n{user}"}]
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": r["answer"]}]})
    return rows


def lora_summary(q, target_modules) -> dict:
    """The settings that must match between the paths; compared against the ledger's config."""
    return {
        "r": q["r"], "alpha": q["alpha"], "dropout": q["dropout"], "target_modules": sorted(target_modules),
        "lr": q["lr"], "max_steps": q["max_steps"], "batch_size": q["batch_size"], "grad_accum": q["grad_accum"],
        "max_length": q["max_length"], "warmup_ratio": q["warmup_ratio"], "weight_decay": q["weight_decay"],
        "lr_scheduler": q["lr_scheduler"], "seed": q["seed"],
    }  # fmt: skip


def run_bare(args, cfg: RunConfig, weights: Path | None) -> dict:
    q, model_cfg = cfg.qlora, cfg.model
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="overhead-bare-") as tmp:
        t0 = time.perf_counter()
        if weights is None:
            model, tokenizer = build_tiny_random(model_cfg, q.seed)
        else:
            tokenizer = AutoTokenizer.from_pretrained(weights)
            model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        t_load = time.perf_counter()

        train_dataset = Dataset.from_list(train_rows(cfg.data, model_cfg))
        peft_config = LoraConfig(
            r=q.r,
            lora_alpha=q.alpha,
            lora_dropout=q.dropout,
            target_modules=list(q.target_modules or model_cfg.lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        sft_args = SFTConfig(
            output_dir=str(Path(tmp) / "trainer"),
            per_device_train_batch_size=q.batch_size,
            gradient_accumulation_steps=q.grad_accum,
            learning_rate=q.lr,
            num_train_epochs=q.epochs,
            max_steps=q.max_steps,
            max_length=q.max_length,
            warmup_steps=q.warmup_ratio,  # as the harness passes it: a float < 1 is a ratio
            weight_decay=q.weight_decay,
            lr_scheduler_type=q.lr_scheduler,
            seed=q.seed,
            data_seed=q.seed,
            logging_steps=q.logging_steps,
            activation_checkpointing=False,
            use_cpu=True,
            # SFTConfig defaults to bf16=True even with use_cpu; the harness trains fp32 on CPU (hardware
            # presets with supports_bf16: false), so the bare path must say so too or it runs bf16 autocast.
            bf16=False,
            fp16=False,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            completion_only_loss=True,
        )
        trainer = SFTTrainer(
            model=model, args=sft_args, train_dataset=train_dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.remove_callback(PrinterCallback)  # tqdm is off; don't dump every log dict to stdout
        t_build = time.perf_counter()

        trainer.train()
        t_train = time.perf_counter()

        trainer.model.save_pretrained(Path(tmp) / "adapter")
        t_save = time.perf_counter()

        history = trainer.state.log_history
        losses = [float(h["loss"]) for h in history if "loss" in h]
        tokens = max((int(h["num_tokens"]) for h in history if "num_tokens" in h), default=0)
        result = {
            "load_s": t_load - t0,
            "train_s": t_train - t_build,
            "other_s": (t_build - t_load) + (t_save - t_train),  # build rows + trainer, save adapter
            "total_s": t_save - t0,
            "tokens": tokens,
            "tokens_per_s": tokens / (t_train - t_build),
            "steps": trainer.state.global_step,
            "final_loss": losses[-1] if losses else None,
            "threads": torch.get_num_threads(),
            "lora": lora_summary(vars(q), peft_config.target_modules),
        }
    del trainer, model
    gc.collect()
    return result


def run_harness(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="overhead-harness-") as tmp:
        cmd = [sys.executable, "-m", "harness", *overrides(args), f"results_dir={tmp}"]
        if args.threads:
            cmd.append(f"hardware.num_threads={args.threads}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        ledger = Path(tmp) / "runs.jsonl"
        if proc.returncode != 0 or not ledger.is_file():
            sys.exit(f"harness run failed (rc={proc.returncode}):\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
        record = json.loads(ledger.read_text("utf-8").splitlines()[-1])
    train, cost = record["train"], record["cost"]
    losses = train.get("losses") or []
    eval_s = float(cost.get("eval_s", 0.0))
    return {
        "load_s": float(cost["load_s"]),
        "train_s": float(train["train_s"]),
        "eval_s": eval_s,
        "other_s": wall - float(cost["load_s"]) - float(train["train_s"]) - eval_s,
        "total_s": wall,
        "tokens": int(train["train_tokens"]),
        "tokens_per_s": float(train["tokens_per_s"]),
        "steps": int(train["steps"]),
        "final_loss": float(losses[-1][1]) if losses else None,
        "threads": record["config"]["hardware"].get("num_threads"),
        "lora": lora_summary(
            record["config"]["qlora"],
            record["config"]["qlora"]["target_modules"] or record["config"]["model"]["lora_target_modules"],
        ),
    }


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    args = parse_args()
    datasets.disable_progress_bars()
    cfg = compose_config(args)
    model_cfg, q = cfg.model, cfg.qlora

    weights, locate_s = None, None
    if args.model != "tiny_random":
        cache_dir = Path(cfg.cache_dir).expanduser()
        weights = gguf_safetensors_cache(model_cfg, cache_dir)  # converts once; not timed
        t = time.perf_counter()
        gguf_safetensors_cache(model_cfg, cache_dir)  # what the harness's load_s pays to find the cache
        locate_s = time.perf_counter() - t
        print(f"weights: {weights} (from {locate_gguf(model_cfg).name})")

    print(
        f"model={args.model} steps={q.max_steps} batch={q.batch_size} max_length={q.max_length} r={q.r} "
        f"alpha={q.alpha} lr={q.lr} targets={','.join(q.target_modules or model_cfg.lora_target_modules)} "
        f"threads={args.threads or 'default'} repeats={args.repeats}"
    )
    busy = psutil.cpu_percent(interval=1.0)  # system-wide, over 1 s while this process sleeps
    if busy > 20:
        print(f"WARNING: the CPU is {busy:.0f}% busy before starting: another process is using it, "
              "so every timing below is inflated and noisy (thread oversubscription can slow training 5-10x).")
    bare_runs, harness_runs = [], []
    for i in range(args.repeats):
        bare_runs.append(run_bare(args, cfg, weights))
        harness_runs.append(run_harness(args))
        b, h = bare_runs[-1], harness_runs[-1]
        print(
            f"  repeat {i + 1}/{args.repeats}: bare train {b['train_s']:.2f}s total {b['total_s']:.2f}s | "
            f"harness train {h['train_s']:.2f}s wall {h['total_s']:.2f}s"
        )

    for b, h in zip(bare_runs, harness_runs, strict=True):
        if b["steps"] != h["steps"]:
            print(f"WARNING: optimizer steps differ: bare {b['steps']} vs harness {h['steps']}")
        if b["lora"] != h["lora"]:
            diff = {k: (b["lora"][k], h["lora"][k]) for k in b["lora"] if b["lora"][k] != h["lora"].get(k)}
            print(f"WARNING: the paths trained with different settings (bare, harness): {diff}")
    print(
        f"optimizer steps: bare {bare_runs[-1]['steps']}, harness {harness_runs[-1]['steps']} | "
        f"train tokens: bare {bare_runs[-1]['tokens']}, harness {harness_runs[-1]['tokens']} | "
        f"threads: bare {bare_runs[-1]['threads']}, harness {harness_runs[-1]['threads']}"
    )
    print(
        "final loss (per repeat): bare "
        + ", ".join(fmt(r["final_loss"], ".4f") for r in bare_runs)
        + " | harness "
        + ", ".join(fmt(r["final_loss"], ".4f") for r in harness_runs)
    )

    stat = "median of " + str(args.repeats) if args.repeats > 1 else "1 run"
    print(f"\n{'path':<8} {'load s':>7} {'train s':>8} {'load+train':>10} {'eval s':>7} {'other s':>8} "
          f"{'total s':>8} {'train tok/s':>11}   ({stat})")  # fmt: skip
    table = {}
    for name, runs in (("bare", bare_runs), ("harness", harness_runs)):
        row = {k: median(runs, k) for k in ("load_s", "train_s", "eval_s", "other_s", "total_s", "tokens_per_s")}
        row["load_train_s"] = median([{"v": r["load_s"] + r["train_s"]} for r in runs], "v")
        table[name] = row
        print(
            f"{name:<8} {fmt(row['load_s']):>7} {fmt(row['train_s']):>8} {fmt(row['load_train_s']):>10} "
            f"{fmt(row['eval_s']):>7} {fmt(row['other_s']):>8} {fmt(row['total_s']):>8} "
            f"{fmt(row['tokens_per_s'], '.0f'):>11}"
        )
    b, h = table["bare"], table["harness"]
    print(
        f"\nharness/bare: train_s x{h['train_s'] / b['train_s']:.2f}, "
        f"load+train x{h['load_train_s'] / b['load_train_s']:.2f}, total x{h['total_s'] / b['total_s']:.2f}"
    )
    print(
        "bare total = load + build (rows, SFTConfig, SFTTrainer) + train + save adapter, in this process.\n"
        "harness total = the whole `python -m harness` subprocess wall time, which includes interpreter start-up,\n"
        "  imports, Hydra, trainer build, adapter save, a 1-example eval (eval s), scoring and the ledger write;\n"
        f"  other s = total - load - train - eval. For reference, this script's own imports took {BARE_IMPORT_S:.2f}s."
    )
    if locate_s is not None:
        print(f"harness load s includes locating the weight cache (sha256 of the GGUF): {locate_s:.2f}s here.")


if __name__ == "__main__":
    main()
