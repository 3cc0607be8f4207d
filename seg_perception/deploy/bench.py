"""`seg-perception bench`: speed of every network of the zoo, in one table.

Each network gets RANDOM weights (speed does not depend on them), is exported
with the deployment wrapper (uint8 in, argmax inside) and timed per frame
through the backend interface the node uses: ONNX Runtime fp32 and int8 (a Q/DQ
model calibrated on a few frames) on the CPU, and every precision on TensorRT
where it is installed. Params and GMACs are those of the bare network at the
benchmark resolution. ERFNet is always measured in the same run, as the
reference of the speed ratio.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..timing import cpu_name, time_backend

REFERENCE = "erfnet"


def parse_resolution(text: str) -> tuple[int, int]:
    """'480x360' -> (480, 360), multiples of 8."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution '{text}' is not WIDTHxHEIGHT, e.g. 480x360") from None
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise ValueError(f"resolution {w}x{h} must be positive multiples of 8")
    return w, h


@dataclass
class BenchRow:
    model: str
    backend: str
    precision: str
    params_m: float
    gmacs: float
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    fps: Optional[float] = None
    vs_erfnet: Optional[float] = None  # ERFNet p50 / this p50, same backend and precision
    note: str = ""


def _complexity(net, width: int, height: int) -> tuple[float, float]:
    from ..nets.complexity import count_macs, count_params
    return count_params(net) / 1e6, count_macs(net, height, width) / 1e9


def sample_frames(width: int, height: int, n: int = 4, seed: int = 0,
                  dataset=None) -> tuple[List[np.ndarray], str]:
    """Frames of ``dataset`` (an opened split), else CamVid train frames, at the size (the
    runtime's resize path), else synthetic ones."""
    from ..data.datasets import default_camvid_root, read_rgb
    from ..data.transforms import resize_frame
    from .quantize import list_calibration_images
    root = default_camvid_root()
    if dataset is not None or (root / "train.txt").is_file():
        files = list_calibration_images(dataset if dataset is not None else root, n, seed)
        frames = [read_rgb(f) for f in files]
        return [np.ascontiguousarray(resize_frame(f, (width, height))) for f in frames], \
            f"{len(frames)} {'CamVid train' if dataset is None else dataset.table.dataset} frames"
    rng = np.random.default_rng(seed)
    grad = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    frames = [np.clip(grad + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8) for _ in range(n)]
    return frames, f"{n} synthetic frames (CamVid not found)"


def _export_random(name: str, folder: Path, width: int, height: int, seed: int = 0):
    """Card + random weights + ONNX for network ``name``; returns (card, onnx path, net)."""
    import torch
    from ..card import card_for_table, load_card
    from ..data.classes import CAMVID
    from ..nets import build_model
    from .export import export_onnx
    torch.manual_seed(seed)
    net = build_model(name, CAMVID.num_classes).eval()
    torch.save(net.state_dict(), folder / f"{name}.pt")
    card = card_for_table(name, name, CAMVID, width, height, files={"weights": f"{name}.pt"},
                          training={"note": "RANDOM WEIGHTS: benchmark only"})
    card.save(folder / f"{name}.yaml")
    onnx = export_onnx(load_card(folder / f"{name}.yaml"), folder / f"{name}.onnx")
    return load_card(onnx), onnx, net


def bench_model(name: str, width: int, height: int, frames: Sequence[np.ndarray], backends: Sequence[str],
                runs: int, warmup: int, threads: int, workdir: Path, quant_method: str = "auto",
                log: Callable[[str], None] = print) -> List[BenchRow]:
    from ..runtime.backends import OnnxRuntimeBackend
    from .quantize import note_int8, quantize_onnx
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    card, onnx, net = _export_random(name, folder, width, height)
    params, gmacs = _complexity(net, width, height)
    del net
    rows: List[BenchRow] = []
    if any(p == "int8" for b in backends for p in _precisions(b)):
        # Listed in the card (in memory): each backend then finds the graph of its precision there.
        q = quantize_onnx(onnx, folder / f"{name}_int8.onnx", list(frames), method=quant_method)
        note_int8(card, q.path, q)
    for kind in backends:
        for precision in _precisions(kind):
            row = BenchRow(name, kind, precision, round(params, 3), round(gmacs, 3))
            try:
                # labels only, as the node runs it unless confidence is published or ground is on
                if kind == "onnxruntime":  # the CPU, as the table says (onnxruntime-gpu would take CUDA)
                    # the Q/DQ file for int8, named: timing it on the CPU is this table's intent (no warning)
                    be = OnnxRuntimeBackend(card, width, height, precision, onnx_path=card.onnx_for(precision),
                                            threads=threads, confidence=False, use_cuda=False)
                else:
                    from ..runtime.tensorrt_backend import TensorRTBackend
                    be = TensorRTBackend(card, width, height, precision, cache_dir=workdir / "engines",
                                         timing_cache=workdir / "timing.cache", confidence=False)
                t = time_backend(be, frames, runs, warmup)
                be.close()
                row.p50_ms, row.p95_ms, row.fps = t["p50"], t["p95"], t["fps"]
            except Exception as e:  # one failing row must not lose the others
                row.note = f"failed: {str(e).splitlines()[0][:120]}"
            log(f"[bench] {name} {kind} {precision}: "
                + (f"p50 {row.p50_ms} ms, {row.fps} FPS" if row.p50_ms is not None else row.note))
            rows.append(row)
    return rows


