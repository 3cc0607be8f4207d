"""Side-by-side CPU speed of the shipped models, interleaved (one call of each per round, so load
changes hit every row alike), ONNX Runtime, as the node runs them (uint8 frame at the network size in,
labels out). Prints p50 per row and the ratio to ERFNet fp32 at 480x360 measured in the same run.

    .venv/bin/python scripts/speed_shipped.py [--rounds 30] [--threads 1] [--models rdsnet_camvid essnet_d_camvid]
        [--sizes 320x240 640x480]
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

from seg_perception.card import load_card
from seg_perception.paths import DEFAULT_MODEL
from seg_perception.runtime.backends import create_backend
from seg_perception.timing import cpu_name

MODELS = Path(__file__).resolve().parent.parent / "models"

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=30)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--models", nargs="+", default=[DEFAULT_MODEL], help="shipped models timed beside ERFNet")
ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"],
                help="input sizes timed besides 480x360 (fp32 and CPU int8 rows each)")
a = ap.parse_args()
sizes = [tuple(int(v) for v in s.lower().split("x")) for s in a.sizes]
# ERFNet first: every ratio is to its fp32 row at 480x360.
ROWS = [("erfnet_camvid", "fp32", 480, 360), ("erfnet_camvid", "int8", 480, 360)]
for m in a.models:
    ROWS += [(m, "fp32", 480, 360), (m, "int8", 480, 360), (m, "int8-qdq", 480, 360)]
    ROWS += [(m, prec, w, h) for prec in ("fp32", "int8") for w, h in sizes]
load0 = os.getloadavg()[0]
rng = np.random.default_rng(0)
runs = []
for name, prec, w, h in ROWS:
    card = load_card(MODELS / f"{name}.yaml")
    onnx = card.file("onnx_int8") if prec == "int8-qdq" else None
    be = create_backend("onnxruntime", card, "int8" if prec.startswith("int8") else "fp32", w, h,
                        onnx_path=onnx, threads=a.threads, confidence=False)
    x = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    be.infer(x)
    be.infer(x)
    runs.append((f"{name} {prec} {w}x{h} ({be.path.name})", be, x, []))
for _ in range(a.rounds):
    for _, be, x, t in runs:
        t0 = time.perf_counter()
        be.infer(x)
        t.append((time.perf_counter() - t0) * 1e3)
ref = float(np.median(runs[0][3]))
print(f"{cpu_name()}, ONNX Runtime {a.threads} thread(s), {a.rounds} interleaved rounds, "
      f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
print("| model, precision, size (file) | p50 ms | speed vs ERFNet fp32 480x360 |\n|---|---:|---:|")
for label, _, _, t in runs:
    p50 = float(np.median(t))
    print(f"| {label} | {p50:.1f} | {ref / p50:.2f}x |")
