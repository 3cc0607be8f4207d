"""`--out-bag`: the bag's camera, camera_info and ground-truth topics plus what the
pipeline/node produced (/segmentation/labels, drivable_mask, overlay; live, with the bag's
CameraInfo played, the node's /segmentation/camera_info, and from a node with ground.enable its
/segmentation/drivable_grid), for RViz or
Foxglove. Outputs are recorded at input time + measured latency, as `ros2 bag
record` would have seen them; a small heap keeps the file in time order."""
from __future__ import annotations

import heapq
import itertools
from pathlib import Path
from typing import List, Sequence, Tuple

from ..data import bag_io

LABELS = "/segmentation/labels"
DRIVABLE = "/segmentation/drivable_mask"
OVERLAY = "/segmentation/overlay"
SEG_INFO = "/segmentation/camera_info"
GRID = "/segmentation/drivable_grid"
# every output is an Image but these
OUTPUT_TYPES = {SEG_INFO: bag_io.CAMERA_INFO, GRID: "nav_msgs/msg/OccupancyGrid"}


class OutputBag:
    def __init__(self, path: str | Path, fmt: str = "mcap"):
        self.writer = bag_io.BagWriter(path, fmt)
        self.path = self.writer.path
        self._heap: List[Tuple[int, int, str, str, bytes]] = []
        self._seq = itertools.count()

    def keep_custom_data(self, reader: bag_io.BagReader) -> None:
        """The input bag's custom_data: what its ground truth's ids mean and where its frames come from, so
        that eval-bag on this bag checks the classes and says "not held out" as on the input."""
        for key, value in reader.custom_data.items():
            self.writer.set_custom_data(key, value)

    def add(self, t_ns: int, topic: str, msgtype: str, raw: bytes) -> None:
        heapq.heappush(self._heap, (int(t_ns), next(self._seq), topic, msgtype, raw))

    def add_msg(self, t_ns: int, topic: str, msg) -> None:
        ts = bag_io.typestore()
        self.add(t_ns, topic, msg.__msgtype__, bytes(ts.serialize_cdr(msg, msg.__msgtype__)))

    def flush_until(self, t_ns: int) -> None:
        while self._heap and self._heap[0][0] <= t_ns:
            t, _, topic, msgtype, raw = heapq.heappop(self._heap)
            self.writer.write_raw(topic, msgtype, raw, t)

    def copy(self, m: bag_io.BagMessage) -> None:
        """An input message, written once every output recorded before it is."""
        self.flush_until(m.t_ns - 1)
        self.writer.write_raw(m.topic, m.msgtype, m.raw, m.t_ns)

    def close(self) -> None:
        self.flush_until(2**63 - 1)
        self.writer.close()


def copy_topics(reader: bag_io.BagReader, image_topic: str, gt_topic: str | None) -> Sequence[str]:
    """The input topics worth keeping beside the outputs: camera, its camera_info, ground truth."""
    keep = {image_topic}
    if gt_topic:
        keep.add(gt_topic)
    # not an earlier run's segmentation/camera_info (an outputs bag evaluated again): this run's is written
    keep.update(t.name for t in reader.topics().values() if t.msgtype == bag_io.CAMERA_INFO and t.name != SEG_INFO)
    return sorted(keep)
