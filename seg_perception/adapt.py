"""`seg-perception adapt`: a model for your own camera from unlabelled frames of it.

Reads frames spread over a rosbag2 (or a folder of images), re-estimates the network's
BatchNorm statistics on them, blended with the training statistics
(train/batchnorm_adaptation.py), and writes a new model (weights, card and a dynamic-shape ONNX)
that the node runs like any other; the source model's files are not touched. No label is needed
and no learned weight changes; the new card says where the statistics came from.

It combines train (the statistics) with deploy (the export), so it sits on the cli floor
beside the command that runs it, like release (docs/architecture.md).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .card import ARCHITECTURE_METRICS, WEIGHTS_HASH, ModelCard, check_model_name, load_card
from .deploy.export import exported_card, write_onnx
from .files import sha256
from .paths import resolve_model
from .runtime.backends import TorchBackend
from .runtime.frame_sources import read_frames
from .runtime.pipeline import Pipeline

# Weight of the new frames' statistics: 0.5 was the best or within 0.3 of the best of 0.25-1.0 in
# all four held-out measurements, and cost at most 0.6 on the drives trained on (1.0: up to 8);
# docs/training.md, "Adapting to your camera".
DEFAULT_BLEND = 0.5
DEFAULT_FRAMES = 200
FEW_FRAMES = 10  # 10 frames did as well as 50 there (within 0.4); fewer were not measured: warned


def adapt(model: str, frames: str | Path, out: str | Path, name: Optional[str] = None,
          num_frames: int = DEFAULT_FRAMES, blend: float = DEFAULT_BLEND,
          image_topics: Optional[Sequence[str]] = None,
          batch: int = 8, threads: int = 0, replace: bool = False,
          log: Callable[[str], None] = print) -> Path:
    """Write ``out/NAME.pt``, ``NAME.onnx`` and ``NAME.yaml``; returns the card's path."""
    # torch only here: the command line imports this module for its defaults
    from .train.batchnorm_adaptation import reestimate_batchnorm
    if num_frames < 1:
        raise ValueError(f"--num-frames must be at least 1, got {num_frames}")
    if batch < 1:
        raise ValueError(f"--batch must be at least 1, got {batch}")
    if not 0.0 < blend <= 1.0:
        raise ValueError(f"--blend must be above 0 and at most 1 (the new frames' share of the statistics), "
                         f"got {blend}")
    card = load_card(resolve_model(model))
    name = check_model_name(f"{card.name}_adapted" if name is None else name)
    out = Path(out)
    card_path = out / f"{name}.yaml"
    if card_path.resolve() == card.path.resolve():
        raise ValueError(f"{card_path} is the model being adapted: choose another --out or --name")
    # the source model's files (its INT8 graphs: --name rdsnet_camvid_int8) and another model's are not overwritten
    writes = [out / f"{name}{suffix}" for suffix in (".yaml", ".pt", ".onnx")]
    ours = {card.file(role).resolve() for role in card.files if card.file(role) is not None}
    clash = [w for w in writes if w.resolve() in ours]
    if clash:
        raise ValueError(f"{clash[0]} is a file of the model being adapted: choose another --name")
    there = [w for w in writes if w.exists()]
    if there and not replace:
        raise FileExistsError(f"{there[0]} exists (another model, or an earlier adaptation): choose another --name, "
                              "or pass --replace to write over it")
    got = read_frames(frames, num_frames, spread=True, image_topic=image_topics)
    log(f"[adapt] {card.name}: {got.note}")
    if len(got.frames) < FEW_FRAMES:
        fix = "pass a larger --num-frames" if len(got.frames) == num_frames else "record a longer bag or more images"
        log(f"[adapt] warning: only {len(got.frames)} frames; fewer than {FEW_FRAMES} were never measured to help "
            f"({fix})")

    backend = TorchBackend(card, card.input_width, card.input_height, threads=threads)
    pipe = Pipeline(backend, card)
    small = [pipe.preprocess(frame, layout) for frame, layout in got.frames]  # the node's own resize

    def batches():
        torch = backend.torch
        for s in range(0, len(small), batch):
            yield torch.from_numpy(np.stack(small[s:s + batch])).to(backend.device)

    shifts = reestimate_batchnorm(backend.model, batches(), blend)
    biggest = sorted(shifts, key=lambda s: -s.shift)[:3]
    mean_shift = float(np.mean([s.shift for s in shifts]))
    log(f"[adapt] {len(shifts)} BatchNorm layers re-estimated, blend {blend}: the new frames' means differ from "
        f"training by {mean_shift:.2f} standard deviations on average (most: "
        + ", ".join(f"{s.name} {s.shift:.2f}" for s in biggest) + ")")

    out.mkdir(parents=True, exist_ok=True)
    # Made in a folder beside, moved into place at the end with the card last (as release does): an
    # adaptation stopped half-way leaves no lone NAME.pt that blocks its rerun.
    for left in out.glob(f".{name}.adapt-*"):  # of a run killed before it could clean up
        shutil.rmtree(left, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.adapt-", dir=out))
    try:
        new = _write_model(card, backend, stage, name, frames, got, image_topics, blend, batch, mean_shift)
        for f in new.files.values():
            os.replace(stage / f, out / f)
        new.save(card_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log(f"[adapt] wrote {card_path} (weights {name}.pt, ONNX {name}.onnx); run it with "
        f"model:={card_path}, or measure it: seg-perception evaluate --model {card_path} ...")
    return card_path


def _write_model(card: ModelCard, backend, stage: Path, name: str, frames, got, image_topics, blend: float,
                 batch: int, mean_shift: float) -> ModelCard:
    """The adapted model's weights and ONNX in ``stage``; returns its card (not written)."""
    from .train.checkpoint import atomic_save
    from .train.loop import command_line
    new = ModelCard(**{k: v for k, v in card.__dict__.items() if k != "path"})
    new.name, new.path = name, stage / f"{name}.yaml"
    new.files = {"weights": f"{name}.pt"}
    atomic_save({k: v.cpu() for k, v in backend.model.net.state_dict().items()}, stage / f"{name}.pt")
    adaptation = {
        "from_model": card.name, "from_card": str(card.path), "frames": len(got.frames),
        "source": str(Path(frames).expanduser().resolve()),
        "image_topics": list(image_topics) if image_topics else None, "skipped_messages": got.skipped,
        "blend": blend, "batch": batch,
        "mean_shift_sd": round(mean_shift, 4), "command": command_line(),
        "from_model_val_miou": card.metrics.get("val_miou"),
        "note": "BatchNorm statistics re-estimated on these unlabelled frames and blended with the training "
                "ones; no learned weight changed. The source model's accuracy figures do not describe these "
                "weights: measure them with 'seg-perception evaluate' on labelled frames of this camera."}
    if "adaptation" in card.training:
        adaptation["previous"] = card.training["adaptation"]
    new.training = {**card.training, "adaptation": adaptation}
    for key in ("export", "quantization", "quantization_cpu"):
        new.training.pop(key, None)
    new.training[WEIGHTS_HASH] = sha256(stage / f"{name}.pt")  # its own weights, not the source model's
    new.metrics = {k: card.metrics[k] for k in ARCHITECTURE_METRICS if k in card.metrics}
    onnx_path = write_onnx(new, stage / f"{name}.onnx", dynamic=True)
    return exported_card(new, onnx_path, dynamic=True)
