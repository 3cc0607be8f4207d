"""`seg-perception evaluate`: accuracy of a model on a dataset split, through the
same Pipeline (resize, backend, nearest resize back) the node uses, so the
number measures what ships, on any backend and precision. `release` measures
the val mIoU it writes into a shipped card with this too."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..card import ModelCard
from ..data.datasets import SegmentationDataset, open_dataset
from ..metrics import ConfusionMatrix, no_nan, percentiles
from ..runtime.pipeline import Pipeline
from .common import held_in, held_out_reference, trained_splits


def evaluate(card_path: str | Path | ModelCard, data: "str | SegmentationDataset", dataset: str = "camvid",
             split: str = "val",
             backend: str = "onnxruntime", precision: str = "fp32", weights: Optional[str] = None,
             onnx: Optional[str] = None, threads: int = 0, limit: int = 0, width: int = 0, height: int = 0,
             root: "str | Path | None" = None, **dataset_kw) -> dict:
    """``width``/``height``: the network's input size (0: the card's); labels are scored at the
    label image's size either way. ``root``: the dataset folder (--data) of a ``data`` opened
    already, to tell whether the card's run trained on these frames (not said without it)."""
    pipe = Pipeline.from_card(card_path, backend=backend, precision=precision, weights=weights, onnx=onnx,
                              threads=threads, width=width or None, height=height or None,
                              confidence=False)  # labels alone, as the node runs it: its inference time
    # ``data``: a dataset root, or a dataset the command line opened already (cli.open_from_args)
    ds = data if isinstance(data, SegmentationDataset) else open_dataset(dataset, data, split, **dataset_kw)
    pipe.card.check_classes(list(ds.table.names), f"{dataset} {split}",
                            f"evaluate it on the dataset it was trained on (it says: {pipe.card.dataset or 'nothing'}; "
                            "--dataset folder --data DIR for your own)")
    cm = ConfusionMatrix(pipe.card.num_classes)
    n = min(len(ds), limit) if limit else len(ds)
    infer_ms = []
    pipe.backend.warmup()  # the first call's set-up is not a frame's inference time
    t0 = time.perf_counter()
    for i in range(n):
        img, lab = ds.load(i)
        res = pipe(img)
        infer_ms.append(res.timings["infer_ms"])
        cm.update(res.labels, lab)
        if sys.stderr.isatty():
            print(f"\r[evaluate] {i + 1}/{n}", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    ds.check_label_reading()  # not scored against labels read two ways
    out = cm.summary(pipe.card.class_names)
    out["per_class_errors"] = cm.class_errors(pipe.card.class_names)
    out.update({"model": pipe.card.name, "backend": pipe.backend.describe(), "dataset": dataset,
                "split": split, "input_size": list(pipe.size), "frames": n,
                "seconds": round(time.perf_counter() - t0, 1),
                "inference_ms": percentiles(infer_ms)})
    # trained on these frames: by the card's training record (dataset kind, folder, splits), as
    # eval-bag decides for a bag's ground truth; not by the card's dataset name (dataset.yaml's name:)
    folder = data if isinstance(data, (str, Path)) else root
    _, why = held_in(pipe.card, dataset, folder, split)
    if why:
        out["not_held_out"] = (f"{why}: these frames are not held out"
                               + (held_out_reference(pipe.card) if trained_splits(pipe.card, dataset, folder, split)
                                  else ""))
    return out


def _held_in_note(results: list) -> list:
    """The line that says a figure is of frames the model trained on (the shipped default trained on
    CamVid train+val, so its val figure reads 13 points above what a held-out split gives)."""
    note = next((r["not_held_out"] for r in results if r.get("not_held_out")), None)
    return [f"  note: {note}"] if note else []


def _cell(value, width: int) -> str:
    """A figure, or '-' (a class absent from the frames, or never predicted) in the same width."""
    return f"{'-':>{width}}" if value is None else f"{value:{width}.2f}"


def format_summary(res: dict) -> str:
    lines = [f"{res['model']} on {res['dataset']} {res['split']} ({res['frames']} frames, {res['backend']}):",
             f"  mIoU {res['miou']:.2f}  pixel accuracy {res['pixel_accuracy']:.2f}  "
             f"inference p50 {res['inference_ms']['p50']} ms"]
    errors = res.get("per_class_errors", {})
    lines.append(f"  {'class':<12} {'IoU':>6} {'recall':>7} {'precision':>9}  its pixels predicted as")
    for name, v in res["per_class_iou"].items():
        e = errors.get(name, {})
        rec, prec = e.get("recall"), e.get("precision")
        wrong = ", ".join(f"{k} {c:.1f}%" for k, c in e.get("predicted_as", {}).items())
        lines.append(f"  {name:<12} {_cell(v, 6)} {_cell(rec, 7)} {_cell(prec, 9)}  {wrong}")
    if res.get("classes_absent"):
        lines.append(f"  no pixel of {', '.join(res['classes_absent'])} in these labels: not in the mean (a pixel "
                     "predicted as one still costs the class it belongs to)")
    return "\n".join(lines + _held_in_note([res]))


def format_sizes(results: list) -> str:
    """One row per input size: what a larger input buys and what it costs (evaluate --sizes)."""
    lines = [f"{'input':>9} {'mIoU':>6} {'pixel acc':>9} {'inference p50 ms':>16}"]
    for r in results:
        w, h = r["input_size"]
        lines.append(f"{f'{w}x{h}':>9} {r['miou']:6.2f} {r['pixel_accuracy']:9.2f} {str(r['inference_ms']['p50']):>16}")
    return "\n".join(lines + _held_in_note(results))


def write_json(res: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # (--json was checked to be writable so)
    # null, not NaN, for the mIoU of frames whose labels are all ignore: NaN is no JSON (jq refuses the file)
    Path(path).write_text(json.dumps(no_nan(res), indent=1,
                                     default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
