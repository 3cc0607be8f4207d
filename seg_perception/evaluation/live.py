"""Live evaluation: the real segmentation_node, fed over DDS.

Starts the node as its own process (or attaches to a running one), waits for
discovery, publishes the bag's camera messages as recorded (the raw CDR bytes,
like `ros2 bag play`) at the recorded pace, a fixed rate or a speed factor, with
the bag's CameraInfo beside them on the topic the node reads it from, records
/segmentation/labels (and segmentation/camera_info where CameraInfo is played;
for --out-bag, drivable_mask, overlay and a ground-enabled node's drivable_grid
too), and matches outputs to inputs by header stamp. Latency is publish -> receipt of
/segmentation/labels, both clocks in this process. The node's /diagnostics give
its own received/processed/dropped/rejected counters.

QoS: raw frames are large; with Fast DDS's default transports a best-effort
frame over ~0.5 MB is lost between processes. The node is started with its
default qos 'auto' (--node-qos auto), which subscribes reliable to the player's
reliable publisher, as to a camera driver's.
"""
from __future__ import annotations

import importlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..card import check_precision
from ..data import bag_io
from ..paths import default_params_file
from ..runtime.backends import BACKENDS
from ..runtime.image_conversion import to_rgb
from ..runtime.node_process import DomainInUse, NodeProcess, discover_as, private_domain, ros_env
from .common import (Progress, check_ground_truth_classes, load_model_card, notes_on_error, open_bag, partial_reason,
                     select_inputs, trained_on_ground_truth)
from .config import EXIT_NO_MATCH, EXIT_NODE, EvalConfig, EvalError
from .out_bag import DRIVABLE, GRID, LABELS, OUTPUT_TYPES, OVERLAY, SEG_INFO, OutputBag, copy_topics
from .participant import Participant
from .scoring import (Counts, EvalResult, Scorer, add_gt_message, admit_frame, decode_frame, decode_labels,
                      frame_size, rejection_note)

QOS_CHOICES = ("auto", "sensor_data", "reliable")
# frames_late: finished after a newer frame of its camera went out (workers > 1), so not published
COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "frames_rejected", "frames_late",
            "frames_skipped")
# counters a node of an earlier version did not publish: 0 there
NEWER_COUNTERS = ("frames_late", "frames_skipped")


# Attached: how long a node heard on another topic may stay the only one before we give up.
MISMATCH_GRACE_S = 5.0
# Recorded timing: a longer wait between two frames (a clock jump, a paused recording) is cut to this.
MAX_GAP_S = 5.0
# How long the CameraInfo publisher may take to meet the node's subscription before frames are played.
INFO_MATCH_S = 5.0


@dataclass
class Published:
    t_pub: float      # perf_counter at publish
    index: int        # frame index in the bag
    t_ns: int         # recorded time (for the output bag)
    skipped_s: float = 0.0  # recorded seconds cut from long gaps before this frame (MAX_GAP_S)
    size: Optional[Tuple[int, int]] = None  # the frame's (height, width): labels may be the network's size


def playback_pace(published: List[Published], rate: float, speed: float) -> Tuple[Optional[Dict], str]:
    """How fast the frames went out against what was asked, and a note when the player fell
    behind (reading and decoding a bag of large frames, or a busy machine): the node then saw a
    slower camera than recorded, and its fps and drops say less about the real one."""
    if len(published) < 2:
        return None, ""
    first, last = published[0], published[-1]
    played = last.t_pub - first.t_pub
    recorded = (last.t_ns - first.t_ns) / 1e9
    cut = last.skipped_s if rate <= 0 else 0.0  # of long gaps, played shorter (MAX_GAP_S)
    asked_s = (len(published) - 1) / rate if rate > 0 else (recorded - cut) / speed
    # each frame against its own slot: a stall made up for by a burst is as bad as a slow end
    late = [p.t_pub - first.t_pub - (k / rate if rate > 0 else ((p.t_ns - first.t_ns) / 1e9 - p.skipped_s) / speed)
            for k, p in enumerate(published)]
    worst = max(range(len(late)), key=late.__getitem__)
    pace = {"asked": f"{rate:g} Hz" if rate > 0 else f"recorded timing x{speed:g}",
            "recorded_s": round(recorded, 3), "played_s": round(played, 3),
            "realtime_factor": round((recorded - cut) / played, 3) if played > 0 else None,
            "behind_pct": round(100 * (played / asked_s - 1), 1) if asked_s > 0 else None,
            "max_late_ms": round(1e3 * late[worst], 1)}
    if cut:
        pace["gaps_cut_s"] = round(cut, 3)
    note = ""
    if asked_s > 0 and played > 1.05 * asked_s + 0.05:
        note = (f"playback fell behind the asked pace ({pace['asked']}): {len(published)} frames went out in "
                f"{played:.2f} s instead of {asked_s:.2f} s; the node saw a slower camera than asked (the "
                "player could not read and publish faster: a lower --rate or --speed measures what you ask)")
    elif late[worst] > 0.25:
        note = (f"playback stalled: frame {published[worst].index} went out {late[worst]:.2f} s after its time "
                f"({pace['asked']}) and the frames after it in a burst; the node saw a gap and then a burst")
    return pace, note


