"""output_size 'network' in the live node over DDS (separate process, RANDOM-weights model):
a 960x720 camera gets its labels at the network's 480x360, and the drivable grid is built
from the camera scaled to that size, so it matches an independent projection of the
published (network-size) mask with the network-size calibration."""
from __future__ import annotations

import time

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo

from ros_harness import Harness, raw_image, start_node
from test_node import as_array, new_key
from test_node_ground import D, K, PARAMS, NavRecorder, expected_grid


def camera_info_960() -> CameraInfo:
    # K of the 480x360 camera seen at twice the size: pixel centres map to pixel centres.
    k = list(K)
    k[0], k[4] = 2 * K[0], 2 * K[4]
    k[2], k[5] = (K[2] + 0.5) * 2 - 0.5, (K[5] + 0.5) * 2 - 0.5
    msg = CameraInfo(width=960, height=720, distortion_model="plumb_bob", k=k, d=D)
    msg.header.frame_id = "camera_optical"
    return msg


def test_labels_and_grid_at_network_size(ros, random_model, val_frames, tmp_path):
    log = tmp_path / "node.log"
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable", "output_size": "network",
                       **PARAMS}, log)
    h = Harness("test_output_size_client")
    rec = NavRecorder(h)
    try:
        h.wait_connected()
        frame = cv2.resize(val_frames[3][0], (960, 720), interpolation=cv2.INTER_LINEAR)
        key = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # CameraInfo is best effort: repeat it until a grid comes
            rec.pub_info.publish(camera_info_960())
            time.sleep(0.1)
            key = new_key("net")
            h.pub_raw.publish(raw_image(frame, "rgb8", key))
            h.wait_for(lambda: key in h.received["labels"], 30, f"labels for {key}")
            time.sleep(0.3)
            if key[:2] in rec.got["grid"]:
                break
        assert key[:2] in rec.got["grid"], "no drivable_grid:\n" + proc.output()
        labels = h.received["labels"][key]
        assert (labels.width, labels.height) == (480, 360) and labels.header.frame_id == key[2]
        mask = as_array(h.received["drivable_mask"][key])
        assert mask.shape == (360, 480)
        cells = np.array(rec.got["grid"][key[:2]].data, np.int8).reshape(80, 75)
        exp = expected_grid(mask, 0.1, (0.5, 8.0), (-4.0, 4.0))
        assert (exp >= 0).sum() > 1000
        assert (cells == exp).mean() > 0.999, f"{(cells != exp).sum()} cells differ"
        ground_labels = rec.got["ground_labels"].get(key[:2])
        assert ground_labels is not None and (ground_labels.width, ground_labels.height) == (120, 90)
    finally:
        h.close()
        assert proc.stop() == 0, proc.output()
