"""Subcommands: make-bag, eval-bag, demo, bench-node (registered with seg_perception.cli.command).

This module is the evaluation area's command line: it sits on the cli floor (see
docs/architecture.md), so it may combine areas, as the demo does with deploy's
ensure_onnx; the rest of evaluation/ never imports it.

Exit codes of eval-bag and demo: 0 ok; 2 bad input or usage; 3 nothing to evaluate
(no frame answered, no ground-truth stamp matched a frame); 4 live mode: the node
did not start or no node answered; 5 partial: the bag is cut short or damaged, and the
report covers the frames that could be read; 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli import (add_dataset_args, command, count, count_or_all, count_or_none, dataset_options, dataset_root,
                   output_file, per_second, positive, threads)
from ..paths import DEFAULT_MODEL
from .config import EXIT_NO_MATCH, EXIT_OK, EXIT_PARTIAL, EvalConfig, EvalError


def _err(cmd: str, e: Exception) -> None:
    print(f"seg-perception {cmd}: error: {e}", file=sys.stderr)


# --------------------------------------------------------------------- make-bag
@command("make-bag", "write a rosbag2 (camera frames, camera_info, ground truth) from a dataset split")
def _make_bag(p: argparse.ArgumentParser):
    from ..data.bag_io import FORMATS
    from .make_bag import ENCODINGS
    add_dataset_args(p, split="val", card=False)
    p.add_argument("--out", required=True, help="new bag folder (must not exist)")
    p.add_argument("--format", default="mcap", choices=FORMATS, help="storage (default mcap, as Jazzy records)")
    p.add_argument("--encoding", default="jpeg", choices=ENCODINGS,
                   help="rgb8/bgr8 on /camera/image_raw, jpeg on /camera/image_raw/compressed" + " (default: %(default)s)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of the header stamps (default 10)")
    p.add_argument("--frames", type=count_or_all, default=0, help="this many frames spread over the split (0: all)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of --encoding jpeg" + " (default: %(default)s)")
    p.add_argument("--compress", action="store_true",
                   help="zstd: compressed chunks (mcap) or messages (sqlite3); ros2 bag reads both")
    p.add_argument("--frame-id", default="camera", help="header frame_id of the messages" + " (default: %(default)s)")

    def run(a):
        from .make_bag import make_bag
        if a.encoding != "jpeg" and a.jpeg_quality != 90:
            _err("make-bag", f"--jpeg-quality applies to --encoding jpeg, not {a.encoding}: leave it out, or use "
                             "--encoding jpeg")
            return 2
        r = make_bag(a.out, dataset=a.dataset, split=a.split, root=dataset_root(a), fmt=a.format,
                     encoding=a.encoding, rate=a.rate, frames=a.frames, jpeg_quality=a.jpeg_quality,
                     compress=a.compress, frame_id=a.frame_id, **dataset_options(a))
        print(f"[make-bag] {r.path}: {r.frames} frames on {r.image_topic}, /camera/camera_info, "
              f"/camera/labels_gt ({a.format}, {r.size_bytes / 1e6:.2f} MB)")
    return run


# --------------------------------------------------------------------- eval-bag
def _add_eval_args(p: argparse.ArgumentParser, live_default: bool = False) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="", help=f"model name or card .yaml (default {DEFAULT_MODEL}; "
                                               "with --attach: the running node's)")
    g.add_argument("--backend", default="onnxruntime", help="auto | tensorrt | onnxruntime | torch" + " (default: %(default)s)")
    g.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8" + " (default: %(default)s)")
    g.add_argument("--onnx", default=None, help="ONNX file (default: the card's)")
    g.add_argument("--threads", type=threads, default=0, help="inference threads (0: the runtime's default)")
    g = p.add_argument_group("inputs")
    g.add_argument("--image-topic", default=None, help="camera topic (default /camera/image_raw, "
                                                       "/camera/image_raw/compressed, or the only image topic)")
    g.add_argument("--gt-topic", default=None, help="ground-truth topic, mono8 class ids (default "
                                                    "/camera/labels_gt when the bag has it)")
    g.add_argument("--gt-dir", default=None, help="ground-truth PNGs named <stamp_ns>.png (or one per frame)")
    g.add_argument("--no-gt", action="store_true", help="no accuracy metrics, timing only")
    g.add_argument("--max-frames", type=count_or_all, default=0, help="only the first N frames (0: all)")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", default=None, help="report folder (default reports/eval_<bag>_<mode>)")
    g.add_argument("--out-bag", default=None, help="also write inputs + outputs to this new bag (RViz, Foxglove)")
    g.add_argument("--out-bag-format", default="mcap", choices=["mcap", "sqlite3"], help="--out-bag storage" + " (default: %(default)s)")
    g.add_argument("--samples", type=count_or_none, default=4,
                   help="side-by-side frames in the report" + " (default: %(default)s)")
    g = p.add_argument_group("live mode")
    g.add_argument("--attach", action="store_true", help="use a running segmentation node instead of starting one")
    g.add_argument("--rate", type=per_second, default=0.0, help="publish at this many frames/s (default: as recorded)")
    g.add_argument("--speed", type=positive, default=1.0, help="play the recorded timing this many times faster" + " (default: %(default)s)")
    g.add_argument("--node-qos", default="auto", choices=["auto", "sensor_data", "reliable"],
                   help="the started node's subscription QoS (auto: the node's default, reliable for the player's reliable frames)" + " (default: %(default)s)")
    g.add_argument("--publish-topic", default=None, help="publish the frames here (default: the bag's topic)")
    g.add_argument("--domain-id", type=domain_id, default=None,
                   help="ROS domain (default: a private one for a started node; the environment's with --attach)")
    g.add_argument("--startup-timeout", type=positive, default=90.0, help="seconds for the node to come up" + " (default: %(default)s)")
    g.add_argument("--drain-timeout", type=positive, default=15.0,
                   help="seconds to wait for answers after the last frame" + " (default: %(default)s)")
    g.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra parameter for the started node (repeatable)")


def domain_id(text: str) -> int:
    """A ROS domain id: 0-232 (Fast DDS and Cyclone DDS refuse others, after the node has started)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not 0 <= n <= 232:
        raise argparse.ArgumentTypeError(f"must be 0 to 232 (ROS_DOMAIN_ID's range), got {n}")
    return n


