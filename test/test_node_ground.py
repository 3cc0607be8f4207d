"""Navigation outputs of the live node over DDS (separate process, RANDOM-weights model):
label_info, and the ground projection from CameraInfo + parameter pose.

The grid is checked against the drivable mask of the same stamp with an independent
projection (cv2.projectPoints of each cell centre, the pose built as a look-at)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ros_harness import Harness, raw_image, stamp_key, start_node
from seg_perception.runtime.pipeline import Pipeline
from seg_perception.ros.camera_info_out import CameraInfoFeed
from seg_perception.ros.ground_outputs import tf2_ros
from test_ground import look_at
from test_node import as_array, new_key

W, H = 480, 360
K = [400.0, 0.0, 239.5, 0.0, 400.0, 179.5, 0.0, 0.0, 1.0]
D = [-0.2, 0.05, 0.001, -0.001, 0.0]
CAM_XYZ, PITCH = [0.1, 0.0, 1.2], 0.35
PARAMS = {"ground.enable": True, "ground.camera_xyz": "[0.1, 0.0, 1.2]", "ground.camera_rpy": "[0.0, 0.35, 0.0]",
          "ground.x_range": "[0.5, 8.0]", "ground.y_range": "[-4.0, 4.0]", "ground.resolution": 0.1,
          "ground.max_range": 9.0, "ground.stride": 4}


def camera_info() -> CameraInfo:
    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob", k=K, d=D)
    msg.header.frame_id = "camera_optical"
    return msg


class NavRecorder:
    """Grid, cloud, ground images, label_info and the ground diagnostics, by stamp."""

    def __init__(self, h: Harness):
        self.h, n = h, h.node
        self.lock = threading.Lock()
        self.got = {"grid": {}, "points": {}, "ground_labels": {}, "ground_confidence": {}}
        self.label_info = []
        self.ground_diag = []
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for key, typ, topic in (("grid", OccupancyGrid, "drivable_grid"), ("points", PointCloud2, "ground/points"),
                                ("ground_labels", Image, "ground/labels"),
                                ("ground_confidence", Image, "ground/confidence")):
            n.create_subscription(typ, f"/segmentation/{topic}", lambda m, k=key: self._put(k, m), rel)
        self.pub_info = n.create_publisher(CameraInfo, "/camera/camera_info", QoSProfile(depth=1))
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def subscribe_label_info(self):
        from vision_msgs.msg import LabelInfo
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.h.node.create_subscription(LabelInfo, "/segmentation/label_info", self.label_info.append, latched)

    def _put(self, key, msg):
        with self.lock:
            self.got[key][stamp_key(msg.header)[:2]] = msg

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.endswith("ground projection"):
                with self.lock:
                    self.ground_diag.append((st.level, st.message, {kv.key: kv.value for kv in st.values}))


@pytest.fixture(scope="module")
def nav_node(ros, random_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("node_nav") / "node.log"
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable", **PARAMS}, log)
    h = Harness("test_nav_client")
    rec = NavRecorder(h)
    try:
        h.wait_connected()
    except AssertionError:
        proc.stop()
        h.close()
        raise AssertionError("node did not start:\n" + log.read_text())
    yield proc, h, rec
    h.close()
    assert proc.stop() == 0, proc.output()


def set_parameter(h, setp, name, value):
    """One parameter set through the node's set_parameters client ``setp``: its SetParametersResult."""
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParameters
    fut = setp.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
    h.wait_for(fut.done, 15, "the set_parameters answer")
    return fut.result().results[0]


def send(h, img, tag):
    key = new_key(tag)
    h.pub_raw.publish(raw_image(img, "rgb8", key))
    h.wait_for(lambda: key in h.received["labels"], 30, f"labels for {key}")
    return key


def test_without_camera_info_nothing_is_projected_and_diagnostics_say_why(nav_node, val_frames):
    proc, h, rec = nav_node
    send(h, val_frames[0][0], "no_info")
    h.wait_for(lambda: any("no CameraInfo on /camera/camera_info" in m for _, m, _ in rec.ground_diag), 10,
               "ground diagnostics")
    level, message, values = rec.ground_diag[-1]
    assert level == b"\x01" and values["frames_published"] == "0"
    time.sleep(0.5)
    assert not any(rec.got.values()), "ground outputs without CameraInfo"
    send(h, val_frames[1][0], "no_info")
    assert proc.output().count("no CameraInfo on /camera/camera_info") == 1  # one throttled warning
    # the start-up line says where the camera's pose comes from (tf2_ros has no wheel here)
    pose = "camera pose from tf2" if tf2_ros is not None else "camera pose from the ground.camera_xyz/rpy parameters"
    assert pose in proc.output(), proc.output()


def test_label_info_names_the_card_classes(nav_node):
    proc, h, rec = nav_node
    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        pytest.fail("vision_msgs is not importable: run scripts/build_interfaces.sh .venv (make setup does)")
    rec.subscribe_label_info()  # after the node published it: transient local must deliver it
    h.wait_for(lambda: rec.label_info, 15, "label_info")
    m = rec.label_info[0]
    assert [(c.class_id, c.class_name) for c in m.class_map][:4] == [(0, "Sky"), (1, "Building"), (2, "Pole"),
                                                                      (3, "Road")]
    assert len(m.class_map) == 11


