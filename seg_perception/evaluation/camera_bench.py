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
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..metrics import percentiles
from ..runtime.node_process import NodeProcess, discover_as, private_domain, ros_env
from .participant import Participant, wait_until_up

QOS = ("reliable", "best_effort")


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU time of a process so far (Linux /proc): what the node spends, all threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def rss_mb(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


class _Camera(Participant):
    """One publisher per camera topic, a recorder of each camera's labels topic, /diagnostics
    (each status kept by its "topic" value)."""

    def __init__(self, domain: int, topics: List[str], qos: str, label_topics: Optional[List[str]] = None):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        super().__init__(domain, "seg_bench_camera")
        self.Image = Image
        rel = ReliabilityPolicy.RELIABLE if qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        cam_qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=rel)
        self.topics = list(topics)
        self.pubs = [self.node.create_publisher(Image, t, cam_qos) for t in self.topics]
        self.pub = self.pubs[0]
        self.arrivals: Dict[tuple, float] = {}  # (camera index, stamp ns) -> arrival time
        self.diags: Dict[str, Dict[str, str]] = {}  # the node's status for each camera topic
        out_qos = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = [self.node.create_subscription(Image, t, lambda m, i=i: self._on_labels(i, m), out_qos)
                     for i, t in enumerate(label_topics or ["/segmentation/labels"])]
        self.sub = self.subs[0]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self.start()

    @property
    def diag(self) -> Dict[str, str]:
        """The first camera's status (one camera: the node's)."""
        return self.diags.get(self.topics[0], {})

    def ready(self) -> bool:
        return (all(p.get_subscription_count() for p in self.pubs) and all(self.publisher_count(s) for s in self.subs)
                and all(t in self.diags for t in self.topics))

    def _on_labels(self, i: int, msg) -> None:
        t = time.perf_counter()
        with self.lock:
            self.arrivals[(i, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)] = t

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "frames_received" in values:
                with self.lock:
                    self.diags[values.get("topic", "")] = values