# live-mode options as parsed when not given: offline, a value other than these is a mistake
LIVE_DEFAULTS = {"rate": 0.0, "speed": 1.0, "node_qos": "auto", "publish_topic": None, "domain_id": None,
                 "startup_timeout": 90.0, "drain_timeout": 15.0, "param": []}


def _usage_error(a, mode: str) -> str:
    """Options that exclude each other, or that the mode would ignore without a word ("": none)."""
    if a.attach and mode != "live":
        return "--attach needs --mode live"
    if mode == "offline":
        given = [f"--{k.replace('_', '-')}" for k, v in LIVE_DEFAULTS.items() if getattr(a, k) != v]
        if given:
            return (f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --mode live (the node over DDS); "
                    "offline frames run in-process as fast as they can: add --mode live, or leave "
                    f"{'it' if len(given) == 1 else 'them'} out")
    if a.no_gt and (a.gt_dir or a.gt_topic):
        return f"--no-gt and {'--gt-dir' if a.gt_dir else '--gt-topic'} exclude each other: drop one"
    return ""


def _config(a, bag: Path) -> EvalConfig:
    params = {}
    for item in a.param:
        if ":=" not in item:
            raise EvalError(f"--param '{item}' is not NAME:=VALUE")
        k, v = item.split(":=", 1)
        params[k.strip()] = v.strip()
    return EvalConfig(
        bag=bag, model=a.model, backend=a.backend, precision=a.precision, onnx=a.onnx, threads=a.threads,
        image_topic=a.image_topic, gt_topic=a.gt_topic, gt_dir=Path(a.gt_dir) if a.gt_dir else None,
        no_gt=a.no_gt, max_frames=a.max_frames, samples=a.samples,
        out_bag=Path(a.out_bag) if a.out_bag else None, out_bag_format=a.out_bag_format,
        attach=a.attach, rate=a.rate, speed=a.speed, node_qos=a.node_qos, publish_topic=a.publish_topic,
        startup_timeout=a.startup_timeout, drain_timeout=a.drain_timeout, node_params=params)


