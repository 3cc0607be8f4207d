"""workers: 2 over real DDS: two model copies serve overlapping frames, and each camera's
outputs still leave in stamp order with every frame accounted for."""
from __future__ import annotations

import time

import numpy as np

from ros_harness import Harness, raw_image, stamp_key, start_node
from seg_perception.runtime.pipeline import Pipeline


def test_two_workers_overlap_frames_and_publish_in_stamp_order(ros, random_model, tmp_path, val_frames):
    proc = start_node({"model": str(random_model), "threads": 1, "workers": 2, "qos": "reliable",
                       "image_topic": "/workers_camera/image_raw"}, tmp_path / "node.log")
    h = Harness("test_workers_client", image_topic="/workers_camera/image_raw")
    try:
        try:
            h.wait_connected()
        except AssertionError:
            raise AssertionError("node did not start:\n" + proc.output())
        # a burst far faster than one inference: the second worker takes frames the first cannot
        keys = [(1_800_000_000 + i, 1000 * i, f"wk_{i}") for i in range(30)]
        for k in keys:
            h.pub_raw.publish(raw_image(val_frames[k[0] % 6][0], "rgb8", k))
            time.sleep(0.004)
        h.wait_for(lambda: keys[-1] in h.received["labels"], 60, "the newest frame of the burst")
        d = h.settled_diag()
        with h.lock:
            arrived = [k for k in h.received["labels"] if k in keys]
        assert arrived == sorted(arrived), "outputs of one camera must leave in stamp order"
        received, processed = int(d["frames_received"]), int(d["frames_processed"])
        assert processed == len(arrived)
        assert received == processed + int(d["frames_dropped"]) + int(d["frames_late"]) + int(d["frames_rejected"])
        assert d["workers"] == "2"
        per_worker = [int(n) for n in d["frames_per_worker"].split()]
        assert len(per_worker) == 2 and min(per_worker) > 0, d["frames_per_worker"]
        assert int(d["frames_late"]) == 0  # a frame finished early waited for the older one
        assert sum(per_worker) == processed
        assert d["inferences_at_once_max"] == "2"  # the two copies ran at the same time, not in turns
        # both copies of the model give the pipeline's labels
        pipe = Pipeline.from_card(random_model, backend="onnxruntime")
        for k in arrived[-3:]:
            labels = np.frombuffer(bytes(h.received["labels"][k].data), np.uint8).reshape(360, 480)
            assert (labels == pipe(val_frames[k[0] % 6][0]).labels).mean() > 0.999
            assert stamp_key(h.received["labels"][k].header) == k
    finally:
        h.close()
        assert proc.stop() == 0, proc.output()