class Client(Participant):
    """This process's ROS side: one publisher, recorders for the node's outputs and diagnostics."""

    def __init__(self, domain_id: Optional[int], topic: str, compressed: bool, extra_outputs: bool,
                 camera_info: bool = False):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        super().__init__(domain_id, "seg_eval_player")
        self.topic = topic
        self.outputs: Dict[str, List[Tuple[float, bytes]]] = {t: [] for t in (LABELS, DRIVABLE, OVERLAY, SEG_INFO,
                                                                              GRID)}
        self.diagnostics: List[Tuple[float, Dict[str, str]]] = []
        self.other_nodes: Dict[str, str] = {}
        self.other_seen_at: Optional[float] = None  # when a segmentation node on another topic showed up
        # Reliable like a camera driver; a best-effort subscriber still matches it.
        pub_qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(CompressedImage if compressed else Image, topic, pub_qos)
        self.pub_qos = pub_qos
        self.info_pub = None  # the bag's CameraInfo, on the node's topic for it (play_camera_info_on)
        out_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        wanted = (LABELS, DRIVABLE, OVERLAY) if extra_outputs else (LABELS,)
        # raw=True: the callback only timestamps the bytes; decoding waits until playback ends
        # so this process takes as little CPU from the node as possible.
        self.subs = {t: self.node.create_subscription(Image, t, self._recorder(t), out_qos, raw=True) for t in wanted}
        # not in `subs`: a node older than segmentation/camera_info is still connected without it
        self.info_sub = (self.node.create_subscription(CameraInfo, SEG_INFO, self._recorder(SEG_INFO), out_qos,
                                                       raw=True) if camera_info else None)
        if extra_outputs:  # the grid too, where the node projects (ground.enable); not for `connected` either
            self.node.create_subscription(OccupancyGrid, GRID, self._recorder(GRID), out_qos, raw=True)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)
        self.start()

    def _recorder(self, topic: str):
        def cb(raw: bytes) -> None:
            t = time.perf_counter()
            with self.lock:
                self.outputs[topic].append((t, raw))
        return cb

    def _on_diag(self, msg) -> None:
        t = time.perf_counter()
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if "frames_received" not in values:
                continue  # not a segmentation node
            with self.lock:
                if values.get("topic") == self.topic:
                    self.diagnostics.append((t, values | {"_name": st.name}))
                else:
                    self.other_nodes[st.name] = values.get("topic", "?")
                    if self.other_seen_at is None:
                        self.other_seen_at = t

    def play_camera_info_on(self, topic: str, node_has_output: bool) -> bool:
        """A publisher for the bag's CameraInfo on ``topic``; True once the node's subscription has
        matched it (within INFO_MATCH_S), and its segmentation/camera_info this process's recorder
        (where the node has that output), so that no frame goes out before either."""
        from sensor_msgs.msg import CameraInfo
        self.info_pub = self.node.create_publisher(CameraInfo, topic, self.pub_qos)
        end = time.monotonic() + INFO_MATCH_S
        while time.monotonic() < end:
            if self.info_pub.get_subscription_count() > 0 and \
                    (not node_has_output or self.publisher_count(self.info_sub) > 0):
                return True
            time.sleep(0.05)
        return False

    def last_diag(self) -> Optional[Tuple[float, Dict[str, str]]]:
        with self.lock:
            return self.diagnostics[-1] if self.diagnostics else None

    def labels_count(self) -> int:
        with self.lock:
            return len(self.outputs[LABELS])

    def connected(self) -> bool:
        return (self.pub.get_subscription_count() > 0 and self.last_diag() is not None
                and all(self.publisher_count(s) > 0 for s in self.subs.values()))


def _counters(values: Dict[str, str]) -> Dict[str, int]:
    try:
        return {k: int(values[k]) if k in values or k not in NEWER_COUNTERS else 0 for k in COUNTERS}
    except (KeyError, ValueError):
        return {k: 0 for k in COUNTERS}


def counters_add_up(c: Dict[str, int]) -> bool:
    """Every frame the node received is accounted for: nothing is left in it."""
    return c["frames_received"] == sum(c[k] for k in COUNTERS if k != "frames_received")