def evaluate(cfg: EvalConfig, mode: str, out: Path, domain_id=None, title: str = "Bag evaluation", log=None):
    """Run one evaluation and write its report; returns (result, report files, exit code)."""
    from .report import write_report
    if cfg.out_bag is not None and cfg.out_bag.exists():
        raise EvalError(f"{cfg.out_bag} exists already; --out-bag writes a new bag: remove it or choose another")
    if mode == "live":
        from .live import run_live
        if cfg.node_log is None and not cfg.attach:
            cfg.node_log = out / "node.log"
        result = run_live(cfg, domain_id=domain_id, log=log)
    else:
        from .offline import run_offline
        result = run_offline(cfg)
    code = EXIT_OK
    c = result.counts
    if c.frames_out == 0:
        code = EXIT_NO_MATCH
        result.notes.append("no frame produced a prediction")  # before the report, which lists the notes
    elif result.confusion is not None and c.scored == 0:
        code = EXIT_NO_MATCH
    elif result.partial:
        code = EXIT_PARTIAL
    files = write_report(result, out, title=title)
    return result, files, code


def _say_exit(code: int, cmd: str, result) -> int:
    """Says on stderr why the exit code is not 0 (nothing scored, or a partial result); returns it."""
    if code == EXIT_NO_MATCH:
        _err(cmd, _no_match_reason(result))
    elif code == EXIT_PARTIAL:
        _err(cmd, f"partial result (exit {EXIT_PARTIAL}): {result.partial}")
    return code


def _no_match_reason(result) -> str:
    c = result.counts
    if c.frames_out == 0:
        return (f"none of the {c.frames_in} frames produced a prediction ({c.rejected} rejected, "
                f"{c.corrupt} corrupt, {c.dropped} dropped"
                + (f", {c.undecodable} answered with undecodable labels" if c.undecodable else "") + ")")
    why = []
    if c.no_ground_truth:
        why.append(f"{c.no_ground_truth} frames have no ground truth with their header stamp")
    if c.gt_size_mismatch:
        why.append(f"{c.gt_size_mismatch} ground-truth images differ in size from their frame")
    if c.gt_unreadable:
        why.append(f"{c.gt_unreadable} ground-truth files are not readable 8-bit label PNGs (see the note)"
                   if (result.gt_source or "").startswith("folder ") else
                   f"{c.gt_unreadable} ground-truth messages are not mono8 class ids")
    return f"no frame could be scored against {result.gt_source}: {'; '.join(why) or 'no ground truth'}"


@command("eval-bag", "evaluate a model on a rosbag2: offline (Pipeline) or live (the real node over DDS)")
def _eval_bag(p: argparse.ArgumentParser):
    p.add_argument("bag", help="rosbag2 folder, or an .mcap/.db3 file")
    p.add_argument("--mode", default=None, choices=["offline", "live"],
                   help="offline: in-process, no ROS (default); live: the node over DDS (default with --attach)")

    _add_eval_args(p)

    def run(a):
        mode = a.mode or ("live" if a.attach else "offline")
        wrong = _usage_error(a, mode)
        if wrong:
            _err("eval-bag", wrong)
            return 2
        bag = Path(a.bag).expanduser()
        from .demo import default_out
        out = Path(a.out) if a.out else default_out(bag, mode)
        try:
            cfg = _config(a, bag)
            result, files, code = evaluate(cfg, mode, out, domain_id=a.domain_id, log=print)
        except EvalError as e:
            _err("eval-bag", e)
            return e.code
        print(f"[eval-bag] {mode}: {result.summary_line()}")
        for n in result.notes:
            print(f"[eval-bag] note: {n}")
        print(f"[eval-bag] report: {files['report']}" + (f"; outputs bag: {result.out_bag}" if result.out_bag else ""))
        return _say_exit(code, "eval-bag", result)
    return run


