"""segmentation_node: camera frames in, segmentation out.

Thin by design: read parameters, convert messages, hand frames to the
ROS-free Pipeline, publish. A worker thread owns the pipeline; the
subscription callback only puts the newest message in a one-slot mailbox,
so a slow model never builds a backlog (replaced frames count as dropped).

Several cameras (parameter image_topics): one mailbox per camera; the worker
takes the newest frame of every camera that has one (on a GPU up to max_batch of
them in one model call, on a CPU one, the cameras in turn), and each camera's
outputs go under its own namespace (/front/image_raw -> /front/segmentation/labels, ...).

Runs on ROS 2 Humble and later: where Humble's rclpy differs, the Humble spelling
or a fallback is used (test/test_humble.py).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Dict, List, Optional

import rclpy
import rclpy.executors
from rclpy.clock import Clock, ClockType
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterException
try:
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble: the same classes, before rclpy 4.0 moved them
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy,
                       qos_policy_name_from_kind)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..card import CardError, check_precision
from ..data.bag_io import camera_info_topic
from ..paths import default_params_file, resolve_model
from ..runtime.backends import BACKENDS, BackendError
from ..runtime.ground import GroundError
from ..runtime.image_conversion import ImageError, fill_image, message_to_array
from ..runtime.pipeline import Pipeline
from .camera_health import StampGaps, camera_health, overload_note, rejection_kind, served_fps
from . import node_parameters
from .camera_info_out import CameraInfoFeed
from .ground_outputs import GroundOutputs, camera_pose, flag, pose_values, tf2_ros
from .nav_messages import label_info, label_info_type
from .node_parameters import ConfigError
from .rate_cap import RateCap
from .subscription_qos import auto_reliable, subscription_qos

class _RosLogHandler(logging.Handler):
    """Forwards the package's Python log records (e.g. backend fallbacks) to a node's logger: the
    newest live node's, one handler per process however many nodes it holds (each logged every
    record once more), installed with the first node and removed with the last."""

    def __init__(self):
        super().__init__()
        self.ros_loggers: list = []

    def emit(self, record):
        loggers = list(self.ros_loggers)  # a node may detach meanwhile
        if not loggers:
            return
        log, msg = loggers[-1], record.getMessage()
        # one call site per severity: rclpy raises when one site logs at two, and an exception here
        # would reach whatever library code logged (a start-up, a frame's conversion)
        try:
            if record.levelno >= logging.ERROR:
                log.error(msg)
            elif record.levelno >= logging.WARNING:
                log.warning(msg)
            else:
                log.info(msg)
        except Exception:  # e.g. the context already shut down: the message still reaches the terminal
            print(f"[{record.levelname}] {msg}", file=sys.stderr)

    def attach(self, ros_logger) -> None:
        pkg_log = logging.getLogger("seg_perception")
        if not self.ros_loggers:
            self._saved = (pkg_log.level, pkg_log.propagate)
            pkg_log.addHandler(self)
            pkg_log.setLevel(logging.INFO)
            pkg_log.propagate = False
        self.ros_loggers.append(ros_logger)

    def detach(self, ros_logger) -> None:
        if ros_logger in self.ros_loggers:
            self.ros_loggers.remove(ros_logger)
            if not self.ros_loggers:  # the package logs as a library again
                pkg_log = logging.getLogger("seg_perception")
                pkg_log.removeHandler(self)
                pkg_log.level, pkg_log.propagate = self._saved


_LOG_FORWARDER = _RosLogHandler()


# The node's own per-frame stages, in order (processing_ms: all of them, receipt excluded).
# overhead_ms: per frame, processing minus that frame's inference (timed within it: never negative).
STAGES = ("convert_ms", "resize_ms", "inference_ms", "post_ms", "fill_ms", "publish_ms", "processing_ms",
          "overhead_ms")


ORDER_WAIT_S = 2.0  # longest a worker holds a finished frame back for an older one of its camera
GRID_CHECK_S = 0.5  # how often a ground-enabled node checks whether its latched grid went stale (>= 2 s quiet)


def stamp_of(header) -> tuple:
    return (header.stamp.sec, header.stamp.nanosec)


@dataclass
class Stats:
    received: int = 0
    processed: int = 0
    dropped: int = 0
    late: int = 0  # finished after a newer frame of the camera was published: not published
    time_jumps: int = 0  # frames stamped before one already published: the camera's clock went back
    rejected: int = 0
    skipped: int = 0  # not segmented: max_rate had no turn for them
    last_rejection: str = ""  # why the latest rejected frame was (diagnostics; eval-bag names it)
    rejected_in_a_row: int = 0  # rejected since the last frame processed (WARN from REJECTED_RUN_WARN)
    overlays: int = 0


class CameraStream:
    """One camera: its subscription, one-slot mailbox, counters, stage times and outputs.
    ``prefix`` is where its outputs go: "" (relative to the node's namespace, one camera)
    or the camera's namespace plus "/" (several cameras)."""

    def __init__(self, image_topic: str, use_compressed: bool, prefix: str = ""):
        self.image_topic = image_topic
        self.topic = image_topic.rstrip("/") + "/compressed" if use_compressed else image_topic
        self.shown = self.topic  # the name DDS sees (namespace and remapping applied): logs, diagnostics
        self.prefix = prefix
        self.stats = Stats()
        self.slot = None  # (msg, receive time)
        self.gaps = StampGaps()
        self.cap = RateCap(0.0)  # max_rate (set at configure)
        self.last_received: Optional[float] = None  # perf_counter of the newest frame (a stopped camera)
        self.first_received: Optional[float] = None  # of the first frame since serving began
        self.last_finished: Optional[float] = None  # of the newest frame served or rejected (a stuck model)
        self.serving_since: Optional[float] = None  # when the node began serving this camera (activation)
        self.incompatible_qos = ""  # what to do about a camera publisher whose QoS cannot match
        self.in_qos = None  # the subscription's QoS (qos: auto may change it while active)
        self.told_no_qos_events = False  # the middleware cannot report a QoS mismatch: said once
        self.incompatible_at = 0.0  # perf_counter of that report
        self.infer_ms: deque = deque(maxlen=100)
        # per-stage times of the last 100 frames (the table in docs/performance.md)
        self.stages: Dict[str, deque] = {k: deque(maxlen=100) for k in STAGES}
        self.e2e_ms: deque = deque(maxlen=100)
        self.wait_ms: deque = deque(maxlen=100)
        self.done_times: deque = deque(maxlen=1200)  # served_fps's 5 s window of up to 240 FPS (200 read 60 as 40)
        self.dropped_at_diag = 0  # frames_dropped at the last diagnostics: drops since then
        self.told_overload = False  # the log says it once; diagnostics every time
        self.told_rate_change = None  # the camera period change the log said last
        # Frames go out in (era, stamp) order: era counts the times the camera's clock went back (a bag
        # loop), so a frame of the old time still in a worker goes out before the new time's, or not at all
        self.era = 0
        self.last_key = (0, (-1, -1))  # (era, (sec, nanosec)) of the newest frame published
        # frames taken by a worker and not yet published or rejected: id(message) -> (era, stamp). Keyed by
        # the message, not the stamp: a camera that stamps every frame alike has each frame counted
        # (the batch holds the message until it is finished, so its id is not reused meanwhile)
        self.in_flight: Dict[int, tuple] = {}
        self.publishing = threading.Lock()  # several workers: one publishes this camera at a time
        self.sub = None
        self.pub_labels = self.pub_drivable = self.pub_overlay = self.pub_conf = self.pub_label_info = None
        self.pub_info = None  # segmentation/camera_info
        self.info: Optional[CameraInfoFeed] = None  # the camera's CameraInfo (configured)
        self._ground: Optional[GroundOutputs] = None  # configured
        self.ground: Optional[GroundOutputs] = None   # set while active: the worker publishes to it

    def publishers(self):
        return [p for p in (self.pub_labels, self.pub_drivable, self.pub_overlay, self.pub_conf,
                            self.pub_label_info, self.pub_info) if p is not None]


def camera_namespaces(resolved_topics: List[str]) -> List[str]:
    """Each camera's output namespace: its (resolved) image topic's parent. A topic without one,
    or two cameras in one namespace, is a ConfigError that says what to do."""
    out: Dict[str, str] = {}
    for topic in resolved_topics:
        ns = topic.rstrip("/").rsplit("/", 1)[0]
        if not ns:
            raise ConfigError(f"image_topics: '{topic}' has no namespace to put its segmentation outputs under; "
                              "give each camera its own, e.g. /front/image_raw and /rear/image_raw")
        if out.get(ns) == topic:
            raise ConfigError(f"image_topics names '{topic}' twice: list each camera once")
        if ns in out:
            raise ConfigError(f"image_topics: '{out[ns]}' and '{topic}' are both in namespace {ns}, where their "
                              "outputs would collide; give each camera its own namespace")
        out[ns] = topic
    return list(out)


class SegmentationNode(Node):
    """Starts serving at construction. ManagedSegmentationNode (lifecycle.py) runs the same
    steps from lifecycle transitions: _configure, _activate, _deactivate, _cleanup."""
    managed = False

    def __init__(self, node_name: str = "segmentation_node", **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            self._construct()
        except BaseException as e:  # no destroy_node will come: the log forwarder must not keep this node,
            e.logger_name = self.get_logger().name  # run() says "cannot start" as this node (its name, namespace)
            _LOG_FORWARDER.detach(self.get_logger())
            try:  # nor its workers their models (a start-up that failed after loading them, in-process)
                if getattr(self, "sub", None) is not None:
                    self._deactivate()
                if getattr(self, "pipeline", None) is not None:
                    self._cleanup()
            except Exception:
                pass  # the construction's own error is the one to report
            raise

    def _construct(self) -> None:
        self._declare_parameters()
        self.pipeline: Optional[Pipeline] = None  # the first worker's (model card, describe())
        self.pipelines: List[Pipeline] = []
        self.sub = None
        self.ground: Optional[GroundOutputs] = None
        self.cameras: List[CameraStream] = []
        self._outputs_open = False  # active, or deactivating and still publishing the frames it holds
        self._activation = 0  # counts activations: a frame taken in an earlier one is not published in this
        if not self.managed:
            self._configure()
            self._activate()

    # ---------------------------------------------------------------- set-up
    def _declare_parameters(self) -> None:
        _LOG_FORWARDER.attach(self.get_logger())
        node_parameters.declare(self)
        node_parameters.check_names(self, _ARGV)
        self.add_on_set_parameters_callback(lambda params: node_parameters.change_result(
            params, configured=self.pipeline is not None, managed=self.managed, active=self.sub is not None,
            apply=self._apply_live))
        if hasattr(self, "add_pre_set_parameters_callback"):  # Iron and later (Humble: typed calls only)
            self.add_pre_set_parameters_callback(node_parameters.typed_empty_arrays)

    def _apply_live(self, values: Dict[str, object]) -> None:
        """Takes node_parameters.LIVE_PARAMETERS while configured: all checked before any is applied
        (a refused call changes nothing), then each worker's pipeline and each camera's rate cap
        from the next frame on. Raises ConfigError or ValueError with the reason."""
        new = {name: node_parameters.live_value(name, v) for name, v in values.items()}
        if "drivable_classes" in new:
            new["drivable_classes"] = self.pipeline.check_drivable_classes(new["drivable_classes"])
        pose = [n for n in ("ground.camera_xyz", "ground.camera_rpy") if n in new]
        grounds = [cam._ground for cam in self.cameras if cam._ground is not None] if pose else []
        if pose and any(g.use_tf for g in grounds):
            raise ConfigError(f"{', '.join(pose)}: not used, the pose comes from tf2 (ground.use_tf true): correct "
                              "the camera's transform (its URDF joint or static transform) instead")
        if grounds:  # the other half from the parameter as it is (rclpy stores the new value after this)
            try:
                new_pose = camera_pose(*(new.get(n, self.get_parameter(n).value)
                                         for n in ("ground.camera_xyz", "ground.camera_rpy")))
            except GroundError as e:
                raise ConfigError(str(e)) from None
        alpha = new.get("overlay_alpha", self.pipeline.overlay_alpha)
        legend = new.get("overlay_legend", self.pipeline.overlay_legend)
        was = {"max_rate": f"{self.max_rate:g}", "drivable_classes": self.pipeline.drivable_classes}
        for pipe in self.pipelines:
            pipe.set_overlay(alpha, legend)
            if "drivable_classes" in new:
                pipe.set_drivable_classes(new["drivable_classes"])
        for g in grounds:
            g.set_pose(new_pose)
        if "diagnostics_period" in new:
            was["diagnostics_period"] = f"{self.diagnostics_period:g}"
            self.diagnostics_period = new["diagnostics_period"]
            if getattr(self, "diag_timer", None) is not None:  # (none after a cleanup that failed half-way)
                self._start_diagnostics()  # the next message one new period from now
        if "max_rate" in new:
            with self._slot_lock:  # (frames are admitted under it)
                self.max_rate = new["max_rate"]
                for cam in self.cameras:
                    cam.cap = RateCap(self.max_rate)  # a new schedule: the next frame is admitted at once
        said = []
        for name, v in new.items():
            if name == "drivable_classes":
                v = [self.card.class_names[c] for c in v] or "none"
                said.append(f"drivable classes {v} (were {[self.card.class_names[c] for c in was[name]]})")
            elif name == "max_rate":
                each = " each" if len(self.cameras) > 1 else ""
                said.append(f"max_rate {v:g}{each} (was {was[name]}; 0: every frame)")
            elif name == "diagnostics_period":
                said.append(f"diagnostics_period {v:g} s (was {was[name]})")
            elif name in pose:
                try:
                    was_v = pose_values(name, self.get_parameter(name).value)
                except GroundError:  # (ground off: never checked) shown as it was given
                    was_v = self.get_parameter(name).value
                off = "" if grounds else "; ground.enable is false: no projection uses it"
                said.append(f"{name} {v} (was {was_v}{off})")
            else:
                said.append(f"{name} {v}")
        self.get_logger().info("taken while running: " + ", ".join(said))
        if new.get("drivable_classes") == []:
            self.get_logger().warning("no drivable classes: segmentation/drivable_mask stays empty")

    def _configure(self) -> None:
        """Load the model (building a TensorRT engine if needed), create the publishers and the
        worker. Raises ConfigError on a bad parameter."""
        settings = node_parameters.read(self)
        p, drivable, image_topics, qos = settings.values, settings.drivable, settings.image_topics, settings.qos
        self.bond_period, self.max_rate = settings.bond_period, settings.max_rate
        self.use_compressed = bool(p["use_compressed"])
        self.cameras = self._make_cameras(str(p["image_topic"]), image_topics)
        for cam in self.cameras:
            cam.cap = RateCap(self.max_rate)
        self.multi = bool(image_topics)
        try:
            ground_on = flag("ground.enable", self.get_parameter("ground.enable").value)
        except GroundError as e:
            raise ConfigError(str(e)) from None
        info_topic = str(p["camera_info_topic"])
        if info_topic and len(self.cameras) > 1:
            raise ConfigError("camera_info_topic names one topic but image_topics has several cameras: leave it "
                              "empty (each camera's camera_info beside its image topic is used)")
        for cam in self.cameras:
            # the resolved topic: a remapped camera's camera_info is beside its new name, as
            # image_transport pairs them (several cameras' topics are resolved already)
            image_topic = cam.image_topic if self.multi else self._resolve("image_topic", cam.image_topic)
            cam.info = CameraInfoFeed(self, self._resolve("camera_info_topic",
                                                          info_topic or camera_info_topic(image_topic)))
        if ground_on and len(self.cameras) > 1:  # one camera in image_topics: its pose as for image_topic
            self._check_ground_for_several_cameras()
        if ground_on:  # its parameters checked before a model loads (or an engine builds) for nothing
            for cam in self.cameras:
                try:
                    image_topic = cam.image_topic if self.multi else self._resolve("image_topic", cam.image_topic)
                    cam._ground = GroundOutputs(self, image_topic, cam.info, prefix=cam.prefix)
                except GroundError as e:
                    raise ConfigError(str(e)) from None

        # Confidence costs the backend a max, exp and sum over the logits: only made when used.
        confidence = bool(p["publish_confidence"]) or ground_on
        for _ in range(settings.workers):
            self.pipelines.append(self._make_pipeline(p, drivable, confidence))
            self.pipeline = self.pipelines[0]
        self.card = self.pipeline.card
        # auto: a batch only where it costs less than its frames, a GPU running the frames in one call (an
        # ONNX file with a fixed batch of 1 runs them one by one: each camera would wait for the others)
        be = self.pipeline.backend
        batches = getattr(be, "batches", True) and getattr(be, "max_batch", 2) > 1  # ORT's free batch; TRT's profile
        self.max_batch = int(p["max_batch"]) or (len(self.cameras) if be.on_gpu and batches else 1)
        self.max_pixels = int(p["max_image_pixels"])
        self.publish_confidence = bool(p["publish_confidence"])

        # Depth 5, not 1: a reliable writer can only resend a lost fragment while the sample is
        # still in its history; at depth 1 other processes lost ~5-40% of outputs at 10 Hz here.
        out_qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE,
                             history=QoSHistoryPolicy.KEEP_LAST)
        # Class names for consumers that match classes by name (Nav2's semantic_segmentation_layer):
        # latched (transient local), so a subscriber that starts later still gets it. Several
        # cameras: one beside each camera's labels.
        self.label_types = label_info_type()
        if self.label_types is None:
            self.get_logger().info("vision_msgs (4.1 or later: LabelInfo) is not installed: segmentation/label_info "
                                   "is not published")
        for cam in self.cameras:
            pre = cam.prefix
            cam.pub_labels = self.create_publisher(Image, pre + "segmentation/labels", out_qos)
            cam.pub_drivable = self.create_publisher(Image, pre + "segmentation/drivable_mask", out_qos)
            cam.pub_overlay = self.create_publisher(Image, pre + "segmentation/overlay", out_qos)
            cam.pub_conf = (self.create_publisher(Image, pre + "segmentation/confidence", out_qos)
                            if self.publish_confidence else None)
            cam.pub_info = self.create_publisher(CameraInfo, pre + "segmentation/camera_info", out_qos)
            if self.label_types is not None:
                cam.pub_label_info = self.create_publisher(
                    self.label_types[0], pre + "segmentation/label_info",
                    QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                               durability=QoSDurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.out_qos = out_qos

        # auto with no publisher yet begins reliable, as most camera drivers publish
        self.qos_auto = qos == "auto"
        self._follow_timer, self._follow_checks = None, 0  # qos auto's quick checks after a mismatch
        self.in_qos = subscription_qos(reliable=qos != "sensor_data")
        # one camera: the names it always had (tests, bench and evaluation read them)
        self.image_topic, self.topic = self.cameras[0].image_topic, self.cameras[0].topic
        self.diagnostics_period = settings.diagnostics_period

        self._slot_lock = threading.Condition()
        self._stop = threading.Event()
        self._next_first = 0  # round robin: the camera served first in the next batch
        self._batch_sizes: Counter = Counter()
        self._worker_frames: Counter = Counter()  # frames run by each worker (diagnostics)
        self._running = 0  # model calls running now, and the most at once (workers really overlap?)
        self._running_max = 0
        self._recent_batches: deque = deque(maxlen=100)
        self._last_error: Dict[str, float] = {}
        self._suppressed: Dict[str, int] = {}
        self.workers = [threading.Thread(target=self._work, args=(i,), name=f"segmentation_worker_{i}", daemon=True)
                        for i in range(len(self.pipelines))]
        for w in self.workers:
            w.start()
        # from configure on, not only while active: a managed node that is inactive says so, and a
        # silent one (stale in an aggregator) is one that died, which its manager does not notice.
        self._start_diagnostics()
        if any(cam._ground is not None for cam in self.cameras):  # not tied to diagnostics_period (up to an hour)
            self.grid_timer = self.create_timer(GRID_CHECK_S, self._clear_stale_grids,
                                                clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _clear_stale_grids(self) -> None:
        for cam in self.cameras:
            ground = cam.ground  # (None while inactive: deactivating cleared the grid)
            if ground is not None:
                ground.clear_if_stale()

    def _start_diagnostics(self) -> None:
        """The /diagnostics timer at diagnostics_period (again, for a new period). Wall time, as its
        figures are: under use_sim_time a /clock not yet running (or paused) is when "no frame in
        10 s" matters most."""
        if getattr(self, "diag_timer", None) is not None:
            self.destroy_timer(self.diag_timer)
        self.diag_timer = self.create_timer(self.diagnostics_period, self._publish_diagnostics,
                                            clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _make_cameras(self, image_topic: str, image_topics: List[str]) -> List[CameraStream]:
        if not image_topics:
            cam = CameraStream(image_topic, self.use_compressed)
            # a bad name stops start-up, not the first subscribe. Raw: the subscription keeps the name
            # as given (rclpy resolves it). Compressed: as image_transport does, the base topic is
            # resolved first (namespace and remapping: -r camera/image_raw:=/front/image_raw) and
            # /compressed appended; appended first, the remapping rule would not match the name.
            resolved = self._resolve("image_topic", image_topic)
            if self.use_compressed:
                cam.topic = resolved.rstrip("/") + "/compressed"
            # logs and diagnostics say where the frames are read
            cam.shown = self._resolve("image_topic", cam.topic)
            return [cam]
        # absolute names as DDS sees them (node namespace and remapping applied)
        resolved = [self._resolve("image_topics", t) for t in image_topics]
        namespaces = camera_namespaces(resolved)
        return [CameraStream(t, self.use_compressed, prefix=ns + "/") for t, ns in zip(resolved, namespaces)]

    def _resolve(self, parameter: str, topic: str) -> str:
        try:
            return self.resolve_topic_name(topic)
        except Exception as e:  # rclpy's invalid-name exceptions share no narrower base
            raise ConfigError(f"{parameter}: '{topic}' is not a valid topic name ({str(e).splitlines()[0]})") from None

    def _check_ground_for_several_cameras(self) -> None:
        """GroundOutputs runs once per camera (its CameraInfo sibling, outputs in its namespace), but
        the parameters hold ONE camera pose: several cameras need tf2."""
        try:
            use_tf = flag("ground.use_tf", self.get_parameter("ground.use_tf").value)
        except GroundError as e:
            raise ConfigError(str(e)) from None
        if not (use_tf and tf2_ros is not None):
            raise ConfigError("ground.enable with several image_topics needs each camera's pose from tf2 "
                              "(ground.use_tf: true on a ROS install with tf2_ros): the one ground.camera_xyz/"
                              "camera_rpy pose cannot describe several cameras; run one node per camera instead")

    def _activate(self) -> None:
        """Subscribe and publish."""
        msg_type = CompressedImage if self.use_compressed else Image
        header = Header(stamp=self.get_clock().now().to_msg())
        with self._slot_lock:  # before the first frame can arrive
            self._activation += 1
            self._outputs_open = True
        for cam in self.cameras:
            if cam._ground is not None:
                cam._ground.start(self.out_qos)
                cam.ground = cam._ground  # the worker publishes ground outputs while this is set
            cam.last_received = time.perf_counter() if cam.last_received is not None else None  # a restart
            cam.serving_since, cam.first_received, cam.last_finished = time.perf_counter(), None, None
            cam.last_key = (cam.era, (-1, -1))  # a restarted camera or bag may begin at an earlier time
            cam.gaps.last = None  # frames sent while inactive were not lost upstream
            cam.cap.restart()
            cam.in_qos = self.in_qos
            cam.info.start()  # before the frames: the first one's outputs can have their CameraInfo
            if self.qos_auto:
                cam.in_qos = subscription_qos(auto_reliable(self._publisher_reliability(cam), reliable=True))
            self._subscribe(cam, msg_type)
            if cam.pub_label_info is not None:
                cam.pub_label_info.publish(label_info(self.label_types, header, self.card.class_names))
        self.sub = [cam.sub for cam in self.cameras]
        self.ground = self.cameras[0].ground
        ground = ""
        if self.ground:
            pose = "tf2" if self.ground.use_tf else "the ground.camera_xyz/rpy parameters"
            if self.get_parameter("ground.use_tf").value and not self.ground.use_tf:
                pose += " (ground.use_tf is true but tf2_ros is not installed)"
            ground = (f"; ground projection into {self.ground.base_frame} from "
                      f"{', '.join(c.ground.info_topic for c in self.cameras)}, camera pose from {pose}")
        what = ", ".join(c.shown for c in self.cameras)
        if self.multi:
            count = (f"{len(self.cameras)} cameras, " + (f"up to {self.max_batch} frames an inference"
                                                      if self.max_batch > 1 else "one frame an inference, in turn")
                     if len(self.cameras) > 1 else "1 camera")
            what += (f" ({count}; outputs under "
                     f"{', '.join(c.prefix + 'segmentation/' for c in self.cameras)})")
        if self.max_rate:
            what += f", at most {self.max_rate:g} frames a second" + (" each" if len(self.cameras) > 1 else "")
        self.get_logger().info(
            f"segmenting {what} with {self.card.name} ({self.pipeline.backend.describe()}); "
            f"drivable classes {[self.card.class_names[c] for c in self.pipeline.drivable_classes]}{ground}; "
            f"subscribed {self._qos_shown()}")
        if not self.pipeline.drivable_classes:
            self.get_logger().warning("no drivable classes: segmentation/drivable_mask stays empty (set the "
                                      "drivable_classes parameter, or 'drivable' in dataset.yaml before training)")

    def _qos_shown(self, cam: Optional[CameraStream] = None) -> str:
        """'reliable (qos auto)', 'best effort', ...: of one camera, or of all (each where they differ)."""
        cams = [cam] if cam is not None else self.cameras
        kinds = ["reliable" if c.in_qos.reliability == QoSReliabilityPolicy.RELIABLE else "best effort" for c in cams]
        shown = kinds[0] if len(set(kinds)) == 1 else ", ".join(f"{c.shown} {k}" for c, k in zip(cams, kinds))
        return shown + (" (qos auto)" if self.qos_auto else "")

    def _subscribe(self, cam: CameraStream, msg_type) -> None:
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda status, cam=cam: self._on_incompatible_qos(cam, status))
        try:
            cam.sub = self.create_subscription(msg_type, cam.topic, lambda msg, cam=cam: self._on_frame(cam, msg),
                                               cam.in_qos, event_callbacks=events)
        except UnsupportedEventTypeError:
            # Humble's rclpy raises for a middleware without the event (Jazzy's skips it itself)
            if not cam.told_no_qos_events:
                cam.told_no_qos_events = True
                self.get_logger().info(
                    f"the middleware cannot report QoS mismatches on {cam.shown}: " +
                    ("qos auto follows a camera of the other QoS at the next diagnostics_period" if self.qos_auto
                     else "a camera whose QoS does not match shows only as 'no frames' in /diagnostics"))
            cam.sub = self.create_subscription(msg_type, cam.topic, lambda msg, cam=cam: self._on_frame(cam, msg),
                                               cam.in_qos)

    def _publisher_reliability(self, cam: CameraStream) -> List[bool]:
        """Whether each publisher on the camera's topic is reliable."""
        return [i.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE
                for i in self.get_publishers_info_by_topic(cam.shown)]

    def _follow_publishers_qos(self) -> bool:
        """qos: auto, while active: subscribe again when the publishers' reliability asks for the other
        QoS. Reliable is what a reliable camera's large frames need to arrive (best effort lost most of
        them over Fast DDS here); a best-effort camera matches only a best-effort subscription. True
        when a subscription was made again. A failure is logged and tried again at the next check."""
        msg_type = CompressedImage if self.use_compressed else Image
        changed = False
        for cam in self.cameras:
            if self.sub is None:
                break
            try:
                now = cam.in_qos.reliability == QoSReliabilityPolicy.RELIABLE
                want = auto_reliable(self._publisher_reliability(cam), reliable=now)
                if want == now and cam.sub is not None:
                    continue
                if cam.sub is not None:
                    self.destroy_subscription(cam.sub)
                    cam.sub = None
                cam.in_qos = subscription_qos(want)
                self._subscribe(cam, msg_type)
            except Exception as e:  # the node keeps serving its other cameras, and tries again
                self.get_logger().warning(f"qos auto: could not subscribe to {cam.shown} again ({type(e).__name__}: "
                                          f"{e}); trying again at the next check")
                continue
            changed = True
            self.get_logger().info(
                f"qos auto: {cam.shown} " + ("has only reliable publishers now: subscribing reliable" if want else
                                             "has a best-effort publisher now: subscribing best effort"))
        if self.sub is not None:
            self.sub = [cam.sub for cam in self.cameras]
        return changed

    def _follow_soon(self) -> None:
        """A few checks at short intervals after a mismatch was reported: the graph may list the new
        publisher a moment after the event, and diagnostics_period may be long (up to an hour)."""
        self._follow_checks += 1
        if self._follow_publishers_qos() or self._follow_checks >= 25 or self.sub is None:
            self._stop_follow_soon()

    def _stop_follow_soon(self) -> None:
        if self._follow_timer is not None:
            self.destroy_timer(self._follow_timer)
            self._follow_timer = None

    def _deactivate(self) -> None:
        """Stop subscribing and publishing; the model stays loaded. Also undoes an activate that
        failed part way."""
        if getattr(self, "_follow_timer", None) is not None:
            self._stop_follow_soon()
        for cam in self.cameras:
            if cam.sub is not None:
                self.destroy_subscription(cam.sub)
                cam.sub = None
            if cam.info is not None:
                cam.info.stop()
        with self._slot_lock:
            for cam in self.cameras:
                if cam.slot is not None:  # received, never taken: counted, so that the counters add up
                    cam.stats.dropped += 1
                cam.slot = None
            # frames the workers hold are published before this returns, not after deactivation,
            # and not to ground publishers being destroyed
            deadline = time.monotonic() + ORDER_WAIT_S + 1.0
            while any(cam.in_flight for cam in self.cameras) and time.monotonic() < deadline:
                self._slot_lock.wait(0.05)
            self._outputs_open = False  # a worker still inside inference publishes nothing when it returns
            for cam in self.cameras:  # ... and the next activation's frames do not wait for it
                cam.in_flight.clear()
        for cam in self.cameras:
            with cam.publishing:  # a frame being published now goes out before its publishers go
                cam.ground = None
            if cam._ground is not None:
                cam._ground.stop()
        self.sub = None
        self.ground = None

    def _cleanup(self) -> None:
        """Unload the model and remove the publishers."""
        if getattr(self, "workers", None):
            self._stop.set()
            with self._slot_lock:
                self._slot_lock.notify_all()
            busy = set()
            deadline = time.monotonic() + 5.0  # 5 s for all (one after another, 8 busy workers took 40)
            for i, w in enumerate(self.workers):
                w.join(timeout=max(0.0, deadline - time.monotonic()))
                if w.is_alive():
                    busy.add(i)
            if busy:  # closing a backend under a running inference would free its buffers mid-call
                self.get_logger().error(f"{len(busy)} worker(s) still inside inference after 5 s: their models are "
                                        "left to close when they return")
            self.unload(keep=busy)
        else:
            self.unload()
        self.remove_publishers()

    def remove_publishers(self) -> None:
        """The publishers configure made (all, or those it got to before it failed), and the
        diagnostics and grid timers."""
        for name in ("diag_timer", "grid_timer"):
            if getattr(self, name, None) is not None:
                self.destroy_timer(getattr(self, name))
                setattr(self, name, None)
        for cam in self.cameras:
            for pub in cam.publishers():
                self.destroy_publisher(pub)
            cam.pub_labels = cam.pub_drivable = cam.pub_overlay = cam.pub_conf = cam.pub_label_info = None
            cam.pub_info = None
        if getattr(self, "pub_diag", None) is not None:
            self.destroy_publisher(self.pub_diag)
            self.pub_diag = None

    def unload(self, keep: set = frozenset()) -> None:
        """Close every worker's backend (its model, engine and session), but those of the workers in
        ``keep`` (still running: their backends close when garbage-collected after them)."""
        for i, pipe in enumerate(self.pipelines):
            if i not in keep:
                pipe.backend.close()
        self.pipelines = []
        self.pipeline = None

    def _make_pipeline(self, p, drivable, confidence: bool) -> Pipeline:
        if p["backend"] not in BACKENDS:
            raise ConfigError(f"unknown backend '{p['backend']}'; valid choices: {', '.join(BACKENDS)}")
        try:
            check_precision(p["precision"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        try:
            card_path = resolve_model(str(p["model"]))
            trt = {}
            if p["backend"] in ("auto", "tensorrt"):
                trt = {"cache_dir": p["engine_cache_dir"] or None, "rebuild": bool(p["rebuild_engine"]),
                       # one batch holds a frame per camera, or max_batch of them
                       "max_batch": min(int(p["max_batch"]) or len(self.cameras), len(self.cameras))}
            pipe = Pipeline.from_card(
                card_path, backend=p["backend"], precision=p["precision"],
                width=int(p["input_width"]) or None, height=int(p["input_height"]) or None,
                onnx=p["onnx"] or None, weights=p["weights"] or None, threads=int(p["threads"]),
                drivable_classes=list(drivable) if drivable is not None else None,
                overlay_alpha=float(p["overlay_alpha"]), overlay_legend=bool(p["overlay_legend"]),
                output_size=str(p["output_size"]), confidence=confidence, **trt)
        except (ValueError, FileNotFoundError, CardError, BackendError) as e:
            raise ConfigError(str(e)) from None
        if confidence and not pipe.backend.has_confidence:  # else every frame would fail, nothing published
            pipe.backend.close()
            need = "publish_confidence" if p["publish_confidence"] else "ground.enable"
            raise ConfigError(f"{need} needs the model's confidence output, which {pipe.backend.describe()} lacks "
                              "(an ONNX file exported without it): export it again with `seg-perception export`, "
                              f"or set {need} to false")
        try:  # a graph that loads but cannot run (a custom onnx) fails here, not on every frame
            pipe.backend.warmup()
        except Exception as e:
            pipe.backend.close()
            raise ConfigError(f"{pipe.backend.describe()} fails on a test frame at {pipe.size[0]}x{pipe.size[1]} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:300]}): check the model and its "
                              "ONNX file (re-export it with `seg-perception export`)") from None
        return pipe

    def _on_incompatible_qos(self, cam: "CameraStream", status) -> None:
        """A camera whose QoS cannot match this subscription never delivers a frame: say which
        policy and what to set, in the log and in /diagnostics (rclpy alone only logs it)."""
        policy = qos_policy_name_from_kind(status.last_policy_kind)
        if self.qos_auto:  # a best-effort camera came while subscribed reliable: follow it in a moment
            if self._follow_timer is None and self.sub is not None:
                self._follow_checks = 0
                self._follow_timer = self.create_timer(0.2, self._follow_soon,
                                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
            return
        mine = "reliable" if cam.in_qos.reliability == QoSReliabilityPolicy.RELIABLE else "sensor_data"
        other = "sensor_data" if mine == "reliable" else "reliable"
        cam.incompatible_at = time.perf_counter()
        cam.incompatible_qos = (f"a publisher on {cam.shown} offers QoS incompatible with this node's "
                                f"(policy {policy}; qos: {mine}): set qos: {other} or auto, or change the camera's QoS")
        self.get_logger().warning(cam.incompatible_qos)

    def _mismatch_gone(self, cam: "CameraStream") -> bool:
        """No publisher on the camera's topic offers what did not match any more. A reliable
        subscription mismatches only a best-effort publisher (the node's is volatile, with no
        deadline); a compatible publisher left on the topic does not keep the report."""
        if time.perf_counter() - cam.incompatible_at < 2.0:
            return False  # the graph may show the publisher a moment after the event reported it
        infos = self.get_publishers_info_by_topic(cam.shown)
        if cam.in_qos.reliability == QoSReliabilityPolicy.RELIABLE:
            return not any(i.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT for i in infos)
        return not infos

    # ---------------------------------------------------------------- frames
    def _on_frame(self, cam: CameraStream, msg) -> None:
        now = time.perf_counter()
        with self._slot_lock:
            cam.stats.received += 1
            cam.last_received = now
            if cam.first_received is None:
                cam.first_received = now
            cam.gaps.add(msg.header.stamp.sec, msg.header.stamp.nanosec)
            if not cam.cap.admit(now):
                cam.stats.skipped += 1  # max_rate: not this one's turn (not a drop: nothing was waiting for it)
                if cam.slot is not None:
                    # a frame admitted earlier still waits for a worker: this newer one takes its turn
                    # (the older is the one skipped), or a node behind serves frames a cap period old
                    cam.slot = (msg, now)
                return
            if cam.slot is not None:
                cam.stats.dropped += 1  # the waiting frame is replaced by a newer one
            cam.slot = (msg, now)
            # all: the condition is shared with workers waiting to publish in stamp order, and
            # notify() could wake one of those instead of an idle worker (up to its 0.2 s wait)
            self._slot_lock.notify_all()

    def _take_batch(self) -> list:
        """The waiting frame of every camera that has one, at most one each and max_batch in all,
        starting one camera further each time, or after the last one taken when max_batch cut the
        batch short (round robin: no camera is always last, or never served). Lock held."""
        n = len(self.cameras)
        batch = []
        for k in range(n):
            if len(batch) == self.max_batch:
                self._next_first = (self._next_first + k - 1) % n  # +1 below: the camera after the last taken
                break
            cam = self.cameras[(self._next_first + k) % n]
            if cam.slot is not None:
                batch.append((cam,) + cam.slot)
                stamp = stamp_of(cam.slot[0].header)
                if cam.last_key[0] == cam.era and stamp < cam.last_key[1]:
                    self._time_went_back(cam, stamp)
                cam.in_flight[id(cam.slot[0])] = (cam.era, stamp)
                cam.slot = None
        self._next_first = (self._next_first + 1) % n
        return batch

    def _time_went_back(self, cam: CameraStream, stamp: tuple) -> None:
        """A frame stamped before one already published, and not because a worker overtook it (it
        was older on arrival): the camera's clock went back (a bag played in a loop, sim time reset,
        a driver restart). Publish from the new time on; holding to the old order would drop every
        frame until the clock caught up. Frames of the old time still in a worker go out before the
        new time's (one jump for consumers), or, once one of the new time has, not at all. Lock held."""
        cam.stats.time_jumps += 1
        last = cam.last_key[1]
        back = (last[0] - stamp[0]) + (last[1] - stamp[1]) / 1e9
        cam.era += 1
        self.get_logger().warning(
            (f"{cam.shown}: " if self.multi else "") + f"camera stamps went back by {back:.3f} s (bag loop, sim "
            "time reset or driver restart?): serving frames in the new time", throttle_duration_sec=5.0)

    def _work(self, worker: int) -> None:
        pipeline = self.pipelines[worker]
        # this configuration's stop and lock: a worker that outlived cleanup (still inside inference)
        # must end when it returns, not take frames of the next configuration with a closed model
        stop, lock, cameras = self._stop, self._slot_lock, self.cameras
        while not stop.is_set():
            with lock:
                while not any(c.slot is not None for c in cameras) and not stop.is_set():
                    lock.wait(0.2)
                if stop.is_set():
                    return
                batch = self._take_batch()
                activation = self._activation
            try:
                self._process(batch, pipeline, worker, stop, activation)
            except Exception as e:  # a bug must not kill the node (_process rejects frames it cannot serve)
                if stop.is_set():
                    return  # its configuration is gone (cleanup): nothing of the next one is touched
                # the frames _process did not finish (publish, drop or reject) are lost, each counted once:
                # one it finished had its count, and counting it again broke received = processed + ...
                with self._slot_lock:
                    lost = [cam for cam, msg, _ in batch if id(msg) in cam.in_flight]
                for cam in lost:
                    self._reject(cam, f"processing failed: {type(e).__name__}: {e}")
            finally:
                for cam, msg, _ in batch:
                    self._finished(cam, msg)

    def _finished(self, cam: CameraStream, msg) -> None:
        """A frame is published or rejected: a worker holding a newer one of this camera may go on.
        Called again for a frame already finished (the worker's final sweep): nothing happens."""
        with self._slot_lock:
            if cam.in_flight.pop(id(msg), None) is not None:
                self._slot_lock.notify_all()

    def _process(self, batch, pipeline: Pipeline, worker: int = 0, stop: Optional[threading.Event] = None,
                 activation: Optional[int] = None) -> None:
        """Convert each camera's message, ONE pipeline call for all, publish each with its own header.
        ``stop``: the worker's configuration's; set when inference returns, that configuration was
        cleaned up meanwhile, and nothing of the next one (counters, publishers) may be touched.
        ``activation``: the activation the frames were taken in (deactivated since: not published)."""
        t_start = time.perf_counter()
        ready = []
        for cam, msg, t_recv in batch:
            t0 = time.perf_counter()
            try:
                frame, color = message_to_array(msg, self.max_pixels)
            except Exception as e:  # this camera's frame only: the others still run
                why = str(e) if isinstance(e, ImageError) else f"frame conversion failed: {type(e).__name__}: {e}"
                self._finished(cam, msg)  # now: a newer frame of it need not wait for this batch
                self._reject(cam, why)    # (finished first: counted once, even if the log raises)
                continue
            ready.append((cam, msg, t_recv, frame, color, (time.perf_counter() - t0) * 1e3))
        if not ready:
            return
        want_conf = self.publish_confidence or any(r[0].ground is not None for r in ready)
        with self._slot_lock:
            self._running += 1
            self._running_max = max(self._running_max, self._running)
        try:
            results = pipeline.run_batch([r[3] for r in ready], [r[4] for r in ready],
                                              overlay=[r[0].pub_overlay.get_subscription_count() > 0 for r in ready],
                                              confidence=want_conf)
        except Exception as e:  # a backend failure: these frames are lost, the node keeps serving
            if stop is not None and stop.is_set():
                return
            for r in ready:
                self._finished(r[0], r[1])
                self._reject(r[0], f"processing failed: {type(e).__name__}: {e}")
            return
        finally:
            if stop is None or not stop.is_set():
                with self._slot_lock:
                    self._running -= 1
        if stop is not None and stop.is_set():
            return
        with self._slot_lock:
            self._batch_sizes[len(ready)] += 1
            self._worker_frames[worker] += len(ready)
            self._recent_batches.append(len(ready))
        for (cam, msg, t_recv, _, _, convert_ms), res in zip(ready, results):
            try:
                self._publish(cam, msg, res, t_start, t_recv, convert_ms, activation)
            except Exception as e:  # one camera's outputs failing must not stop the others'
                self._reject(cam, f"processing failed: {type(e).__name__}: {e}")
            finally:  # published, dropped, late or rejected: a newer frame of it need not wait for the batch
                self._finished(cam, msg)

    def _publish(self, cam: CameraStream, msg, res, t_start: float, t_recv: float, convert_ms: float,
                 activation: Optional[int] = None) -> None:
        # Several workers: each camera's outputs go out in stamp order. A frame finished before an
        # older one of its camera (in another worker) waits for it, up to ORDER_WAIT_S.
        header = msg.header
        deadline = time.monotonic() + ORDER_WAIT_S
        with self._slot_lock:
            # (era, stamp), as taken; a frame deactivate gave up waiting for is dropped below anyway
            key = cam.in_flight.get(id(msg), (cam.era, stamp_of(header)))
            while any(k < key for k in cam.in_flight.values()) and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._slot_lock.wait(left)
        with cam.publishing:
            if (not self._outputs_open or activation not in (None, self._activation)
                    or not self.context.ok()):
                # deactivated while this frame ran, past deactivate's wait (or activated again since),
                # or Ctrl-C: the publishers' context is gone, the frame is dropped, not an error
                with self._slot_lock:
                    cam.stats.dropped += 1
                return
            if key < cam.last_key:  # the older frame waited past ORDER_WAIT_S and a newer one went out
                with self._slot_lock:
                    cam.stats.late += 1
                return
            cam.last_key = key
            self._publish_in_order(cam, header, res, t_start, t_recv, convert_ms)

    def _publish_in_order(self, cam: CameraStream, header, res, t_start: float, t_recv: float,
                          convert_ms: float) -> None:
        ground = cam.ground
        t_pipe = time.perf_counter()
        # an output no one subscribes to is not filled (two copies of a frame-size image each: ~2 ms at
        # 1080p on a CPU, per camera, for a Nav2 setup that reads only the grid); DDS would drop it anyway
        out = [(pub, fill_image(Image(), header, img, "mono8"))
               for pub, img in ((cam.pub_labels, res.labels), (cam.pub_drivable, res.drivable))
               if pub.get_subscription_count() > 0]
        if res.overlay is not None:
            out.append((cam.pub_overlay, fill_image(Image(), header, res.overlay, "rgb8")))
        if cam.pub_conf is not None and res.confidence is not None:
            out.append((cam.pub_conf, fill_image(Image(), header, res.confidence, "mono8")))
        info = cam.info.latest  # read once: segmentation/camera_info and the ground outputs use the same
        if cam.pub_info.get_subscription_count() > 0:
            info_out = cam.info.message(header, res, info)
            if info_out is not None:
                out.append((cam.pub_info, info_out))
        else:
            cam.info.status = "no subscriber"
        t_fill = time.perf_counter()
        for pub, m in out:
            pub.publish(m)
        t_pub = time.perf_counter()
        if ground is not None:
            ground.process(header, res, info)
        done = time.perf_counter()
        # processing_ms runs from the batch's start: the other cameras' work in it delays this one
        stages = {"fill_ms": t_fill - t_pipe, "publish_ms": t_pub - t_fill, "processing_ms": t_pub - t_start}
        stages = {k: v * 1e3 for k, v in stages.items()}
        stages.update(convert_ms=convert_ms, resize_ms=res.timings["pre_ms"], inference_ms=res.timings["infer_ms"],
                      post_ms=res.timings["post_ms"])
        stages["overhead_ms"] = stages["processing_ms"] - stages["inference_ms"]  # inference lies within processing
        with self._slot_lock:
            cam.stats.processed += 1
            cam.stats.rejected_in_a_row = 0
            cam.stats.overlays += res.overlay is not None
            for k, v in stages.items():
                cam.stages[k].append(v)
            cam.infer_ms.append(res.timings["infer_ms"])
            cam.e2e_ms.append((done - t_recv) * 1e3)
            cam.wait_ms.append((t_start - t_recv) * 1e3)
            cam.done_times.append(done)
            cam.last_finished = done

    def _reject(self, cam: CameraStream, reason: str) -> None:
        if not self.context.ok():
            # Ctrl-C or shutdown under a frame: rclpy calls on it (an output's subscription count,
            # a publish) fail with 'context is invalid'. The frame is dropped, not an error.
            with self._slot_lock:
                cam.stats.dropped += 1
            return
        with self._slot_lock:
            cam.stats.rejected += 1
            cam.stats.rejected_in_a_row += 1
            cam.stats.last_rejection = reason[:200]
            cam.last_finished = time.perf_counter()
        # One line per kind of problem (and camera), then at most one every 5 s with a count.
        where = f" on {cam.shown}" if self.multi else ""
        kind = where + rejection_kind(reason)
        now = time.monotonic()
        if kind not in self._last_error and len(self._last_error) >= 64:  # bounded, whatever arrives
            self._last_error.clear()
            self._suppressed.clear()
        last = self._last_error.get(kind)
        if last is not None and now - last < 5.0:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        more = self._suppressed.pop(kind, 0)
        self._last_error[kind] = now
        suffix = f" (and {more} more like it)" if more else ""
        self.get_logger().error(f"frame rejected{where}: {reason}{suffix}")

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        if self.qos_auto and self.sub is not None:  # the publishers' QoS, checked as often as the health
            self._follow_publishers_qos()
        node = self.get_fully_qualified_name().lstrip("/")
        with self._slot_lock:
            sizes = dict(self._batch_sizes)
            recent = list(self._recent_batches)
            per_worker = " ".join(str(self._worker_frames[i]) for i in range(len(self.workers)))
            running_max = self._running_max
        batching = {"batch_size_mean": f"{sum(recent) / len(recent):.2f}" if recent else "",
                    "batch_size_histogram": " ".join(f"{k}:{sizes[k]}" for k in sorted(sizes)),
                    "frames_per_worker": per_worker, "inferences_at_once_max": str(running_max),
                    "max_batch": str(self.max_batch)}
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        for cam in self.cameras:
            status = self._camera_status(cam, node, batching)
            if self.sub is None:  # a managed node, configured and inactive (deliberately, not a fault)
                status.level = DiagnosticStatus.OK
                status.message = f"inactive (lifecycle): model loaded, not subscribed to {cam.shown}"
            arr.status.append(status)
            ground = cam.ground if self.sub is not None else cam._ground
            if ground is not None:
                st = ground.diagnostics(f"{node} {cam.image_topic}" if self.multi else node)
                if self.sub is None:  # kept while inactive: a status that vanishes reads as stale
                    st.level, st.message = DiagnosticStatus.OK, "inactive (lifecycle): no frames projected"
                arr.status.append(st)
        self.pub_diag.publish(arr)

    def _camera_status(self, cam: CameraStream, node: str, batching: Dict[str, str]) -> DiagnosticStatus:
        with self._slot_lock:
            s = Stats(**cam.stats.__dict__)
            now = time.perf_counter()
            done_times = list(cam.done_times)
            infer = sorted(cam.infer_ms)
            e2e = sorted(cam.e2e_ms)
            wait = sorted(cam.wait_ms)
            stages = {k: sorted(v) for k, v in cam.stages.items()}
            missing, period = cam.gaps.missing, cam.gaps.period
            missing_now, pauses = cam.gaps.recent(), cam.gaps.pauses
            silent = now - cam.last_received if cam.last_received is not None else None
            serving = now - cam.serving_since if cam.serving_since is not None else 0.0
            busy_from = cam.last_finished if cam.last_finished is not None else cam.first_received
            idle = now - busy_from if busy_from is not None else 0.0
            newly_dropped, cam.dropped_at_diag = s.dropped - cam.dropped_at_diag, s.dropped
        fps = served_fps(done_times, now, now - cam.first_received if cam.first_received is not None else 0.0)

        def med(v):  # None: nothing measured yet (or every frame rejected), published as ""
            return v[len(v) // 2] if v else None

        def ms(v):
            return "" if v is None else f"{v:.2f}"

        if cam.incompatible_qos and self._mismatch_gone(cam):
            cam.incompatible_qos = ""  # the publisher left: no longer what keeps frames away
        status = DiagnosticStatus()
        # one camera: the name it always had; several: one status per camera, named by its topic
        status.name = f"{node}: segmentation" + (f" {cam.shown}" if self.multi else "")
        status.hardware_id = self.pipeline.backend.describe()
        status.level, status.message = camera_health(
            shown=cam.shown, received=s.received, processed=s.processed, rejected_in_a_row=s.rejected_in_a_row,
            last_rejection=s.last_rejection, incompatible_qos=cam.incompatible_qos, serving_s=serving,
            silent_s=silent, period_s=period, idle_s=idle, processing_s=(med(stages["processing_ms"]) or 0.0) / 1e3,
            missing_now=missing_now, missing=missing, cap_period_s=cam.cap.period)
        # inactive (a managed node): frames cut off by deactivate count as dropped while the fps falls,
        # which would read as an overload; no judgement of the camera then, and no warning spent on it
        active = self.sub is not None
        overload = active and overload_note(1.0 / period if period else 0.0, fps, med(stages["processing_ms"]) or 0.0,
                                            newly_dropped, self.pipeline.size, len(self.cameras), self.max_rate)
        change = cam.gaps.rate_change
        if active and change is not None and change != cam.told_rate_change:
            cam.told_rate_change = change
            self.get_logger().warning(
                (f"{cam.shown}: " if self.multi else "") + f"camera period {change[0]:.1f} -> {change[1]:.1f} ms: "
                "the camera slowed down (auto exposure in the dark?), or a regular share of its frames is lost on "
                "the way (header stamps cannot tell which: compare with the camera's set rate)")
        if overload:  # beside a warning, not instead of it
            status.message = overload if status.message == "ok" else f"{status.message}; {overload}"
        if overload and not cam.told_overload:
            cam.told_overload = True
            self.get_logger().warning((f"{cam.shown}: " if self.multi else "") + overload)
        values = {"fps": f"{fps:.2f}", "inference_ms": ms(med(infer)), "end_to_end_ms": ms(med(e2e)),
                  "queue_wait_ms": ms(med(wait)),
                  "frames_received": s.received, "frames_processed": s.processed, "frames_dropped": s.dropped,
                  "frames_late": s.late, "stamps_went_back": s.time_jumps, "workers": len(self.workers),
                  "frames_rejected": s.rejected, "last_rejection": s.last_rejection, "frames_with_overlay": s.overlays,
                  "frames_skipped": s.skipped, "max_rate": f"{self.max_rate:g}",
                  "frames_missing_upstream": missing, "frames_missing_recent": missing_now,
                  "camera_pauses": pauses, "camera_rate_changes": cam.gaps.rate_changes,
                  "seconds_since_frame": "" if silent is None else f"{silent:.1f}",
                  "camera_period_ms": f"{period * 1e3:.1f}" if period else "",
                  **{k: ms(med(v)) for k, v in stages.items() if k != "inference_ms"}, "model": self.card.name,
                  "backend": self.pipeline.backend.name, "precision": self.pipeline.backend.precision, "topic": cam.shown,
                  "subscription_qos": "" if cam.in_qos is None or self.sub is None else self._qos_shown(cam),
                  # segmentation/camera_info for the latest frame: published, no subscriber, or why not
                  "camera_info": f"{cam.info.topic}: {cam.info.status}",
                  # what the drivable mask is made of, overrides included (evaluation reports it)
                  "drivable_classes": ",".join(str(c) for c in self.pipeline.drivable_classes),
                  "cameras": len(self.cameras), **batching}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def destroy_node(self):
        if self.sub is not None:
            self._deactivate()
        if self.pipeline is not None:
            self._cleanup()
        _LOG_FORWARDER.detach(self.get_logger())
        return super().destroy_node()


def large_frame_transport() -> None:
    """Fast DDS: unless the user chose a profile, use the shipped one for large frames
    (config/fastdds_large_frames.xml: a shared-memory segment that holds 1080p frames).
    Must run before rclpy.init; the camera's process needs the same (README 'DDS notes')."""
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        return
    if os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return
    params = default_params_file()
    xml = params.parent / "fastdds_large_frames.xml" if params is not None else None
    if xml is not None and xml.is_file():
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(xml)


_ARGV = sys.argv  # the ROS arguments the node was started with (run() sets them)


def run(node_class: type, args=None) -> int:
    """Runs one node of node_class (this one or the managed one) until shutdown; 2 when it cannot start."""
    global _ARGV
    _ARGV = sys.argv if args is None else list(args)
    large_frame_transport()
    rclpy.init(args=args)
    node: Optional[SegmentationNode] = None
    rc = 0
    try:
        node = node_class()
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except Exception as e:
        if not rclpy.ok():
            pass  # Ctrl-C or SIGTERM while starting (a model loading): rclpy shut down, start-up failed on it
        elif isinstance(e, (ConfigError, ParameterException)):
            # e.g. a parameter of the wrong type: rclpy's exception text names it
            rclpy.logging.get_logger(getattr(e, "logger_name", "segmentation_node")).fatal(f"cannot start: {e}")
            rc = 2
        else:
            raise
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return rc


def main(args=None) -> int:
    return run(SegmentationNode, args)


if __name__ == "__main__":
    sys.exit(main())
