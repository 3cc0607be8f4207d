"""Camera frames without ground truth, from a folder of images or a rosbag2.

For the commands that need some real frames of a camera and nothing else: the doctor
(engines checked and timed on them) and adapt (BatchNorm statistics of the user's own
camera). Bag messages become frames through image_conversion, as in the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..data.datasets import IMAGE_EXTS, DatasetError, read_rgb
from .image_conversion import ImageError, message_to_array


@dataclass
class Frames:
    frames: List[Tuple[np.ndarray, str]]  # (array, colour layout for Pipeline.preprocess)
    note: str                             # one line: how many, from where
    skipped: int = 0                      # messages that are not a readable image
    why: str = ""                         # the first such message's reason
    damage: str = ""                      # a damaged bag: where and what was lost


def is_bag(path: Path) -> bool:
    """A bag folder (metadata.yaml, or a storage file alone: an interrupted recording), or a bare
    storage file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3")) \
            or any(path.glob("*.mcap.zstd")) or any(path.glob("*.db3.zstd"))
    return path.suffix in (".mcap", ".db3") or path.name.endswith((".mcap.zstd", ".db3.zstd"))


def _is_label_folder(name: str) -> bool:
    """A folder of ground-truth masks in a dataset layout this package reads (folder: labels/,
    CamVid: trainannot/, Cityscapes: gtFine/, Pascal VOC and CVAT: SegmentationClass/,
    SegmentationObject/): class ids, not camera frames."""
    name = name.lower()
    return name == "labels" or name.endswith("annot") or name.startswith(("gt", "segmentation"))


def _is_label_image(path: Path, root: Path) -> bool:
    return any(_is_label_folder(part) for part in path.relative_to(root).parts[:-1])


def _picks(total: int, n: int, spread: bool) -> List[int]:
    """Which of ``total`` frames to keep: the first ``n``, or ``n`` evenly over all of them."""
    if not spread or total <= n:
        return list(range(min(n, total)))
    return sorted(set(np.linspace(0, total - 1, n).round().astype(int).tolist()))


@dataclass
class _Pass:
    """One read of a bag's camera topic."""
    frames: List[Tuple[np.ndarray, str]]
    skipped: int = 0
    why: str = ""       # the first unreadable message's reason
    seen: int = 0       # messages met before the end or the damage
    damage: str = ""    # why reading stopped early ("" at the end of the topic)


def _read_pass(r, topic: str, n: int, keep: Optional[set]) -> _Pass:
    """Frames of the messages whose index is in ``keep`` (None: the first ``n`` readable ones);
    the others are not deserialised, so a long recording is read once, cheaply."""
    from ..data.bag_io import BagError
    out = _Pass([])
    try:
        for i, m in enumerate(r.messages([topic], decode=False)):
            out.seen = i + 1
            if keep is not None and i not in keep:
                continue
            try:
                if r.decode(m).msg is None:
                    raise ImageError(m.error or "message does not deserialise")
                out.frames.append(message_to_array(m.msg))
            except ImageError as e:
                out.skipped += 1
                out.why = out.why or str(e)
            if keep is None and len(out.frames) >= n:
                break
    except BagError as e:  # cut short or damaged: keep the frames before the damage
        out.damage = str(e)
    return out


def _bag_frames(path: Path, n: int, spread: bool, image_topic: Optional[str]) -> Frames:
    from ..data.bag_io import BagReader
    with BagReader(path) as r:
        topic = r.image_topic(image_topic)
        recorded = topic.count if topic.count is not None else r.expected.get(topic.name)
        if not spread:
            got = _read_pass(r, topic.name, n, None)
        else:
            total = recorded if recorded is not None else _read_pass(r, topic.name, 0, set()).seen
            got = _read_pass(r, topic.name, n, set(_picks(total, n, True)))
            if got.seen < total and len(got.frames) < n:
                # picks past the damage were lost: spread them over the frames before it instead
                got = _read_pass(r, topic.name, n, set(_picks(got.seen, n, True)))
            got.damage = got.damage or r.damage
            if recorded is not None and got.seen < recorded and not got.damage:
                got.damage = (f"bag {path} is damaged: it holds {got.seen} of the {recorded} messages "
                              f"recorded on {topic.name}")
    note = f"{len(got.frames)} frames of {topic.name} in {path}" + (f"; {got.damage}" if got.damage else "")
    return Frames(got.frames, note, got.skipped, got.why, got.damage)