# --------------------------------------------------------------------- demo
@command("demo", "live replay of the sample bag through segmentation_node with the default model")
def _demo(p: argparse.ArgumentParser):
    p.add_argument("--out", default="reports/demo", help="report folder (default reports/demo)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or card .yaml (default {DEFAULT_MODEL})")
    p.add_argument("--bag", default=None, help="bag to play (default: the shipped CamVid sample)")
    p.add_argument("--mode", default=None, choices=["live", "offline"],
                   help="live: the node over DDS; offline: in-process (default: live where rclpy is "
                   "installed, else offline)")
    p.add_argument("--threads", type=threads, default=0, help="inference threads (0: the runtime's default)")
    p.add_argument("--rate", type=per_second, default=0.0, help="frames/s (default: the bag's recorded timing)")
    p.add_argument("--no-gt", action="store_true", help="no accuracy metrics, timing only (a model of other "
                   "classes than the bag's ground truth)")

    def run(a):
        from ..card import CardError
        from ..data.bag_io import BagError, BagReader
        from ..deploy.export import ensure_onnx
        from ..paths import sample_bag
        from .demo import clear_previous_bag, live_available, resolve_demo_model, summary
        out = Path(a.out)
        mode = a.mode
        if mode is None:
            mode = "live" if live_available() else "offline"
            if mode == "offline":
                print("[demo] rclpy is not installed here: running offline (no ROS). For the live node, "
                      "source ROS 2 (Humble or later) or pip install 'seg_perception[ros]'")
        try:
            try:
                bag = Path(a.bag) if a.bag else sample_bag()
                with BagReader(bag):  # a bag that does not open refuses before the last demo's outputs go
                    pass
                card = ensure_onnx(resolve_demo_model(a.model), log=lambda s: print(f"[demo] {s}"))
            except (FileNotFoundError, CardError, BagError) as e:
                raise EvalError(str(e)) from None
            out.mkdir(parents=True, exist_ok=True)
            out_bag = out / "outputs_bag"
            clear_previous_bag(out_bag)
            cfg = EvalConfig(bag=bag, model=str(card), backend="onnxruntime", precision="fp32",
                             threads=a.threads, rate=a.rate, out_bag=out_bag, samples=4, no_gt=a.no_gt)
            result, files, code = evaluate(cfg, mode, out, title="seg_perception demo", log=print)
        except EvalError as e:
            _err("demo", e)
            return e.code
        print(summary(result, files["report"]))
        return _say_exit(code, "demo", result)
    return run


# --------------------------------------------------------------------- bench-node
@command("bench-node", "time backend, pipeline and the live node (publish -> labels) on this machine")
def _bench_node(p: argparse.ArgumentParser):
    p.add_argument("--model", default="", help=f"model name or card .yaml (default {DEFAULT_MODEL})")
    p.add_argument("--backend", default="onnxruntime", help="auto | tensorrt | onnxruntime | torch" + " (default: %(default)s)")
    p.add_argument("--frames", type=count, default=30, help="CamVid val frames to time (default 30)")
    p.add_argument("--data", default=None, help="CamVid root (default: $SEG_PERCEPTION_CAMVID, else ../shared/datasets/camvid; "
                   "without CamVid: the sample bag's frames)")
    p.add_argument("--threads", type=threads, default=0, help="inference threads, in this process and the node")
    p.add_argument("--rate", type=per_second, default=0.0, help="live frames per second (default: 1 / (3 x backend time))")
    p.add_argument("--ground", action="store_true",
                   help="also run the node with ground projection off and on at 480x360 and 1280x720 "
                   "(config/nav2.yaml's pose) and print what the grid, cloud and ground images add per frame")
    p.add_argument("--json", type=output_file, default=None, help="also write the figures to this JSON file")

    def run(a):
        from ..paths import resolve_model
        from .bench_node import bench_ground, bench_node, ground_markdown, save, to_markdown
        try:
            r = bench_node(resolve_model(a.model or DEFAULT_MODEL), frames=a.frames, threads=a.threads,
                           backend=a.backend, rate=a.rate, data=a.data)
        except EvalError as e:
            _err("bench-node", e)
            return e.code
        r["ground"] = bench_ground()
        print(to_markdown(r) + ground_markdown(r["ground"]), flush=True)
        if a.ground:
            from .ground_bench import bench_ground_live, ground_live_markdown
            r["ground_live"] = bench_ground_live(str(resolve_model(a.model or DEFAULT_MODEL)),
                                                 frames=min(a.frames, 20), threads=a.threads or 1,
                                                 backend=a.backend, data=a.data)
            print(ground_live_markdown(r["ground_live"]))
        save(r, a.json)
    return run


# --------------------------------------------------------------------- bench-camera
@command("bench-camera", "a synthetic camera (size, rate, QoS) against the live node: frames answered, "
         "latency vs the node's own inference, memory over time (soak)")
