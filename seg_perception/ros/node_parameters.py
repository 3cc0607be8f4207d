"""segmentation_node's parameters: the one table of them, their declaration, the names given
checked (rclpy drops a value for a name the node never declares: a typo would run the default
without a word) and the values read at configure checked, so that a bad one is a single line
before any model loads; and which changes the node takes while it runs (none: it reads them
at configure, except the few in LIVE_PARAMETERS, which the next frame uses)."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException

from ..paths import DEFAULT_MODEL
from ..runtime.image_conversion import DEFAULT_MAX_PIXELS
from .ground_outputs import GROUND_PARAMETERS, GroundError, declare_ground_parameters, pose_values
from .param_overrides import command_line_values, kind, not_taken, text_kind


class ConfigError(ValueError):
    """A parameter that stops start-up; the message lists the valid choices."""


QOS_CHOICES = ("sensor_data", "reliable", "auto")

# name -> (default, description); the single list of parameters (README documents the same)
PARAMETERS = {
    "model": (DEFAULT_MODEL, "model name in the models folder, or a path to a model card .yaml"),
    "weights": ("", "PyTorch weights (.pt) for backend torch; empty: the card's file"),
    "onnx": ("", "ONNX file for onnxruntime/tensorrt; empty: the card's file for the precision"),
    "backend": ("auto", "auto | tensorrt | onnxruntime | torch"),
    "precision": ("fp32", "fp32 | fp16 | int8"),
    "input_width": (0, "model input width; 0: the card's resolution"),
    "input_height": (0, "model input height; 0: the card's resolution"),
    # relative, like the outputs: under a robot's namespace the node reads that robot's camera
    "image_topic": ("camera/image_raw", "camera topic (sensor_msgs/Image)"),
    "use_compressed": (False, "subscribe to <image_topic>/compressed (sensor_msgs/CompressedImage)"),
    "camera_info_topic": ("", "the camera's sensor_msgs/CameraInfo, sent on as segmentation/camera_info (scaled to the "
                              "outputs) and used by the ground projection; empty: camera_info beside image_topic"),
    "overlay_alpha": (0.5, "weight of the class colours in /segmentation/overlay"),
    "overlay_legend": (True, "draw the class legend (colour + name) into /segmentation/overlay"),
    "output_size": ("camera", "camera: outputs at the frame's size | network: at the network's (no label "
                              "resize, smaller messages; ground outputs follow)"),
    "qos": ("auto", "subscription QoS: auto (reliable while every publisher on the topic is, best effort while "
                    "one is not; follows them as they change) | sensor_data (best effort, depth 1) | reliable"),
    "publish_confidence": (False, "publish /segmentation/confidence (mono8, max probability x 255)"),
    "max_image_pixels": (DEFAULT_MAX_PIXELS, "frames larger than this are rejected"),
    "threads": (0, "CPU inference threads per worker; 0: the runtime's default (all cores), split between workers"),
    "workers": (1, "inference workers, each with its own copy of the model: 2 overlaps frames and serves more "
                   "of a camera faster than one inference (outputs stay in stamp order per camera); 1: the "
                   "lowest latency"),
    "max_batch": (0, "several cameras: frames of different cameras run in one inference, at most this many; "
                     "0: auto (every camera's on a GPU, where a batch costs less than its frames; 1 on a CPU, "
                     "where it costs as much and only adds latency)"),
    "engine_cache_dir": ("", "TensorRT engine cache folder; empty: the default cache ($SEG_PERCEPTION_ENGINE_CACHE, "
                             "else ~/.cache/seg_perception/engines; docs/deployment.md)"),
    "rebuild_engine": (True, "TensorRT: rebuild a stale cached engine (false: refuse to start)"),
    "max_rate": (0.0, "at most this many frames a second segmented per camera, the others skipped as they "
                      "arrive (a 30 Hz camera, labels needed at 10 Hz: a third of the compute); 0: every frame "
                      "the node can take"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "bond_heartbeat_period": (0.1, "segmentation_lifecycle_node: seconds between heartbeats on `bond` while active, "
                                   "for Nav2's lifecycle manager (Nav2's default); 0: no bond"),
}

# Declared beside PARAMETERS (a string array with no default cannot live in that table); README too.
IMAGE_TOPICS_DESCRIPTION = ("several cameras in one node, e.g. ['/front/image_raw', '/rear/image_raw']: one "
                            "model for all (max_batch frames an inference), each camera's outputs under its namespace "
                            "(/front/segmentation/...); unset: image_topic")


# What a running node takes at once (`ros2 param set`, rqt_reconfigure), the next frame using it: a
# robot that slows its segmentation when parked, drivable classes tuned in the field, the overlay's
# look, the camera pose tuned until the grid lies on the ground seen in RViz. Nothing in them reloads
# the model or changes a topic or a QoS. diagnostics_period too: one second is slow to watch a
# problem come and go, a fast one for good costs a message per camera 100 times a second.
LIVE_PARAMETERS = ("max_rate", "drivable_classes", "overlay_alpha", "overlay_legend", "ground.camera_xyz",
                   "ground.camera_rpy", "diagnostics_period")


def parameter_names() -> List[str]:
    """Every parameter the node declares: PARAMETERS, the two arrays declared beside it and
    ground.* (the launch files tell a node parameter given as a launch argument from a typo)."""
    return [*PARAMETERS, "drivable_classes", "image_topics", *GROUND_PARAMETERS]


def listed_in(parameter: str) -> str:
    """Where a parameter and its default are written down (the ground ones are not in jetson.yaml)."""
    return ("config/nav2.yaml and docs/navigation.md" if parameter.startswith("ground.") else
            "config/jetson.yaml and the README")


def when_taken(name: str) -> str:
    """The end of a parameter's description (`ros2 param describe`, rqt_reconfigure's tooltip)."""
    return " [live: a running node takes a change]" if name in LIVE_PARAMETERS else " [read at start-up/configure]"


def declare(node) -> None:
    """Declares every parameter on ``node``."""
    for name, (default, desc) in PARAMETERS.items():
        # a number given as 10 is as good as 10.0 (rclpy refuses an integer for a double otherwise)
        node.declare_parameter(name, default, ParameterDescriptor(description=desc + when_taken(name),
                                                                  dynamic_typing=isinstance(default, float)))
    node.declare_parameter("drivable_classes", rclpy.Parameter.Type.INTEGER_ARRAY, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER_ARRAY,
        description="class ids of the drivable mask; unset: the model card's" + when_taken("drivable_classes")))
    # Unset (not []): rclpy types an empty list default as a byte array, and a params file cannot
    # hold an empty list either.
    node.declare_parameter("image_topics", rclpy.Parameter.Type.STRING_ARRAY, ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING_ARRAY, description=IMAGE_TOPICS_DESCRIPTION + when_taken("image_topics")))
    declare_ground_parameters(node, when_taken)


def check_names(node, argv: Sequence[str]) -> None:
    """The names given to ``node`` (declared already). A near-miss of a parameter's name stops
    start-up; any other unknown name is only reported, since a params file's `/**:` section may
    hold parameters of other nodes too. A `-p` value in ``argv`` (the node's ROS arguments) that
    rclpy dropped for the params file's stops it too (param_overrides.py)."""
    known = list(node.get_parameters_by_prefix(""))  # every declared name (Humble has no list_parameters)
    given = getattr(node, "_parameter_overrides", {})  # rclpy's: -p, params files, launch
    for name in sorted(n for n in given if not node.has_parameter(n) and not n.startswith("qos_overrides.")):
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if near:
            raise ConfigError(f"unknown parameter '{name}': did you mean '{near[0]}'? (the parameters are "
                              f"listed in {listed_in(near[0])})")
        node.get_logger().warning(f"parameter '{name}' is not one of segmentation_node's: ignored")
    taken = {n: p.value for n, p in given.items()}
    for name, text, kept in not_taken(command_line_values(argv, node.get_name()), taken, known):
        raise ConfigError(f"-p {name}:={text} did not reach the node: it got {kept!r}, the params file's value "
                          f"(rclpy takes a params file's {kind(kept)} before a command-line {text_kind(text)}): "
                          f"give {name} a value of its default's type ({listed_in(name)})")


def check_max_rate(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"max_rate must be a number, not {value!r} (default 0.0: every frame)")
    if value != 0 and not 0.01 <= value <= 1000:
        raise ConfigError(f"max_rate must be 0 (every frame) or 0.01 to 1000 frames a second, not {value}")
    return float(value)


def check_diagnostics_period(value) -> float:
    # 0 would publish on every executor turn; 1e300 overflowed the timer at activation
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"diagnostics_period must be a number of seconds, not {value!r}")
    if not 0.01 <= value <= 3600:
        raise ConfigError(f"diagnostics_period must be 0.01 to 3600 seconds, not {value} "
                          "(1.0: one /diagnostics message a second)")
    return float(value)


