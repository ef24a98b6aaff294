"""Generation speed by eval batch size: `model.generate` (finished rows keep decoding until the longest answer
ends) against the harness's greedy loop that drops each row once it ends. Same model, prompts and settings
as a harness cell (the bundled HR sample's eval questions, greedy, eval.max_new_tokens); prints tokens/s per
batch size for both, and whether the answers are identical.

    .venv/bin/python bench/eval_batch.py --model smollm2_135m --batch-sizes 1,4,8,20

--precisions fp32,bf16 instead compares the harness's loop in fp32 and under CPU bf16 autocast (what
hardware.precision=bf16 runs), alternating them --repeats times in one process (medians): bf16 pays only where
the processor has avx512_bf16/amx_bf16 (harness/core/precision.py); elsewhere autocast emulates it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from harness.cell.models import load_model  # noqa: E402
from harness.cell.predict import computing_in, generate  # noqa: E402
from harness.core.data import load_dataset, prompt_messages  # noqa: E402
from harness.core.precision import Precision, cpu_flags  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="smollm2_135m")
    parser.add_argument("--batch-sizes", default="1,4,8,20")
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precisions", default=None, help="e.g. fp32,bf16: compare precisions, not loops")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench.common import compose_config

    cfg = compose_config([f"model={args.model}", f"eval.max_new_tokens={args.max_new_tokens}"])
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, Path(cfg.cache_dir).expanduser())
    dataset = load_dataset(cfg.data)
    records = dataset.eval[: args.examples]
    conversations = [prompt_messages(r, cfg.data, cfg.model, None, dataset.labels) for r in records]
    print(f"{args.model}, {len(records)} eval prompts, greedy, max_new_tokens={args.max_new_tokens}, "
          f"{torch.get_num_threads()} threads")
    if args.precisions:
        return compare_precisions(loaded, conversations, cfg, args)
    print(f"{'batch':>5} | {'generate tok/s':>14} | {'own loop tok/s':>14} | {'ratio':>5} | same answers")
    answers = {}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        ecfg = replace(cfg.eval, batch_size=batch_size)
        rates = {}
        for name, own_loop in (("generate", False), ("own", True)):
            start = time.perf_counter()
            result = generate(loaded.model, loaded.tokenizer, conversations, ecfg, progress=False,
                              own_greedy_loop=own_loop)
            rates[name] = sum(result.generated_tokens) / (time.perf_counter() - start)
            answers[(name, batch_size)] = result.predictions
        same = answers[("generate", batch_size)] == answers[("own", batch_size)]
        print(f"{batch_size:>5} | {rates['generate']:>14.1f} | {rates['own']:>14.1f} | "
              f"{rates['own'] / rates['generate']:>5.2f} | {'yes' if same else 'NO'}")
    return 0


def compare_precisions(loaded, conversations, cfg, args) -> int:
    names = args.precisions.split(",")
    flags = cpu_flags() or frozenset()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"}) or ["no native bf16 (emulated)"]
    print(f"cpu bf16: {', '.join(native)}; medians of {args.repeats} alternating runs")
    print(f"{'batch':>5} | " + " | ".join(f"{n + ' tok/s':>12}" for n in names) + f" | {'ratio':>5} | same answers")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        ecfg = replace(cfg.eval, batch_size=batch_size)
        rates, answers = {n: [] for n in names}, {}
        for _ in range(args.repeats):
            for name in names:
                chosen = Precision(name, "bench", cpu_autocast=name == "bf16")
                start = time.perf_counter()
                with computing_in(chosen):
                    result = generate(loaded.model, loaded.tokenizer, conversations, ecfg, progress=False)
                rates[name].append(sum(result.generated_tokens) / (time.perf_counter() - start))
                answers[name] = result.predictions
        medians = {n: statistics.median(r) for n, r in rates.items()}
        same = all(answers[n] == answers[names[0]] for n in names)
        print(f"{batch_size:>5} | " + " | ".join(f"{medians[n]:>12.1f}" for n in names)
              + f" | {medians[names[-1]] / medians[names[0]]:>5.2f} | {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
