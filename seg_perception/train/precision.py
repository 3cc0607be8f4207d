"""Training precision: bf16 autocast on a CPU only where it is measurably faster.

Whether bf16 pays depends on the chip *and* on the network, so `--precision auto` times a
few training steps of the network being trained, at its crop and batch, in both precisions,
and keeps bf16 only when it is at least ``MIN_GAIN`` times faster. Measured seconds per step
(batch 8, 320x240), fp32 against bf16: on a 2-core AMD EPYC with AVX-512 BF16 and no AMX,
ERFNet 1.81 / 0.92 (2 threads), ESSNet-D 1.80 / 1.45 and RDS-Net 1.51 / 1.44 (1 thread); on an
Intel Xeon with AVX-512 BF16 and no AMX, ESSNet-D about the same at 480x360 and slower in bf16 at
384x288; with AMX about twice as fast; on an AVX2-only EPYC (no bf16 in oneDNN) 13x slower, so
there nothing is timed.
`seg-perception bench-train` prints the same timings as a table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..nets import build_model

PRECISIONS = ("auto", "fp32", "bf16")
# bf16 rounds activations: below this speed-up it is not worth leaving fp32.
MIN_GAIN = 1.15


@dataclass(frozen=True)
class StepShape:
    """What `auto` times: the network, its training crop (w, h), batch and memory format."""
    model: str
    crop: Tuple[int, int]
    batch_size: int
    num_classes: int = 11
    channels_last: bool = True


def cpu_has_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_ctx(device: torch.device, bf16: bool):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def time_train_steps(shape: StepShape, precisions: Sequence[str], steps: int = 5,
                     warmup: int = 2) -> Dict[str, List[float]]:
    """Seconds of each timed step (forward, loss, backward, Adam) per precision ('fp32' or
    'bf16'), on random data, with torch's current thread count."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    w, h = shape.crop
    fmt = torch.channels_last if shape.channels_last else torch.contiguous_format
    out = {}
    for precision in precisions:
        torch.manual_seed(0)
        net = build_model(shape.model, shape.num_classes).to(device, memory_format=fmt).train()
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        x = torch.randn(shape.batch_size, 3, h, w, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, shape.num_classes, (shape.batch_size, h, w), device=device)
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            with autocast_ctx(device, precision == "bf16"):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        out[precision] = times
    return out


def choose_cpu_precision(fp32_s: float, bf16_s: float, min_gain: float = MIN_GAIN) -> Tuple[str, str]:
    """(precision, why) from the median seconds per step of each."""
    gain = fp32_s / bf16_s
    verdict = "bf16" if gain >= min_gain else "fp32"
    return verdict, (f"auto: a step took {bf16_s:.2f} s in bf16 and {fp32_s:.2f} s in fp32 here, "
                     f"{gain:.2f}x; bf16 needs >= {min_gain:.2f}x")


def resolve_precision(precision: str, device: torch.device, shape: StepShape | None = None,
                      steps: int = 3) -> Tuple[str, str]:
    """(precision to train in, why). On a CPU with bf16 in oneDNN, 'auto' times ``shape``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; valid choices: {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        return "amp", "CUDA autocast"
    if precision == "bf16" and not cpu_has_bf16():
        raise ValueError("this CPU has no bf16 support in oneDNN: use --precision fp32")
    if precision != "auto":
        return precision, "asked"
    if not cpu_has_bf16():
        return "fp32", "auto: this CPU has no bf16 support in oneDNN"
    if shape is None:
        raise ValueError("--precision auto on a CPU with bf16 needs the network and crop to time")
    t = time_train_steps(shape, ("fp32", "bf16"), steps=steps, warmup=1)
    return choose_cpu_precision(float(np.median(t["fp32"])), float(np.median(t["bf16"])))


def format_step_times(results: Dict[str, List[float]], batch_size: int) -> str:
    lines = ["| precision | s/step p50 | min | max | img/s |", "|---|---:|---:|---:|---:|"]
    for name, t in results.items():
        p50 = float(np.median(t))
        lines.append(f"| {name} | {p50:.3f} | {min(t):.3f} | {max(t):.3f} | {batch_size / p50:.1f} |")
    return "\n".join(lines)
