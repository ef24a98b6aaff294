"""Training throughput: the harness's LoRA training against the way a plain TRL tutorial does it.

Both paths train the same LoRA adapter (same base weights, sample data, steps, r, alpha, lr, batch size,
max_length, seed, fp32 on CPU unless --precision says bf16) on harness/samples/hr_handbook/train.jsonl; they
differ only in how the batches are built:

- baseline: a plain tutorial script, in this process. Each prompt + answer conversation is rendered with the
  chat template into one "text" field (loss on every token, as tutorials do), every batch is padded to
  max_length (SFTConfig(pad_to_multiple_of=max_length): sequences are already truncated to max_length, so a
  multiple of it is exactly it), random order, no group-by-length, no packing.
- harness: `python -m harness model=<m> method=instruct tracker=none progress=false force=true preflight=false
  results_dir=<tmp> qlora.max_steps=<steps> ... eval.num_examples=1 eval.max_new_tokens=1` in a subprocess:
  prompt/completion pairs with the loss on the completion only, dynamic padding to the longest sequence in
  the batch, train_sampling_strategy="group_by_length" (harness/cell/train.py sft_config). Its figures come from
  the ledger line: train.steps, train.train_s, train.train_tokens, train.tokens_per_s.

Columns: train s is trainer.train() only (no load, no eval); "real tokens" are the non-padding tokens the
trainer consumed (TRL sums the attention mask, both paths); "processed tokens" include the padding, i.e.
the sum over steps of the padded input_ids shape (batch x padded length). The baseline's is
steps x batch x max_length; the harness's is read from the batch shapes its collator produced: the
subprocess runs the same `harness` entry point through runpy with TRL's DataCollatorForLanguageModeling
wrapped to append each batch's input_ids shape to a file (one line per batch; --no-shapes runs plain
`python -m harness` and shows n/a). The headline is real tokens/s and the harness/baseline ratio of it:
the padding the baseline computes on is wasted work, so the ratio is roughly what dynamic padding and
length grouping buy. The two paths draw different examples in a short run (random order vs. longest-first
length groups), so their real-token totals differ; compare rates, not totals.

The hyperparameters come from the harness's own config, composed by Hydra with the overrides the subprocess
gets (conf/qlora/default.yaml, the optional conf/tuning/model/<m>.yaml, conf/model/<m>.yaml for the LoRA
targets), as bench/overhead.py does; harness.cell.models only locates/builds the weights so both paths train
identical ones. The harness's tokens/s is taken as the ledger reports it; the script checks that the
ledger's settings match the baseline's.

Run (from the repo root, on an idle machine; the first smollm2 run converts the GGUF once, untimed):

    .venv/bin/python bench/train_throughput.py --model smollm2_135m --steps 10
    .venv/bin/python bench/train_throughput.py --model tiny_random --steps 5 --repeats 3

With --repeats N both paths run N times (alternating) and the table shows medians. --precision fp32,bf16 runs
both paths in both precisions in every repeat and prints steps/s and tokens/s side by side with their ratios,
and the harness in bf16 against the baseline in fp32 (what hardware.precision=auto buys over a tutorial script
on a processor with native bf16):

    .venv/bin/python bench/train_throughput.py --model smollm2_135m --steps 5 --repeats 3 --precision fp32,bf16

On a GPU: this script is CPU-only as written (fp32, use_cpu=True). A CUDA comparison would pass
hardware=a10 (or t4, l4, a100_*, h100) to the harness subprocess and make the baseline match what the harness
then does: the base model in 4-bit nf4 with double quantisation (qlora.load_in_4bit), bf16 or fp16 autocast
from the preset's supports_bf16, activation checkpointing if the preset asks for it, and the preset's
batch size / grad_accum / max_length from conf/tuning/model_hardware/. There padding costs real FLOPs too,
and the next step beyond group-by-length is padding-free packing (SFTConfig(padding_free=True) or
packing=True, packing_strategy="bfd") with attn_implementation="flash_attention_2", which removes the
padding entirely; it needs flash-attention (or another varlen kernel) and is not available on CPU.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, however this script is started

import common  # noqa: E402
import datasets  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import PrinterCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from harness.cell.train import lora_arguments  # noqa: E402
from harness.core.config import RunConfig  # noqa: E402

fmt = common.formatter(",.0f", missing="n/a")

# Runs the harness's own entry point (`python -m harness`) after wrapping TRL's collator so that each batch's
# padded input_ids shape is appended to $TB_SHAPES_FILE. One small file write per batch; nothing else changes.
HARNESS_WITH_SHAPES = """
import json, os, runpy, sys
try:
    from trl.trainer import sft_trainer as _sft
    _orig = _sft.DataCollatorForLanguageModeling.torch_call
    def _recording(self, examples):
        out = _orig(self, examples)
        with open(os.environ["TB_SHAPES_FILE"], "a") as f:
            f.write(json.dumps(list(out["input_ids"].shape)) + "\\n")
        return out
    _sft.DataCollatorForLanguageModeling.torch_call = _recording
