"""The node's ground projection: CameraInfo + camera pose -> drivable grid and ground cloud.

Geometry lives in runtime/ground.py (ROS-free); this module reads the `ground.*`
parameters, follows CameraInfo (and tf2 where it is installed), rebuilds the lookups when
the calibration or pose changes, and publishes per frame:
  segmentation/drivable_grid        nav_msgs/OccupancyGrid in ground.base_frame
  segmentation/ground/points        organized PointCloud2 (x, y, z in ground.base_frame)
  segmentation/ground/labels        mono8, the label image at the cloud's stride
  segmentation/ground/confidence    mono8, the same for the confidence
all with the camera frame's stamp. Without CameraInfo nothing of this is published.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import Optional, Tuple

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from ..runtime.ground import Camera, CameraPose, GridLookup, GridSpec, GroundCloud, GroundError
from ..runtime.image_conversion import fill_image
from .nav_messages import cloud_template, occupancy_grid

try:  # tf2 has no PyPI wheel: on a ROS install the pose can come from the robot's TF tree
    import tf2_ros
except ImportError:
    tf2_ros = None

# name -> (default, description); docs/navigation.md "Camera pose" documents the same
GROUND_PARAMETERS = {
    "ground.enable": (False, "publish the drivable grid and the ground cloud (needs CameraInfo)"),
    "ground.base_frame": ("base_footprint", "frame of the grid and the cloud; its z = 0 plane is the ground"),
    "ground.use_tf": (True, "take the camera pose from tf2 (base_frame <- image frame_id) when tf2 is installed"),
    "ground.tf_timeout": (0.05, "seconds to wait for the transform at the image's stamp (a moving joint's TF "
                                "arrives after the image); 0: use it only if already there"),
    "ground.camera_xyz": ([0.0, 0.0, 1.0], "camera body position [x, y, z] in base_frame (m), without tf"),
    "ground.camera_rpy": ([0.0, 0.0, 0.0], "camera body [roll, pitch, yaw] in base_frame (rad, REP 103: "
                                           "x forward, z up, positive pitch looks down), without tf"),
    "ground.resolution": (0.05, "grid cell size (m)"),
    "ground.x_range": ([0.5, 10.0], "grid extent [min, max] along base_frame x (m)"),
    "ground.y_range": ([-5.0, 5.0], "grid extent [min, max] along base_frame y (m)"),
    "ground.max_range": (10.0, "ground points farther than this from the camera are unknown / NaN (m)"),
    "ground.obstacle_fraction": (0.0, "a grid cell is lethal when at least this share of the pixels landing in it "
                                      "is not drivable; 0: any one pixel (thin obstacles); e.g. 0.2 where speckle "
                                      "in the labels blocks the near field"),
    "ground.stride": (4, "the cloud and ground/labels take every stride-th pixel in both directions"),
    "ground.rectified": (False, "the image is rectified (image_rect): project with CameraInfo's P and R, without "
                                "distortion; false: the raw image, with K and D"),
}


GRID_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
NO_CELL_IN_VIEW = ("no grid cell in view: the camera sees no ground inside ground.x_range/y_range within "
                   "ground.max_range (check the pose: positive pitch looks down, REP 103)")


LATEST = object()  # GroundOutputs.process: the feed's newest CameraInfo


def camera_from_info(info: CameraInfo, rectified: bool) -> Camera:
    """The camera that made the published image: a rectified image is undistorted already and its
    intrinsics are P's left 3x3 (K and D describe the raw image; applying D again would bend
    the grid, worst at the edges of a wide lens). K and P describe the full sensor: the image
    of a region of interest or of binning is a window on it (sensor_window)."""
    x0, y0, w, h, bx, by = sensor_window(info, rectified)
    if not rectified:
        cam = Camera.from_camera_info(info.width, info.height, info.k, info.d, info.distortion_model)
        return cam.window(x0, y0, w, h, bx, by)
    P = np.asarray(info.p, np.float64).reshape(3, 4) if len(info.p) == 12 else np.zeros((3, 4))
    if P[0, 0] <= 0 or P[1, 1] <= 0:
        raise GroundError("ground.rectified is set but camera_info has no projection matrix P (it is zero): "
                          "calibrate the camera, or set ground.rectified false for a raw image")
    cam = Camera.from_camera_info(info.width, info.height, P[:, :3].ravel(), [], "plumb_bob")
    return cam.window(x0, y0, w, h, bx, by)


def sensor_window(info: CameraInfo, rectified: bool) -> Tuple[int, int, int, int, int, int]:
    """(x0, y0, width, height, binning_x, binning_y) of the published image on the full-resolution
    sensor that CameraInfo's width, height, K and P describe (CameraInfo.msg): the ROI in
    full-resolution pixels (all zero: the whole frame), then binning (0 or 1: none). The image is
    (width // binning_x) x (height // binning_y)."""
    bx, by = max(1, int(info.binning_x)), max(1, int(info.binning_y))
    roi = info.roi
    x0, y0, w, h = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
    if (x0, y0, w, h) == (0, 0, 0, 0):  # all zero, and only then, is the whole frame (CameraInfo.msg)
        w, h = info.width, info.height
    if w <= 0 or h <= 0 or x0 + w > info.width or y0 + h > info.height:
        raise GroundError(f"camera_info's region of interest {w}x{h} at ({x0}, {y0}) does not fit its "
                          f"{info.width}x{info.height} frame: fix the driver's ROI or its calibration size")
    if rectified and (x0, y0, w, h) != (0, 0, info.width, info.height):
        # image_proc rectifies a ROI into another window (do_rectify), which P does not give here
        raise GroundError("a region of interest with ground.rectified is not supported: project the raw "
                          "image (ground.rectified false) or publish the whole frame")
    return x0, y0, w, h, bx, by


def rectified_pose(info: CameraInfo, pose: CameraPose) -> CameraPose:
    """The rectified image's camera: CameraInfo's R rotates the image's frame (frame_id) onto the
    rectified one (p_rect = R p), so its rays reach base through R transposed first. R is the
    identity for a single camera (zero when unset: taken as the identity); a stereo pair's differ
    by a few degrees, which at 10 m moves the ground by tens of centimetres."""
    R = np.asarray(info.r, np.float64).reshape(3, 3) if len(info.r) == 9 else np.zeros((3, 3))
    if not R.any():
        return pose
    # calibration files print R with a few decimals: a tolerance, then the nearest exact rotation
    if not (np.allclose(R @ R.T, np.eye(3), atol=5e-3) and np.linalg.det(R) > 0):
        raise GroundError("camera_info's rectification matrix R is not a rotation: recalibrate the camera")
    u, _, vt = np.linalg.svd(R)
    return CameraPose(pose.R @ (u @ vt).T, pose.t)


def _acquire_tf(node):
    """The node's one tf2 buffer and listener, shared by its cameras (a listener each subscribed to
    /tf and /tf_static once per camera, every TF message handled N times in the executor thread)."""
    shared = getattr(node, "_seg_tf", None)
    if shared is None:
        buffer = tf2_ros.Buffer()
        shared = node._seg_tf = [buffer, tf2_ros.TransformListener(buffer, node), 0]
    shared[2] += 1
    return shared[0]


def _release_tf(node) -> None:
    shared = getattr(node, "_seg_tf", None)
    if shared is None:
        return
    shared[2] -= 1
    if shared[2] <= 0:
        shared[1].unregister()
        node._seg_tf = None


def declare_ground_parameters(node, when_taken=lambda name: "") -> None:
    """``when_taken``: name -> the end of its description (live or read at configure)."""
    for name, (default, desc) in GROUND_PARAMETERS.items():
        # dynamic typing: YAML [0, 0, 1] (integers) is as good as [0.0, 0.0, 1.0]
        node.declare_parameter(name, default, ParameterDescriptor(description=desc + when_taken(name),
                                                                  dynamic_typing=True))


def pose_values(name: str, value) -> list:
    """ground.camera_xyz or ground.camera_rpy as three floats, checked (GroundError names it): a
    camera at or below the ground plane would turn the ground outputs off at the first frame."""
    v = _floats(name, value, 3)
    if name == "ground.camera_xyz" and not v[2] > 0:
        raise GroundError(f"ground.camera_xyz's z must be > 0 (the camera's height above base_frame's z = 0, the "
                          f"ground), got {v[2]:g}")
    return v


def camera_pose(xyz, rpy) -> CameraPose:
    """The pose of ground.camera_xyz and ground.camera_rpy, checked."""
    return CameraPose.from_body_xyz_rpy(pose_values("ground.camera_xyz", xyz), pose_values("ground.camera_rpy", rpy))


def _number(name, value) -> float:
    """A numeric ground.* parameter (typed dynamically: a string gets here too): one line if not."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        raise GroundError(f"{name} must be a number, got {value!r}")
    return v


def _floats(name, value, n):
    if isinstance(value, str):
        # `ros2 param set NODE ground.camera_rpy "[0, 0.3, 0]"` sends a list of mixed integers and
        # doubles as a string (ros2param types only a list of one type): read it as YAML
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    try:
        v = [] if isinstance(value, (str, bytes)) else [float(x) for x in value if not isinstance(x, bool)]
    except (TypeError, ValueError):
        v = []
    if len(v) != n or not all(np.isfinite(v)):  # a NaN pose projected nothing and said OK
        shown = list(value) if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") else value
        raise GroundError(f"{name} must be a list of {n} finite numbers, got {shown!r}")
    return v


def flag(name, value) -> bool:
    """A true/false ground.* parameter (typed dynamically): bool("false") is True, so a quoted
    'false' would have switched it on."""
    if isinstance(value, bool):
        return value
    hint = " (a string: write true or false without quotes)" if isinstance(value, str) else ""
    raise GroundError(f"{name} must be true or false, got {value!r}{hint}")


def frame_name(name, value) -> str:
    """A tf2 frame id: tf2 refuses a leading '/', and TF and Nav2 drop messages in frame ''."""
    frame = value if isinstance(value, str) else ""
    if not frame.strip() or frame.startswith("/") or frame != frame.strip():
        raise GroundError(f"{name} must be a tf2 frame name such as base_footprint (not empty, no leading '/', "
                          f"no spaces), got {value!r}")
    return frame


def stale_after(published_at) -> float:
    """Seconds without a publication that mean the outputs stopped: 3 of the usual intervals
    (their median), at least 2 s, as the camera status judges a stopped camera."""
    gaps = sorted(b - a for a, b in zip(published_at, list(published_at)[1:]))
    return max(2.0, 3 * gaps[len(gaps) // 2]) if gaps else 2.0


class GroundOutputs:
    """Built at configure time (parameters checked: GroundError names the bad one);
    start() subscribes and publishes, stop() undoes it."""

    def __init__(self, node, image_topic: str, info, prefix: str = ""):
        p = {name[len("ground."):]: node.get_parameter(name).value for name in GROUND_PARAMETERS}
        self.node = node
        self.info = info  # the camera's CameraInfoFeed (camera_info_out.py): its newest CameraInfo
        self.prefix = prefix  # several cameras: the camera's namespace + "/", else relative names
        self.base_frame = frame_name("ground.base_frame", p["base_frame"])
        self.spec = GridSpec(_number("ground.resolution", p["resolution"]),
                             tuple(_floats("ground.x_range", p["x_range"], 2)),
                             tuple(_floats("ground.y_range", p["y_range"], 2)))
        self.max_range = _number("ground.max_range", p["max_range"])
        if not self.max_range > 0:
            raise GroundError(f"ground.max_range must be > 0, got {self.max_range}")
        self.obstacle_fraction = _number("ground.obstacle_fraction", p["obstacle_fraction"])
        if not 0.0 <= self.obstacle_fraction <= 1.0:
            raise GroundError(f"ground.obstacle_fraction must be 0 to 1, got {self.obstacle_fraction}")
        self.stride = _number("ground.stride", p["stride"])
        if self.stride != int(self.stride):
            raise GroundError(f"ground.stride must be a whole number of pixels, got {p['stride']!r}")
        self.stride = int(self.stride)
        if self.stride < 1:
            raise GroundError(f"ground.stride must be >= 1, got {self.stride}")
        # replaced whole by a live ground.camera_xyz/rpy (set_pose): a frame gets the old or the new
        self.param_pose = camera_pose(p["camera_xyz"], p["camera_rpy"])
        self.use_tf = flag("ground.use_tf", p["use_tf"]) and tf2_ros is not None
        self.tf_timeout = _number("ground.tf_timeout", p["tf_timeout"])
        if not 0.0 <= self.tf_timeout <= 1.0:
            raise GroundError(f"ground.tf_timeout must be 0 to 1 s (it delays the frame's outputs), "
                              f"got {self.tf_timeout}")
        self.tf_buffer = None
        self.pose_source = "tf" if self.use_tf else "parameters"
        if self.use_tf and any(node.get_parameter(f"ground.camera_{k}").value != GROUND_PARAMETERS[f"ground.camera_{k}"][0]
                               for k in ("xyz", "rpy")):
            # info, not a warning: config/nav2.yaml sets them as the fallback for a machine without tf2
            node.get_logger().info("ground.camera_xyz/rpy are not used: the pose comes from tf2 (ground.use_tf "
                                   "true); set ground.use_tf false to use them")
        self.info_topic = info.topic
        self.rectified = flag("ground.rectified", p["rectified"])
        if not self.rectified and "rect" in image_topic.rsplit("/", 1)[-1]:
            node.get_logger().warning(f"{image_topic} looks rectified but ground.rectified is false: the ground "
                                      "projection applies the lens distortion (D) to it again; set "
                                      "ground.rectified: true for a rectified image")
        self._key = None
        self._said_for = None  # the calibration the last "ground projection for ..." line was for
        self._lut: Optional[GridLookup] = None
        self._cloud: Optional[GroundCloud] = None
        self._cloud_msg: Optional[PointCloud2] = None
        self._lock = threading.Lock()
        self._warned = {}
        self._grid_live = False  # the latched grid is a frame's (not cleared to unknown since)
        self._grid_stamp = None  # the latest grid's stamp: a cleared grid is never stamped before it
        self._grids = 0  # grids published (under _grid_lock): a clear decided before the newest is void
        self._grid_lock = threading.Lock()  # a grid's publish and _grid_live together (worker, diagnostics)
        self.status = (DiagnosticStatus.WARN, f"no CameraInfo on {self.info_topic} yet: ground outputs off")
        self.published = 0
        self.published_at: deque = deque(maxlen=20)  # perf_counter of the latest publications
        self.started_at: Optional[float] = None  # of the latest start (activation)
        self.times = {k: deque(maxlen=100) for k in ("grid_ms", "cloud_ms", "ground_images_ms")}

    def start(self, out_qos) -> None:
        node = self.node
        with self._lock:
            self.published_at.clear()  # a pause while inactive is not a stopped camera ...
            self.started_at = time.perf_counter()  # ... but none since this start is
            self._grid_live = False  # a new publisher: it holds no grid yet
        if self.use_tf:
            self.tf_buffer = _acquire_tf(node)
        # reliable + transient_local, depth 1: what map subscribers ask for (RViz's Map display, map
        # fusers), and volatile or best-effort subscribers take it too; the newest grid for a late joiner
        self.pub_grid = node.create_publisher(OccupancyGrid, self.prefix + "segmentation/drivable_grid", GRID_QOS)
        self.pub_points = node.create_publisher(PointCloud2, self.prefix + "segmentation/ground/points", out_qos)
        self.pub_labels = node.create_publisher(Image, self.prefix + "segmentation/ground/labels", out_qos)
        self.pub_conf = node.create_publisher(Image, self.prefix + "segmentation/ground/confidence", out_qos)

    def set_pose(self, pose: CameraPose) -> None:
        """A live ground.camera_xyz/rpy: the next frame projects with it (its lookups are built again)."""
        self.param_pose = pose

    def stop(self) -> None:
        """Undo start(), or as much of it as ran."""
        if getattr(self, "pub_grid", None) is not None and self.node.context.ok():  # (not after Ctrl-C's shutdown)
            try:
                self._clear_grid()  # subscribers (a costmap) keep the last grid: unknown, not old free cells
            except Exception as e:  # a publish that fails must not keep the rest from being undone
                self.node.get_logger().warning(f"could not clear drivable_grid: {type(e).__name__}: {e}")
        for name in ("pub_grid", "pub_points", "pub_labels", "pub_conf"):
            if getattr(self, name, None) is not None:
                self.node.destroy_publisher(getattr(self, name))
                setattr(self, name, None)
        if self.tf_buffer is not None:
            _release_tf(self.node)
            self.tf_buffer = None

    # ------------------------------------------------------------ per frame
    def process(self, header, res, info=LATEST) -> None:
        """Publish the ground outputs of one segmented frame (called by the worker thread, once the
        frame's labels are out), with ``info`` (the camera's CameraInfo as the node read it for the
        frame, None if none yet; LATEST: the feed's newest). A failure is this frame's ground outputs
        off, said in diagnostics (ERROR) and a warning in the log: the frame itself was served, not
        rejected."""
        try:
            self._project(header, res, self.info.latest if info is LATEST else info)
        except Exception as e:
            self._key = None  # the lookups are built again for the next frame, not left off for good
            self._off(DiagnosticStatus.ERROR, f"ground projection failed: {type(e).__name__}: {str(e)[:200]}")

    def _project(self, header, res, info: Optional[CameraInfo]) -> None:
        if info is None:
            self._off(DiagnosticStatus.WARN, f"no CameraInfo on {self.info_topic}: drivable_grid and ground/* "
                                             "are not published (calibrate the camera and publish its camera_info)")
            return
        pose = self._pose(header)
        if pose is None:
            return
        try:  # a binned or cropped camera's frames are smaller than its CameraInfo's width x height
            _, _, ww, wh, bx, by = sensor_window(info, self.rectified)
        except GroundError as e:
            self._off(DiagnosticStatus.ERROR, f"cannot project onto the ground: {e}")
            return
        w, h = res.frame_size if res.frame_size[0] else res.labels.shape[::-1]
        if (w, h) != (ww // bx, wh // by):
            window = "" if (ww, wh, bx, by) == (info.width, info.height, 1, 1) else \
                f" (its region of interest and binning make {ww // bx}x{wh // by})"
            self._off(DiagnosticStatus.WARN, f"frame is {w}x{h} but CameraInfo on {self.info_topic} is "
                                             f"{info.width}x{info.height}{window}: ground outputs off")
            return
        # Outputs at the network's size (output_size network): the lookups use the camera scaled to it.
        if not self._update_lookups(info, pose, res.labels.shape[::-1]):
            return
        t0 = time.perf_counter()
        grid_header = type(header)(stamp=header.stamp, frame_id=self.base_frame)
        grid = occupancy_grid(grid_header, self.spec, self._lut.grid(res.drivable))
        with self._grid_lock:  # not between a stale check's clear and its flag (diagnostics)
            self.pub_grid.publish(grid)
            self._grid_live, self._grid_stamp = True, grid_header.stamp
            self._grids += 1
        t1 = time.perf_counter()
        self._cloud_msg.header = grid_header
        self.pub_points.publish(self._cloud_msg)
        t2 = time.perf_counter()
        self.pub_labels.publish(fill_image(Image(), header, self._cloud.subsample(res.labels), "mono8"))
        if res.confidence is not None:
            self.pub_conf.publish(fill_image(Image(), header, self._cloud.subsample(res.confidence), "mono8"))
        t3 = time.perf_counter()
        with self._lock:
            self.published += 1
            self.published_at.append(t3)
            self.times["grid_ms"].append((t1 - t0) * 1e3)
            self.times["cloud_ms"].append((t2 - t1) * 1e3)
            self.times["ground_images_ms"].append((t3 - t2) * 1e3)
            self.status = ((DiagnosticStatus.OK, f"ok ({self.pose_source} pose)") if self._lut.cells_in_view else
                           (DiagnosticStatus.WARN, NO_CELL_IN_VIEW))

    def _off(self, level, reason: str) -> None:
        """Ground outputs are off for this frame: diagnostics say why, the log once per 30 s per reason
        (rclpy's own throttle is per call site, which would hide a second reason)."""
        now = time.monotonic()
        kind = re.sub(r"[0-9.]+", "#", reason)  # one reason, whatever its numbers (sizes, times)
        with self._lock:
            self.status = (level, reason)
            if now - self._warned.get(kind, -1e9) < 30.0:
                return
            self._warned[kind] = now
        # several cameras: say whose (prefix is the camera's namespace + "/")
        self.node.get_logger().warning((f"{self.prefix.rstrip('/')}: " if self.prefix else "") + reason)

    def _clear_grid(self, grids: Optional[int] = None) -> None:
        """The grid is latched (transient local) and in the robot's frame, which moves: once the
        outputs have stopped (the camera stopped, the calibration went bad; not one frame's miss) or
        the node deactivates, a subscriber would keep the last frame's free cells as if they were
        now. Replaced by an all-unknown grid, once. ``grids``: the count of grids when the caller
        found them stale; a grid published since stays."""
        with self._grid_lock:
            if not self._grid_live or self.pub_grid is None or (grids is not None and grids != self._grids):
                return
            self._grid_live = False
            now = self.node.get_clock().now().to_msg()
            last = self._grid_stamp
            stamp = last if last is not None and (last.sec, last.nanosec) > (now.sec, now.nanosec) else now
            header = Header(stamp=stamp, frame_id=self.base_frame)
            self.pub_grid.publish(occupancy_grid(header, self.spec,
                                                 np.full((self.spec.height, self.spec.width), -1, np.int8)))

    def _pose(self, header) -> Optional[CameraPose]:
        if self.tf_buffer is None:
            return self.param_pose
        # tf2 path: not installable on the development machines, untested there (README).
        try:
            # A joint's transform (pan-tilt, suspension) is published after the image it belongs to: wait
            # for it a little (the listener's subscriptions are served by the executor, not this worker).
            tf = self.tf_buffer.lookup_transform(self.base_frame, header.frame_id, Time.from_msg(header.stamp),
                                                 timeout=Duration(seconds=self.tf_timeout))
        except Exception as e:  # tf2's lookup errors have no common base class short of Exception
            self._off(DiagnosticStatus.WARN, f"no transform {self.base_frame} <- {header.frame_id!r}: "
                                             f"{type(e).__name__}: {e}")
            return None
        t, q = tf.transform.translation, tf.transform.rotation
        return CameraPose.from_optical_transform([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])

    def _update_lookups(self, info: CameraInfo, pose: CameraPose, size) -> bool:
        calibration = (info.width, info.height, tuple(info.k), tuple(info.d), tuple(info.p), tuple(info.r),
                       info.distortion_model, info.binning_x, info.binning_y, info.roi.x_offset,
                       info.roi.y_offset, info.roi.width, info.roi.height, tuple(size))
        key = (calibration, np.round(pose.R, 6).tobytes(), np.round(pose.t, 6).tobytes())
        if key == self._key:
            return self._lut is not None
        self._key = key
        self._lut = self._cloud = self._cloud_msg = None
        try:
            cam = camera_from_info(info, self.rectified).scaled(*size)
            if self.rectified:
                pose = rectified_pose(info, pose)
            lut = GridLookup(cam, pose, self.spec, self.max_range, self.obstacle_fraction)
            cloud = GroundCloud(cam, pose, self.stride, self.max_range)
        except GroundError as e:
            self._off(DiagnosticStatus.ERROR, f"cannot project onto the ground: {e}")
            return False
        self._lut, self._cloud, self._cloud_msg = lut, cloud, cloud_template(cloud.points)
        what = (f"ground projection for {cam.width}x{cam.height} ({cam.model}), {self.pose_source} pose: "
                f"{lut.cells_in_view} of {lut.index.size} grid cells in view")
        # A pose followed through TF (a pan-tilt head, a levelled base) rebuilds the lookups every
        # frame: the line comes when the calibration changes, not with every pose
        if lut.cells_in_view and calibration != self._said_for:  # two calls: rclpy refuses two
            self._said_for = calibration                             # severities from one call site
            self.node.get_logger().info(what)
        elif not lut.cells_in_view:
            self._said_for = None
            self.node.get_logger().warning(f"{what}: {NO_CELL_IN_VIEW}", throttle_duration_sec=10.0)
        return True

    # ------------------------------------------------------------ reporting
    def _quiet(self) -> Tuple[Optional[float], Optional[float], bool, int]:
        """(seconds since the last output, seconds without outputs (counted from the start before the
        first), whether that means they stopped, the count of grids published by then)."""
        with self._lock:
            times = list(self.published_at)
            started = self.started_at
            grids = self._grids
        now = time.perf_counter()
        since = now - times[-1] if times else None
        quiet = since if since is not None else (now - started if started is not None else None)
        # none yet since the start: 10 s, as long as the camera status waits for a first frame
        stale = quiet is not None and quiet > (stale_after(times) if times else 10.0)
        return since, quiet, stale, grids

    def clear_if_stale(self) -> None:
        """The latched grid replaced by an unknown one once the outputs have stopped (not for one
        frame's miss). The node runs this on a timer of its own: on the diagnostics timer a costmap
        kept a stopped camera's free cells for up to a diagnostics_period, which may be an hour."""
        _, _, stale, grids = self._quiet()
        if stale:
            self._clear_grid(grids)

    def diagnostics(self, node_name: str) -> DiagnosticStatus:
        with self._lock:
            level, message = self.status
            med = {k: (sorted(v)[len(v) // 2] if v else None) for k, v in self.times.items()}
            published = self.published
            lut = self._lut  # once: a worker sets it to None when the calibration or pose changes
        # the status is the last frame's: with no frame since (the camera stopped, or none came after a
        # restart), not "ok" for good
        since, quiet, stale, grids = self._quiet()
        if stale:  # (stopped, or off for a lasting reason: one frame's miss leaves the grid as it is)
            self._clear_grid(grids)
        if stale and level == DiagnosticStatus.OK:
            level, message = DiagnosticStatus.WARN, (f"no ground outputs for {quiet:.0f} s: no frames served "
                                                     "(see the segmentation status)")
        st = DiagnosticStatus(name=f"{node_name}: ground projection", level=level, message=message)
        values = {"camera_info_topic": self.info_topic, "base_frame": self.base_frame, "pose_source": self.pose_source,
                  "frames_published": published, "cells_in_view": lut.cells_in_view if lut is not None else 0,
                  "seconds_since_output": "" if since is None else f"{since:.1f}",
                  # nothing timed yet: empty, as in the camera status (0.000 would be a measurement)
                  **{k: "" if v is None else f"{v:.3f}" for k, v in med.items()}}
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return st
