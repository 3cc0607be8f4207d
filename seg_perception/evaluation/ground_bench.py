"""`seg-perception bench-node --ground`: what the ground outputs add to each frame in the live node.

For each camera size, the node runs twice in its own process, ground projection off and on
(config/nav2.yaml's sample pose, a nominal pinhole CameraInfo published beside the frames).
Frames are CamVid val frames resized to the camera size and sent one at a time (the next
only after the previous frame's labels came back), so no frame waits for the worker.

The node times its ground work itself (/diagnostics "ground projection": grid_ms = grid
lookup + OccupancyGrid build + publish, cloud_ms = PointCloud2 header + publish, ground_images_ms
= the stride-subsampled labels and confidence, built and published). Ground on also makes the
node compute confidence at the frame's size (the cloud's input set), which shows up in its
post-processing stage. Added per frame = post-processing on - off + the three ground stages.
Figures are printed, never asserted.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from ..runtime.node_process import NodeProcess, discover_as, private_domain, ros_env
from .bench_node import bench_frames
from .participant import Participant, wait_until_up

# config/nav2.yaml's sample camera: 0.9 m up, looking 0.35 rad down; tf2 is not used here.
GROUND_PARAMS = {"ground.enable": True, "ground.use_tf": False, "ground.camera_xyz": "[0.25, 0.0, 0.9]",
                 "ground.camera_rpy": "[0.0, 0.35, 0.0]", "ground.stride": 4}
NODE_STAGES = ("convert_ms", "resize_ms", "inference_ms", "post_ms", "fill_ms", "publish_ms", "processing_ms")
GROUND_STAGES = ("grid_ms", "cloud_ms", "ground_images_ms")


class _Camera(Participant):
    """Image + CameraInfo publisher, labels and /diagnostics recorder."""

    def __init__(self, domain: int):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        super().__init__(domain, "seg_bench_ground")
        self.Image, self.CameraInfo = Image, CameraInfo
        qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, "/camera/image_raw", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self.labels: Dict[int, float] = {}
        self.diag: Dict[str, str] = {}
        self.ground_diag: Dict[str, str] = {}
        self.sub = self.node.create_subscription(Image, "/segmentation/labels", self._on_labels, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self.start()

    def _on_labels(self, msg) -> None:
        with self.lock:
            self.labels[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = time.perf_counter()

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            with self.lock:
                if "frames_received" in values:
                    self.diag = values | {"_t": time.perf_counter()}
                elif st.name.endswith("ground projection"):
                    self.ground_diag = values | {"_message": st.message}

    def camera_info(self, width: int, height: int, stamp_ns: int):
        f = float(width)  # a nominal pinhole, as make-bag writes: ~53 degrees horizontal field of view
        msg = self.CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=[f, 0.0, (width - 1) / 2, 0.0, f, (height - 1) / 2, 0.0, 0.0, 1.0])
        msg.header.frame_id = "camera_optical_frame"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        return msg


def _run(model: str, frames_bgr: List[np.ndarray], ground: bool, threads: int, backend: str,
         startup_timeout: float = 60.0) -> Dict:
    domain = private_domain()
    env = ros_env(domain)
    discover_as(env)
    params = {"model": model, "backend": backend, "precision": "fp32", "threads": threads, "qos": "reliable",
              "image_topic": "/camera/image_raw", "diagnostics_period": 0.5, **(GROUND_PARAMS if ground else {})}
    log_path = Path(tempfile.mkdtemp(prefix="seg_bench_ground_")) / "node.log"
    node = NodeProcess(params, log_path, env)
    cam = None
    h, w = frames_bgr[0].shape[:2]
    answered = 0
    try:
        cam = _Camera(domain)
        wait_until_up(lambda: bool(cam.pub.get_subscription_count() and cam.publisher_count(cam.sub) and cam.diag),
                      [node], startup_timeout, log_path)
        for i, frame in enumerate(frames_bgr):
            stamp = 1_000_000_000 + i * 100_000_000
            msg = cam.Image(height=h, width=w, encoding="bgr8", step=w * 3, data=frame.tobytes())
            msg.header.frame_id = "camera_optical_frame"
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            cam.pub_info.publish(cam.camera_info(w, h, stamp))
            time.sleep(0.01)  # CameraInfo first, as a driver sends it
            cam.pub.publish(msg)
            # One frame at a time; only a lost frame waits the whole time, so it can be long: a
            # 2-core machine running a training beside missed 10 s once (640x480, ground on).
            t_end = time.monotonic() + 30.0
            while time.monotonic() < t_end:
                with cam.lock:
                    if stamp in cam.labels:
                        answered += 1
                        break
                time.sleep(0.002)
        t_last = time.perf_counter()
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end:  # diagnostics sent after the last frame
            with cam.lock:
                if cam.diag.get("_t", 0.0) > t_last + 0.1:
                    break
            time.sleep(0.05)
        with cam.lock:
            diag, gdiag = dict(cam.diag), dict(cam.ground_diag)
    finally:
        if cam is not None:
            cam.close()
        node.stop()
    out = {"answered": answered, "frames": len(frames_bgr),
           "node_ms_p50": {k: _float(diag.get(k)) for k in NODE_STAGES}}
    if ground:
        out["ground_ms_p50"] = {k: _float(gdiag.get(k)) for k in GROUND_STAGES}
        out["ground_status"] = gdiag.get("_message", "no ground diagnostics received")
        out["ground_frames"] = int(gdiag.get("frames_published", 0) or 0)
    return out


def _float(v) -> Optional[float]:
    try:
        return round(float(v), 3)
    except (TypeError, ValueError):
        return None


def bench_ground_live(model: str, sizes: Sequence[tuple] = ((480, 360), (1280, 720)), frames: int = 20,
                      threads: int = 1, backend: str = "onnxruntime", data: Optional[str | Path] = None,
                      log=print) -> Dict:
    rgb = bench_frames(frames, data, log)
    out = {}
    for w, h in sizes:
        bgr = [cv2.cvtColor(cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2BGR)
               for im in rgb]
        off = _run(model, bgr, False, threads, backend)
        on = _run(model, bgr, True, threads, backend)
        g = on.get("ground_ms_p50", {})
        post_off, post_on = off["node_ms_p50"]["post_ms"], on["node_ms_p50"]["post_ms"]
        # Only post-processing (now with confidence) and the ground stages change with ground on;
        # whole-frame totals differ by the inference's jitter under load, which hides them.
        added = None if None in (post_off, post_on, *g.values()) else round(post_on - post_off + sum(g.values()), 3)
        out[f"{w}x{h}"] = {"off": off, "on": on, "added_ms": added}
        log(f"[bench-node] ground {w}x{h}: off {off['answered']}/{frames} answered, "
            f"on {on['answered']}/{frames} ({on.get('ground_frames', 0)} with ground outputs: {on.get('ground_status')})")
    return out


def ground_live_markdown(g: Dict) -> str:
    lines = ["", "ground outputs in the live node (p50 ms per frame, timed inside the node; ground on = "
             "config/nav2.yaml's pose, stride 4, confidence computed for the cloud's input set)", "",
             "| camera | ground | inference | post-processing (labels, drivable, confidence) | grid build + publish | "
             "cloud publish | ground labels + confidence | added by ground |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for size, r in g.items():
        off, on = r["off"]["node_ms_p50"], r["on"]["node_ms_p50"]
        gm = r["on"].get("ground_ms_p50", {})
        lines.append(f"| {size} | off | {off['inference_ms']} | {off['post_ms']} | - | - | - | |")
        lines.append(f"| {size} | on | {on['inference_ms']} | {on['post_ms']} | {gm.get('grid_ms')} | "
                     f"{gm.get('cloud_ms')} | {gm.get('ground_images_ms')} | {r['added_ms']} |")
    lines.append("")
    lines.append("added by ground = post-processing on - off (the confidence map at the frame's size) + the three "
                 "ground stages; the other stages do not change with ground on.")
    return "\n".join(lines)