except Exception as exc:  # shapes are a nicety: the run goes on without them
    print(f"train_throughput: could not record batch shapes: {exc!r}", file=sys.stderr)
sys.argv = ["harness", *sys.argv[1:]]
runpy.run_module("harness", run_name="__main__", alter_sys=True)
"""


def parse_args():
    p = common.argument_parser(
        __doc__.split("\n\n")[0],
        max_length=512,
        threads_help="torch threads for both paths (default: hardware preset)",
    )
    p.add_argument("--no-shapes", action="store_true", help="run plain `python -m harness` (processed tokens n/a)")
    p.add_argument("--precision", default="fp32",
                   help="hardware.precision of both paths: auto, fp32 or bf16 (the baseline trains with the "
                        "harness's own SFT arguments, so bf16 autocast applies to both); a list such as fp32,bf16 "
                        "runs every precision in each repeat, alternating, and prints their ratios")
    args = p.parse_args()
    args.precisions = args.precision.split(",")
    unknown = [x for x in args.precisions if x not in ("auto", "fp32", "bf16")]
    if unknown or len(set(args.precisions)) != len(args.precisions):
        p.error(f"--precision {args.precision}: give auto, fp32 or bf16, each at most once (e.g. fp32,bf16)")
    return args


def overrides(args, precision: str) -> list[str]:
    """The Hydra overrides both paths get (the subprocess adds results_dir)."""
    threads = [f"hardware.num_threads={args.threads}"] if args.threads else []
    return common.harness_overrides(args, "preflight=false", f"hardware.precision={precision}", *threads)


def text_rows(cfg: RunConfig, tokenizer) -> list[dict]:
    """Tutorial style: the whole conversation (system + question + answer) rendered to one "text" string.
    The messages are the ones harness.cell.train.instruct_dataset builds (prompt + completion)."""
    return [
        {"text": tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)}
        for row in common.train_conversations(cfg)
    ]


class RecordingCollator:
    """Wraps the trainer's collator and keeps each batch's padded input_ids shape."""

    def __init__(self, inner):
        self.inner, self.shapes = inner, []

    def __call__(self, examples):
        out = self.inner(examples)
        self.shapes.append(list(out["input_ids"].shape))
        return out


def processed_tokens(shapes: list[list[int]], steps: int, grad_accum: int) -> int | None:
    """Tokens incl. padding over the batches trained on (the dataloader may collate one batch ahead)."""
    used = shapes[: steps * grad_accum]
    if len(used) < steps * grad_accum:
        return None
    return sum(b * n for b, n in used)


def run_baseline(args, cfg: RunConfig, weights: Path | None) -> dict:
    q = cfg.qlora
    torch.set_num_threads(args.threads or cfg.hardware.num_threads or torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        model, tokenizer = common.load_base(cfg, weights)

        train_dataset = Dataset.from_list(text_rows(cfg, tokenizer))
        peft_config = LoraConfig(**lora_arguments(cfg))
        sft_args = SFTConfig(**common.baseline_sft_kwargs(
            cfg, Path(tmp) / "trainer",
            dataset_text_field="text",
            packing=False,
            pad_to_multiple_of=q.max_length,  # every batch padded to exactly max_length
            train_sampling_strategy="random",
        ))
        trainer = SFTTrainer(
            model=model, args=sft_args, train_dataset=train_dataset, processing_class=tokenizer, peft_config=peft_config
        )
        trainer.remove_callback(PrinterCallback)
        collator = RecordingCollator(trainer.data_collator)
        trainer.data_collator = collator

        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0

        figures = common.trainer_figures(trainer, train_s)
        steps = figures["steps"]
        result = {
            **figures,
            "processed": processed_tokens(collator.shapes, steps, q.grad_accum),
            "expected_processed": steps * q.grad_accum * q.batch_size * q.max_length,
            "settings": common.settings(vars(q), peft_config.target_modules),
        }
    del trainer, model
    gc.collect()
    return result


def run_harness(args, precision: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="train-throughput-harness-") as tmp:
        shapes_file = Path(tmp) / "shapes.jsonl"
        entry = ["-m", "harness"] if args.no_shapes else ["-c", HARNESS_WITH_SHAPES]
        env = {**os.environ, "TB_SHAPES_FILE": str(shapes_file)}
        record, proc, _ = common.run_harness_cli(entry, overrides(args, precision), Path(tmp), env=env)
        if "could not record batch shapes" in proc.stderr:
            print("WARNING: " + next(line for line in proc.stderr.splitlines() if "could not record" in line))
        shapes = [json.loads(line) for line in shapes_file.read_text().splitlines()] if shapes_file.is_file() else []
    figures = common.ledger_figures(record)
    grad_accum = record["config"]["qlora"]["grad_accum"]
    return {**figures, "processed": processed_tokens(shapes, figures["steps"], grad_accum) if shapes else None}


def main() -> None:
    args = parse_args()
    datasets.disable_progress_bars()
    cfgs = {p: common.compose_config(overrides(args, p)) for p in args.precisions}
    cfg = cfgs[args.precisions[0]]
    q = cfg.qlora

    weights = common.locate_weights(cfg)  # converts once; not timed
    print(
        f"model={args.model} steps={q.max_steps} batch={q.batch_size} grad_accum={q.grad_accum} "
        f"max_length={q.max_length} r={q.r} alpha={q.alpha} lr={q.lr} "
        f"targets={','.join(common.target_modules(cfg))} precision={args.precision} "
        f"threads={args.threads or cfg.hardware.num_threads} repeats={args.repeats}"
    )
    common.warn_if_busy("before starting")

    # Every repeat runs each (path, precision) once, in this order: slow drifts in the machine's load fall on all.
    runs: dict[tuple[str, str], list[dict]] = {}
    for i in range(args.repeats):
        line = []
        for precision in args.precisions:
            b = run_baseline(args, cfgs[precision], weights)
            h = run_harness(args, precision)
            runs.setdefault(("baseline", precision), []).append(b)
            runs.setdefault(("harness", precision), []).append(h)
            line.append(f"{precision}: baseline {b['train_s']:.2f}s {b['tokens_per_s']:.0f} tok/s, "
                        f"harness {h['train_s']:.2f}s {h['tokens_per_s']:.0f} tok/s")
        print(f"  repeat {i + 1}/{args.repeats}: " + " | ".join(line))

    common.warn_if_busy("after the runs")  # contention that started mid-run shows here, not at the start
    for precision in args.precisions:
        for b, h in zip(runs[("baseline", precision)], runs[("harness", precision)], strict=True):
            common.warn_if_differ(b, h, "baseline")
            if b["processed"] is not None and b["processed"] != b["expected_processed"]:
                print(f"WARNING: baseline batches were not all padded to max_length: {b['processed']} processed "
                      f"tokens, expected {b['expected_processed']}")
        b, h = runs[("baseline", precision)][-1], runs[("harness", precision)][-1]
        print(f"{precision}: threads baseline {b['threads']}, harness {h['threads']} | final loss: "
              f"baseline {fmt(b['final_loss'], '.4f')} (all tokens), harness {fmt(h['final_loss'], '.4f')} "
              "(completion only)")

    stat = f"median of {args.repeats}" if args.repeats > 1 else "1 run"
    header = (f"{'path':<9} {'prec':>4} {'steps':>5} {'train s':>8} {'steps/s':>7} {'real tokens':>11} "
              f"{'processed':>10} {'padding':>7} {'real tok/s':>10} {'processed tok/s':>15}")
    print(f"\n{header}   ({stat})")
    table = {}
    for (name, precision), path_runs in runs.items():
        row = {k: common.median(path_runs, k) for k in ("steps", "train_s", "tokens", "processed", "tokens_per_s")}
        row["processed_per_s"] = common.median(
            [{"v": r["processed"] / r["train_s"]} for r in path_runs if r["processed"] is not None], "v"
        )
        row["steps_per_s"] = row["steps"] / row["train_s"]
        pad = None if not row["processed"] else 1 - row["tokens"] / row["processed"]
        table[(name, precision)] = row
        print(f"{name:<9} {precision:>4} {fmt(row['steps'], '.0f'):>5} {fmt(row['train_s'], '.2f'):>8} "
              f"{row['steps_per_s']:>7.3f} {fmt(row['tokens']):>11} {fmt(row['processed']):>10} "
              f"{fmt(pad, '.0%'):>7} {fmt(row['tokens_per_s']):>10} {fmt(row['processed_per_s']):>15}")
    print()
    for precision in args.precisions:
        b, h = table[("baseline", precision)], table[("harness", precision)]
        print(f"{precision}: harness/baseline real tokens/s x{h['tokens_per_s'] / b['tokens_per_s']:.2f}")
    first, *others = args.precisions
    for other in others:
        for name in ("baseline", "harness"):
            a, o = table[(name, first)], table[(name, other)]
            print(f"{name}: {other}/{first} steps/s x{o['steps_per_s'] / a['steps_per_s']:.2f}"
                  f", processed tokens/s x{fmt(_ratio(o['processed_per_s'], a['processed_per_s']), '.2f')}")
        h, b = table[("harness", other)], table[("baseline", first)]
        print(f"harness {other} / baseline {first} processed tokens/s: "
              f"x{fmt(_ratio(h['processed_per_s'], b['processed_per_s']), '.2f')}")
    print(
        "train s = trainer.train() only. real tokens = non-padding tokens (attention-mask sum, as TRL counts them);\n"
        "processed = tokens incl. padding (sum of the padded batch shapes). baseline: chat text padded to max_length,\n"
        "random order, loss on all tokens; harness: dynamic padding + group_by_length, loss on the completion only."
    )


def _ratio(a, b):
    return None if a is None or not b else a / b


if __name__ == "__main__":
    main()
