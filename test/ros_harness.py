"""A test-side ROS 2 participant: publishes camera frames, records everything the
segmentation node publishes, and starts the node as a separate process (with the
package's own NodeProcess, the one live evaluation uses)."""
from __future__ import annotations

import array
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from conftest import REPO
from seg_perception.runtime.node_process import NodeProcess


def stamp_key(header) -> tuple:
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def raw_image(img: np.ndarray, encoding: str, key: tuple, pad: int = 0) -> Image:
    h, w = img.shape[:2]
    rows = img.reshape(h, -1)
    if pad:
        rows = np.hstack([rows, np.zeros((h, pad), np.uint8)])
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1])
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = key
    msg.data = array.array("B", rows.tobytes())
    return msg


def jpeg_image(rgb: np.ndarray, key: tuple) -> CompressedImage:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = key
    msg.data = array.array("B", buf.tobytes())
    return msg


class Harness:
    """Publishers for raw/compressed frames; recorders for every node output."""

    def __init__(self, name: str, image_topic: str = "/camera/image_raw", overlay: bool = False, out_ns: str = ""):
        self.node = rclpy.create_node(name)
        self.image_topic = image_topic
        self.out_ns = out_ns  # where the outputs are: "" (/segmentation/...) or a camera's namespace
        self.lock = threading.RLock()
        self.received: Dict[str, Dict[tuple, Image]] = {"labels": {}, "drivable_mask": {}, "overlay": {},
                                                        "confidence": {}}
        self.arrival: Dict[tuple, float] = {}
        self.diagnostics: List[Dict[str, str]] = []
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # like a camera driver
        self.pub_raw = self.node.create_publisher(Image, image_topic, qos)
        self.pub_jpeg = self.node.create_publisher(CompressedImage, image_topic + "/compressed", qos)
        # the recorders of the outputs every node publishes (confidence and overlay are optional)
        self.always = [self._record(topic) for topic in ("labels", "drivable_mask")]
        self._record("confidence")
        self.overlay_sub = self._record("overlay") if overlay else None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _record(self, topic: str):
        def cb(msg, topic=topic):
            with self.lock:
                self.received[topic][stamp_key(msg.header)] = msg
                if topic == "labels":
                    self.arrival[stamp_key(msg.header)] = time.perf_counter()
        return self.node.create_subscription(Image, f"{self.out_ns}/segmentation/{topic}", cb,
                                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def subscribe_overlay(self) -> None:
        if self.overlay_sub is None:
            self.overlay_sub = self._record("overlay")

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            # Only the node serving this harness's camera (other test nodes may be up).
            # (a node in a namespace: "ns/segmentation_node: segmentation")
            if st.name.split(": ")[0].endswith("segmentation_node") and \
                    values.get("topic", "").startswith(self.image_topic):
                with self.lock:
                    self.diagnostics.append(values | {"_message": st.message, "_t": time.perf_counter()})

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred():
                    return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last diagnostics: "
                             f"{self.last_diag()}")

    def wait_connected(self, compressed: bool = False, timeout: float = 60.0) -> None:
        """Until the node takes this harness's frames AND its labels and drivable-mask publishers
        are matched to the recorders: outputs of a frame sent earlier could be lost in between."""
        pub = self.pub_jpeg if compressed else self.pub_raw
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (pub.get_subscription_count() > 0 and self.diagnostics
                    and all(sub.get_publisher_count() > 0 for sub in self.always)):
                return
            time.sleep(0.05)
        raise AssertionError("the node did not come up (no subscription, diagnostics or matched outputs)")

    def settled_diag(self, timeout: float = 15.0) -> Dict[str, str]:
        """The first diagnostics published after this call and after every output so far arrived,
        once the node's counters add up (received = processed + dropped + rejected + late + skipped). After
        the call: a frame that gave no output (rejected) may have come after the last output."""
        t0 = max(max(self.arrival.values(), default=0.0), time.perf_counter())

        def ok():
            if not self.diagnostics:
                return False
            d = self.diagnostics[-1]
            done = (int(d["frames_processed"]) + int(d["frames_dropped"]) + int(d["frames_rejected"])
                    + int(d.get("frames_late", 0)) + int(d.get("frames_skipped", 0)))
            return d["_t"] > t0 + 0.05 and int(d["frames_received"]) == done
        self.wait_for(ok, timeout, "settled diagnostics")
        return self.last_diag()

    def last_diag(self) -> Dict[str, str]:
        with self.lock:
            return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.executor.remove_node(self.node)
        self.node.destroy_node()


# The node under test runs ONNX Runtime at fp32 whatever config/jetson.yaml says (auto, fp16):
# the tests compare its labels with an ONNX Runtime pipeline in this process, and on a machine
# with TensorRT (a Jetson) 'auto' would pick TensorRT and first build an fp16 engine for minutes.
TEST_NODE_PARAMS = {"backend": "onnxruntime", "precision": "fp32"}


def start_node(params: Dict[str, object], log_path: Path, program: str = "segmentation_node",
               params_file: Optional[Path] = None, namespace: str = "") -> NodeProcess:
    """The node (or its lifecycle variant) from its console script with config/jetson.yaml (or
    ``params_file``), as the package starts it; in ``namespace`` (e.g. "/lc1") if given."""
    return NodeProcess({**TEST_NODE_PARAMS, **params}, log_path,
                       params_file=params_file or REPO / "config" / "jetson.yaml", program=program,
                       ros_args=["-r", f"__ns:={namespace}"] if namespace else ())


def assert_startup_refused(params: Dict[str, object], log_path: Path, message: str,
                           params_file: Optional[Path] = None) -> None:
    """The node stops at start-up with exit status 2 and one 'cannot start' line holding ``message``.
    A node that wrongly starts is stopped here, so it cannot answer later tests' frames."""
    proc = start_node(params, log_path, params_file=params_file)
    try:
        rc = proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    out = proc.output()
    assert rc == 2, out
    lines = [ln for ln in out.splitlines() if "cannot start" in ln]
    assert len(lines) == 1 and message in lines[0], out
    assert "Traceback" not in out