def live_value(name: str, value):
    """A LIVE_PARAMETERS value, checked as configure checks it (ConfigError); the class ids of
    drivable_classes are checked against the model by the pipeline."""
    if name == "max_rate":
        return check_max_rate(value)
    if name == "overlay_alpha":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"overlay_alpha must be a number within [0, 1], not {value!r}")
        return float(value)
    if name == "overlay_legend":
        return bool(value)
    if name == "diagnostics_period":
        return check_diagnostics_period(value)
    if name == "drivable_classes":
        return [int(c) for c in value]
    if name in ("ground.camera_xyz", "ground.camera_rpy"):
        try:
            return pose_values(name, value)
        except GroundError as e:
            raise ConfigError(str(e)) from None
    raise KeyError(name)


def typed_empty_arrays(params) -> list:
    """`ros2 param set NODE drivable_classes "[]"` sends an empty list typed as a bool array (an
    empty YAML list has no element to type it by), which rclpy refuses for an integer array: an
    empty array for it becomes an empty integer array (a pre-set callback, Iron and later; rclpy
    joins the lists of every pre-set callback, so this must stay the node's only one)."""
    arrays = (rclpy.Parameter.Type.BOOL_ARRAY, rclpy.Parameter.Type.BYTE_ARRAY, rclpy.Parameter.Type.DOUBLE_ARRAY,
              rclpy.Parameter.Type.STRING_ARRAY)
    return [rclpy.Parameter(p.name, rclpy.Parameter.Type.INTEGER_ARRAY, [])
            if p.name == "drivable_classes" and p.type_ in arrays and len(p.value) == 0 else p for p in params]


