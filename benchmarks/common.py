"""Helpers shared by the benchmark scripts: what machine a result came from, and peak memory."""

from __future__ import annotations

import platform
import re
import resource
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
