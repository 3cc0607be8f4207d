"""`seg-perception bench-camera`: a synthetic camera at a given size, rate and QoS against the
live segmentation_node (its own process, as on a robot), and what comes back.

Publishes bgr8 frames the way common camera drivers do (reliable or best effort, depth 10)
for ``seconds`` and reports: frames published and answered on /segmentation/labels, the share
answered of what the node could serve (min(camera rate, 1000 / the node's own inference ms)),
publish -> labels latency percentiles against the node's own inference time (both from the same
run), the node's stage timings from /diagnostics, and its resident memory over time (a soak:
``--seconds 600`` at 30 Hz). Figures are printed, never asserted.
"""
from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..metrics import percentiles
from ..runtime.node_process import NodeProcess, ros_env

QOS = ("reliable", "best_effort")


def rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


class _Camera:
    """This process's participant: the camera publisher, a labels recorder, /diagnostics."""

    def __init__(self, domain: int, topic: str, qos: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        self.rclpy, self.Image = rclpy, Image
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(f"seg_bench_camera_{os.getpid()}", context=self.context,
                                      start_parameter_services=False)
        rel = ReliabilityPolicy.RELIABLE if qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        self.pub = self.node.create_publisher(Image, topic, QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                                                                       reliability=rel))
        self.lock = threading.Lock()
        self.arrivals: Dict[int, float] = {}
        self.diag: Dict[str, str] = {}
        out_qos = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.sub = self.node.create_subscription(Image, "/segmentation/labels", self._on_labels, out_qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _on_labels(self, msg) -> None:
        t = time.perf_counter()
        with self.lock:
            self.arrivals[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = t

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "frames_received" in values:
                with self.lock:
                    self.diag = values

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok():
                    return
                raise

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        try:
            self.executor.remove_node(self.node)
            self.node.destroy_node()
            self.executor.shutdown(timeout_sec=1)
        finally:
            self.rclpy.try_shutdown(context=self.context)


def bench_camera(model: str, width: int, height: int, rate: float, seconds: float, qos: str = "reliable",
                 backend: str = "onnxruntime", threads: int = 1, node_params: Optional[Dict] = None,
                 startup_timeout: float = 60.0, log=print) -> Dict:
    if qos not in QOS:
        raise ValueError(f"unknown camera qos '{qos}'; valid choices: {', '.join(QOS)}")
    domain = random.SystemRandom().randint(1, 101)
    env = ros_env(domain)
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS"):
        os.environ.setdefault(k, env[k])
    topic = "/camera/image_raw"
    params = {"model": model, "backend": backend, "precision": "fp32", "threads": threads, "image_topic": topic,
              **(node_params or {})}
    log_path = Path(tempfile.mkdtemp(prefix="seg_bench_camera_")) / "node.log"
    node = NodeProcess(params, log_path, env)
    cam = None
    try:
        cam = _Camera(domain, topic, qos)
        end = time.monotonic() + startup_timeout
        while not (cam.pub.get_subscription_count() and cam.sub.get_publisher_count() and cam.diag):
            if not node.running():
                raise RuntimeError(f"segmentation_node exited: {node.failure()} (log {log_path})")
            if time.monotonic() > end:
                raise RuntimeError(f"segmentation_node did not come up in {startup_timeout:.0f} s (log {log_path})")
            time.sleep(0.05)
        time.sleep(0.5)
        rng = np.random.default_rng(0)
        # A smooth synthetic scene (noise would be unlike a camera; the content does not change the timing).
        base = cv2_resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), width, height)
        msg = cam.Image(height=height, width=width, encoding="bgr8", step=width * 3)
        msg.header.frame_id = "camera"
        msg.data = base.tobytes()
        published: Dict[int, float] = {}
        rss: List[tuple] = [(0.0, rss_mb(node.proc.pid))]
        period = 1.0 / rate
        t0 = time.perf_counter()
        next_rss = 10.0
        i = 0
        while True:
            t_due = t0 + i * period
            if t_due - t0 >= seconds:
                break
            now = time.perf_counter()
            if t_due > now:
                time.sleep(t_due - now)
            stamp = 1_000_000_000 + i * int(period * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            published[stamp] = time.perf_counter()
            cam.pub.publish(msg)
            i += 1
            el = time.perf_counter() - t0
            if el >= next_rss:
                rss.append((round(el, 1), rss_mb(node.proc.pid)))
                next_rss += 10.0 if seconds <= 120 else 60.0
        time.sleep(max(1.0, 2 * float(cam.diag.get("end_to_end_ms", 0) or 0) / 1e3))
        rss.append((round(time.perf_counter() - t0, 1), rss_mb(node.proc.pid)))
        time.sleep(1.2)  # one more /diagnostics
        with cam.lock:
            arrivals = dict(cam.arrivals)
            diag = dict(cam.diag)
    finally:
        if cam is not None:
            cam.close()
        node.stop()
    lat = [(arrivals[s] - published[s]) * 1e3 for s in published if s in arrivals]
    infer = float(diag.get("inference_ms", "nan"))
    capacity = 1000.0 / float(diag.get("processing_ms", infer) or infer)
    expected = min(rate, capacity) * seconds
    p = percentiles(lat) if lat else {}
    out = {"size": f"{width}x{height}", "rate_hz": rate, "camera_qos": qos, "seconds": seconds,
           "node": {k: params[k] for k in ("model", "backend", "threads")} | dict(node_params or {}),
           "published": len(published), "answered": len(lat),
           "node_capacity_fps": round(capacity, 2),
           "answered_of_serviceable": round(len(lat) / max(expected, 1e-9), 3),
           "publish_to_labels_ms": p, "node_inference_ms_p50": infer,
           "latency_over_inference": round(p["p50"] / infer, 2) if lat and infer == infer and infer > 0 else None,
           "node_diagnostics": diag, "rss_mb": rss}
    return out


def cv2_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)


def to_markdown(rows: List[Dict]) -> str:
    lines = ["| size | rate Hz | camera QoS | answered / published | of serviceable | node capacity FPS | "
             "publish -> labels p50 / p95 ms | node inference p50 ms | p50 / inference | RSS MB start -> end |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        p = r["publish_to_labels_ms"] or {"p50": "-", "p95": "-"}
        lines.append(f"| {r['size']} | {r['rate_hz']:g} | {r['camera_qos']} | {r['answered']}/{r['published']} | "
                     f"{100 * r['answered_of_serviceable']:.0f}% | {r['node_capacity_fps']} | {p['p50']} / {p['p95']} | "
                     f"{r['node_inference_ms_p50']} | {r['latency_over_inference']} | "
                     f"{r['rss_mb'][0][1]} -> {r['rss_mb'][-1][1]} |")
    return "\n".join(lines)