def change_result(params, configured: bool, managed: bool, active: bool, apply=None) -> SetParametersResult:
    """Whether a running node takes a parameter change. It reads its parameters when it configures:
    a change of one of the others while configured would be accepted and do nothing, so it is
    refused with the way to apply it. LIVE_PARAMETERS go to ``apply`` (name -> value), which raises
    ConfigError or ValueError to refuse them; a call that mixes both kinds is refused whole."""
    mine = [p.name for p in params if p.name != "use_sim_time" and not p.name.startswith("qos_overrides.")]
    # `ros2 param delete`: rclpy would undeclare a dynamically typed one (the number parameters),
    # and every later configure would fail on it until a restart
    deleted = [p.name for p in params if p.name in mine and p.type_ == rclpy.Parameter.Type.NOT_SET]
    if deleted:
        return SetParametersResult(successful=False, reason=(
            f"{', '.join(deleted)}: cannot be deleted; set a value instead (the defaults are in "
            f"{listed_in(deleted[0])})"))
    if not mine or not configured:  # (managed node, unconfigured: read at the next configure)
        try:  # the live ones are checked now as while running (class ids: at configure, with the model)
            for p in params:
                if p.name in LIVE_PARAMETERS:
                    live_value(p.name, p.value)
        except (ConfigError, ValueError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)
    fixed = [n for n in mine if n not in LIVE_PARAMETERS]
    if not fixed and apply is not None:
        try:
            apply({p.name: p.value for p in params if p.name in mine})
        except (ConfigError, ValueError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)
    live = [n for n in mine if n in LIVE_PARAMETERS]
    also = f" ({', '.join(live)} alone would be taken at once)" if live else ""
    if not managed:
        return SetParametersResult(successful=False, reason=(
            f"{', '.join(fixed)}: read at start-up only; restart the node with the new value "
            f"(segmentation_lifecycle_node applies it at configure){also}"))
    how = ("deactivate and clean up the node, set it, then configure and activate" if active else
           "clean up the node (it is inactive), set it, then configure")
    return SetParametersResult(successful=False, reason=f"{', '.join(fixed)}: read at configure; {how}{also}")


