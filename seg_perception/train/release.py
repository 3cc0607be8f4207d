"""`seg-perception release`: turn a training run into a shipped model in models/.

Copies the run's best weights and card, exports the ONNX graph, makes the INT8
Q/DQ model, then measures what ships and writes it into the card: val mIoU and
per-class IoU through the runtime pipeline (ONNX Runtime fp32 and int8), params,
MACs, and CPU latency on this machine. Every figure in a shipped card comes from
this one command.
"""
from __future__ import annotations

import csv
import platform
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..card import load_card
from ..data.datasets import default_camvid_root
from ..metrics import percentiles


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _epochs_done(run: Path) -> Optional[int]:
    log = run / "log.csv"
    if not log.is_file():
        return None
    rows = list(csv.DictReader(log.open()))
    return int(rows[-1]["epoch"]) if rows else None


def time_backend(backend, frames, runs: int = 30) -> Dict:
    backend.warmup(3)
    ms = []
    for i in range(runs):
        t0 = time.perf_counter()
        backend.infer(frames[i % len(frames)])
        ms.append((time.perf_counter() - t0) * 1e3)
    return percentiles(ms)


def release(run: str | Path, name: str, to: str | Path, data: Optional[str] = None, calib_images: int = 100,
            threads: int = 2, int8: bool = True, note: str = "", log=print) -> Path:
    from ..deploy.export import export_onnx, load_net
    from ..nets.complexity import count_macs, count_params
    from ..runtime.backends import OnnxRuntimeBackend
    from ..runtime.pipeline import Pipeline
    from .evaluate import evaluate

    run, to = Path(run), Path(to)
    data = data or str(default_camvid_root())
    src_card = load_card(run / f"{name}.yaml")
    src_weights = src_card.file("weights")
    if src_weights is None or not src_weights.is_file():
        raise FileNotFoundError(f"the run's card {src_card.path} lists no existing weights file")
    to.mkdir(parents=True, exist_ok=True)
    for old in to.glob(f"{name}*"):
        if old.suffix in (".pt", ".onnx", ".yaml"):
            old.unlink()
    shutil.copy2(src_weights, to / f"{name}.pt")
    card = src_card
    card.files = {"weights": f"{name}.pt"}
    card.training = dict(card.training)
    card.training["epochs_completed_in_run"] = _epochs_done(run)
    if note:
        card.training["note"] = note
    card.save(to / f"{name}.yaml")
    card_path = to / f"{name}.yaml"

    log(f"[release] exporting {name} to ONNX")
    onnx_path = export_onnx(load_card(card_path), to / f"{name}.onnx")
    metrics: Dict = {}
    res = evaluate(card_path, data, "camvid", "val", backend="onnxruntime", threads=threads)
    metrics["val_miou"] = res["miou"]
    metrics["val_pixel_accuracy"] = res["pixel_accuracy"]
    metrics["val_per_class_iou"] = res["per_class_iou"]
    metrics["val_measured_with"] = "seg-perception evaluate: ONNX Runtime fp32, CamVid val (101 frames)"
    log(f"[release] fp32 val mIoU {res['miou']:.2f}")

    card = load_card(card_path)
    net = load_net(card)
    metrics["params"] = count_params(net)
    metrics["gmacs"] = round(count_macs(net, card.input_height, card.input_width) / 1e9, 3)
    metrics["gmacs_at"] = f"{card.input_width}x{card.input_height}"

    pipe = Pipeline(OnnxRuntimeBackend(card, card.input_width, card.input_height, "fp32", onnx_path=onnx_path,
                                       threads=threads), card)
    from ..data.datasets import camvid
    ds = camvid(data, "val")
    frames = [pipe.preprocess(ds.load(i)[0]) for i in np.linspace(0, len(ds) - 1, 10).round().astype(int)]
    import os
    # The load average says whether other work shared the CPU while timing.
    latency = {"cpu": _cpu_name(), "threads": threads, "resolution": metrics["gmacs_at"],
               "load_average_1min": round(os.getloadavg()[0], 2),
               "onnxruntime_fp32_ms": time_backend(pipe.backend, frames)}

    if int8:
        from ..deploy.quantize import (calibration_frames, evaluate_int8, list_calibration_images,
                                       quantize_onnx, record_in_card)
        log(f"[release] INT8: calibrating on {calib_images} CamVid train images")
        files = list_calibration_images(data, calib_images)
        q = quantize_onnx(onnx_path, to / f"{name}_int8.onnx", calibration_frames(files, card, onnx_path))
        acc = evaluate_int8(card, onnx_path, q.path, data, threads=threads)
        record_in_card(card_path, q.path, q, acc)
        card = load_card(card_path)
        be = OnnxRuntimeBackend(card, card.input_width, card.input_height, "int8", threads=threads)
        latency["onnxruntime_int8_ms"] = time_backend(be, frames)
        log(f"[release] int8 val mIoU {acc['int8_miou']:.2f} (fp32 {acc['fp32_miou']:.2f}), "
            f"label agreement {acc['label_agreement']:.2f}%")
        # The INT8 twin card written by record_in_card would list the model twice in models/.
        twin = to / f"{name}_int8.yaml"
        if twin.is_file():
            twin.unlink()
    card.metrics = {**card.metrics, **metrics, "cpu_latency": latency}
    card.save(card_path)
    log(f"[release] {card_path}: val mIoU {metrics['val_miou']:.2f}, {metrics['params']} params, "
        f"{metrics['gmacs']} GMACs, ONNX Runtime fp32 p50 {latency['onnxruntime_fp32_ms']['p50']} ms")
    return card_path
