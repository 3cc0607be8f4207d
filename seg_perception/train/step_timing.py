"""`seg-perception bench-train`: seconds per training step on this machine, per precision.

Whether bf16 pays on a CPU depends on the chip (AMX: about 2x faster; AVX-512
BF16 alone: about the same as fp32; AVX2 only: 13x slower), so the choice
`--precision auto` makes can be checked here before a run of many hours.
"""
from __future__ import annotations

import time
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..nets import build_model
from .loop import autocast_ctx, resolve_precision


def time_train_steps(model: str, crop: tuple, batch_size: int, precisions: Sequence[str], steps: int = 5,
                     warmup: int = 2, threads: int = 0, num_classes: int = 11) -> Dict[str, List[float]]:
    """Seconds of each timed step (forward, loss, backward, Adam) per precision, on random data."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    w, h = crop
    out = {}
    for precision in precisions:
        chosen = resolve_precision(precision, device)
        torch.manual_seed(0)
        net = build_model(model, num_classes).to(device, memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        x = torch.randn(batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, num_classes, (batch_size, h, w), device=device)
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            with autocast_ctx(device, chosen == "bf16"):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        out[f"{precision} ({chosen})" if precision == "auto" else precision] = times
    return out


def format_step_times(results: Dict[str, List[float]], batch_size: int) -> str:
    lines = ["| precision | s/step p50 | min | max | img/s |", "|---|---:|---:|---:|---:|"]
    for name, t in results.items():
        p50 = float(np.median(t))
        lines.append(f"| {name} | {p50:.3f} | {min(t):.3f} | {max(t):.3f} | {batch_size / p50:.1f} |")
    return "\n".join(lines)
