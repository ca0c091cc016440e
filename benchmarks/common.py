"""Helpers shared by the benchmark scripts: what machine a result came from, memory, training logs."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import torch


def machine() -> dict:
    """CPU model, SIMD level, thread count and library versions, for a results file."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
        flags = re.search(r"flags\s*:\s*(.*)", info).group(1).split()
        simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            simd += " + native bf16"
    except (OSError, AttributeError):
        model, simd = platform.machine(), "unknown"
    import transformers

    return {"processor": f"{model} ({simd})", "cores": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def rss_mb(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) resident memory of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process, so the next phase gets its own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def logged_train_seconds(model_dir: Path) -> float:
    """Training time recorded by ``distilvit train`` in a saved model's training_log.json."""
    log = json.loads((Path(model_dir) / "training_log.json").read_text())
    return next(float(e["train_runtime"]) for e in reversed(log["log_history"]) if "train_runtime" in e)
