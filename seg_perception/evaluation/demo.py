"""`demo`: the shipped default model, live, on the shipped CamVid sample bag.

If the model has no ONNX file beside it, one is exported once into a cache
folder ($SEG_PERCEPTION_CACHE, else $XDG_CACHE_HOME/seg_perception, else
~/.cache/seg_perception), keyed by the weights' checksum, and the node is given
the card written beside it."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from ..card import CardError, load_card
from ..paths import DEFAULT_MODEL, available_models, resolve_model
from .config import EvalError

SAMPLE_BAG = "camvid_val_sample"


def sample_bag() -> Path:
    """The sample bag of a source checkout (test/data), or of an install's share folder."""
    cands = [Path(__file__).resolve().parents[2] / "test" / "data" / SAMPLE_BAG,
             Path(sys.prefix) / "share" / "seg_perception" / "data" / SAMPLE_BAG]
    for p in cands:
        if (p / "metadata.yaml").is_file():
            return p
    raise EvalError(f"the sample bag {SAMPLE_BAG} is not here (looked in {', '.join(str(c) for c in cands)}); "
                    "pass --bag, or make one with 'seg-perception make-bag'")


def cache_dir() -> Path:
    env = os.environ.get("SEG_PERCEPTION_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "seg_perception"


def resolve_demo_model(model: str) -> Path:
    try:
        return resolve_model(model)
    except (ValueError, FileNotFoundError) as e:
        if model == DEFAULT_MODEL:
            have = ", ".join(available_models()) or "none"
            raise EvalError(f"the default model {DEFAULT_MODEL} is not in models/ (models here: {have}); "
                            "pass --model NAME or a card .yaml") from None
        raise EvalError(str(e)) from None


def ensure_onnx(card_path: Path, log=print) -> Path:
    """The card to give the node: the model's own when its ONNX file exists, else the card of
    an ONNX export in the cache (made now if missing)."""
    try:
        card = load_card(card_path)
    except CardError as e:
        raise EvalError(str(e)) from None
    onnx = card.file("onnx")
    if onnx is not None and onnx.is_file():
        return card_path
    weights = card.file("weights")
    if weights is None or not weights.is_file():
        raise EvalError(f"model {card.name} has neither an ONNX file nor weights ({card_path}); "
                        "run 'seg-perception export' or pass another --model")
    from ..deploy.export import export_onnx, sha256
    key = sha256(weights)[:12]
    folder = cache_dir() / "onnx" / f"{card.name}-{key}"
    out = folder / f"{card.name}.onnx"
    if not (out.is_file() and out.with_suffix(".yaml").is_file()):
        log(f"[demo] {card.name} has no ONNX file: exporting it once to {out}")
        export_onnx(card, out)
    return out.with_suffix(".yaml")


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
        lines.append(f"  mIoU {seg['miou']:.1f}% on the sample ({c.scored} frames); pixel accuracy "
                     f"{seg['pixel_accuracy']:.1f}%; drivable-area IoU {_pct(drv.get('iou'))}")
    p50 = "n/a" if lat["p50"] is None else f"{lat['p50']:.0f} ms"
    p95 = "n/a" if lat["p95"] is None else f"{lat['p95']:.0f} ms"
    what = "publish -> /segmentation/labels" if result.mode == "live" else "decode + pipeline"
    lines.append(f"  {result.fps:.1f} FPS, latency p50 {p50}, p95 {p95} ({what})")
    lines.append(f"  frames: {c.frames_in} in, {c.frames_out} out, {c.dropped} dropped, {c.rejected} rejected")
    lines.append(f"  report: {report}")
    return "\n".join(lines)


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def default_out(bag: Path, mode: str, root: Optional[Path] = None) -> Path:
    return (root or Path("reports")) / f"eval_{bag.name or bag.stem}_{mode}"