def expected_grid(mask: np.ndarray, res: float, x_range, y_range, pitch: float = PITCH) -> np.ndarray:
    import cv2
    rvec, tvec, R_cw = look_at(np.array(CAM_XYZ), pitch, 0.0)
    xs = x_range[0] + (np.arange(round((x_range[1] - x_range[0]) / res)) + 0.5) * res
    ys = y_range[0] + (np.arange(round((y_range[1] - y_range[0]) / res)) + 0.5) * res
    gx, gy = np.meshgrid(xs, ys)
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    uv = cv2.projectPoints(pts.reshape(-1, 1, 3), rvec, tvec, np.reshape(K, (3, 3)), np.array(D))[0].reshape(-1, 2)
    iu, iv = np.floor(uv[:, 0] + 0.5).astype(int), np.floor(uv[:, 1] + 0.5).astype(int)
    inside = ((pts - CAM_XYZ) @ R_cw[2] > 0) & (np.linalg.norm(pts - CAM_XYZ, axis=1) <= 9.0) \
        & (iu >= 0) & (iu < W) & (iv >= 0) & (iv < H)
    centre_lethal = inside & (mask[iv.clip(0, H - 1), iu.clip(0, W - 1)] == 0)
    # every pixel's ray (undistorted by OpenCV), met with the ground: a cell that any non-drivable
    # pixel lands in is lethal too, and a cell some pixel lands in is in view
    gu, gv = np.meshgrid(np.arange(W), np.arange(H))
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
    uv_px = np.column_stack([gu.ravel(), gv.ravel()]).reshape(-1, 1, 2).astype(np.float64)
    n = (cv2.undistortPointsIter(uv_px, np.reshape(K, (3, 3)), np.array(D), None, None, crit)
         if hasattr(cv2, "undistortPointsIter")  # OpenCV 4; 5 gives undistortPoints the criteria
         else cv2.undistortPoints(uv_px, np.reshape(K, (3, 3)), np.array(D), None, None, None, crit)).reshape(-1, 2)
    d = np.column_stack([n, np.ones(len(n))]) @ R_cw  # camera -> world directions, row-wise
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -CAM_XYZ[2] / d[:, 2]
    p = np.array(CAM_XYZ) + lam[:, None] * d
    cx, cy = np.floor((p[:, 0] - x_range[0]) / res), np.floor((p[:, 1] - y_range[0]) / res)
    hit = (d[:, 2] < 0) & (lam * np.linalg.norm(d, axis=1) <= 9.0) & (cx >= 0) & (cx < len(xs)) & (cy >= 0) \
        & (cy < len(ys))
    cell = (cy[hit] * len(xs) + cx[hit]).astype(int)
    seen_px = np.bincount(cell, minlength=gx.size) > 0
    px_lethal = np.bincount(cell, weights=mask.ravel()[hit] == 0, minlength=gx.size) > 0
    return np.where(inside | seen_px, np.where(centre_lethal | px_lethal, 100, 0), -1).reshape(gx.shape)


def test_grid_and_cloud_arrive_with_the_image_stamp(nav_node, val_frames, random_model):
    proc, h, rec = nav_node
    deadline = time.monotonic() + 30
    while not rec.got["grid"] and time.monotonic() < deadline:  # CameraInfo is best effort: repeat it
        rec.pub_info.publish(camera_info())
        send(h, val_frames[2][0], "info")
        time.sleep(0.2)
    assert rec.got["grid"], "no drivable_grid after CameraInfo:\n" + proc.output()
    rec.pub_info.publish(camera_info())
    key = send(h, val_frames[3][0], "grid")
    st = key[:2]
    h.wait_for(lambda: all(st in rec.got[k] for k in rec.got), 15, "all ground outputs of one frame")
    grid, cloud = rec.got["grid"][st], rec.got["points"][st]
    for m in (grid, cloud):
        assert m.header.frame_id == "base_footprint"
    assert rec.got["ground_labels"][st].header.frame_id == key[2]

    # the grid against the drivable mask of the same stamp, projected independently
    assert (grid.info.width, grid.info.height, round(grid.info.resolution, 6)) == (75, 80, 0.1)
    assert (grid.info.origin.position.x, grid.info.origin.position.y) == (0.5, -4.0)
    cells = np.array(grid.data, np.int8).reshape(80, 75)
    mask = as_array(h.received["drivable_mask"][key])
    exp = expected_grid(mask, 0.1, (0.5, 8.0), (-4.0, 4.0))
    assert (exp >= 0).sum() > 1000
    assert (cells == exp).mean() > 0.999, f"{(cells != exp).sum()} cells differ"

    # the organized cloud lines up with ground/labels = labels[::4, ::4]
    assert (cloud.height, cloud.width, cloud.point_step) == (90, 120, 12)
    assert [f.name for f in cloud.fields] == ["x", "y", "z"] and not cloud.is_dense
    pts = np.frombuffer(bytes(cloud.data), np.float32).reshape(90, 120, 3)
    ok = np.isfinite(pts[..., 0])
    assert 0.3 < ok.mean() < 0.95 and np.abs(pts[ok][:, 2]).max() < 1e-4
    assert not ok[0].any() and ok[-1].all()  # the sky half of the top row misses the ground; the bottom row hits
    labels = as_array(h.received["labels"][key])
    np.testing.assert_array_equal(as_array(rec.got["ground_labels"][st]), labels[::4, ::4])
    gc = rec.got["ground_confidence"][st]
    assert (gc.height, gc.width, gc.encoding) == (90, 120, "mono8")
    # the confidence of the same pixels, as the pipeline computes it for this frame
    conf = Pipeline.from_card(random_model, backend="onnxruntime", threads=1)(val_frames[3][0], confidence=True)
    diff = np.abs(as_array(gc).astype(int) - conf.confidence[::4, ::4].astype(int))
    assert (diff <= 1).mean() > 0.999 and conf.confidence.std() > 1, diff.max()

    # a frame now: the reference work above can take longer than the ~2 s after which the node
    # calls its outputs stopped (WARN, and the latched grid cleared)
    rec.pub_info.publish(camera_info())
    send(h, val_frames[3][0], "grid_again")
    h.wait_for(lambda: rec.ground_diag and rec.ground_diag[-1][0] == b"\x00", 10, "ground diagnostics ok")
    assert int(rec.ground_diag[-1][2]["frames_published"]) >= 1

    # a map-style subscriber (reliable, transient_local: RViz's Map display) joining late gets the newest grid
    latched = []
    h.node.create_subscription(OccupancyGrid, "/segmentation/drivable_grid", latched.append, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    h.wait_for(lambda: latched, 15, "the latest grid for a transient_local subscriber")
    assert latched[0].header.frame_id == "base_footprint"


def test_a_stopped_camera_clears_the_grid_whatever_the_diagnostics_period(nav_node, val_frames):
    """The check that replaces a stopped camera's latched grid with an unknown one ran on the
    diagnostics timer: at diagnostics_period 60 (or 3600) a costmap kept the last free cells that
    long after the camera stopped. It has a timer of its own now: about 2 s after the last output."""
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    proc, h, rec = nav_node
    setp = h.node.create_client(SetParameters, "/segmentation_node/set_parameters")

    def set_period(seconds):
        res = set_parameter(h, setp, "diagnostics_period",
                            ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=seconds))
        assert res.successful, res.reason

    def unknown_grids():
        with rec.lock:
            return [g for g in rec.got["grid"].values() if not (np.asarray(g.data) >= 0).any()]

    assert setp.wait_for_service(timeout_sec=15)
    set_period(3600.0)
    try:
        rec.pub_info.publish(camera_info())
        for i in range(12):  # a steady camera: the usual interval well under a second, so 2 s quiet is "stopped"
            key = send(h, val_frames[i % 4][0], f"stale_{i}")
        h.wait_for(lambda: key[:2] in rec.got["grid"], 10, "the last frame's grid")
        assert (np.asarray(rec.got["grid"][key[:2]].data) >= 0).any()
        before = len(unknown_grids())
        t_last = time.monotonic()
        h.wait_for(lambda: len(unknown_grids()) > before, 10, "an all-unknown grid after the camera stopped")
        assert time.monotonic() - t_last < 6.0
    finally:
        set_period(1.0)
        h.node.destroy_client(setp)


