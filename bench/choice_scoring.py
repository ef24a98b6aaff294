"""Choice scoring against generation, in examples per second: the same model and the same prompts (the bundled
shop catalog's eval products, the harness's system prompt with the labels), scored by label log-likelihood
(eval.scoring=choices: one prefill per prompt, every label continuing from its KV cache) and by greedy generation
of eval.max_new_tokens (eval.scoring=generate, the harness's own loop). Prints examples/s for both, their ratio,
and the accuracy each reached. Each mode runs --repeats times; the best run counts (the least disturbed by the
machine's other work).

    .venv/bin/python bench/choice_scoring.py --model smollm2_135m
    .venv/bin/python bench/choice_scoring.py --model tiny_random
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from harness.cell.choices import score_choices  # noqa: E402
from harness.cell.models import load_model  # noqa: E402
from harness.cell.predict import generate  # noqa: E402
from harness.core.data import fewshot_examples, load_dataset, prompt_messages  # noqa: E402
from harness.metrics import score_all  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny_random", "smollm2_135m"], default="smollm2_135m")
    parser.add_argument("--examples", type=int, default=None, help="eval products (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: conf/eval's eval.max_new_tokens")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fewshot", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench.common import compose_config

    overrides = [f"model={args.model}", "data=shop_catalog", f"eval.batch_size={args.batch_size}",
                 f"eval.fewshot={args.fewshot}"]
    if args.max_new_tokens:
        overrides.append(f"eval.max_new_tokens={args.max_new_tokens}")
    cfg = compose_config(overrides)
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, Path(cfg.cache_dir).expanduser())
    dataset = load_dataset(cfg.data)
    records = dataset.eval[: args.examples] if args.examples else dataset.eval
    shots = fewshot_examples(dataset.train, dataset.eval, args.fewshot, cfg.qlora.seed, dataset.labels)
    conversations = [prompt_messages(r, cfg.data, cfg.model, None, dataset.labels, shots) for r in records]
    references = [r.answer for r in records]
    ecfg = replace(cfg.eval, batch_size=args.batch_size)
    print(f"{args.model}, shop_catalog: {len(records)} eval products, {len(dataset.labels)} labels, "
          f"{args.fewshot}-shot, batch {args.batch_size}, greedy max_new_tokens={ecfg.max_new_tokens}, "
          f"{torch.get_num_threads()} threads")
    modes = {
        "choices": lambda: score_choices(loaded.model, loaded.tokenizer, conversations, dataset.labels, ecfg,
                                         progress=False),
        "generate": lambda: generate(loaded.model, loaded.tokenizer, conversations, ecfg, progress=False),
    }
    rates, accuracy = {}, {}
    for name, run in modes.items():
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = run()
            best = min(best, time.perf_counter() - start)
        rates[name] = len(records) / best
        scores = score_all(["accuracy"], result.predictions, references, dataset)["accuracy"].values
        accuracy[name] = (scores["accuracy"], scores["unparseable_rate"])
    print(f"{'scoring':>8} | {'examples/s':>10} | {'accuracy':>8} | unparseable")
    for name in modes:
        print(f"{name:>8} | {rates[name]:>10.2f} | {accuracy[name][0]:>8.3f} | {accuracy[name][1]:.3f}")
    print(f"choices / generate: {rates['choices'] / rates['generate']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
