"""output_size 'network' in the live node over DDS (separate process, RANDOM-weights model):
a 960x720 camera gets its labels at the network's 480x360, and the drivable grid is built
from the camera scaled to that size, so it matches an independent projection of the
published (network-size) mask with the network-size calibration; segmentation/camera_info
describes the labels: the 480x360 calibration the 960x720 one was made from."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from seg_perception.ros.camera_info_out import outputs_camera_info

from ros_harness import Harness, raw_image, stamp_key, start_node
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


def projection(k, baseline=0.1):
    """A stereo camera's P: K's 3x3 and, in its last column, -fx x baseline."""
    return [k[0], 0.0, k[2], -k[0] * baseline, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]


def binned_camera_info_1920() -> CameraInfo:
    """The 960x720 camera as a 1920x1440 sensor binned 2 x 2 (image_geometry: c_binned = c / 2)."""
    k960 = camera_info_960().k
    k = [2 * k960[0], 0.0, 2 * k960[2], 0.0, 2 * k960[4], 2 * k960[5], 0.0, 0.0, 1.0]
    return CameraInfo(width=1920, height=1440, distortion_model="plumb_bob", k=k, d=D, p=projection(k, 0.05),
                      binning_x=2, binning_y=2)


def test_camera_info_for_the_outputs_is_the_frames_own_at_the_frames_size():
    """output_size camera: the camera's calibration as it came, stamped like the frame; a region of
    interest is folded into K and P (the output describes the published image alone)."""
    info = camera_info_960()
    info.p = projection(info.k)
    info.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    header = Header(frame_id="cam_x")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    out = outputs_camera_info(info, header, (960, 720), (960, 720))
    assert (out.width, out.height, out.distortion_model) == (960, 720, "plumb_bob")
    assert np.allclose(out.k, info.k) and np.allclose(out.p, info.p) and list(out.d) == list(info.d)
    assert list(out.r) == list(info.r)
    assert (out.header.frame_id, out.header.stamp.sec, out.header.stamp.nanosec) == ("cam_x", 12, 34)
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 60, 640, 480
    out = outputs_camera_info(info, header, (640, 480), (640, 480))
    assert (out.width, out.height, out.roi.width, out.binning_x) == (640, 480, 0, 0)
    shift = np.array([[1, 0, -100], [0, 1, -60], [0, 0, 1]])  # the window's pixels from the sensor's
    assert np.allclose(np.reshape(out.k, (3, 3)), shift @ np.reshape(info.k, (3, 3)))
    assert np.allclose(np.reshape(out.p, (3, 4)), shift @ np.reshape(info.p, (3, 4)))
    # that window at half its size: the shifted calibration scaled with pixel centres kept
    out = outputs_camera_info(info, header, (640, 480), (320, 240))
    half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
    assert np.allclose(np.reshape(out.p, (3, 4)), half @ shift @ np.reshape(info.p, (3, 4)))
    with pytest.raises(ValueError, match="frame is 480x360 but CameraInfo is 960x720 .its region of interest"):
        outputs_camera_info(info, header, (480, 360), (480, 360))


def test_camera_info_follows_the_outputs_to_the_network_size(ros, random_model, val_frames, tmp_path):
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable", "output_size": "network"},
                      tmp_path / "node.log")
    h = Harness("test_output_info_client")
    got, lock = {}, threading.Lock()

    def keep(msg):
        with lock:
            got[stamp_key(msg.header)] = msg

    rel = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    h.node.create_subscription(CameraInfo, "/segmentation/camera_info", keep, rel)
    pub_info = h.node.create_publisher(CameraInfo, "/camera/camera_info", QoSProfile(depth=1))
    frame = cv2.resize(val_frames[3][0], (960, 720), interpolation=cv2.INTER_LINEAR)

    def frame_with(info):
        """``info``, then a frame: its key and the segmentation/camera_info that came with it (or None)."""
        pub_info.publish(info)
        time.sleep(0.1)
        key = new_key("info")
        h.pub_raw.publish(raw_image(frame, "rgb8", key))
        h.wait_for(lambda: key in h.received["labels"], 30, f"labels for {key}")
        time.sleep(0.3)
        with lock:
            return key, got.get(key)

    def send(info, expected_p):
        """Frames with ``info`` until one's camera_info is of it (CameraInfo is best effort at the node;
        told apart by the stereo term of P, which differs between the calibrations sent)."""
        deadline = time.monotonic() + 30
        while True:
            key, out = frame_with(info)
            if out is not None and np.isclose(out.p[3], expected_p[3]) or time.monotonic() > deadline:
                return key, out

    try:
        h.wait_connected()
        K480 = np.reshape(K, (3, 3))
        info = camera_info_960()
        info.p = projection(info.k)
        key, out = send(info, projection(K))
        assert out is not None, "no segmentation/camera_info:\n" + proc.output()
        assert (out.width, out.height) == (480, 360) == (h.received["labels"][key].width,
                                                        h.received["labels"][key].height)
        assert (out.header.frame_id, stamp_key(out.header)) == (key[2], key)
        # the 960x720 calibration scaled back to the 480x360 one it was made from (pixel centres kept)
        assert np.allclose(np.reshape(out.k, (3, 3)), K480, atol=1e-9), out.k
        assert np.allclose(out.p, projection(K), atol=1e-9), out.p
        assert list(out.d) == D and out.distortion_model == "plumb_bob"
        # the same camera as a binned 1920x1440 sensor: the same 480x360 calibration, no binning left
        key, out = send(binned_camera_info_1920(), projection(K, 0.05))
        assert out is not None and (out.binning_x, out.binning_y) == (0, 0), out
        assert np.allclose(np.reshape(out.k, (3, 3)), K480, atol=1e-9), out.k
        assert np.allclose(out.p, projection(K, 0.05), atol=1e-9), out.p
        # another resolution's calibration: none goes out, and diagnostics say why
        wrong = camera_info_960()
        wrong.width, wrong.height = 640, 480
        why = "not published: frame is 960x720 but CameraInfo is 640x480"
        deadline = time.monotonic() + 30
        while why not in h.last_diag().get("camera_info", "") and time.monotonic() < deadline:
            frame_with(wrong)
        assert h.last_diag().get("camera_info", "").startswith(f"/camera/camera_info: {why}"), h.last_diag()
        key, out = frame_with(wrong)
        assert out is None, out
        assert "segmentation/camera_info (from /camera/camera_info) not published" in proc.output()
    finally:
        h.close()
        assert proc.stop() == 0, proc.output()