def test_a_frame_of_another_size_skips_ground_outputs_but_is_segmented(nav_node, val_frames):
    import cv2
    proc, h, rec = nav_node
    rec.pub_info.publish(camera_info())
    key = send(h, cv2.resize(val_frames[0][0], (640, 480)), "size")
    # the node logs it after publishing the labels
    h.wait_for(lambda: "frame is 640x480 but CameraInfo on /camera/camera_info is 480x360" in proc.output(), 10,
               "the size warning")
    time.sleep(0.5)
    assert key[:2] not in rec.got["grid"]


def test_the_camera_pose_set_while_running_moves_the_grid(nav_node, val_frames):
    """ground.camera_xyz/rpy are live: a user tunes the pitch until the grid lies on the ground seen
    in RViz, without a restart. The next frame's grid is the projection with the new pose; a bad
    value is refused and changes nothing."""
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    proc, h, rec = nav_node
    setp = h.node.create_client(SetParameters, "/segmentation_node/set_parameters")

    def set_rpy(rpy):
        return set_parameter(h, setp, "ground.camera_rpy",
                             ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=rpy))

    def grid_of_a_frame(tag):
        rec.pub_info.publish(camera_info())
        key = send(h, val_frames[3][0], tag)
        h.wait_for(lambda: key[:2] in rec.got["grid"], 15, f"the grid of {key}")
        cells = np.array(rec.got["grid"][key[:2]].data, np.int8).reshape(80, 75)
        return cells, as_array(h.received["drivable_mask"][key])

    try:
        h.wait_for(lambda: setp.wait_for_service(0.1), 15, "the node's set_parameters service")
        assert set_rpy([0.0, 0.5, 0.0]).successful
        h.wait_for(lambda: "taken while running: ground.camera_rpy [0.0, 0.5, 0.0] (was [0.0, 0.35, 0.0])"
                   in proc.output(), 10, "the log line")
        cells, mask = grid_of_a_frame("pitch_0.5")
        exp = expected_grid(mask, 0.1, (0.5, 8.0), (-4.0, 4.0), pitch=0.5)
        assert (exp >= 0).sum() > 1000 and (cells == exp).mean() > 0.999, f"{(cells != exp).sum()} cells differ"
        # (the random model's mask is mostly not drivable: the two pitches differ in ~100 cells, not 6)
        assert (cells != expected_grid(mask, 0.1, (0.5, 8.0), (-4.0, 4.0))).sum() > 50
        bad = set_rpy([0.0, 0.2])
        assert not bad.successful and "ground.camera_rpy must be a list of 3 finite numbers, got [0.0, 0.2]" \
            in bad.reason, bad
        # the height: a camera at the ground plane is refused before it turns the ground outputs off
        res = set_parameter(h, setp, "ground.camera_xyz", ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[0.1, 0.0, 0.0]))
        assert "ground.camera_xyz's z must be > 0" in res.reason
        # `ros2 param set ... "[0, 0.5, 0]"` (integers and doubles mixed) arrives as a string: read as YAML
        res = set_parameter(h, setp, "ground.camera_rpy",
                            ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="[0, 0.5, 0]"))
        assert res.successful, res.reason
        cells, mask = grid_of_a_frame("pitch_still_0.5")  # unchanged by the refused values (and the same again)
        assert (cells == expected_grid(mask, 0.1, (0.5, 8.0), (-4.0, 4.0), pitch=0.5)).mean() > 0.999
    finally:
        set_rpy([0.0, PITCH, 0.0])  # the module's node goes on with the pose it started with
        h.node.destroy_client(setp)


def test_a_live_camera_pose_is_refused_where_tf2_gives_the_pose():
    """With the pose from tf2 a set ground.camera_rpy would be taken and never used: refused with
    what to correct instead, and nothing applied."""
    from types import SimpleNamespace
    from seg_perception.ros.node import SegmentationNode
    from seg_perception.ros.node_parameters import ConfigError
    poses = []
    ground = SimpleNamespace(use_tf=True, set_pose=poses.append)
    node = SimpleNamespace(pipeline=None, cameras=[SimpleNamespace(_ground=ground)])
    with pytest.raises(ConfigError, match=r"ground.camera_rpy: not used, the pose comes from tf2 .* static transform"):
        SegmentationNode._apply_live(node, {"ground.camera_rpy": [0.0, 0.3, 0.0], "max_rate": 5.0})
    assert poses == []