def _bench_camera(p: argparse.ArgumentParser):
    p.add_argument("--model", default="", help=f"model name or card .yaml (default {DEFAULT_MODEL})")
    p.add_argument("--backend", default="onnxruntime", help="the node's backend (default: %(default)s)")
    p.add_argument("--sizes", nargs="+", default=["640x480"], help="WIDTHxHEIGHT of the camera, one run each (default: %(default)s)")
    p.add_argument("--rates", nargs="+", type=positive, default=[15.0], help="camera frames per second, one run each (default: %(default)s)")
    p.add_argument("--qos", nargs="+", default=["reliable"], help="camera publisher: reliable | best_effort (default: %(default)s)")
    p.add_argument("--seconds", type=positive, default=6.0, help="seconds per run; a soak: 600 (default: %(default)s)")
    p.add_argument("--threads", type=threads, default=1, help="the node's inference threads (default: %(default)s)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="more node parameters, e.g. -p input_width:=320")
    p.add_argument("--cameras", nargs="+", type=count, default=[], metavar="N",
                   help="N synthetic cameras (/cam0/image_raw, ...) in ONE node (image_topics; max_batch frames an inference); "
                        "several values: one run each (default: one camera on /camera/image_raw, the table above)")
    p.add_argument("--node-per-camera", action="store_true",
                   help="with --cameras: one node per camera instead (the comparison) (default: %(default)s)")
    p.add_argument("--json", type=output_file, default=None, help="also write the figures to this JSON file")

    def run(a):
        from .camera_bench import QOS, bench_camera, bench_cameras, cameras_markdown, to_markdown
        for q in a.qos:
            if q not in QOS:
                raise ValueError(f"unknown --qos '{q}'; valid choices: {', '.join(QOS)}")
        sizes = []
        for s in a.sizes:
            try:
                w, h = (int(v) for v in s.lower().split("x"))
            except ValueError:
                raise ValueError(f"--sizes {s}: expected WIDTHxHEIGHT, e.g. 640x480") from None
            if w <= 0 or h <= 0:
                raise ValueError(f"--sizes {s}: a camera frame needs a width and height above 0, e.g. 640x480")
            sizes.append((w, h))
        params = {}
        for kv in a.param:
            k, sep, v = kv.partition(":=")
            if not sep:
                raise ValueError(f"-p {kv}: expected NAME:=VALUE")
            params[k] = v
        if a.node_per_camera and not a.cameras:
            raise ValueError("--node-per-camera needs --cameras N")
        if not (os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")):
            print("[bench-camera] note: the synthetic camera (this process) has no Fast DDS profile, like a camera "
                  "driver started without one: frames of 640x480 and up are then often lost between processes. To "
                  "measure a camera set up as README 'DDS notes' says: export FASTRTPS_DEFAULT_PROFILES_FILE="
                  "<share/seg_perception>/config/fastdds_large_frames.xml", flush=True)
        rows = []
        if a.cameras:
            for w, h in sizes:
                for rate in a.rates:
                    for q in a.qos:
                        for n in a.cameras:
                            r = bench_cameras(a.model or DEFAULT_MODEL, n, w, h, rate, a.seconds, a.node_per_camera,
                                              q, a.backend, a.threads, params)
                            rows.append(r)
                            print(cameras_markdown([r]).splitlines()[-1], flush=True)
            print()
            print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs; "
                  f"{sizes[0][0]}x{sizes[0][1]}" + (" and more sizes" if len(sizes) > 1 else ""))
            print(cameras_markdown(rows))
            if a.json:
                _write_json(rows, a.json)
            return
        for w, h in sizes:
            for rate in a.rates:
                for q in a.qos:
                    r = bench_camera(a.model or DEFAULT_MODEL, w, h, rate, a.seconds, q, a.backend, a.threads,
                                     params)
                    rows.append(r)
                    print(to_markdown([r]).splitlines()[-1], flush=True)
        print()
        print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
        print(to_markdown(rows))
        if a.json:
            _write_json(rows, a.json)
    return run


def _write_json(rows, path: str) -> None:
    import json
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # (--json was checked to be writable so)
    Path(path).write_text(json.dumps(rows, indent=1))