def node_parameters(cfg: EvalConfig, card_path: Path, base_topic: str, compressed: bool) -> Dict[str, object]:
    if cfg.backend not in BACKENDS:
        raise EvalError(f"unknown backend '{cfg.backend}'; valid choices: {', '.join(BACKENDS)}")
    try:
        check_precision(cfg.precision)
    except ValueError as e:
        raise EvalError(str(e)) from None
    qos = cfg.node_qos  # auto: the node's own, which follows the player's reliable publisher
    params: Dict[str, object] = {"model": str(card_path), "backend": cfg.backend, "precision": cfg.precision,
                                 "image_topic": base_topic, "use_compressed": compressed, "qos": qos,
                                 "threads": int(cfg.threads), "diagnostics_period": 0.5}
    if cfg.onnx:
        params["onnx"] = str(Path(cfg.onnx).resolve())
    params.update(cfg.node_params)
    return params


def _topics_for(bag_topic: str, msgtype: str, publish_topic: Optional[str]) -> Tuple[str, str]:
    """(topic to publish on, the node's image_topic parameter). The node subscribes to
    <image_topic>/compressed for compressed frames."""
    topic = publish_topic or bag_topic
    if msgtype == bag_io.COMPRESSED:
        if not topic.endswith("/compressed"):
            topic = topic.rstrip("/") + "/compressed"
        return topic, topic[: -len("/compressed")]
    return topic, topic


def run_live(cfg: EvalConfig, domain_id: Optional[int] = None, log=None) -> EvalResult:
    if cfg.node_qos not in QOS_CHOICES:
        raise EvalError(f"unknown node qos '{cfg.node_qos}'; valid choices: {', '.join(QOS_CHOICES)}")
    if cfg.rate < 0 or cfg.speed <= 0:
        raise EvalError("--rate must be >= 0 (0: the recorded timing) and --speed > 0")
    # what the player and recorder need, before a node is started (and its log emptied) for nothing
    # (missing: ModuleNotFoundError, which the CLI turns into the extra to install)
    for module in ("rclpy", "sensor_msgs.msg", "diagnostic_msgs.msg", "nav_msgs.msg"):
        importlib.import_module(module)
    reader = open_bag(cfg.bag)
    with reader, notes_on_error(reader):
        inp = select_inputs(cfg, reader, count_corrupt=True)
        compressed = inp.image.msgtype == bag_io.COMPRESSED
        pub_topic, base_topic = _topics_for(inp.image.name, inp.image.msgtype, cfg.publish_topic)
        info = Info(bag_camera_info(reader, inp.image.name))
        node = None
        client = None
        card = None if cfg.attach and not cfg.model else load_model_card(cfg.model)
        if card is not None:  # before a node is started for nothing
            check_ground_truth_classes(inp, reader, card)
        if cfg.attach:
            env_domain = os.environ.get("ROS_DOMAIN_ID", "")
            domain = domain_id if domain_id is not None else (int(env_domain) if env_domain.isdigit() else None)
        else:
            # A private domain: nothing else on the network sees the frames or answers them.
            try:  # --domain-id is held too: another run on it now would answer these frames
                domain = private_domain(domain_id)
            except DomainInUse as e:
                raise EvalError(str(e)) from None
            env = ros_env(domain)
            discover_as(env)
            log_path = cfg.node_log or Path(tempfile.mkdtemp(prefix="seg_eval_")) / "node.log"
            try:
                node = NodeProcess(node_parameters(cfg, card.path, base_topic, compressed), log_path, env)
            except FileNotFoundError as e:  # the console script is not installed
                raise EvalError(str(e), EXIT_NODE) from None
            if log is not None:
                log(f"[live] started segmentation_node in ROS domain {domain} (log: {log_path}); "
                    f"playing {_playing(inp)} on {pub_topic}")
        if cfg.attach and log is not None:
            log(f"[live] attaching to a segmentation node in ROS domain {domain if domain is not None else 0}; "
                f"playing {_playing(inp)} on {pub_topic}")
        try:
            client = Client(domain, pub_topic, compressed, extra_outputs=cfg.out_bag is not None,
                            camera_info=info.bag_topic is not None)
            _wait_connected(client, node, cfg, pub_topic)
            if card is None:  # attached without --model: the node names its model
                name = client.last_diag()[1].get("model", "")
                try:
                    card = load_model_card(name)
                except EvalError:
                    raise EvalError(f"the attached node runs model '{name}', which is not in a models folder "
                                    "here: pass --model with its card .yaml") from None
                check_ground_truth_classes(inp, reader, card)
            elif cfg.attach:  # scored with --model's classes and reported as it: it must be the node's
                diag = client.last_diag()
                name = diag[1].get("model", "") if diag else ""
                if name and name != card.name:
                    raise EvalError(f"the attached node runs model '{name}', not '{card.name}' (--model): pass "
                                    f"--model {name} (or its card .yaml), or leave --model out", EXIT_NODE)
            if info.bag_topic is not None:
                diag = client.last_diag()[1]
                info.node_has_output = "camera_info" in diag  # a node before segmentation/camera_info has not
                info.played_on = node_camera_info_topic(diag, base_topic)
                info.matched = client.play_camera_info_on(info.played_on, info.node_has_output)
                if log is not None:
                    log(f"[live] playing the bag's {info.bag_topic} on {info.played_on}"
                        + ("" if info.matched else f" (not matched within {INFO_MATCH_S:g} s)"))
            result = _play(cfg, reader, inp, client, card, node, info)
        finally:
            if client is not None:
                client.close()
            if node is not None:
                rc = node.stop()
                if rc not in (0, None, -2, 130):
                    (log or print)(f"[live] warning: segmentation_node exited with code {rc} "
                                   f"(log: {node.log_path})")
    return result


