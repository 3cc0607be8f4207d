"""Camera frames without ground truth, from a folder of images or a rosbag2.

For the commands that need some real frames of a camera and nothing else: the doctor
(engines checked and timed on them) and adapt (BatchNorm statistics of the user's own
camera). Bag messages become frames through image_conversion, as in the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..data.datasets import IMAGE_EXTS, read_rgb
from .image_conversion import ImageError, message_to_array


@dataclass
class Frames:
    frames: List[Tuple[np.ndarray, str]]  # (array, colour layout for Pipeline.preprocess)
    note: str                             # one line: how many, from where
    skipped: int = 0                      # messages that are not a readable image


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".mcap", ".db3")


def _is_label_image(path: Path, root: Path) -> bool:
    """A ground-truth mask in a dataset layout this package reads (folder: labels/, CamVid:
    trainannot/, Cityscapes: gtFine/): class ids, not a camera frame."""
    return any(d == "labels" or d.endswith("annot") or d.startswith("gt")
               for d in (part.lower() for part in path.relative_to(root).parts[:-1]))


def _picks(total: int, n: int, spread: bool) -> List[int]:
    """Which of ``total`` frames to keep: the first ``n``, or ``n`` evenly over all of them."""
    if not spread or total <= n:
        return list(range(min(n, total)))
    return sorted(set(np.linspace(0, total - 1, n).round().astype(int).tolist()))


def _bag_frames(path: Path, n: int, spread: bool, image_topic: Optional[str]) -> Frames:
    from ..data.bag_io import BagError, BagReader
    frames, skipped, damage = [], 0, ""
    with BagReader(path) as r:
        topic = r.image_topic(image_topic)
        try:
            total = topic.count
            if spread and total is None:  # the index does not say: count them first
                total = sum(1 for _ in r.messages([topic.name], decode=False))
            keep = set(_picks(total if total is not None else n, n, spread))
            for i, m in enumerate(r.messages([topic.name], decode=False)):
                if spread and i not in keep:
                    continue  # not deserialised: a long recording is read once, cheaply
                try:
                    if r.decode(m).msg is None:
                        raise ImageError(m.error or "message does not deserialise")
                    frames.append(message_to_array(m.msg))
                except ImageError:
                    skipped += 1
                if not spread and len(frames) >= n:
                    break
        except BagError as e:  # cut short or damaged: keep the frames before the damage
            damage = f"; {e}"
    return Frames(frames, f"{len(frames)} frames of {topic.name} in {path}{damage}", skipped)


def read_frames(source: str | Path, n: int, spread: bool = False, image_topic: Optional[str] = None) -> Frames:
    """Up to ``n`` frames from a rosbag2 (its camera topic, or ``image_topic``) or a folder of
    images (searched recursively, in name order; the label masks of a dataset folder left out): the first ``n``, or with ``spread`` ``n``
    taken evenly over the whole recording. Unreadable messages are skipped and counted."""
    src = Path(source)
    if n < 1:
        raise ValueError(f"the number of frames must be at least 1, got {n}")
    if not src.exists():
        raise FileNotFoundError(f"frames source {src} not found: pass a folder of images or a rosbag2")
    if is_bag(src):
        out = _bag_frames(src, n, spread, image_topic)
    else:
        found = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS) if src.is_dir() else [src]
        files = [p for p in found if not (src.is_dir() and _is_label_image(p, src))]
        out = Frames([(read_rgb(files[i]), "rgb") for i in _picks(len(files), n, spread)],
                     f"{min(n, len(files))} frames from {src}")
        if len(files) < len(found):
            out.note += f" ({len(found) - len(files)} label images of a dataset layout left out)"
    if not out.frames:
        raise FileNotFoundError(f"no readable frames in {src}"
                                + (f" ({out.skipped} unreadable messages)" if out.skipped else "")
                                + ": pass a folder of images or a rosbag2 with images")
    if out.skipped:
        out.note += f" ({out.skipped} unreadable messages skipped)"
    return out
