"""`make-bag`: a rosbag2 from a labelled dataset split, as a camera driver would record it.

Per frame, all with the same header stamp (start + i / rate) and recorded at that time:
  /camera/image_raw (sensor_msgs/Image, rgb8 or bgr8)
      or /camera/image_raw/compressed (sensor_msgs/CompressedImage, JPEG)
  /camera/camera_info (sensor_msgs/CameraInfo, nominal pinhole: the datasets carry no calibration)
  /camera/labels_gt (sensor_msgs/Image, mono8 class ids; the ignore id as in the dataset)
and in metadata.yaml's custom_data the class names those ids mean (bag_io.GT_CLASSES_KEY).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np

from ..data import bag_io

ENCODINGS = ("rgb8", "bgr8", "jpeg")
DEFAULT_START_S = 1_700_000_000  # a fixed epoch: the same command makes the same stamps


@dataclass
class MakeBagResult:
    path: Path
    frames: int
    indices: List[int]
    image_topic: str
    size_bytes: int


def spread(n_total: int, n: int) -> List[int]:
    """n indices spread evenly over 0..n_total-1 (all of them for n <= 0 or n >= n_total)."""
    if n <= 0 or n >= n_total:
        return list(range(n_total))
    return sorted({int(round(x)) for x in np.linspace(0, n_total - 1, n)})


def make_bag(out: str | Path, dataset: str = "camvid", split: str = "val", root: Optional[str | Path] = None,
             fmt: str = "mcap", encoding: str = "jpeg", rate: float = 10.0, frames: int = 0,
             indices: Optional[Sequence[int]] = None, jpeg_quality: int = 90, compress: bool = False,
             frame_id: str = "camera", start_s: float = DEFAULT_START_S, progress=None,
             **dataset_kw) -> MakeBagResult:
    from ..data.datasets import DatasetError, default_camvid_root, open_dataset
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding '{encoding}'; valid choices: {', '.join(ENCODINGS)}")
    if not 0 < rate <= 1e9:  # stamps are whole nanoseconds: a faster rate (or inf) gives frames the same stamp
        raise ValueError(f"--rate must be a finite number of frames per second above 0 and at most 1e9, got {rate}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"--jpeg-quality must be within 1..100, got {jpeg_quality}")
    if root is None:
        if dataset != "camvid":
            raise ValueError(f"--data is required for --dataset {dataset}")
        root = default_camvid_root()
    try:
        ds = open_dataset(dataset, root, split, **dataset_kw)  # dataset_kw: a folder dataset's classes
    except DatasetError as e:
        raise ValueError(str(e)) from None
    if indices is None:
        indices = spread(len(ds), frames)
    bad = [i for i in indices if not 0 <= i < len(ds)]
    if bad:
        raise ValueError(f"frame index {bad[0]} is outside the {len(ds)} frames of {dataset} {split}")
    image_topic = bag_io.DEFAULT_COMPRESSED_TOPIC if encoding == "jpeg" else bag_io.DEFAULT_IMAGE_TOPIC
    t0 = int(round(start_s * 1e9))
    period = 1e9 / rate
    with bag_io.BagWriter(out, fmt, compress=compress) as w:
        # what the label ids mean, so that eval-bag can refuse a model trained on other classes
        w.set_custom_data(bag_io.GT_CLASSES_KEY, json.dumps(list(ds.table.names)))
        w.set_custom_data(bag_io.GT_SOURCE_KEY, json.dumps({"dataset": dataset, "split": split,
                                                            "data": str(Path(root).expanduser().resolve())}))
        for n, idx in enumerate(indices):
            try:
                rgb, label = ds.load(idx)
            except DatasetError as e:
                raise ValueError(str(e)) from None
            t = t0 + int(round(n * period))
            h, wd = label.shape
            if encoding == "jpeg":
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
                if not ok:
                    raise RuntimeError(f"JPEG encoding of frame {idx} failed")
                w.write(image_topic, bag_io.compressed_msg(buf.tobytes(), "jpeg", t, frame_id), t)
            else:
                img = rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                w.write(image_topic, bag_io.image_msg(img, encoding, t, frame_id), t)
            w.write(bag_io.DEFAULT_INFO_TOPIC, bag_io.camera_info_msg(wd, h, t, frame_id), t)
            w.write(bag_io.DEFAULT_GT_TOPIC, bag_io.image_msg(label, "mono8", t, frame_id), t)
            if progress is not None:
                progress(n + 1, len(indices))
    path = Path(out).expanduser()
    return MakeBagResult(path, len(indices), list(indices), image_topic, bag_io.bag_size(path))