@dataclass
class Info:
    """The bag's CameraInfo in a live run: played beside the frames, as `ros2 bag play` would."""
    bag_topic: Optional[str]          # the bag's CameraInfo beside its image topic; None: the bag has none
    played_on: str = ""               # the node's CameraInfo topic, where it is played
    node_has_output: bool = True      # the node publishes segmentation/camera_info (its diagnostics say)
    matched: bool = False             # both ways matched before the first frame (play_camera_info_on)
    played: int = 0                   # messages sent as they come in the bag (the first is also sent ahead)
    corrupt: int = 0

    def describe(self, answered: int, with_info: int, node_status: str) -> Tuple[str, str]:
        """(what the report says of CameraInfo, a warning or ""); ``node_status``: the node's last
        diagnostics on segmentation/camera_info (after "topic: ")."""
        if self.bag_topic is None:
            return "none in the bag beside the image topic: not played", ""
        said = f"{self.bag_topic} played on {self.played_on} ({self.played} messages"
        said += f", {self.corrupt} corrupt not sent)" if self.corrupt else ")"
        if not self.node_has_output:
            return said + "; the node publishes no segmentation/camera_info (a version before it)", ""
        said += f"; segmentation/camera_info came back for {with_info} of the {answered} frames answered"
        if not answered or with_info == answered:
            return said, ""
        lost = f"segmentation/camera_info came back for {with_info} of the {answered} frames answered"
        if node_status.startswith("not published: frame is"):  # the calibration of another resolution
            return said, (f"{lost} ({node_status}): the bag's {self.bag_topic} does not fit its frames, so on the "
                          "robot the node's ground projection and every CameraInfo consumer (RViz, depth fusion) "
                          "would go without it")
        if not self.matched:
            return said, (f"{lost}: the node's subscription on {self.played_on} (or this player's on "
                          f"segmentation/camera_info) did not match within {INFO_MATCH_S:g} s")
        return said, f"{lost} (the node's diagnostics at the end: {node_status or 'nothing on it'})"