def test_bench_node_ground_reports_the_cost_of_each_output(camvid_sample):
    """`bench-node --ground`'s live part: two node processes (ground off, on) at one camera size;
    every frame is answered, every one gets ground outputs, and each stage has a figure."""
    from seg_perception.evaluation.ground_bench import bench_ground_live, ground_live_markdown
    r = bench_ground_live("essnet_d_camvid", sizes=((640, 480),), frames=3, data=camvid_sample, log=lambda *_: None)
    row = r["640x480"]
    assert row["off"]["answered"] == row["on"]["answered"] == 3
    assert row["on"]["ground_frames"] == 3, row["on"]["ground_status"]
    assert "ground_ms_p50" not in row["off"]
    assert all(v is not None and v > 0 for v in row["on"]["ground_ms_p50"].values()), row["on"]
    assert row["added_ms"] is not None
    table = ground_live_markdown(r)
    assert "| 640x480 | on |" in table and "| 640x480 | off |" in table


def test_a_rectified_image_is_projected_with_p_and_no_distortion():
    """image_rect is undistorted already: its camera is P's 3x3 without D (K and D are the raw
    image's); a raw image keeps K and D. P unset with ground.rectified is one clear error."""
    from seg_perception.ros.ground_outputs import camera_from_info
    from seg_perception.runtime.ground import GroundError
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    info.d = [-0.3, 0.1, 0.0, 0.0, 0.0]
    info.p = [430.0, 0.0, 318.0, 0.0, 0.0, 431.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    raw = camera_from_info(info, rectified=False)
    np.testing.assert_array_equal(raw.K, np.reshape(info.k, (3, 3)))
    assert raw.D.tolist() == [-0.3, 0.1, 0.0, 0.0, 0.0]
    rect = camera_from_info(info, rectified=True)
    np.testing.assert_array_equal(rect.K, [[430.0, 0.0, 318.0], [0.0, 431.0, 236.0], [0.0, 0.0, 1.0]])
    assert rect.model == "none" and rect.D.size == 0
    info.p = [0.0] * 12
    with pytest.raises(GroundError, match="ground.rectified is set but camera_info has no projection matrix P"):
        camera_from_info(info, rectified=True)


def test_a_rectified_stereo_image_is_projected_through_its_rectification_rotation():
    """A stereo pair's rectified images live in frames rotated by CameraInfo's R from the image's
    frame_id (p_rect = R p). Each ground point must land, through R and P, on its own pixel;
    without R a 3 degree rectification moved the points by ~20 px."""
    from seg_perception.ros.ground_outputs import camera_from_info, rectified_pose
    from seg_perception.runtime.ground import CameraPose, GroundCloud, GroundError
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    info.p = [430.0, 0.0, 318.0, 0.0, 0.0, 430.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    a = np.deg2rad(3.0)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])  # about the optical y
    info.r = R.ravel().tolist()
    pose = CameraPose.from_body_xyz_rpy([0.1, 0.0, 1.2], [0.0, 0.35, 0.0])
    cam = camera_from_info(info, rectified=True)
    for use_r, within in ((True, 0.01), (False, None)):
        cloud = GroundCloud(cam, rectified_pose(info, pose) if use_r else pose, 8, 9.0)
        pts = cloud.points.reshape(-1, 3).astype(np.float64)
        ok = np.isfinite(pts).all(axis=1)
        v, u = np.mgrid[0:480:8, 0:640:8]
        uv = np.column_stack([u.ravel(), v.ravel()])[ok]
        p_rect = (R @ (pose.R.T @ (pts[ok] - pose.t).T)).T  # base -> image frame -> rectified frame
        proj = (np.reshape(info.p, (3, 4))[:, :3] @ p_rect.T).T
        err = np.abs(proj[:, :2] / proj[:, 2:] - uv).max()
        if use_r:
            assert ok.sum() > 1000 and err < within, err
        else:
            assert err > 10, err
    info.r = np.round(R, 4).ravel().tolist()  # as a calibration file prints it: the nearest rotation
    rp = rectified_pose(info, pose)
    np.testing.assert_allclose(rp.R @ rp.R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rp.R, pose.R @ R.T, atol=1e-4)
    info.r = [0.0] * 9  # unset: the identity
    assert rectified_pose(info, pose) is pose
    info.r = (2 * R).ravel().tolist()
    with pytest.raises(GroundError, match="rectification matrix R is not a rotation"):
        rectified_pose(info, pose)


