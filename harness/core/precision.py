"""Which floating-point precision a CPU cell computes in (`hardware.precision: auto|fp32|bf16`), and why.

bf16 autocast halves the bytes every matmul moves, and where the processor multiplies bf16 natively (the
`avx512_bf16` or `amx_bf16` instructions: Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later) a
CPU cell trains and answers faster. Without them PyTorch emulates bf16 with conversions around fp32 arithmetic,
which is slower than plain fp32 (pytorch issue 86270), so `auto` takes bf16 only where /proc/cpuinfo lists one
of those flags, the same flags oneDNN dispatches on. The precision that ran is part of the cell's result: it
enters the run, adapter and predictions keys where it is bf16 (fp32, what every cell ran at before the setting
existed, leaves the keys as earlier results have them: `keyed_precision`).

GPU presets and 4-bit CPU loading keep their own dtypes (`hardware.supports_bf16`, bitsandbytes' compute dtype):
there `auto` is the only value, and the record names the dtype they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.core.config import PRECISIONS, Accelerator, HardwareConfig, RunConfig, loads_in_4bit

__all__ = ["PRECISIONS", "Precision", "cell_precision", "cpu_flags", "keyed_precision", "resolve_precision"]

# Instructions that multiply bf16 natively; either one makes bf16 autocast faster than fp32 on a CPU.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" or "bf16" on a CPU; the GPU or 4-bit dtype otherwise
    reason: str  # what decided it, as the record says it
    cpu_autocast: bool = False  # a CPU cell under torch.autocast("cpu", dtype=torch.bfloat16)


@lru_cache(maxsize=4)
def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The first processor's feature flags from /proc/cpuinfo; None where there is no such file (macOS,
    Windows)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def resolve_precision(hardware: HardwareConfig, four_bit: bool, flags: frozenset[str] | None = None) -> Precision:
    """The precision a cell on `hardware` computes in. `flags`: the processor's (default: read /proc/cpuinfo)."""
    if hardware.accelerator != Accelerator.cpu:
        dtype = "bf16" if hardware.supports_bf16 else "fp16"
        return Precision(dtype, f"GPU preset {hardware.name}: {dtype} (hardware.supports_bf16="
                                f"{str(hardware.supports_bf16).lower()})")
    if four_bit:
        return Precision("4bit", f"{hardware.name}: 4-bit weights, bitsandbytes' CPU compute dtype")
    if hardware.precision == "fp32":
        return Precision("fp32", "hardware.precision=fp32")
    if hardware.precision == "bf16":
        return Precision("bf16", "hardware.precision=bf16", cpu_autocast=True)
    found = cpu_flags() if flags is None else flags
    if found is None:
        return Precision("fp32", "auto: no /proc/cpuinfo to read native bf16 support from")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in found]
    if native:
        return Precision("bf16", f"auto: the CPU reports {' and '.join(native)} (native bf16)", cpu_autocast=True)
    simd = next((f for f in ("avx512f", "avx2", "avx", "asimd") if f in found), None)
    return Precision("fp32", f"auto: the CPU reports neither {' nor '.join(NATIVE_BF16_FLAGS)}"
                             f"{f' ({simd} at most)' if simd else ''}: bf16 would be emulated, slower than fp32")


def cell_precision(cfg: RunConfig) -> Precision:
    return resolve_precision(cfg.hardware, loads_in_4bit(cfg.hardware, cfg.qlora))


def keyed_precision(key_config: dict, precision: Precision | None) -> dict:
    """`key_config` as the run, adapter and predictions keys hash it: `hardware.precision` becomes "bf16" where a
    CPU cell runs under bf16 autocast, and leaves the keys otherwise (fp32 is what every cell computed in before
    the setting existed, and a GPU or 4-bit preset's dtype is decided by the preset, already in the keys).
    None: a cell that computes nothing with a model (the TF-IDF baseline)."""
    hardware = key_config.get("hardware")
    if not isinstance(hardware, dict) or "precision" not in hardware:
        return key_config
    kept = {k: v for k, v in hardware.items() if k != "precision"}
    if precision is not None and precision.cpu_autocast:
        kept["precision"] = precision.name
    return {**key_config, "hardware": kept}