def bag_camera_info(reader: bag_io.BagReader, image_topic: str) -> Optional[str]:
    """The bag's CameraInfo topic beside ``image_topic`` (image_transport's sibling of the raw topic,
    also for compressed frames); None when the bag has none there."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    name = bag_io.camera_info_topic(base)
    topic = reader.topics().get(name)
    return name if topic is not None and topic.msgtype == bag_io.CAMERA_INFO else None


def node_camera_info_topic(diag: Optional[Dict[str, str]], base_topic: str) -> str:
    """Where the node reads its camera's CameraInfo: its diagnostics' ``camera_info`` value ("topic:
    status", after its camera_info_topic parameter and remapping); for a node too old to say,
    image_transport's sibling of the image topic it segments."""
    topic = (diag or {}).get("camera_info", "").split(": ", 1)[0].strip()
    return topic if topic.startswith("/") else bag_io.camera_info_topic(base_topic)


def _playing(inp) -> str:
    """'20 frames', or for a damaged bag '12 frames (of 20 recorded: the bag is damaged ...)'; frames
    whose header stamp repeats an earlier one's, and frames whose message does not deserialise (the
    node could not read them either), are not played, and said so."""
    said = []
    if inp.damage:
        said.append((f"of {inp.recorded} recorded" if inp.recorded is not None else "all that can be read")
                     + f"; {inp.damage}")
    if inp.repeated:
        said.append(f"{inp.repeated} more repeat an earlier frame's header stamp: not played, as outputs are "
                    "matched by stamp")
    if inp.corrupt:
        said.append(f"{inp.corrupt} more {'does' if inp.corrupt == 1 else 'do'} not deserialise (corrupt): not sent")
    return f"{inp.total - inp.repeated - inp.corrupt} frames" + (f" ({'; '.join(said)})" if said else "")


def _attach_hint(topic: str, theirs: str) -> str:
    """What makes a running node and the bag meet: --publish-topic cannot turn JPEG frames into
    raw ones, so a node of the other kind must be restarted with use_compressed."""
    ours_compressed, theirs_compressed = topic.endswith("/compressed"), theirs.endswith("/compressed")
    if ours_compressed and not theirs_compressed:
        return (f"the bag's frames are compressed and that node takes raw images: restart it with "
                f"use_compressed:=true (it then listens on {theirs.rstrip('/')}/compressed), or play a bag of raw frames")
    if theirs_compressed and not ours_compressed:
        return ("the bag's frames are raw and that node takes compressed images: restart it with "
                "use_compressed:=false, or play a bag of compressed frames")
    return (f"pass --publish-topic {theirs} (or --image-topic for another bag topic), or remap the node's "
            "image_topic")


def _wait_connected(client: Client, node: Optional[NodeProcess], cfg: EvalConfig, topic: str) -> None:
    end = time.monotonic() + cfg.startup_timeout
    while time.monotonic() < end:
        if node is not None and not node.running():
            raise EvalError(f"segmentation_node exited with code {node.proc.returncode}: {node.failure()} "
                            f"(log: {node.log_path})", EXIT_NODE)
        if client.connected():
            time.sleep(0.3)  # let the reverse direction of discovery settle too
            return
        if node is None and client.other_nodes and client.last_diag() is None and \
                time.perf_counter() - client.other_seen_at > MISMATCH_GRACE_S:
            # Attached: a running node has been heard, but on another topic; waiting will not help.
            seen = "; ".join(f"{n} listens on {t}" for n, t in client.other_nodes.items())
            raise EvalError(f"no segmentation node listens on {topic}, but {seen}: "
                            f"{_attach_hint(topic, next(iter(client.other_nodes.values())))}", EXIT_NODE)
        time.sleep(0.05)
    if node is not None:
        raise EvalError(f"segmentation_node did not come up within {cfg.startup_timeout:.0f} s "
                        f"(last log line: {node.failure()}; log: {node.log_path})", EXIT_NODE)
    others = ", ".join(f"{n} on {t}" for n, t in client.other_nodes.items()) or "none"
    raise EvalError(f"no segmentation node answers on {topic} within {cfg.startup_timeout:.0f} s "
                    f"(segmentation nodes on /diagnostics: {others}); check ROS_DOMAIN_ID and the discovery "
                    "settings, or pass --publish-topic", EXIT_NODE)


def node_drivable(diag: Optional[Dict[str, str]], card) -> List[int]:
    """The drivable classes the node really uses (its parameter overrides the card), as its
    diagnostics say; the card's for a node too old to say."""
    value = (diag or {}).get("drivable_classes")
    if value is None:
        return list(card.drivable_classes)
    try:
        ids = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        return list(card.drivable_classes)
    return [c for c in ids if 0 <= c < card.num_classes]


def drivable_values(client: Client, card, first: List[int], since: float) -> List[List[int]]:
    """The node's drivable classes as they were set during a run: ``first``, then each change its
    diagnostics (received after ``since``) show, in order. A change and a change back inside one
    diagnostics period is not seen."""
    with client.lock:
        diags = [values for t, values in client.diagnostics if t >= since]
    out = [first]
    for values in diags:
        ids = node_drivable(values, card)
        if set(ids) != set(out[-1]):
            out.append(ids)
    return out


def _play(cfg: EvalConfig, reader: bag_io.BagReader, inp, client: Client, card,
          node: Optional[NodeProcess], info: Info) -> EvalResult:
    counts = Counts()
    t_start = time.perf_counter()  # diagnostics from here on tell of drivable_classes set during the run
    drivable = node_drivable(client.last_diag()[1], card)
    scorer = Scorer(card.num_classes, drivable, counts, inp.gt_folder, inp.samples,
                    keep_labels=cfg.keep_labels, with_gt=inp.gt is not None, ignore_index=card.ignore_index)
    base = _counters(client.last_diag()[1])
    published: Dict[int, Published] = {}
    sample_rgb: Dict[int, object] = {}
    sample_msgs: Dict[int, object] = {}  # the report's sample frames, as played
    bar = Progress(inp.total, "live", cfg.progress)
    t_first_pub = None
    t0_bag = prev_t = None
    skipped = 0.0  # recorded seconds cut from long gaps
    gaps: List[Tuple[int, float]] = []  # (frame index, recorded gap in s) of the gaps cut
    index = -1
    read_error = ""
    try:
        if info.bag_topic:  # the first ahead of the frames: a bag that has each frame before its
            _send_first_camera_info(reader, info, client)  # CameraInfo must not cost the first frame its own
        for m in reader.messages(inp.topics + ([info.bag_topic] if info.bag_topic else [])):
            if m.topic == info.bag_topic:  # sent as read: right after the frame recorded before it
                if m.error:  # would not deserialise in the node either
                    info.corrupt += 1
                else:
                    client.info_pub.publish(m.raw)
                    info.played += 1
                continue
            if m.topic == inp.image.name:
                index += 1
                if index >= inp.total:
                    break
            if inp.gt is not None and m.topic == inp.gt.name:
                add_gt_message(scorer, m, counts)
                continue
            bar.update()
            # A corrupt message is never sent: it would not deserialise in the node either.
            stamp, repeated = admit_frame(scorer, m, counts, published)
            if stamp is None or repeated:  # outputs are matched by stamp: only the first of a stamp is played
                continue
            # Pace: the recorded timing (scaled by --speed) or a fixed --rate.
            if t_first_pub is None:
                t_first_pub, t0_bag = time.perf_counter(), m.t_ns
                target = t_first_pub
            elif cfg.rate > 0:
                target = t_first_pub + len(published) / cfg.rate
            else:
                gap = (m.t_ns - prev_t) / 1e9
                wait = min(max(gap / cfg.speed, 0.0), MAX_GAP_S)  # a jump, either way, is not slept through
                if wait != gap / cfg.speed:
                    skipped += gap - wait * cfg.speed
                    gaps.append((index, gap))
                target = t_first_pub + ((m.t_ns - t0_bag) / 1e9 - skipped) / cfg.speed
            prev_t = m.t_ns
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if node is not None and not node.running():
                raise EvalError(f"segmentation_node stopped during playback (code {node.proc.returncode}): "
                                f"{node.failure()} (log: {node.log_path})", EXIT_NODE)
            t_pub = time.perf_counter()
            client.pub.publish(m.raw)
            published[stamp] = Published(t_pub, index, m.t_ns, skipped,
                                         frame_size(m.msg) if scorer.with_gt else None)
            if index in scorer.sample_indices:
                sample_msgs[stamp] = m  # decoded after playback: not CPU taken from the node mid-run
    except bag_io.BagError as e:
        read_error = str(e)
    finally:
        bar.close()
    t_last_pub = time.perf_counter()
    diag, drained = _drain(client, cfg, len(published), t_last_pub)
    for stamp, m in sample_msgs.items():
        try:
            sample_rgb[stamp] = to_rgb(*decode_frame(m))
        except ValueError:
            pass  # the node rejected it too; no side-by-side for it
    node_delta = {k.replace("frames_", ""): v - base[k] for k, v in _counters(diag).items()} if diag else None
    if node_delta is not None:
        # The node's own medians over its last 100 frames: receive -> publish, and inference alone.
        for k in ("inference_ms", "end_to_end_ms", "queue_wait_ms", "overhead_ms"):
            try:
                node_delta[k] = float(diag[k])
            except (KeyError, ValueError):
                pass
        stages = {}
        for k in ("convert_ms", "resize_ms", "inference_ms", "post_ms", "fill_ms", "publish_ms", "processing_ms"):
            try:
                stages[k] = float(diag[k])
            except (KeyError, ValueError):
                pass
        node_delta["stages"] = stages or None

    # Match outputs to inputs by header stamp.
    ts = bag_io.typestore()
    latencies: List[float] = []
    answered: set = set()  # stamps answered, decodable or not
    unmatched = 0
    with client.lock:
        outputs = {t: list(v) for t, v in client.outputs.items()}
    t_first_out, t_last_out = float("inf"), 0.0
    decoded_outputs: Dict[str, Dict[int, Tuple[float, bytes]]] = {t: {} for t in outputs}
    for topic, items in outputs.items():
        for t_recv, raw in items:
            try:
                msg = ts.deserialize_cdr(bytes(raw), OUTPUT_TYPES.get(topic, bag_io.IMAGE))
            except Exception:
                continue
            stamp = bag_io.stamp_ns(msg.header)
            if stamp not in published:
                unmatched += topic == LABELS
                continue
            decoded_outputs[topic][stamp] = (t_recv, bytes(raw))
            if topic != LABELS or stamp in answered:
                continue
            p = published[stamp]
            answered.add(stamp)
            try:
                labels = decode_labels(msg)
            except ValueError as e:  # answered, but no prediction: its own count, not in latency or FPS
                counts.undecodable += 1
                scorer.warn_once("bad_output", f"unreadable /segmentation/labels (counted as undecodable): {e}")
                continue
            latencies.append((t_recv - p.t_pub) * 1e3)
            t_first_out, t_last_out = min(t_first_out, t_recv), max(t_last_out, t_recv)
            scorer.add_prediction(stamp, labels, p.index, sample_rgb.get(stamp), frame_size=p.size)
    scorer.finish()
    if inp.gt_folder is not None and inp.gt_folder.mixed_reading():  # not scored against labels read two ways
        raise EvalError(inp.gt_folder.mixed_reading())
    if unmatched:
        scorer.warn_once("unmatched", f"{unmatched} /segmentation/labels messages matched no frame of this run "
                                      "(another publisher on the topic, or frames from before it)")
    unanswered = len(published) - len(answered)
    if not drained and unanswered:
        scorer.warn_once("drain", f"--drain-timeout {cfg.drain_timeout:g} s ended the wait with {unanswered} frames "
                                  "unanswered: they count as dropped (a node still busy may need a longer timeout)")
    counts.rejected = min(unanswered, max(0, node_delta["rejected"])) if node_delta else 0
    counts.dropped = unanswered - counts.rejected
    reasons = _rejection_reasons(client, node) if counts.rejected else []
    if counts.rejected:
        scorer.warned["rejected"] = (rejection_note(dict.fromkeys(reasons), counts.rejected, " by the node")
                                     if reasons else rejection_note({}, counts.rejected, " by the node").rstrip(": "))
        if node is not None:
            scorer.warned["rejected"] += f" (node log: {node.log_path})"
    if node_delta is not None:
        # Frames DDS lost on the way in, and outputs the node published that never arrived here.
        node_delta["lost_before_node"] = max(0, len(published) - node_delta["received"])
        node_delta["lost_after_node"] = max(0, node_delta["processed"] - len(answered))
        if node_delta["lost_before_node"]:
            scorer.warned["lost_before_node"] = _lost_in_dds_note(node_delta["lost_before_node"], len(published))
        if node_delta["skipped"] > 0:
            scorer.warned["skipped"] = (
                f"{node_delta['skipped']} frames skipped by the node's max_rate ({diag.get('max_rate', '?')} frames "
                "a second), counted as dropped: leave max_rate at 0 to score every frame")
    info_said, info_warn = info.describe(len(answered), sum(s in answered for s in decoded_outputs[SEG_INFO]),
                                         (diag or {}).get("camera_info", "").partition(": ")[2])
    if info_warn:
        scorer.warned["camera_info"] = info_warn
    values = drivable_values(client, card, drivable, t_start)
    if len(values) > 1:  # a `ros2 param set` during the run (live), seen in the node's diagnostics
        names = lambda ids: ", ".join(card.class_names[c] for c in ids) or "none"  # noqa: E731
        scorer.warned["drivable_changed"] = (
            f"the node's drivable_classes changed during the run ({' -> '.join(names(v) for v in values)}): the "
            f"drivable scores count {names(drivable)}, so the masks published while it differed are scored "
            "against classes they were not made of")
    scorer.repeated_stamps_note(live=True)
    if gaps:
        k, longest = len(gaps), max(gaps, key=lambda g: abs(g[1]))
        scorer.warned["gaps"] = (
            f"the recorded time jumps {k} time{'s' if k > 1 else ''} between frames (by {longest[1]:.1f} s before "
            f"frame {longest[0]}{', the longest' if k > 1 else ''}): played as a pause of at most {MAX_GAP_S:g} s, "
            "not slept through; pass --rate HZ to play at a fixed rate")
    pace, behind = playback_pace(sorted(published.values(), key=lambda p: p.t_pub), cfg.rate, cfg.speed)
    if behind:
        scorer.warned["playback_behind"] = behind
    # answers per second between the first and the last: N answers span N - 1 intervals (None: fewer than 2)
    span = t_last_out - t_first_out if len(latencies) > 1 else 0.0
    fps = (len(latencies) - 1) / span if span > 0 else None

    out_path = None
    if cfg.out_bag:
        out_path = _write_out_bag(cfg, reader, inp, published, decoded_outputs, index)
    if published and not answered:
        where = f" (node log: {node.log_path})" if node is not None else ""
        why = (diag or {}).get("last_rejection", "")
        if counts.rejected and why:
            raise EvalError(f"the node rejected {counts.rejected} of the {len(published)} frames played: "
                            f"{why}{where}", EXIT_NO_MATCH)
        raise EvalError(f"the node answered none of the {len(published)} frames played: no "
                        f"/segmentation/labels with a matching header stamp{where}", EXIT_NO_MATCH)
    backend = diag.get("backend", "?") + " " + diag.get("precision", "") if diag else "?"
    held_in, held_in_why = trained_on_ground_truth(inp, reader, card)
    return EvalResult(
        mode="live", bag=str(cfg.bag), image_topic=inp.image.name, image_type=inp.image.msgtype,
        gt_source=inp.gt_source,
        model={"name": card.name, "card": str(card.path), "architecture": card.architecture,
               "backend": backend.strip(), "node": "attached" if cfg.attach else "started",
               "published_on": client.topic, "camera_info": info_said},
        class_names=list(card.class_names), palette=card.palette, drivable_classes=drivable, counts=counts,
        latencies_ms=latencies, fps=fps, wall_s=t_last_pub - (t_first_pub or t_last_pub),
        confusion=scorer.cm if scorer.with_gt else None, drivable=scorer.bin if scorer.with_gt else None,
        samples=[scorer.samples[i] for i in sorted(scorer.samples)], node=node_delta,
        notes=list(reader.notes) + list(scorer.warned.values()), labels_by_stamp=scorer.labels_by_stamp,
        out_bag=str(out_path) if out_path else None,
        partial=partial_reason(inp, read_error, counts.corrupt, scorer.gt_corrupt_frames),
        playback=pace, held_in=held_in, trained_on_gt=held_in_why,
        rejections=dict.fromkeys(reasons))  # the node names its reasons but does not count frames per reason


def _send_first_camera_info(reader: bag_io.BagReader, info: Info, client: Client) -> None:
    """The bag's first readable CameraInfo, sent before the first frame (and again in its turn)."""
    salvage, damage = reader.salvage, reader.damage  # damage met here is the playback's to meet and say
    try:
        for m in reader.messages([info.bag_topic]):
            if not m.error:  # (one that does not deserialise would not in the node either)
                client.info_pub.publish(m.raw)
                return
    except bag_io.BagError:
        pass
    finally:
        reader.salvage, reader.damage = salvage, damage


def _rejection_reasons(client: Client, node: Optional[NodeProcess]) -> List[str]:
    """Why the node rejected frames: its log names each kind of reason (then at most one line per
    5 s), its /diagnostics the latest one. The node does not count frames per reason."""
    reasons = []
    try:
        text = node.log_path.read_text(errors="replace") if node is not None else ""
    except OSError:
        text = ""
    for line in text.splitlines():
        if "frame rejected" in line:
            why = line.split("frame rejected", 1)[1].split(": ", 1)[-1].strip()
            reasons.append(re.sub(r" \(and \d+ more like it\)$", "", why))
    with client.lock:
        latest = [v.get("last_rejection", "") for _, v in client.diagnostics]
    reasons += [r for r in latest if r and not any(x.startswith(r) for x in reasons)]
    return list(dict.fromkeys(reasons))


def _lost_in_dds_note(lost: int, played: int) -> str:
    """Frames the node never received: DDS lost them between this player and the node. Large frames
    need a Fast DDS profile on the publishing side too (README 'DDS notes'), as bench-camera says."""
    note = (f"{lost} of the {played} frames played never reached the node (lost in DDS on the way in; counted "
            "as dropped)")
    if os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return note + ": a lower --rate or --speed loses fewer"
    params = default_params_file()
    xml = params.parent / "fastdds_large_frames.xml" if params is not None else None
    where = str(xml) if xml is not None and xml.is_file() else "<share/seg_perception>/config/fastdds_large_frames.xml"
    return (note + ": this player, like a camera driver, has no Fast DDS profile for large frames; run it with "
            f"FASTRTPS_DEFAULT_PROFILES_FILE={where} (README 'DDS notes'), or a lower --rate")


def _drain(client: Client, cfg: EvalConfig, n_published: int, t_last_pub: float
           ) -> Tuple[Optional[Dict[str, str]], bool]:
    """Wait until every frame is answered, or the node's counters show it has nothing left
    (received = processed + dropped + rejected + late + skipped, reported after our last frame and after
    the last output arrived), or --drain-timeout. Returns the last diagnostics, and False when
    the timeout ended the wait."""
    end = time.monotonic() + cfg.drain_timeout
    drained = False
    while time.monotonic() < end:
        if client.labels_count() >= n_published:
            drained = True
            break
        d = client.last_diag()
        if d is not None:
            t, values = d
            settled = counters_add_up(_counters(values))
            with client.lock:
                t_out = client.outputs[LABELS][-1][0] if client.outputs[LABELS] else 0.0
            if settled and t > t_last_pub + 1.0 and t > t_out + 0.2:
                drained = True
                break
        time.sleep(0.05)
    # Counters published after the last frame was handled.
    t_wait = time.monotonic() + 2.0
    d0 = client.last_diag()
    while time.monotonic() < t_wait:
        d = client.last_diag()
        if d is not None and (d0 is None or d[0] > d0[0]):
            break
        time.sleep(0.05)
    d = client.last_diag()
    return (d[1] if d else None), drained


def _write_out_bag(cfg: EvalConfig, reader: bag_io.BagReader, inp, published: Dict[int, Published],
                   outputs: Dict[str, Dict[int, Tuple[float, bytes]]], last_index: int) -> Path:
    try:
        out = OutputBag(cfg.out_bag, cfg.out_bag_format)
    except bag_io.BagError as e:
        raise EvalError(str(e)) from None
    out.keep_custom_data(reader)
    try:
        for topic, items in outputs.items():
            for stamp, (t_recv, raw) in items.items():
                p = published[stamp]
                out.add(p.t_ns + int((t_recv - p.t_pub) * 1e9), topic, OUTPUT_TYPES.get(topic, bag_io.IMAGE), raw)
        t_end = max((p.t_ns for p in published.values()), default=0)
        for m in reader.messages(copy_topics(reader, inp.image.name, inp.gt and inp.gt.name), decode=False):
            if m.t_ns > t_end:
                break
            out.copy(m)
    except bag_io.BagError:
        pass  # a damaged tail: what was copied stays
    finally:
        out.close()
    return out.path
