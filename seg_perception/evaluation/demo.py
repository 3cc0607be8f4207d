"""`demo`: the shipped default model, live, on the shipped CamVid sample bag
(paths.sample_bag). A model without an ONNX file is exported once into the cache
first (deploy/export.py: ensure_onnx); the demo command does that step."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ..paths import DEFAULT_MODEL, available_models, resolve_model
from .config import EvalError


def resolve_demo_model(model: str) -> Path:
    try:
        return resolve_model(model)
    except (ValueError, FileNotFoundError) as e:
        if model == DEFAULT_MODEL:
            have = ", ".join(available_models()) or "none"
            raise EvalError(f"the default model {DEFAULT_MODEL} is not in models/ (models here: {have}); "
                            "pass --model NAME or a card .yaml") from None
        raise EvalError(str(e)) from None


def live_available() -> bool:
    """Whether the live node can run here: rclpy importable (a ROS 2 install, or the
    `seg_perception[ros]` wheels). A plain `pip install .` has no rclpy."""
    import importlib.util
    return importlib.util.find_spec("rclpy") is not None


def clear_previous_bag(path: Path) -> None:
    """The demo rewrites its own output bag; only a folder that is a bag is removed."""
    if path.is_dir() and (path / "metadata.yaml").is_file():
        shutil.rmtree(path)
    elif path.exists():
        raise EvalError(f"{path} exists and is not a bag from an earlier demo; remove it or choose another --out")


def summary(result, report: Path) -> str:
    m = result.metrics()
    lat = m["latency_ms"]
    c = result.counts
    how = "live replay through segmentation_node" if result.mode == "live" else "offline run of the pipeline"
    lines = [f"demo: {how}, {c.frames_in} frames of {Path(result.bag).name} "
             f"({m['model']['name']}, {m['model']['backend']})"]
    if result.confusion is not None and c.scored:
        seg, drv = m["segmentation"], m["drivable"]
        # the mIoU from the matrix, as eval-bag's summary prints it (metrics.json's 79.05 read 79.0 here, 79.1 there)
        lines.append(f"  mIoU {_pct(100 * result.confusion.miou())} on the sample ({c.scored} frames); pixel accuracy "
                     f"{_pct(seg.get('pixel_accuracy'))}; drivable-area IoU {_pct(drv.get('iou'))}")
        if result.trained_on_gt:
            lines.append(f"  not held out: {result.trained_on_gt}")
    p50 = "n/a" if lat["p50"] is None else f"{lat['p50']:.0f} ms"
    p95 = "n/a" if lat["p95"] is None else f"{lat['p95']:.0f} ms"
    what = "publish -> /segmentation/labels" if result.mode == "live" else "decode + pipeline"
    fps = "n/a" if result.fps is None else f"{result.fps:.1f}"
    answered = " answered (at most the playback's rate)" if result.mode == "live" else ""
    lines.append(f"  {fps} FPS{answered}, latency p50 {p50}, p95 {p95} ({what})")
    lines.append(f"  frames: {c.frames_in} in, {c.frames_out} out, {c.dropped} dropped, {c.rejected} rejected")
    lines.append(f"  report: {report}")
    return "\n".join(lines)


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.1f}%"


def default_out(bag: Path, mode: str, root: Optional[Path] = None) -> Path:
    """reports/eval_<bag>_<mode>: a bag folder's name, a bare storage file's stem (not eval_x.mcap_offline),
    a metadata.yaml's folder (which it names)."""
    name = bag.name
    if bag.is_file():
        name = bag.resolve().parent.name if bag.name == "metadata.yaml" else bag.stem
    return (root or Path("reports")) / f"eval_{name or bag.resolve().name}_{mode}"
