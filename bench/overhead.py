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

harness.cell.models is used only to locate/build the weights (gguf_safetensors_cache for smollm2_135m,
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

import gc  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, however this script is started

import common  # noqa: E402
import datasets  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import PrinterCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from harness.cell.models import gguf_safetensors_cache  # noqa: E402
from harness.cell.train import lora_arguments  # noqa: E402
from harness.core.config import RunConfig  # noqa: E402

BARE_IMPORT_S = time.perf_counter() - _T_START  # torch, transformers, peft, trl, datasets (+ harness.cell.models)

fmt = common.formatter(".2f", missing="-")


def parse_args():
    return common.argument_parser(
        __doc__.split("\n\n")[0], max_length=256, r=8, lr=2e-4, threads_help="torch threads (default: torch's default)"
    ).parse_args()


def overrides(args) -> list[str]:
    """The Hydra overrides both paths get (the subprocess adds results_dir and the thread count)."""
    return common.harness_overrides(args)


def run_bare(args, cfg: RunConfig, weights: Path | None) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="overhead-bare-") as tmp:
        t0 = time.perf_counter()
        model, tokenizer = common.load_base(cfg, weights)
        t_load = time.perf_counter()

        train_dataset = Dataset.from_list(common.train_conversations(cfg))  # prompt/completion, as the harness
        peft_config = LoraConfig(**lora_arguments(cfg))
        sft_args = SFTConfig(**common.baseline_sft_kwargs(cfg, Path(tmp) / "trainer", completion_only_loss=True))
        trainer = SFTTrainer(
            model=model, args=sft_args, train_dataset=train_dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.remove_callback(PrinterCallback)  # tqdm is off; don't dump every log dict to stdout
        t_build = time.perf_counter()

        trainer.train()
        t_train = time.perf_counter()

        trainer.model.save_pretrained(Path(tmp) / "adapter")
        t_save = time.perf_counter()

        result = {
            **common.trainer_figures(trainer, t_train - t_build),
            "load_s": t_load - t0,
            "other_s": (t_build - t_load) + (t_save - t_train),  # build rows + trainer, save adapter
            "total_s": t_save - t0,
            "settings": common.settings(vars(cfg.qlora), peft_config.target_modules),
        }
    del trainer, model
    gc.collect()
    return result


def run_harness(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="overhead-harness-") as tmp:
        extra = [f"hardware.num_threads={args.threads}"] if args.threads else []
        record, _, wall = common.run_harness_cli(["-m", "harness"], [*overrides(args), *extra], Path(tmp))
    figures, cost = common.ledger_figures(record), record["cost"]
    load_s, eval_s = float(cost["load_s"]), float(cost.get("eval_s", 0.0))
    return {
        **figures,
        "load_s": load_s,
        "eval_s": eval_s,
        "other_s": wall - load_s - figures["train_s"] - eval_s,
        "total_s": wall,
    }


def main() -> None:
    args = parse_args()
    datasets.disable_progress_bars()
    cfg = common.compose_config(overrides(args))
    q = cfg.qlora

    weights, locate_s = common.locate_weights(cfg), None  # converts once; not timed
    if weights is not None:
        t = time.perf_counter()
        gguf_safetensors_cache(cfg.model, Path(cfg.cache_dir).expanduser())  # what the harness's load_s pays
        locate_s = time.perf_counter() - t  # to find the cache

    print(
        f"model={args.model} steps={q.max_steps} batch={q.batch_size} max_length={q.max_length} r={q.r} "
        f"alpha={q.alpha} lr={q.lr} targets={','.join(common.target_modules(cfg))} "
        f"threads={args.threads or 'default'} repeats={args.repeats}"
    )
    common.warn_if_busy("before starting")
    bare_runs, harness_runs = common.run_alternating(
        args.repeats,
        lambda: run_bare(args, cfg, weights),
        lambda: run_harness(args),
        lambda b, h: f"bare train {b['train_s']:.2f}s total {b['total_s']:.2f}s | "
        f"harness train {h['train_s']:.2f}s wall {h['total_s']:.2f}s",
    )

    for b, h in zip(bare_runs, harness_runs, strict=True):
        common.warn_if_differ(b, h, "bare")
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
        keys = ("load_s", "train_s", "eval_s", "other_s", "total_s", "tokens_per_s")
        row = {k: common.median(runs, k) for k in keys}
        row["load_train_s"] = common.median([{"v": r["load_s"] + r["train_s"]} for r in runs], "v")
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
