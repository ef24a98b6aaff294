"""torch.compile on the CPU: a LoRA training step and an evaluation forward, eager against compiled, measured
alternately in one process on the same batches.

The model, LoRA settings and prompts are the harness's (SmolLM2-135M by default, fp32, the bundled HR sample's
train conversations rendered with the chat template); the compiled model is `torch.compile(model)` with
inductor's defaults (dynamic shapes off: every step here has the same padded shape, which is the best case for
compilation; a real epoch's varying lengths would recompile or need dynamic=True). Prints the compile time (the
first compiled call), median seconds per step for each arm, the ratio, and the largest loss / logit difference.

    .venv/bin/python bench/compile_trial.py --threads 2 --repeats 5
    .venv/bin/python bench/compile_trial.py --model tiny_random --repeats 5

The harness trains and evaluates eagerly: compilation is kept only where it measures faster (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402

from bench.common import compose_config, load_base, locate_weights, train_conversations  # noqa: E402
from harness.cell.train import lora_arguments  # noqa: E402


def batch_of(cfg, tokenizer, size: int, max_length: int) -> dict:
    rows = train_conversations(cfg)[:size]
    texts = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return dict(batch)


def train_step(model, batch) -> float:
    loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.detach().item()


@torch.no_grad()
def eval_forward(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="smollm2_135m")
    p.add_argument("--data", default="hr_handbook")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_config([f"model={args.model}", f"data={args.data}"])
    model, tokenizer = load_base(cfg, locate_weights(cfg))
    lora = lora_arguments(cfg)
    model = get_peft_model(model, LoraConfig(**lora))
    batch = batch_of(cfg, tokenizer, args.batch_size, args.max_length)
    shape = tuple(batch["input_ids"].shape)
    print(f"{args.model}, LoRA r={cfg.qlora.r} on {', '.join(lora['target_modules'])}, fp32, "
          f"batch {shape[0]} x {shape[1]} tokens, {torch.get_num_threads()} threads, torch {torch.__version__}")

    compiled = torch.compile(model)
    results = {}
    for name, step in (("train step (forward + backward)", train_step), ("eval forward", eval_forward)):
        model.train(step is train_step)
        compile_s, _ = timed(step, compiled, batch)  # the first call compiles
        step(model, batch)  # eager warm-up
        eager, fast, diffs = [], [], []
        for _ in range(args.repeats):
            e_s, e_out = timed(step, model, batch)
            c_s, c_out = timed(step, compiled, batch)
            eager.append(e_s)
            fast.append(c_s)
            diffs.append(abs(e_out - c_out) if isinstance(e_out, float) else float((e_out - c_out).abs().max()))
        results[name] = (compile_s, statistics.median(eager), statistics.median(fast), max(diffs))

    print(f"medians of {args.repeats} alternating runs")
    print(f"{'':<32} | {'compile s':>9} | {'eager s':>8} | {'compiled s':>10} | {'eager/compiled':>14} | max diff")
    for name, (compile_s, eager_s, fast_s, diff) in results.items():
        print(f"{name:<32} | {compile_s:>9.1f} | {eager_s:>8.3f} | {fast_s:>10.3f} | {eager_s / fast_s:>14.2f} | "
              f"{diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
