"""How a training step runs: precision (fp32 or bf16 autocast) and memory format (channels_last
or contiguous NCHW), chosen on a CPU by timing the network being trained.

Both depend on the chip *and* on the network, so reading CPU flags is not enough. Seconds per
step (batch 8, 320x240) on a 2-core AMD EPYC with AVX-512 BF16 and no AMX, fifth session of
2026-12-02, for fp32 channels_last / fp32 contiguous / bf16 channels_last / bf16 contiguous:
RDS-Net (1 thread) 1.40 / 1.21 / 1.46 / 1.00; ESSNet-D (1 thread) 1.80 / 1.96 / 1.30 / 1.52;
ERFNet (2 threads) fp32 1.81 and bf16 0.92, both channels_last. Elsewhere: bf16 about twice as
fast with AMX, about the same or slower on a Xeon with AVX-512 BF16 alone, 13x slower on an
AVX2-only EPYC (no bf16 in oneDNN, so there no bf16 is timed).

`auto` times 3 steps of each candidate after one warm-up, keeps bf16 only when it is at least
``MIN_GAIN`` times faster than fp32's best format, and takes the faster format within the
chosen precision. `seg-perception bench-train` prints the same timings as a table.
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
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
# bf16 rounds activations: below this speed-up it is not worth leaving fp32.
MIN_GAIN = 1.15

Combo = Tuple[str, str]  # (precision, memory format)


@dataclass(frozen=True)
class StepShape:
    """What `auto` times: the network, its training crop (w, h) and batch."""
    model: str
    crop: Tuple[int, int]
    batch_size: int
    num_classes: int = 11


@dataclass(frozen=True)
class StepChoice:
    precision: str  # fp32 | bf16 (CPU autocast) | amp (CUDA)
    memory_format: str  # channels_last | contiguous
    why: str

    @property
    def torch_format(self) -> torch.memory_format:
        return torch.channels_last if self.memory_format == "channels_last" else torch.contiguous_format


def cpu_has_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cuda_amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU computes it natively (compute capability 8+: Ampere, Ada, Hopper, Jetson
    Orin), else fp16 with a loss scale. Not torch.cuda.is_bf16_supported(): it also says yes where
    bf16 is only emulated (a T4, a V100, Jetson Xavier), which is slow."""
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def autocast_ctx(device: torch.device, bf16: bool):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=cuda_amp_dtype(device))
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def loss_scaler(device: torch.device, enabled: bool | None = None):
    """A GradScaler, enabled where autocast runs in fp16 (small gradients would round to zero
    there); elsewhere a pass-through, so fp32 and bf16 steps stay what they were, bit for bit."""
    if enabled is None:
        enabled = device.type == "cuda" and cuda_amp_dtype(device) == torch.float16
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def time_train_steps(shape: StepShape, combos: Sequence[Combo], steps: int = 5,
                     warmup: int = 2) -> Dict[Combo, List[float]]:
    """Seconds of each timed step (forward, loss, backward, Adam) per (precision, memory format),
    on random data, with torch's current thread count. Always on the CPU: the choice they feed is a
    CPU's (CUDA training always autocasts), and on a GPU box a "fp32" timed under autocast would lie."""
    device = torch.device("cpu")
    w, h = shape.crop
    out = {}
    for precision, fmt in combos:
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        torch.manual_seed(0)
        net = build_model(shape.model, shape.num_classes).to(device, memory_format=mf).train()
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        x = torch.randn(shape.batch_size, 3, h, w, device=device).contiguous(memory_format=mf)
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
        out[(precision, fmt)] = times
    return out


def choose_step(seconds: Dict[Combo, float], min_gain: float = MIN_GAIN) -> StepChoice:
    """The choice from median seconds per step of each timed (precision, memory format)."""
    def best(precision):
        timed = {c: s for c, s in seconds.items() if c[0] == precision}
        return min(timed.items(), key=lambda kv: kv[1]) if timed else None
    fp32, bf16 = best("fp32"), best("bf16")
    if fp32 is None or (bf16 is not None and fp32[1] / bf16[1] >= min_gain):
        (precision, fmt), _ = bf16
    else:
        (precision, fmt), _ = fp32
    timed = ", ".join(f"{p} {f} {s:.2f}" for (p, f), s in seconds.items())
    rule = f"; bf16 needs >= {min_gain:.2f}x fp32's best" if fp32 and bf16 else ""
    return StepChoice(precision, fmt, f"auto: s/step {timed}{rule}")


def resolve_step(precision: str, memory_format: str, device: torch.device, shape: StepShape | None = None,
                 steps: int = 3) -> StepChoice:
    """Precision and memory format to train in, with why; `auto` (either) times ``shape`` on a CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; valid choices: {', '.join(PRECISIONS)}")
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory format '{memory_format}'; valid choices: {', '.join(MEMORY_FORMATS)}")
    if device.type == "cuda":
        why = ("CUDA autocast bf16" if cuda_amp_dtype(device) == torch.bfloat16 else
               "CUDA autocast fp16 with loss scaling (no native bf16 on this GPU)")
        if precision != "auto":  # said, not dropped in silence: the flag is the CPU's choice
            why += f"; --precision {precision} is for a CPU (CUDA always trains under autocast)"
        return StepChoice("amp", "contiguous" if memory_format == "contiguous" else "channels_last", why)
    if precision == "bf16" and not cpu_has_bf16():
        raise ValueError("this CPU has no bf16 support in oneDNN: use --precision fp32")
    precisions = [precision] if precision != "auto" else ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    formats = [memory_format] if memory_format != "auto" else ["channels_last", "contiguous"]
    if len(precisions) * len(formats) == 1:
        why = "asked" if precision != "auto" else "auto: this CPU has no bf16 support in oneDNN"
        return StepChoice(precisions[0], formats[0], why)
    if shape is None:
        raise ValueError("an auto precision or memory format needs the network and crop to time")
    t = time_train_steps(shape, [(p, f) for p in precisions for f in formats], steps=steps, warmup=1)
    return choose_step({c: float(np.median(s)) for c, s in t.items()})


def format_step_times(results: Dict[Combo, List[float]], batch_size: int) -> str:
    lines = ["| precision | memory format | s/step p50 | min | max | img/s |", "|---|---|---:|---:|---:|---:|"]
    for (precision, fmt), t in results.items():
        p50 = float(np.median(t))
        lines.append(f"| {precision} | {fmt} | {p50:.3f} | {min(t):.3f} | {max(t):.3f} | {batch_size / p50:.1f} |")
    return "\n".join(lines)