def read_frames(source: str | Path, n: int, spread: bool = False,
                image_topic: Optional[str | Sequence[str]] = None) -> Frames:
    """Up to ``n`` frames from a rosbag2 (its camera topic, or ``image_topic``) or a folder of
    images (searched recursively, in name order; a dataset's label masks left out): the first
    ``n``, or with ``spread`` ``n`` taken evenly over the whole recording (over the part before
    the damage in a damaged bag). Unreadable messages are skipped and counted. Several topics
    (a robot's cameras): ``n`` shared out evenly between them, each topic's frames in turn."""
    src = Path(source)
    if n < 1:
        raise ValueError(f"the number of frames must be at least 1, got {n}")
    if not src.exists():
        raise FileNotFoundError(f"frames source {src} not found: pass a folder of images or a rosbag2")
    topics = [image_topic] if isinstance(image_topic, str) else list(image_topic or [])
    if is_bag(src):
        if len(topics) > 1:
            if len(set(topics)) < len(topics):
                raise ValueError(f"a camera topic is named twice in {', '.join(topics)}")
            if n < len(topics):
                raise ValueError(f"{n} frames cannot be shared out between {len(topics)} camera topics: "
                                 f"take at least {len(topics)}")
            parts = [_bag_frames(src, n // len(topics) + (i < n % len(topics)), spread, t)
                     for i, t in enumerate(topics)]
            out = Frames([f for p in parts for f in p.frames], "; ".join(p.note for p in parts),
                         sum(p.skipped for p in parts), next((p.why for p in parts if p.why), ""),
                         next((p.damage for p in parts if p.damage), ""))
        else:
            out = _bag_frames(src, n, spread, topics[0] if topics else None)
    else:
        if topics:
            raise ValueError(f"{src} is not a rosbag2: camera topics apply to a bag, not to a folder of images")
        if src.is_dir() and _is_label_folder(src.name):
            raise ValueError(f"{src} is a dataset's label folder (masks of class ids or colours, not camera frames): "
                             "pass the frames' folder (images/, JPEGImages/, train/) or the dataset's root")
        found = (sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
                 if src.is_dir() else [src])  # not macOS's ._NAME files beside the frames
        files = [p for p in found if not (src.is_dir() and _is_label_image(p, src))]
        read, bad, why = [], 0, ""
        for i in _picks(len(files), n, spread):
            try:  # one damaged file among hundreds is skipped and counted, as a bag's unreadable message is
                read.append((read_rgb(files[i]), "rgb"))
            except DatasetError as e:
                bad, why = bad + 1, why or str(e)
        out = Frames(read, f"{len(read)} frames from {src}")
        out.skipped, out.why = out.skipped + bad, out.why or why
        if len(files) < len(found):
            out.note += f" ({len(found) - len(files)} label images of a dataset layout left out)"
    if not out.frames:
        unreadable = f" ({out.skipped} unreadable messages; the first: {out.why})" if out.skipped else ""
        if out.damage:  # the bag's own damage is the reason, not the choice of source
            raise FileNotFoundError(f"no readable frames in {src}{unreadable}: {out.damage}")
        raise FileNotFoundError(f"no readable frames in {src}{unreadable}"
                                + ": pass a folder of images or a rosbag2 with images")
    if out.skipped:
        what = "files" if src.is_dir() and not is_bag(src) else "messages"
        out.note += f" ({out.skipped} unreadable {what} skipped; the first: {out.why})"
    return out
