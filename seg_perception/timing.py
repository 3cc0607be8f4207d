"""Latency, measured one way everywhere: release, bench, bench-node and doctor.

``time_backend`` runs ``backend.infer`` on frames already at the model size,
untimed warm-up runs first, and returns one shape of result: milliseconds at the
50th and 95th percentile, max and mean, and the frames per second the mean allows.
``cpu_name`` says where a figure was taken, since CPU timings only compare on one machine.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from .metrics import percentiles


def time_calls(fn: Callable, inputs: Sequence, runs: int = 20, warmup: int = 3) -> List[float]:
    """Milliseconds of ``fn(x)`` for ``runs`` calls cycling through ``inputs``, after
    ``warmup`` untimed calls (first runs allocate and pick kernels)."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    if not inputs:
        raise ValueError("nothing to time: no inputs")
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    ms = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(inputs[i % len(inputs)])
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def latency_stats(ms: Sequence[float]) -> Dict[str, float | None]:
    """{p50, p95, max, mean} in ms (2 decimals) and fps (1 / mean)."""
    out = percentiles(list(ms))
    mean = sum(ms) / len(ms) if len(ms) else 0.0  # not the rounded mean: 1.235 ms is 809.7 FPS, not 813.0
    out["fps"] = round(1000.0 / mean, 1) if mean else None
    return out


def time_backend(backend, frames: Sequence, runs: int = 20, warmup: int = 3) -> Dict[str, float | None]:
    """Latency of ``backend.infer`` on ``frames`` (uint8 RGB at the backend's size)."""
    return latency_stats(time_calls(backend.infer, frames, runs, warmup))


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