def bench_camera(model: str, width: int, height: int, rate: float, seconds: float, qos: str = "reliable",
                 backend: str = "onnxruntime", threads: int = 1, node_params: Optional[Dict] = None,
                 startup_timeout: float = 60.0, log=print) -> Dict:
    if qos not in QOS:
        raise ValueError(f"unknown camera qos '{qos}'; valid choices: {', '.join(QOS)}")
    domain = private_domain()
    env = ros_env(domain)
    discover_as(env)
    topic = "/camera/image_raw"
    params = {"model": model, "backend": backend, "precision": "fp32", "threads": threads, "image_topic": topic,
              **(node_params or {})}
    log_path = Path(tempfile.mkdtemp(prefix="seg_bench_camera_")) / "node.log"
    node = NodeProcess(params, log_path, env)
    cam = None
    try:
        cam = _Camera(domain, [topic], qos)
        wait_until_up(cam.ready, [node], startup_timeout, log_path)
        rng = np.random.default_rng(0)
        # A smooth synthetic scene (noise would be unlike a camera; the content does not change the timing).
        base = cv2_resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), width, height)
        msg = cam.Image(height=height, width=width, encoding="bgr8", step=width * 3)
        msg.header.frame_id = "camera"
        msg.data = base.tobytes()
        published: Dict[int, float] = {}
        rss: List[tuple] = [(0.0, rss_mb(node.proc.pid))]
        period = 1.0 / rate
        cpu0 = cpu_seconds(node.proc.pid)
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
        cpu1, wall = cpu_seconds(node.proc.pid), time.perf_counter() - t0
        rss.append((round(time.perf_counter() - t0, 1), rss_mb(node.proc.pid)))
        time.sleep(1.2)  # one more /diagnostics
        with cam.lock:
            arrivals = {stamp: t for (_, stamp), t in cam.arrivals.items()}
            diag = dict(cam.diag)
    finally:
        if cam is not None:
            cam.close()
        node.stop()
    lat = [(arrivals[s] - published[s]) * 1e3 for s in published if s in arrivals]
    infer = float(diag.get("inference_ms") or "nan")  # "": no frame processed
    # N workers each take a frame at a time: N frames per processing time (times measured in this run,
    # so they include the workers' competition for the cores)
    capacity = int(diag.get("workers", 1) or 1) * 1000.0 / float(diag.get("processing_ms", infer) or infer)
    max_rate = float(diag.get("max_rate") or 0)  # the node's cap, where set: it serves no more than that
    expected = min(rate, capacity, max_rate or rate) * seconds
    p = percentiles(lat) if lat else {}
    out = {"size": f"{width}x{height}", "rate_hz": rate, "camera_qos": qos, "seconds": seconds,
           "node": {k: params[k] for k in ("model", "backend", "threads")} | dict(node_params or {}),
           "published": len(published), "answered": len(lat),
           "node_capacity_fps": round(capacity, 2),
           # the node's CPU time over the run (publishing and the drain after it) per second: 100 = one core
           "node_cpu_percent": round(100 * (cpu1 - cpu0) / wall, 1) if cpu0 is not None and cpu1 is not None else None,
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
             "publish -> labels p50 / p95 ms | node inference p50 ms | p50 / inference | node CPU % | "
             "RSS MB start -> end |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        p = r["publish_to_labels_ms"] or {"p50": "-", "p95": "-"}
        lines.append(f"| {r['size']} | {r['rate_hz']:g} | {r['camera_qos']} | {r['answered']}/{r['published']} | "
                     f"{100 * r['answered_of_serviceable']:.0f}% | {r['node_capacity_fps']} | {p['p50']} / {p['p95']} | "
                     f"{r['node_inference_ms_p50']} | {r['latency_over_inference']} | "
                     f"{'-' if r['node_cpu_percent'] is None else r['node_cpu_percent']} | "
                     f"{r['rss_mb'][0][1]} -> {r['rss_mb'][-1][1]} |")
    return "\n".join(lines)


def bench_cameras(model: str, cameras: int, width: int, height: int, rate: float, seconds: float,
                  node_per_camera: bool = False, qos: str = "reliable", backend: str = "onnxruntime",
                  threads: int = 1, node_params: Optional[Dict] = None, startup_timeout: float = 90.0) -> Dict:
    """N synthetic cameras at /cam0/image_raw, /cam1/image_raw, ... served by ONE node (image_topics:
    max_batch frames an inference) or by one node per camera (each with ``threads`` threads); every camera's labels
    come back on /camI/segmentation/labels either way. Each tick publishes a frame on every camera."""
    if qos not in QOS:
        raise ValueError(f"unknown camera qos '{qos}'; valid choices: {', '.join(QOS)}")
    if cameras < 1:
        raise ValueError(f"--cameras must be >= 1, got {cameras}")
    domain = private_domain()
    env = ros_env(domain)
    discover_as(env)
    topics = [f"/cam{i}/image_raw" for i in range(cameras)]
    base = {"model": model, "backend": backend, "precision": "fp32", "threads": threads, **(node_params or {})}
    log_dir = Path(tempfile.mkdtemp(prefix="seg_bench_cameras_"))
    # image_topics with one topic in the per-camera nodes too: outputs land under /camI/ in both modes
    groups = [[t] for t in topics] if node_per_camera else [topics]
    nodes: List[NodeProcess] = []
    cam = None
    try:
        for i, g in enumerate(groups):
            nodes.append(NodeProcess({**base, "image_topics": g}, log_dir / f"node{i}.log", env,
                                     ros_args=["-r", f"__node:=segmentation_node_{i}"]))
        cam = _Camera(domain, topics, qos, [t.rsplit("/", 1)[0] + "/segmentation/labels" for t in topics])
        wait_until_up(cam.ready, nodes, startup_timeout, log_dir)
        base_img = cv2_resize(np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8), width, height)
        msg = cam.Image(height=height, width=width, encoding="bgr8", step=width * 3)
        msg.data = base_img.tobytes()
        published: Dict[tuple, float] = {}
        period = 1.0 / rate
        t0 = time.perf_counter()
        i = 0
        while t0 + i * period - t0 < seconds:
            t_due = t0 + i * period
            now = time.perf_counter()
            if t_due > now:
                time.sleep(t_due - now)
            stamp = 1_000_000_000 + i * int(period * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            for c, pub in enumerate(cam.pubs):
                msg.header.frame_id = f"cam{c}"
                published[(c, stamp)] = time.perf_counter()
                pub.publish(msg)
            i += 1
        time.sleep(1.5)  # the last frames' labels, then one more /diagnostics
        rss = sum(v for v in (rss_mb(n.proc.pid) for n in nodes) if v is not None)
        time.sleep(1.2)
        with cam.lock:
            arrivals = dict(cam.arrivals)
            diags = dict(cam.diags)
    finally:
        if cam is not None:
            cam.close()
        for n in nodes:
            n.stop()
    lat = [(arrivals[k] - published[k]) * 1e3 for k in published if k in arrivals]
    per_cam = [(sum(1 for k in arrivals if k[0] == c), sum(1 for k in published if k[0] == c))
               for c in range(cameras)]
    batch = [float(d["batch_size_mean"]) for d in diags.values() if d.get("batch_size_mean")]
    infer = [float(d["inference_ms"]) for d in diags.values() if d.get("inference_ms")]
    return {"cameras": cameras, "mode": "node per camera" if node_per_camera else "one node",
            "size": f"{width}x{height}", "rate_hz": rate, "camera_qos": qos, "seconds": seconds,
            "node": {k: base[k] for k in ("model", "backend", "threads")}, "per_camera": per_cam,
            "answered": len(lat), "published": len(published),
            "aggregate_fps": round(len(lat) / seconds, 2), "publish_to_labels_ms": percentiles(lat) if lat else {},
            "mean_batch_size": round(sum(batch) / len(batch), 2) if batch else None,
            "node_inference_ms_p50": round(sum(infer) / len(infer), 2) if infer else None,
            "rss_mb_all_nodes": round(rss, 1), "node_diagnostics": diags}


def cameras_markdown(rows: List[Dict]) -> str:
    lines = ["| cameras | mode | answered / published per camera | total | aggregate FPS | "
             "publish -> labels p50 / p95 ms | mean batch size | inference p50 ms (per call) | RSS MB (all nodes) |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r["publish_to_labels_ms"] or {"p50": "-", "p95": "-"}
        per = ", ".join(f"{a}/{b}" for a, b in r["per_camera"])
        lines.append(f"| {r['cameras']} | {r['mode']} | {per} | {r['answered']}/{r['published']} | "
                     f"{r['aggregate_fps']} | {p['p50']} / {p['p95']} | {r['mean_batch_size']} | "
                     f"{r['node_inference_ms_p50']} | {r['rss_mb_all_nodes']} |")
    return "\n".join(lines)
