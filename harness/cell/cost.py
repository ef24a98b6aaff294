"""What a run cost: wall time, throughput, peak memory, adapter size and dollars from the hardware preset."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from harness.core.config import HardwareConfig

GIB = 1024**3


class PeakMemory:
    """Peak memory of one cell: CUDA max allocated on a GPU, else the process's peak RSS while inside.

    RSS is sampled by a thread because `ru_maxrss` is a whole-process high-water mark: in a multirun
    every cell after the biggest one would report the biggest one's peak.
    """

    def __init__(self, device: str, interval_s: float = 0.05) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device == "cuda" else "peak_rss"

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            import torch  # deferred, heavy: python -m harness.baseline refuses a bad option before it loads

            torch.cuda.reset_peak_memory_stats()
        else:
            process = psutil.Process()
            self.peak_bytes = process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, args=(process,), daemon=True)
            self._thread.start()
        return self

    def _sample(self, process: psutil.Process) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, process.memory_info().rss)

    def read(self) -> int:
        """The peak so far, in bytes (the figure once the block has ended)."""
        if self.device == "cuda":
            import torch  # deferred, as above

            return max(self.peak_bytes, torch.cuda.max_memory_allocated())
        return max(self.peak_bytes, psutil.Process().memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device != "cuda":
            self._stop.set()
            self._thread.join()
        self.peak_bytes = self.read()


@dataclass
class CostReport:
    hardware: str
    usd_per_hour: float
    price_source: str
    price_date: str
    load_s: float
    train_s: float
    eval_s: float
    # Wall time of a cell's work outside load, trainer.train() and generation: tokenising and building the
    # training set, retrieval, saving the adapter, and a cell resumed after preemption's earlier attempts' time
    # before their training (their loads included). Paid for like the rest, so it counts in total_s.
    prep_s: float
    total_s: float
    train_tokens: int
    train_tokens_per_s: float
    eval_examples: int
    eval_generated_tokens: int
    eval_tokens_per_s: float
    eval_latency_s_per_example: float
    peak_memory_gb: float
    peak_memory_kind: str
    adapter_mb: float
    usd_train: float
    usd_eval: float
    usd_total: float
    # What serving costs on this hardware at the measured rate: the figure that decides "cheapest".
    usd_per_1k_generations: float
    # Model FLOPs utilisation of training against the preset's peak (CUDA only: the CPU peak is a rough guess).
    mfu: float | None = None
    # Each generation batch's wall seconds and answers, and the range of usd_per_1k_generations over the batches'
    # own rates (fastest batch .. slowest batch; None under two batches). Load on a shared machine moves the rate
    # from one batch and one run to the next; the pick treats costs whose ranges overlap as equal (board/ranking.py).
    eval_batches: list[dict] = field(default_factory=list)
    usd_per_1k_generations_low: float | None = None
    usd_per_1k_generations_high: float | None = None
    usd_per_1k_generations_median: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def directory_bytes(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def usd(seconds: float, hardware: HardwareConfig) -> float:
    return seconds / 3600.0 * hardware.usd_per_hour


def lora_train_flops_per_token(params: float, n_layers: int, hidden: int, seq_len: float) -> float:
    """4N + 12·L·d·T: forward (2N) and activation gradients (2N) through frozen weights, no weight gradients
    except LoRA's (negligible), plus attention scores forward and backward over a sequence of length T."""
    return 4 * params + 12 * n_layers * hidden * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float) -> float:
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12)


def batch_rates(batches: list[dict], hardware: HardwareConfig) -> tuple[float, float, float] | None:
    """(low, median, high) of $ per 1000 answers at each batch's own rate (seconds / answers); None under two
    batches, where there is no spread to read."""
    rates = sorted(usd(b["seconds"] / b["examples"] * 1000, hardware) for b in batches if b["examples"] > 0)
    if len(rates) < 2:
        return None
    middle = len(rates) // 2
    median = rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
    return rates[0], median, rates[-1]


def cost_report(
    hardware: HardwareConfig,
    *,
    load_s: float,
    train_s: float,
    train_tokens: int,
    eval_s: float,
    eval_examples: int,
    eval_generated_tokens: int,
    peak: PeakMemory,
    adapter_dir: Path | None,
    train_flops_per_token: float | None = None,
    prep_s: float = 0.0,
    eval_batches: list[dict] | None = None,
) -> CostReport:
    """`eval_batches`: [{seconds, examples}] per generation batch (harness/cell/predict.py), for the cost range."""
    total_s = load_s + prep_s + train_s + eval_s
    per_example = eval_s / eval_examples if eval_examples else 0.0
    batches = [{"seconds": float(b["seconds"]), "examples": int(b["examples"])} for b in eval_batches or []]
    low, median, high = batch_rates(batches, hardware) or (None, None, None)
    return CostReport(
        hardware=hardware.name,
        usd_per_hour=hardware.usd_per_hour,
        price_source=hardware.price_source,
        price_date=hardware.price_date,
        load_s=load_s,
        train_s=train_s,
        eval_s=eval_s,
        prep_s=prep_s,
        total_s=total_s,
        train_tokens=train_tokens,
        train_tokens_per_s=train_tokens / train_s if train_s > 0 else 0.0,
        eval_examples=eval_examples,
        eval_generated_tokens=eval_generated_tokens,
        eval_tokens_per_s=eval_generated_tokens / eval_s if eval_s > 0 else 0.0,
        eval_latency_s_per_example=per_example,
        peak_memory_gb=peak.peak_bytes / GIB,
        peak_memory_kind=peak.kind,
        adapter_mb=directory_bytes(adapter_dir) / 1024**2,
        usd_train=usd(train_s, hardware),
        usd_eval=usd(eval_s, hardware),
        usd_total=usd(total_s, hardware),
        usd_per_1k_generations=usd(per_example * 1000, hardware),
        mfu=mfu(train_tokens / train_s, train_flops_per_token, hardware.peak_tflops_bf16)
        if train_flops_per_token and train_s > 0 and peak.device == "cuda"
        else None,
        eval_batches=batches,
        usd_per_1k_generations_low=low,
        usd_per_1k_generations_high=high,
        usd_per_1k_generations_median=median,
    )


def train_flops_per_token(cfg, trained) -> float:
    """FLOPs per trained token of a finished training run (4N + 12·L·d·T, T its mean trained sequence length)."""
    sequences = max(trained.steps * cfg.qlora.batch_size * cfg.qlora.grad_accum, 1)
    mean_len = trained.train_tokens / sequences  # non-padding tokens per sequence actually trained
    m = cfg.model
    return lora_train_flops_per_token(m.params_b * 1e9, m.n_layers, m.hidden_size, mean_len)
