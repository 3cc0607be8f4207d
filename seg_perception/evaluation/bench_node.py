"""`seg-perception bench-node`: where the time goes, from the backend alone to the
live node over DDS, at the model resolution on this machine.

1. backend: ``backend.infer`` on frames already at the model size;
2. pipeline: ``Pipeline.__call__`` on full frames (pre = resize + colour, post =
   resize back + drivable lookup);
3. node: frames from a rosbag2 played into a started ``segmentation_node`` at a
   pace that never queues (each frame is done before the next is sent), timed
   from publish to receipt of ``/segmentation/labels`` in this process.

The goal the project sets: the node adds at most max(10 %, 3 ms) to its own inference (p50).
That overhead is timed inside the node, frame by frame: the frame's processing (message ->
array, resize, inference, label resize, output fill, publish) minus the same frame's
inference, so it is never negative; /diagnostics reports it as ``overhead_ms`` beside each
stage. Publish -> labels (DDS both ways, this process's clock) is printed beside it, not
subtracted from a backend timed in another process (that difference went negative under load).
The figures are printed, never asserted: a benchmark, not a timed test.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..data import bag_io
from ..data.datasets import camvid, default_camvid_root
from ..metrics import percentiles
from ..paths import sample_bag
from ..runtime.frame_sources import read_frames
from ..runtime.image_conversion import to_rgb
from ..runtime.pipeline import Pipeline
from ..timing import latency_stats, time_calls
from .config import EvalConfig
from .live import run_live
from .make_bag import DEFAULT_START_S


def _camvid_for_bench(data: Optional[str | Path]) -> Optional[Path]:
    """The CamVid whose val frames are timed: ``data``, else the one beside the checkout if there."""
    root = Path(data) if data else default_camvid_root()
    return root if data or (root / "val.txt").is_file() else None


def bench_frames(frames: int, data: Optional[str | Path] = None, log=print) -> List[np.ndarray]:
    """``frames`` RGB frames spread over CamVid val (``data``, else the CamVid beside the checkout),
    or where there is no CamVid (an install), over the installed sample bag, repeated as needed."""
    root = _camvid_for_bench(data)
    if root is not None:
        ds = camvid(root, "val")
        return [ds.load(int(i))[0] for i in np.linspace(0, len(ds) - 1, frames).round().astype(int)]
    got = read_frames(sample_bag(), frames, spread=True)
    log(f"[bench] CamVid is not at {default_camvid_root()} (--data names it): timing {got.note}")
    sample = [to_rgb(f, layout) for f, layout in got.frames]
    return [sample[i % len(sample)] for i in range(frames)]


def _frames_bag(path: Path, imgs: List[np.ndarray], rate: float) -> None:
    """The frames as a camera driver records them (rgb8 Image), ``rate`` per second."""
    t0 = int(DEFAULT_START_S * 1e9)
    with bag_io.BagWriter(path) as w:
        for n, img in enumerate(imgs):
            t = t0 + int(round(n * 1e9 / rate))
            w.write(bag_io.DEFAULT_IMAGE_TOPIC, bag_io.image_msg(img, "rgb8", t, "camera"), t)


def bench_node(card_path: Path, frames: int = 30, threads: int = 0, backend: str = "onnxruntime",
               rate: float = 0.0, data: Optional[str | Path] = None, log=print) -> Dict:
    """``frames`` frames of bench_frames()."""
    # as the live node below runs it: no confidence output (publish_confidence off, no ground)
    pipe = Pipeline.from_card(card_path, backend=backend, threads=threads, confidence=False)
    imgs = bench_frames(frames, data, log)
    small = [pipe.preprocess(im) for im in imgs]
    infer = time_calls(pipe.backend.infer, small, runs=len(small), warmup=3)
    pre, post, total = [], [], []
    for im in imgs:
        r = pipe(im)
        pre.append(r.timings["pre_ms"])
        post.append(r.timings["post_ms"])
        total.append(sum(r.timings.values()))
    b50 = float(np.median(infer))
    log(f"[bench-node] backend {pipe.backend.describe()}: p50 {b50:.1f} ms over {frames} frames")

    # Live: one frame at a time (the rate leaves 3x the backend time between frames).
    rate = rate or max(0.5, min(20.0, 1000.0 / (3.0 * b50)))
    with tempfile.TemporaryDirectory(prefix="seg_bench_") as tmp:
        bag = Path(tmp) / "bag"
        _frames_bag(bag, imgs, rate)
        cfg = EvalConfig(bag=bag, model=str(card_path), backend=backend, threads=threads, no_gt=True,
                         rate=rate, progress=False, node_log=Path(tmp) / "node.log")
        res = run_live(cfg)
    e2e = res.latencies_ms
    node = res.node or {}
    n_inf = node.get("inference_ms")
    overhead = node.get("overhead_ms")  # inside the node, per frame: processing - inference
    budget = max(0.10 * n_inf, 3.0) if n_inf is not None else None
    out = {
        "model": pipe.card.name, "backend": pipe.backend.describe(), "resolution": f"{pipe.size[0]}x{pipe.size[1]}",
        "frames": frames, "rate_hz": round(rate, 2), "threads": threads,
        "frames_from": "CamVid val" if _camvid_for_bench(data) is not None else "the sample bag (repeated)",
        "backend_infer_ms": latency_stats(infer), "pipeline_pre_ms": percentiles(pre),
        "pipeline_post_ms": percentiles(post), "pipeline_total_ms": percentiles(total),
        "node_publish_to_labels_ms": percentiles(e2e),
        "node_internal": {"inference_ms_p50": n_inf,
                          "receive_to_publish_ms_p50": node.get("end_to_end_ms"),
                          "queue_wait_ms_p50": node.get("queue_wait_ms"),
                          "stages_ms_p50": node.get("stages"),
                          "dropped": node.get("dropped"), "received": node.get("received")},
        "frames_answered": res.counts.frames_out,
        "node_overhead_ms_p50": overhead,
        "budget_ms": None if budget is None else round(budget, 2),
        "within_budget": None if overhead is None or budget is None else bool(overhead <= budget),
    }
    return out


def _ms(v) -> str:
    return "n/a" if v is None else f"{v} ms"


def to_markdown(r: Dict) -> str:
    def row(name, p):
        return f"| {name} | {p['p50']} | {p['p95']} |"
    lines = [f"bench-node: {r['model']} on {r['backend']}, {r['frames']} frames of {r.get('frames_from', 'CamVid val')} at {r['resolution']}, "
             f"live rate {r['rate_hz']} Hz", "",
             "| stage | p50 ms | p95 ms |", "|---|---|---|",
             row("backend inference", r["backend_infer_ms"]),
             row("pipeline pre-processing", r["pipeline_pre_ms"]),
             row("pipeline post-processing", r["pipeline_post_ms"]),
             row("pipeline total", r["pipeline_total_ms"]),
             row("node: publish -> labels received", r["node_publish_to_labels_ms"]), "",
             f"node's own medians: inference {r['node_internal']['inference_ms_p50']} ms, receive -> publish "
             f"{r['node_internal']['receive_to_publish_ms_p50']} ms (of which waiting for the worker "
             f"{r['node_internal']['queue_wait_ms_p50']} ms); {r['frames_answered']}/{r['frames']} frames answered",
             f"node stages p50 (ms): {r['node_internal']['stages_ms_p50']}",
             f"node overhead over its own inference (p50 of processing - inference, per frame, inside the node: "
             f"conversion, resize, label resize, fill, publish): {_ms(r['node_overhead_ms_p50'])}; budget "
             f"max(10% of the node's inference, 3 ms) = {_ms(r['budget_ms'])}: "
             + ("not known (the node's diagnostics lacked a figure)" if r["within_budget"] is None
                else f"{'within' if r['within_budget'] else 'OVER'} budget")]
    return "\n".join(lines)


def save(r: Dict, path: Optional[str]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # (--json was checked to be writable so)
        Path(path).write_text(json.dumps(r, indent=1))


def bench_ground(sizes=((480, 360), (1280, 720)), frames: int = 50, stride: int = 4) -> Dict:
    """Added cost per frame of the ground outputs' array work (ROS-free): the drivable grid
    lookup (default 0.05 m grid over [0.5, 10] x [-5, 5] m) and the stride subsampling of
    labels + confidence for the cloud-aligned images; and the one-off lookup build."""
    import time
    from ..runtime.ground import Camera, CameraPose, GridLookup, GridSpec, GroundCloud
    out = {}
    rng = np.random.default_rng(0)
    for w, h in sizes:
        f = 0.8 * w
        cam = Camera.from_camera_info(w, h, [f, 0, (w - 1) / 2, 0, f, (h - 1) / 2, 0, 0, 1],
                                      [-0.2, 0.05, 0.001, 0.001, 0.0], "plumb_bob")
        pose = CameraPose.from_body_xyz_rpy([0.25, 0.0, 0.9], [0.0, 0.35, 0.0])
        t0 = time.perf_counter()
        lut = GridLookup(cam, pose, GridSpec(0.05, (0.5, 10.0), (-5.0, 5.0)), 10.0)
        t1 = time.perf_counter()
        cloud = GroundCloud(cam, pose, stride, 10.0)
        t2 = time.perf_counter()
        masks = [(rng.random((h, w)) > 0.5).astype(np.uint8) * 255 for _ in range(4)]
        grid_ms = time_calls(lut.grid, masks, runs=frames, warmup=0)
        # labels and confidence: two subsamplings a frame
        sub_ms = time_calls(lambda m: (cloud.subsample(m), cloud.subsample(m)), masks, runs=frames, warmup=0)
        out[f"{w}x{h}"] = {"grid_ms": percentiles(grid_ms), "ground_images_ms": percentiles(sub_ms),
                           "build_grid_lookup_ms": round((t1 - t0) * 1e3, 2),
                           "build_cloud_ms": round((t2 - t1) * 1e3, 2),
                           "cloud_points": int(cloud.rows * cloud.cols), "cloud_bytes": int(cloud.points.nbytes)}
    return out


def ground_markdown(g: Dict) -> str:
    lines = ["", "ground outputs, array work per frame (ROS-free; message build + publish are in the node's "
             "diagnostics: grid_ms, cloud_ms, ground_images_ms)", "",
             "| camera | grid p50 / p95 ms | ground labels+confidence p50 / p95 ms | cloud points (bytes) | "
             "one-off build: grid / cloud ms |", "|---|---|---|---|---|"]
    for size, r in g.items():
        lines.append(f"| {size} | {r['grid_ms']['p50']} / {r['grid_ms']['p95']} | {r['ground_images_ms']['p50']} / "
                     f"{r['ground_images_ms']['p95']} | {r['cloud_points']} ({r['cloud_bytes']}) | "
                     f"{r['build_grid_lookup_ms']} / {r['build_cloud_ms']} |")
    return "\n".join(lines)