def test_a_region_of_interest_and_binning_are_a_window_on_the_calibrated_sensor():
    """K, D and P describe the full sensor; a driver's ROI and binning publish a window of it. Pixel
    (i, j) of the window is full-resolution pixel (x0 + i b, y0 + j b), as image_geometry maps them
    (toFullResolution; its binned K and P, which image_proc rectifies a binned image with): the
    window's camera projects every point to (u_full - x0) / b, distortion included, and its rays are
    the full camera's rays of those pixels. (A half-pixel shift, (u_full - x0 + 0.5) / b - 0.5, put
    the ground of a rectified 2x2-binned image 5 cm off at 6-10 m.)"""
    from seg_perception.ros.ground_outputs import camera_from_info, sensor_window
    from seg_perception.runtime.ground import GroundError
    full_info = camera_info()
    full = camera_from_info(full_info, rectified=False)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-1.5, 1.5, 200), rng.uniform(-1.0, 1.0, 200), rng.uniform(2.0, 6.0, 200)])
    uv_full, ok = full.project(pts)
    for x0, y0, w, h, b in ((0, 0, 0, 0, 2), (80, 40, 320, 240, 1), (80, 40, 320, 240, 2), (16, 0, 400, 360, 4)):
        info = camera_info()
        info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = x0, y0, w, h
        info.binning_x = info.binning_y = b
        cam = camera_from_info(info, rectified=False)
        assert (cam.width, cam.height) == ((w or W) // b, (h or H) // b)
        uv, ok2 = cam.project(pts)
        np.testing.assert_array_equal(ok2, ok)
        expect = (uv_full - [x0, y0]) / b
        np.testing.assert_allclose(uv, expect, atol=1e-9)
        np.testing.assert_allclose(cam.rays(uv[ok]), full.rays(uv_full[ok]), atol=1e-7)
    for w in (W, 0):  # the whole frame spelt out is the same as the all-zero default
        info = camera_info()
        info.roi.width, info.roi.height = w, H if w else 0
        assert camera_from_info(info, rectified=False) is not None
        assert sensor_window(info, rectified=True) == (0, 0, W, H, 1, 1)
    for x0, w, h, size in ((200, W - 100, H, "380x360 at \\(200, 0\\)"), (100, 0, 0, "0x0 at \\(100, 0\\)"),
                           (0, W, 0, "480x0 at \\(0, 0\\)")):  # zero sizes are the whole frame only with zero offsets
        outside = camera_info()
        outside.roi.x_offset, outside.roi.width, outside.roi.height = x0, w, h
        with pytest.raises(GroundError, match=f"region of interest {size} does not fit its 480x360"):
            sensor_window(outside, rectified=False)
    cropped = camera_info()
    cropped.roi.width, cropped.roi.height = W // 2, H // 2
    with pytest.raises(GroundError, match="region of interest with ground.rectified is not supported"):
        sensor_window(cropped, rectified=True)
    binned = camera_info()  # a rectified binned image: P scales like K
    binned.p = [430.0, 0.0, 239.5, 0.0, 0.0, 430.0, 179.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    binned.binning_x = binned.binning_y = 2
    rect = camera_from_info(binned, rectified=True)
    np.testing.assert_allclose(rect.K, [[215.0, 0.0, 119.75], [0.0, 215.0, 89.75], [0.0, 0.0, 1.0]])
    assert (rect.width, rect.height) == (W // 2, H // 2)


def test_a_binned_camera_is_projected_and_a_wrong_window_is_named(ros):
    """A binned camera's frames are smaller than its CameraInfo: they are projected (the grid of
    a 2x2-binned frame matches the full frame's grid), and a frame of neither size names the
    window it expected."""
    import json
    import rclpy
    from types import SimpleNamespace
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header
    from seg_perception.ros.ground_outputs import GroundOutputs, declare_ground_parameters
    node = rclpy.create_node("ground_binning_check")
    grids = {}
    try:
        declare_ground_parameters(node)
        node.set_parameters([Parameter(k, value=json.loads(v) if isinstance(v, str) else v)
                             for k, v in PARAMS.items() if k != "ground.enable"])
        drivable = np.zeros((H, W), bool)
        drivable[H // 2:, W // 4: 3 * W // 4] = True
        for b in (1, 2):
            outputs = GroundOutputs(node, "/camera/image_raw", CameraInfoFeed(node, "/camera/camera_info"))
            outputs.pub_grid = SimpleNamespace(publish=lambda m, b=b: grids.__setitem__(b, np.array(m.data)))
            outputs.pub_points = outputs.pub_labels = outputs.pub_conf = SimpleNamespace(publish=lambda m: None)
            info = camera_info()
            info.binning_x = info.binning_y = b
            outputs.info.latest = info
            mask = drivable[::b, ::b]
            res = SimpleNamespace(frame_size=mask.shape[::-1], labels=mask.astype(np.uint8), drivable=mask,
                                  confidence=None)
            outputs.process(Header(frame_id="camera"), res)
            assert outputs.status[0] == DiagnosticStatus.OK, outputs.status
        assert (grids[1] == 0).sum() > 200 and (grids[1] == 100).sum() > 500
        assert np.mean(grids[1] != grids[2]) < 0.02, np.mean(grids[1] != grids[2])
        res = SimpleNamespace(frame_size=(W, H), labels=np.zeros((H, W), np.uint8))
        outputs.process(Header(frame_id="camera"), res)
        assert outputs.status[0] == DiagnosticStatus.WARN
        assert "frame is 480x360 but CameraInfo on" in outputs.status[1], outputs.status
        assert "480x360 (its region of interest and binning make 240x180)" in outputs.status[1], outputs.status
    finally:
        node.destroy_node()


def test_a_camera_that_sees_no_ground_is_a_warning_not_ok(ros):
    """A pitch of the wrong sign (the camera looks up): the grid is all unknown, and diagnostics say
    why instead of OK; the same camera looking down is OK."""
    import rclpy
    from types import SimpleNamespace
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header
    from seg_perception.ros.ground_outputs import GroundOutputs, declare_ground_parameters
    node = rclpy.create_node("ground_view_check")
    try:
        declare_ground_parameters(node)
        res = SimpleNamespace(frame_size=(W, H), labels=np.zeros((H, W), np.uint8),
                              drivable=np.full((H, W), 255, np.uint8), confidence=None)
        for pitch, level in ((-PITCH, DiagnosticStatus.WARN), (PITCH, DiagnosticStatus.OK)):
            node.set_parameters([Parameter("ground.camera_xyz", value=CAM_XYZ),
                                 Parameter("ground.camera_rpy", value=[0.0, pitch, 0.0])])
            outputs = GroundOutputs(node, "/camera/image_raw", CameraInfoFeed(node, "/camera/camera_info"),
                                    prefix=node.get_name() + "/")  # (as started_outputs)
            outputs.start(QoSProfile(depth=1))
            try:
                outputs.info.latest = camera_info()
                outputs.process(Header(frame_id="camera_optical"), res)
                assert outputs.status[0] == level, outputs.status
                assert ("no grid cell in view" in outputs.status[1]) == (level == DiagnosticStatus.WARN)
            finally:
                outputs.stop()
    finally:
        node.destroy_node()


def started_outputs(node):
    """A node's ground outputs, started, with the test camera's pose and CameraInfo; and a frame's
    result that is drivable everywhere. Its topics are under the node's name: another test's node
    (or one still stopping) latches a grid on /segmentation/drivable_grid too."""
    from types import SimpleNamespace
    from rclpy.parameter import Parameter
    from seg_perception.ros.ground_outputs import GroundOutputs, declare_ground_parameters
    declare_ground_parameters(node)
    node.set_parameters([Parameter("ground.camera_xyz", value=CAM_XYZ),
                         Parameter("ground.camera_rpy", value=[0.0, PITCH, 0.0])])
    res = SimpleNamespace(frame_size=(W, H), labels=np.zeros((H, W), np.uint8),
                          drivable=np.full((H, W), 255, np.uint8), confidence=None)
    outputs = GroundOutputs(node, "/camera/image_raw", CameraInfoFeed(node, "/camera/camera_info"),
                            prefix=node.get_name() + "/")
    outputs.start(QoSProfile(depth=1))
    outputs.info.latest = camera_info()
    return outputs, res


def test_ground_status_is_not_ok_once_its_outputs_stop(ros):
    """The ground status was the last frame's: a camera that stopped left it "ok" for good. Three
    of the usual intervals (at least 2 s) without outputs make it WARN; a restart (start) forgets
    the old times, and counts from itself."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_msgs.msg import Header
    from seg_perception.ros.ground_outputs import stale_after
    assert stale_after([]) == stale_after([0.0]) == 2.0
    assert stale_after([0.0, 1.0, 2.0, 12.0]) == 3.0  # the median interval, not the longest
    node = rclpy.create_node("ground_stale_check")
    try:
        outputs, res = started_outputs(node)
        try:
            st = outputs.diagnostics("n")  # nothing timed yet: empty, not a measured 0.000
            assert {kv.key: kv.value for kv in st.values}["grid_ms"] == "", st
            for _ in range(3):
                outputs.process(Header(frame_id="camera_optical"), res)
            st = outputs.diagnostics("n")
            values = {kv.key: kv.value for kv in st.values}
            assert st.level == DiagnosticStatus.OK and float(values["seconds_since_output"]) < 1.0, st
            with outputs._lock:  # the same outputs 5 s ago: the camera stopped since
                outputs.published_at = type(outputs.published_at)((t - 5.0 for t in outputs.published_at),
                                                                  maxlen=outputs.published_at.maxlen)
            st = outputs.diagnostics("n")
            assert st.level == DiagnosticStatus.WARN and st.message.startswith("no ground outputs for 5 s"), st
            outputs.stop()
            outputs.start(QoSProfile(depth=1))  # deactivated and activated again: not stale from before ...
            st = outputs.diagnostics("n")
            assert st.level == DiagnosticStatus.OK and {kv.key: kv.value for kv in st.values}[
                "seconds_since_output"] == "", st
            outputs.started_at -= 5.0  # ... a camera may take a while to begin (as the camera status waits)
            assert outputs.diagnostics("n").level == DiagnosticStatus.OK
            outputs.started_at -= 6.0  # ... but no output in the 11 s since is not OK (it stayed OK for good)
            st = outputs.diagnostics("n")
            assert st.level == DiagnosticStatus.WARN and st.message.startswith("no ground outputs for 11 s"), st
        finally:
            outputs.stop()
    finally:
        node.destroy_node()


def test_a_late_subscriber_gets_an_unknown_grid_once_the_outputs_stop(ros):
    """The grid is latched and in the robot's frame: after the camera stopped (or its calibration
    went bad) a late subscriber got the last frame's free cells, as if they were now; so did every
    subscriber after a deactivate. Once the outputs have stopped (not for one frame's miss, a TF
    lookup late), the grid is all unknown, stamped no earlier than the last one. And a second
    reason for the outputs being off was never logged (the log throttle took the first 24
    characters, which every 'cannot project onto the ground: ...' shares)."""
    import rclpy
    from builtin_interfaces.msg import Time as Stamp
    from nav_msgs.msg import OccupancyGrid
    from std_msgs.msg import Header
    from seg_perception.ros.ground_outputs import GRID_QOS
    from diagnostic_msgs.msg import DiagnosticStatus
    node = rclpy.create_node("ground_late_grid_check")
    GRID_TOPIC = "/ground_late_grid_check/segmentation/drivable_grid"  # started_outputs: under the node's name

    def late_grid() -> OccupancyGrid:
        got = []
        sub = node.create_subscription(OccupancyGrid, GRID_TOPIC, got.append, GRID_QOS)
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_subscription(sub)
        assert got, "no latched grid"
        return got[-1]

    def cells(grid: OccupancyGrid) -> np.ndarray:
        return np.asarray(grid.data, np.int8)

    def camera_stopped_a_while_ago(outputs) -> None:
        with outputs._lock:  # the last output 60 s ago (and none before it to learn an interval from)
            outputs.published_at = type(outputs.published_at)([time.perf_counter() - 60.0],
                                                              maxlen=outputs.published_at.maxlen)
    future = Stamp(sec=2_100_000_000)  # a camera (or bag) stamping ahead of this node's clock (2036)
    try:
        outputs, res = started_outputs(node)
        try:
            outputs.process(Header(frame_id="camera_optical", stamp=future), res)
            assert (cells(late_grid()) == 0).any()  # free cells of the frame
            camera_stopped_a_while_ago(outputs)
            assert outputs.diagnostics("n").level == DiagnosticStatus.WARN
            grid = late_grid()
            assert (cells(grid) == -1).all() and grid.header.stamp == future  # not before the last grid
            outputs.process(Header(frame_id="camera_optical"), res)  # frames again
            assert (cells(late_grid()) == 0).any()
            outputs.info.latest = CameraInfo(width=W, height=H, k=[0.0] * 9)  # the calibration gone bad
            outputs.process(Header(frame_id="camera_optical"), res)
            assert outputs.status[0] == DiagnosticStatus.ERROR
            assert (cells(late_grid()) == 0).any()  # one frame off: the grid stays (a TF miss would flicker it)
            camera_stopped_a_while_ago(outputs)  # off since: unknown, whatever the status says
            assert outputs.diagnostics("n").level == DiagnosticStatus.ERROR and (cells(late_grid()) == -1).all()
            outputs._off(DiagnosticStatus.ERROR, "cannot project onto the ground: unsupported distortion model "
                                                 "'fisheye' (plumb_bob, rational_polynomial, equidistant)")
            assert len(outputs._warned) == 2, outputs._warned  # each reason logged (once per 30 s)
            # a deactivate: a subscriber that keeps the grid (a costmap) gets unknown before the publisher goes
            outputs.info.latest = camera_info()
            outputs.process(Header(frame_id="camera_optical"), res)
            got = []
            node.create_subscription(OccupancyGrid, GRID_TOPIC, got.append, GRID_QOS)
            end = time.monotonic() + 10
            while not got and time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            assert got and (cells(got[-1]) == 0).any()
            outputs.stop()
            end = time.monotonic() + 10
            while (cells(got[-1]) != -1).any() and time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            assert (cells(got[-1]) == -1).all()
        finally:
            outputs.stop()
    finally:
        node.destroy_node()


def test_a_remapped_camera_takes_camera_info_beside_its_new_name(ros, random_model, tmp_path):
    """-r /camera/image_raw:=/front/image_raw: the CameraInfo is /front/camera_info (image_transport's
    pairing), not the unremapped /camera/camera_info (another camera's, or none)."""
    from ros_harness import REPO, TEST_NODE_PARAMS
    from seg_perception.runtime.node_process import NodeProcess
    proc = NodeProcess({**TEST_NODE_PARAMS, "model": str(random_model), "threads": 1, "ground.enable": True},
                       tmp_path / "node.log", params_file=REPO / "config" / "jetson.yaml",
                       ros_args=["-r", "/camera/image_raw:=/front/image_raw", "-r", "__node:=remapped_camera_node"])
    h = Harness("test_remap_client")

    def mine(topic):  # this node's subscriptions (the module's other node listens on /camera/*)
        return [i for i in h.node.get_subscriptions_info_by_topic(topic) if i.node_name == "remapped_camera_node"]
    try:
        deadline = time.monotonic() + 60
        while not mine("/front/image_raw") and time.monotonic() < deadline:
            assert proc.running(), proc.output()
            time.sleep(0.2)
        assert len(mine("/front/image_raw")) == 1, proc.output()
        assert len(mine("/front/camera_info")) == 1
        assert not mine("/camera/camera_info") and not mine("/camera/image_raw")
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


@pytest.mark.parametrize("config", ["nav2.yaml", "jetson.yaml", "node default"])
@pytest.mark.parametrize("namespace", ["", "/robot1"])
def test_config_reads_the_camera_of_its_namespace(ros, tmp_path, namespace, config):
    """The camera is named relatively (both config files and the node's own default): under a robot's
    namespace the node reads that robot's image and camera_info (an absolute name read the global
    camera), and its log and /diagnostics name the topic it reads, namespace applied."""
    from ros_harness import REPO, TEST_NODE_PARAMS
    from seg_perception.runtime.node_process import NodeProcess
    node = "ns_config_node"
    params_file = REPO / "config" / ("jetson.yaml" if config == "node default" else config)
    if config == "node default":  # jetson.yaml less its image_topic line
        text = params_file.read_text()
        params_file = tmp_path / "no_topic.yaml"
        params_file.write_text("\n".join(ln for ln in text.splitlines() if "image_topic:" not in ln))
    args = ["-r", f"__node:={node}"] + (["-r", f"__ns:={namespace}"] if namespace else [])
    proc = NodeProcess({**TEST_NODE_PARAMS, "threads": 1, "ground.enable": True, "ground.use_tf": False},
                       tmp_path / "node.log", params_file=params_file, ros_args=args)
    h = Harness("test_ns_config_client")
    status, full = [], f"{namespace}/{node}".lstrip("/")  # the status names the node with its namespace
    h.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: status.extend(
        s for s in m.status if s.name.startswith(full + ":")), 10)

    def mine(topic):
        return [i for i in h.node.get_subscriptions_info_by_topic(topic) if i.node_name == node]
    try:
        image = f"{namespace}/camera/image_raw"
        deadline = time.monotonic() + 60
        while not (mine(image) and status) and time.monotonic() < deadline:
            assert proc.running(), proc.output()
            time.sleep(0.2)
        assert len(mine(image)) == 1 and len(mine(f"{namespace}/camera/camera_info")) == 1, proc.output()
        seg = next(s for s in status if s.name == f"{full}: segmentation")
        values = {kv.key: kv.value for kv in seg.values}
        assert values["topic"] == image
        assert values["inference_ms"] == values["end_to_end_ms"] == "", values  # nothing measured yet, not 0.00
        assert seg.message == f"waiting for frames on {image}"
        assert f"segmenting {image} with" in proc.output()
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_cameras_share_one_tf_listener(monkeypatch):
    """One tf2 buffer and listener for the node, not one per camera (each listener subscribes to /tf
    and handles every TF message in the executor thread); removed with the last camera's outputs.
    tf2_ros is not installed here: stand-ins with its constructor and unregister()."""
    from types import SimpleNamespace
    from seg_perception.ros import ground_outputs as go
    made = []

    class Listener:
        def __init__(self, buffer, node):
            self.unregistered = False
            made.append(self)

        def unregister(self):
            self.unregistered = True

    monkeypatch.setattr(go, "tf2_ros", SimpleNamespace(Buffer=object, TransformListener=Listener))
    node = SimpleNamespace()
    a, b = go._acquire_tf(node), go._acquire_tf(node)
    assert a is b and len(made) == 1
    go._release_tf(node)
    assert not made[0].unregistered
    go._release_tf(node)
    assert made[0].unregistered and go._acquire_tf(node) is not a and len(made) == 2


def test_a_managed_node_keeps_its_ground_status_while_inactive(ros, random_model, tmp_path, val_frames):
    """A deactivated managed node published its camera status but not the ground one, so an
    aggregator showed the ground status stale on every deactivate. Now it stays, OK "inactive",
    from configure on; and deactivating under a streaming camera logs no overload warning (frames
    cut off by deactivate counted as drops while the fps fell)."""
    from lifecycle_msgs.msg import Transition
    from ros_harness import REPO, TEST_NODE_PARAMS
    from seg_perception.runtime.node_process import NodeProcess
    from test_lifecycle import LifecycleClient
    proc = NodeProcess({**TEST_NODE_PARAMS, "model": str(random_model), "threads": 1, "qos": "reliable",
                        "image_topic": "/lcg/image_raw", **PARAMS}, tmp_path / "node.log",
                       params_file=REPO / "config" / "jetson.yaml", program="segmentation_lifecycle_node",
                       ros_args=["-r", "__node:=lc_ground_node"])
    h = Harness("test_lc_ground_client", image_topic="/lcg/image_raw")
    statuses = []
    h.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(
        (st.level, st.message) for st in m.status if st.name == "lc_ground_node: ground projection"), 10)
    info_pub = h.node.create_publisher(CameraInfo, "/lcg/camera_info", QoSProfile(depth=1))
    inactive = (b"\x00", "inactive (lifecycle): no frames projected")
    stop = threading.Event()
    img = val_frames[0][0]

    def camera():  # 4 Hz, stamped as a camera stamps (slow enough for a busy 2-core machine)
        k = 0
        while not stop.is_set():
            t = 1_800_000_000 * 10**9 + k * 250_000_000
            info = camera_info()
            info.header.stamp.sec, info.header.stamp.nanosec = divmod(t, 10**9)
            info_pub.publish(info)
            h.pub_raw.publish(raw_image(img, "rgb8", (t // 10**9, t % 10**9, "camera_optical")))
            k += 1
            time.sleep(0.25)
    t = threading.Thread(target=camera)
    try:
        lc = LifecycleClient(h, "/lc_ground_node")
        assert lc.transition(Transition.TRANSITION_CONFIGURE), proc.output()
        h.wait_for(lambda: statuses and statuses[-1] == inactive, 15, "the ground status, configured")
        assert lc.transition(Transition.TRANSITION_ACTIVATE)
        t.start()
        h.wait_for(lambda: statuses and statuses[-1] == (b"\x00", "ok (parameters pose)"), 60, "ground outputs")
        time.sleep(2.0)
        assert lc.transition(Transition.TRANSITION_DEACTIVATE)
        h.wait_for(lambda: statuses and statuses[-1] == inactive, 15, "the ground status, deactivated")
        time.sleep(2.5)  # inactive reports while the 5 s fps falls
        assert statuses[-1] == inactive
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()
    # none once inactive (a machine too loaded for 4 Hz may say so, rightly, while active)
    out = proc.output()
    assert "faster than the node" not in out[out.index("deactivated: not subscribed"):], out


def test_a_failing_ground_projection_is_said_and_does_not_reject_the_frame(ros, monkeypatch):
    """An unexpected error inside the ground projection (after the frame's labels went out) reached
    the worker, which counted the served frame as rejected and put the camera's status to ERROR
    while its labels flowed. Now the ground outputs are off for that frame, said as ERROR in the
    ground status; the caller sees no exception, and the next frame builds the lookups again."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_msgs.msg import Header
    from seg_perception.ros import ground_outputs
    node = rclpy.create_node("ground_failure_check")
    try:
        outputs, res = started_outputs(node)
        try:
            def boom(*args, **kwargs):
                raise RuntimeError("lookup failed")
            with monkeypatch.context() as m:
                m.setattr(ground_outputs, "GridLookup", boom)
                outputs.process(Header(frame_id="camera_optical"), res)
            assert outputs.status == (DiagnosticStatus.ERROR, "ground projection failed: RuntimeError: lookup failed")
            outputs.process(Header(frame_id="camera_optical"), res)  # the same camera and pose, lookups working
            assert outputs.status[0] == DiagnosticStatus.OK, outputs.status
        finally:
            outputs.stop()
    finally:
        node.destroy_node()


def test_camera_info_beside_an_image_topic_keeps_it_absolute():
    """usb_cam's /image_raw with node_namespace:=front: the CameraInfo topic came out relative,
    /front/camera_info, and the ground outputs stayed off ("no CameraInfo"). image_transport's
    getCameraInfoTopic keeps the image topic's own namespace, the root one included."""
    from seg_perception.data.bag_io import camera_info_topic
    assert camera_info_topic("/image_raw") == "/camera_info"
    assert camera_info_topic("image_raw") == "camera_info"
    assert camera_info_topic("/cam/image_raw") == "/cam/camera_info"
    assert camera_info_topic("cam/image_raw") == "cam/camera_info"


def test_a_moving_pose_rebuilds_the_lookups_without_a_line_per_frame(ros):
    """A pose followed through TF (a pan-tilt head) rebuilds the lookups every frame, and each
    rebuild logged its "ground projection for ..." line: one a frame, 30 a second. The line now
    comes with a new calibration, not with a new pose; the grids still follow the pose."""
    import json
    import rclpy
    from types import SimpleNamespace
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header
    from seg_perception.ros.ground_outputs import GroundOutputs, declare_ground_parameters
    from seg_perception.runtime.ground import CameraPose
    node = rclpy.create_node("ground_moving_pose_check")
    said, grids = [], []
    try:
        declare_ground_parameters(node)
        node.set_parameters([Parameter(k, value=json.loads(v) if isinstance(v, str) else v)
                             for k, v in PARAMS.items() if k != "ground.enable"])
        outputs = GroundOutputs(node, "/camera/image_raw", CameraInfoFeed(node, "/camera/camera_info"))
        outputs.node = SimpleNamespace(get_logger=lambda: SimpleNamespace(
            info=said.append, warning=lambda m, **k: said.append(m)), get_clock=node.get_clock)
        outputs.pub_grid = SimpleNamespace(publish=lambda m: grids.append(np.array(m.data)))
        outputs.pub_points = outputs.pub_labels = outputs.pub_conf = SimpleNamespace(publish=lambda m: None)
        outputs.info.latest = camera_info()
        drivable = np.zeros((H, W), bool)
        drivable[H // 2:, W // 4: 3 * W // 4] = True
        res = SimpleNamespace(frame_size=(W, H), labels=drivable.astype(np.uint8), drivable=drivable, confidence=None)
        for pitch in (0.30, 0.32, 0.34, 0.36):
            outputs.param_pose = CameraPose.from_body_xyz_rpy([0.0, 0.0, 1.2], [0.0, pitch, 0.0])
            outputs.process(Header(frame_id="camera"), res)
        assert len(grids) == 4 and not np.array_equal(grids[0], grids[-1])
        assert len([m for m in said if m.startswith("ground projection for")]) == 1, said
        info = camera_info()
        info.k = [k * 1.1 if k not in (0.0, 1.0) else k for k in info.k]  # recalibrated
        outputs.info.latest = info
        outputs.process(Header(frame_id="camera"), res)
        assert len([m for m in said if m.startswith("ground projection for")]) == 2, said
    finally:
        node.destroy_node()