def _precisions(kind: str) -> Sequence[str]:
    from ..runtime.backends import OnnxRuntimeBackend
    from ..runtime.tensorrt_backend import TensorRTBackend
    return (OnnxRuntimeBackend if kind == "onnxruntime" else TensorRTBackend).precisions


def run_bench(models: Optional[Sequence[str]] = None, backends: Optional[Sequence[str]] = None,
              width: int = 480, height: int = 360, runs: int = 20, warmup: int = 3, threads: int = 0,
              quant_method: str = "auto", log: Callable[[str], None] = print, dataset=None) -> Dict:
    """Benchmark ``models`` (default: the whole zoo); returns {"environment", "rows"}."""
    import onnxruntime
    from ..nets import list_models
    from ..runtime.backends import tensorrt_missing
    zoo = list_models()
    models = list(models or zoo)
    unknown = [m for m in models if m not in zoo]
    if unknown:
        raise ValueError(f"unknown model '{unknown[0]}'; valid choices: {', '.join(zoo)}")
    if REFERENCE not in models and REFERENCE in zoo:
        models.append(REFERENCE)  # the ratio column needs ERFNet from this same run
    if backends is None:
        backends = ["onnxruntime"] + (["tensorrt"] if tensorrt_missing() is None else [])
    for b in backends:
        if b not in ("onnxruntime", "tensorrt"):
            raise ValueError(f"unknown backend '{b}'; valid choices: onnxruntime, tensorrt")
    if any(p == "int8" for b in backends for p in _precisions(b)):  # before any network is exported
        from .quantize import pick_method
        quant_method = pick_method(quant_method, "--quant-method")
    missing = tensorrt_missing() if "tensorrt" in backends else None
    if missing:
        raise RuntimeError(f"backend 'tensorrt' cannot run here: {missing.rstrip('.')}; benchmark with "
                           "--backend onnxruntime")
    frames, frames_note = sample_frames(width, height, dataset=dataset)  # INT8 calibration, agreement
    rows: List[BenchRow] = []
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine, before the bench's own threads
    with tempfile.TemporaryDirectory(prefix="seg_bench_") as tmp:
        for name in models:
            rows += bench_model(name, width, height, frames, backends, runs, warmup, threads, Path(tmp),
                                quant_method, log)
    ref = {(r.backend, r.precision): r.p50_ms for r in rows if r.model == REFERENCE and r.p50_ms}
    for r in rows:
        base = ref.get((r.backend, r.precision))
        if base and r.p50_ms:
            r.vs_erfnet = round(base / r.p50_ms, 2)
    env = {"cpu": cpu_name(), "machine": platform.machine(),
           "threads": threads or "the runtime's default number of",
           "load_average_1min": load_before, "onnxruntime": onnxruntime.__version__,
           "resolution": f"{width}x{height}", "runs": runs, "warmup": warmup, "frames": frames_note,
           "weights": "random (speed only)", "date": time.strftime("%Y-%m-%d")}
    if "tensorrt" in backends:
        import tensorrt
        from ..runtime.cuda import gpu_properties
        env["tensorrt"] = tensorrt.__version__
        env["gpu"] = gpu_properties()["name"]
    return {"environment": env, "rows": [asdict(r) for r in rows]}


def to_markdown(result: Dict) -> str:
    env = result["environment"]
    where = f"GPU {env['gpu']}, TensorRT {env['tensorrt']}; " if "gpu" in env else ""
    lines = [f"Benchmark at {env['resolution']}, {where}CPU {env['cpu']} ({env['threads']} threads, ONNX "
             f"Runtime {env['onnxruntime']}; load average {env.get('load_average_1min', '?')} before it); "
             f"{env['runs']} timed runs after {env['warmup']} warm-up on "
             f"{env['frames']}; weights: {env['weights']}; {env['date']}. ONNX Runtime int8 rows run the "
             "TensorRT-style Q/DQ graph; the node's CPU int8 model is another (QOperator) graph, timed by "
             "scripts/speed_shipped.py of the source repository (not in a pip install).", "",
             "| model | backend | precision | params (M) | GMACs | p50 (ms) | p95 (ms) | FPS (1/mean) | speed vs ERFNet |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['params_m']:.2f} | "
                     f"{r['gmacs']:.2f} | {f(r['p50_ms'], '.1f')} | {f(r['p95_ms'], '.1f')} | "
                     f"{f(r['fps'], '.1f')} | {f(r['vs_erfnet'], '.2f') + ('x' if r['vs_erfnet'] else '')} |"
                     + (f" {r['note']}" if r["note"] else ""))
    return "\n".join(lines)


def save_json(result: Dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
