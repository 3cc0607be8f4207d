"""`seg-perception pack-dataset`: any supported dataset as a compact folder dataset.

JPEG frames + PNG labels + dataset.yaml (the class table), the layout
`--dataset folder` reads. CamVid train+val packs to 37 MB (from 122 MB of PNGs),
small enough to travel with a GPU machine's working copy; labels stay
lossless, and ids are written after the dataset's own label mapping
(Cityscapes ids become train ids), so the packed copy trains the same classes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Sequence

import cv2

from .datasets import DatasetError, MissingSplit, open_dataset, share_label_reading, write_description


def pack_dataset(kind: str, root: str | Path, splits: Sequence[str], out: str | Path, quality: int = 95,
                 log: Callable[[str], None] = print, **dataset_kw) -> Dict[str, int]:
    """Write <out>/<split>/images/*.jpg, <out>/<split>/labels/*.png and <out>/dataset.yaml;
    returns frames written per split."""
    if not 50 <= quality <= 100:
        raise ValueError(f"--quality must be in 50..100, got {quality}")
    out = Path(out)
    if out.resolve() == Path(root).resolve():
        raise DatasetError(f"--out {out} is the dataset itself: pack into a new folder")
    if (out / "dataset.yaml").is_file():
        raise DatasetError(f"{out} already holds a dataset (dataset.yaml): pack into a new or empty folder")
    for split in splits:  # frames left from another packing would be trained on as well
        old = [p for sub in ("images", "labels") if (out / split / sub).is_dir() for p in (out / split / sub).iterdir()]
        if old:
            raise DatasetError(f"{out / split} already holds {len(old)} files: pack into a new or empty folder")
    opened = {}
    for split in splits:  # every split opens before the first frame is written
        try:
            opened[split] = open_dataset(kind, root, split, **dataset_kw)
        except MissingSplit as e:
            raise e.naming("--splits") from None
    share_label_reading(*opened.values())
    counts, table, said = {}, None, set()
    for split, ds in opened.items():
        table = ds.table
        for note in ds.notes:  # frames left out on reading, e.g. listed without a label
            if note not in said:  # a note about the whole dataset comes with every split
                log(f"[pack-dataset] note: {note}")
                said.add(note)
        img_dir, lab_dir = out / split / "images", out / split / "labels"
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        stems = [img_path.stem.replace("_leftImg8bit", "") for img_path, _ in ds.pairs]
        if len(set(stems)) < len(stems):
            # one name in two folders (cam0/0001, cam1/0001) or two formats (a.jpg, a.png): name each
            # by its path below the frames' common folder, or one would overwrite the other
            base = os.path.commonpath([str(Path(p).parent) for p, _ in ds.pairs])
            stems = [str(Path(p).relative_to(base)).replace(os.sep, "__").replace(".", "_") for p, _ in ds.pairs]
        for i, (img_path, _) in enumerate(ds.pairs):
            img, lab = ds.load(i)
            stem = stems[i]
            if not cv2.imwrite(str(img_dir / f"{stem}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise DatasetError(f"cannot write {img_dir / f'{stem}.jpg'}")
            if not cv2.imwrite(str(lab_dir / f"{stem}.png"), lab):
                raise DatasetError(f"cannot write {lab_dir / f'{stem}.png'}")
        ds.check_label_reading()  # not ids written from masks read two ways (labels: ids would hide it)
        counts[split] = len(ds)
    write_description(out, table, labels="ids")  # the labels written are ids, whatever the colours
    return counts