@dataclass
class Settings:
    """The parameters as read at configure, checked. ``values``: PARAMETERS' (numbers of the float
    ones as floats; threads split between the workers)."""
    values: Dict[str, object]
    drivable: Optional[List[int]]  # None: the model card's
    image_topics: List[str]        # empty: one camera, image_topic
    qos: str
    workers: int
    diagnostics_period: float
    bond_period: float
    max_rate: float


def read(node) -> Settings:
    """Reads ``node``'s parameters; a bad value raises ConfigError (before any model loads)."""
    p = {name: node.get_parameter(name).value for name in PARAMETERS}
    for name, (default, _) in PARAMETERS.items():
        if isinstance(default, float):  # declared with dynamic typing
            if isinstance(p[name], bool) or not isinstance(p[name], (int, float)):
                raise ConfigError(f"{name} must be a number, not {p[name]!r} (default {default})")
            p[name] = float(p[name])
    try:
        drivable = node.get_parameter("drivable_classes").value
    except ParameterUninitializedException:
        # `[]` (params file or -p) reaches rclpy without a type, so the parameter stays unset as if
        # not given; given, it means no drivable classes. Not given: the model card's.
        drivable = [] if "drivable_classes" in getattr(node, "_parameter_overrides", {}) else None
    try:
        image_topics = [str(t) for t in node.get_parameter("image_topics").value]
    except ParameterUninitializedException:
        image_topics = []
    if p["qos"] not in QOS_CHOICES:
        raise ConfigError(f"unknown qos '{p['qos']}'; valid choices: {', '.join(QOS_CHOICES)}")
    check_diagnostics_period(p["diagnostics_period"])
    # at most 1 s: the manager's first heartbeat must come within half its bond_timeout (2 s by
    # Nav2's default), and the one sent at activation goes out before the manager subscribes
    if p["bond_heartbeat_period"] != 0 and not 0.01 <= p["bond_heartbeat_period"] <= 1.0:
        raise ConfigError(f"bond_heartbeat_period must be 0 (no bond) or 0.01 to 1 seconds, not "
                          f"{p['bond_heartbeat_period']} (0.1: Nav2's default)")
    check_max_rate(p["max_rate"])
    workers = int(p["workers"])
    if not 1 <= workers <= 8:
        raise ConfigError(f"workers must be 1-8, not {workers} (2 keeps up with a camera faster than one "
                          "inference; each worker holds a copy of the model)")
    if int(p["threads"]) < 0:
        raise ConfigError(f"threads must be 0 (the runtime's default) or a number of threads, not {p['threads']}")
    if int(p["max_batch"]) < 0:
        raise ConfigError(f"max_batch must be 0 (auto: the cameras on a GPU, 1 on a CPU) or a number of frames, "
                          f"not {p['max_batch']}")
    if int(p["max_image_pixels"]) < 1:
        raise ConfigError(f"max_image_pixels must be 1 or more, not {p['max_image_pixels']} (default "
                          f"{DEFAULT_MAX_PIXELS}: frames up to 4096x4096)")
    if workers > 1 and not int(p["threads"]):
        # the runtime's default is every core per session; N sessions share the cores instead
        p["threads"] = max(1, len(os.sched_getaffinity(0)) // workers)
    return Settings(values=p, drivable=drivable, image_topics=image_topics, qos=p["qos"], workers=workers,
                    diagnostics_period=p["diagnostics_period"], bond_period=p["bond_heartbeat_period"],
                    max_rate=p["max_rate"])
