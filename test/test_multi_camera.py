"""Several cameras in one node, live over DDS: segmentation_node (its own process) with
image_topics of two cameras in different namespaces; this process publishes different CamVid
frames (different sizes, stamps and frame_ids) on both and checks that each camera's outputs
come back under its own namespace, with its own header, equal to the single-frame pipeline's
labels for that frame. The shipped model (dynamic batch) so that frames really run batched."""
from __future__ import annotations

import time

import cv2
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo

from ros_harness import Harness, assert_startup_refused, raw_image, stamp_key, start_node
from seg_perception.ros.ground_outputs import tf2_ros
from seg_perception.runtime.pipeline import Pipeline
from test_node import as_array

FRONT, REAR = "/mc_front/image_raw", "/mc_rear/image_raw"


@pytest.fixture(scope="module")
def pipe(shipped_model):
    return Pipeline.from_card(shipped_model, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def two_cameras(ros, shipped_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("multi") / "node.log"
    # one worker (the default, pinned): this test checks that one inference takes both cameras' frames
    # max_batch 2: on a CPU the default (auto) runs one frame an inference (test_one_frame_...)
    proc = start_node({"model": str(shipped_model), "threads": 1, "workers": 1, "qos": "reliable",
                       "image_topics": [FRONT, REAR], "max_batch": 2}, log)
    front = Harness("test_mc_front", image_topic=FRONT, out_ns="/mc_front")
    rear = Harness("test_mc_rear", image_topic=REAR, out_ns="/mc_rear")
    try:
        front.wait_connected()
        rear.wait_connected()
    except AssertionError:
        proc.stop()
        front.close()
        rear.close()
        raise AssertionError("node did not start:\n" + log.read_text())
    yield proc, front, rear
    front.close()
    rear.close()
    assert proc.stop() == 0, proc.output()


def test_each_camera_is_answered_under_its_namespace(two_cameras, pipe, val_frames):
    proc, front, rear = two_cameras
    f_img = val_frames[0][0]
    r_img = cv2.resize(val_frames[3][0], (640, 480))  # another frame at another size
    sent = {"front": [], "rear": []}
    # each camera's own CameraInfo (other sizes, other focal lengths) comes back under its namespace
    infos = {"front": CameraInfo(width=480, height=360, k=[400.0, 0, 239.5, 0, 400.0, 179.5, 0, 0, 1]),
             "rear": CameraInfo(width=640, height=480, k=[600.0, 0, 319.5, 0, 610.0, 239.5, 0, 0, 1])}
    info_pubs, info_got = {}, {"front": {}, "rear": {}}
    for name, h in (("front", front), ("rear", rear)):
        info_pubs[name] = h.node.create_publisher(CameraInfo, f"/mc_{name}/camera_info", 1)
        sub = h.node.create_subscription(CameraInfo, f"/mc_{name}/segmentation/camera_info",
                                         lambda m, n=name: info_got[n].__setitem__(stamp_key(m.header), m),
                                         QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        h.wait_for(lambda sub=sub: sub.get_publisher_count() > 0, 15, f"{name}'s segmentation/camera_info")

    def publish_pair(i: int) -> None:
        for name in infos:
            info_pubs[name].publish(infos[name])
        fk = (1_800_000_000 + i, 1000 * i, "front_optical")
        rk = (1_800_000_000 + i, 1000 * i + 500, "rear_optical")
        front.pub_raw.publish(raw_image(f_img, "rgb8", fk))
        rear.pub_raw.publish(raw_image(cv2.cvtColor(r_img, cv2.COLOR_RGB2BGR), "bgr8", rk))
        sent["front"].append(fk)
        sent["rear"].append(rk)

    # Pairs at 15 Hz: a machine faster than that serves each frame alone (the front frame is done
    # before the rear one is delivered), so batches of two need frames arriving faster than the
    # model runs. Then pairs back to back until the node reports a batch of two: on any machine
    # the model falls behind, and the newest frame of each camera waits for the same batch.
    for i in range(8):
        publish_pair(i)
        time.sleep(1 / 15)
    deadline = time.monotonic() + 20
    while "2:" not in front.last_diag().get("batch_size_histogram", "") and time.monotonic() < deadline:
        publish_pair(len(sent["front"]))
        time.sleep(0.005)  # 200 pairs a second: faster than any CPU runs the model, without flooding DDS
    # newest frame wins per camera, so not every frame is answered; the last of each is
    for name, h in (("front", front), ("rear", rear)):
        h.wait_for(lambda: all(sent[name][-1] in h.received[t] for t in ("labels", "drivable_mask")), 30,
                   f"{name}'s last frame")
    time.sleep(0.5)
    want = {"front": pipe(f_img).labels, "rear": pipe(r_img).labels}
    answered = {}
    for name, h in (("front", front), ("rear", rear)):
        with h.lock:
            got = dict(h.received["labels"])
            masks = dict(h.received["drivable_mask"])
        # only this camera's frames came back here, each with its own stamp and frame_id
        assert got and set(got) <= set(sent[name]), (name, sorted(got))
        answered[name] = len(got)
        for key, msg in got.items():
            assert stamp_key(msg.header) == key
            labels = as_array(msg)
            assert labels.shape == want[name].shape
            # batched vs single-frame kernels: a few argmax ties may flip
            assert (labels == want[name]).mean() > 0.999, (name, key)
            if key in masks:
                assert stamp_key(masks[key].header) == key
                assert ((as_array(masks[key]) == 255) == (labels == 3)).all()  # CamVid: Road drivable
    # the two frames differ, so mixed-up outputs would have failed above
    assert (want["front"] != cv2.resize(want["rear"], (480, 360), interpolation=cv2.INTER_NEAREST)).mean() > 0.05

    # one diagnostics status per camera, with its own counters and the node's batching
    for name, h in (("front", front), ("rear", rear)):
        d = h.settled_diag()
        assert d["topic"] == (FRONT if name == "front" else REAR)
        # depth-1 reliable writers may overwrite a frame before delivery: received <= sent
        assert len(sent[name]) >= int(d["frames_received"]) >= int(d["frames_processed"]) >= answered[name] >= 1
        assert d["cameras"] == "2"
        hist = dict(kv.split(":") for kv in d["batch_size_histogram"].split())
        assert set(hist) <= {"1", "2"} and int(hist.get("2", 0)) >= 1, d["batch_size_histogram"]
        assert float(d["batch_size_mean"]) > 1.0
        assert d["max_batch"] == "2"
        # each camera's CameraInfo is the one beside its image topic, sent on under its namespace
        size = f"{infos[name].width}x{infos[name].height}"
        assert d["camera_info"] == f"/mc_{name}/camera_info: published at {size}", d["camera_info"]
        got = dict(info_got[name])
        assert got and set(got) <= set(sent[name]), (name, sorted(got))
        for key, info in got.items():
            assert (info.width, info.height, list(info.k)) == (infos[name].width, infos[name].height,
                                                               list(infos[name].k)), (name, info)
            assert stamp_key(info.header) == key


def test_one_frame_an_inference_serves_every_camera_in_turn():
    """max_batch 1 (auto on a CPU, where a batch of N costs N frames and only adds latency): each
    take is one camera's newest frame, the next take starts after it, and a camera without a frame
    waiting is skipped, not waited for; no camera is served twice while another waits."""
    from types import SimpleNamespace
    from std_msgs.msg import Header
    from seg_perception.ros.node import SegmentationNode

    def cam(name):
        return SimpleNamespace(name=name, slot=None, era=0, last_key=(0, (-1, -1)), in_flight={})

    cams = [cam("a"), cam("b"), cam("c")]
    node = SimpleNamespace(cameras=cams, max_batch=1, _next_first=0)

    def takes(n, waiting):
        """n takes, the cameras in ``waiting`` refilled before each (a newest frame always there)."""
        out = []
        for _ in range(n):
            for c in cams:
                if c.name in waiting and c.slot is None:
                    c.slot = (SimpleNamespace(header=Header()), 0.0)
            batch = SegmentationNode._take_batch(node)
            assert len(batch) == 1
            out.append(batch[0][0].name)
        return out

    def clear():
        for c in cams:
            c.slot = None

    assert takes(6, "abc") == ["a", "b", "c", "a", "b", "c"]
    clear()
    assert takes(4, "ac") == ["a", "c", "a", "c"]  # b without a frame is skipped, not waited for
    clear()
    assert takes(3, "abc") == ["a", "b", "c"]  # b's frames back: its turn within one round
    node.max_batch = 3  # a GPU: every waiting camera's frame in one inference
    for c in cams:
        c.slot = (SimpleNamespace(header=Header()), 0.0)
    assert len(SegmentationNode._take_batch(node)) == 3


def test_frames_with_one_stamp_are_each_in_flight_until_finished():
    """A camera that stamps every frame alike (0, or a driver without a clock): two frames taken by
    two workers are two frames in flight; the first finished must not release the other (with
    stamps as keys they shared one entry, and a newer frame stopped waiting for the second)."""
    import threading
    from types import SimpleNamespace
    from std_msgs.msg import Header
    from seg_perception.ros.node import SegmentationNode

    cam = SimpleNamespace(name="a", slot=None, era=0, last_key=(0, (-1, -1)), in_flight={})
    node = SimpleNamespace(cameras=[cam], max_batch=1, _next_first=0, _slot_lock=threading.Condition())
    taken = []
    for _ in range(2):
        cam.slot = (SimpleNamespace(header=Header()), 0.0)  # stamp 0.0 both times
        taken.append(SegmentationNode._take_batch(node)[0][1])
    assert len(cam.in_flight) == 2
    SegmentationNode._finished(node, cam, taken[0])
    assert list(cam.in_flight.values()) == [(0, (0, 0))]  # (clock era, stamp)
    SegmentationNode._finished(node, cam, taken[0])  # the worker's final sweep: already finished
    assert len(cam.in_flight) == 1
    SegmentationNode._finished(node, cam, taken[1])
    assert cam.in_flight == {}


def test_a_bad_frame_on_one_camera_leaves_the_other_served(two_cameras, val_frames):
    proc, front, rear = two_cameras
    bad = raw_image(val_frames[1][0], "rgb8", (1_900_000_000, 1, "front_optical"))
    bad.step = 10  # shorter than a row: rejected
    fk, rk = (1_900_000_001, 0, "front_optical"), (1_900_000_001, 5, "rear_optical")
    before = int(front.last_diag().get("frames_rejected", 0))
    front.pub_raw.publish(bad)
    rear.pub_raw.publish(raw_image(val_frames[2][0], "rgb8", rk))
    rear.wait_for(lambda: rk in rear.received["labels"], 30, "rear's frame beside a bad front frame")
    front.wait_for(lambda: int(front.last_diag().get("frames_rejected", 0)) == before + 1, 15, "front rejection")
    assert int(rear.last_diag()["frames_rejected"]) == 0
    front.pub_raw.publish(raw_image(val_frames[2][0], "rgb8", fk))
    front.wait_for(lambda: fk in front.received["labels"], 30, "front serves again")
    assert "frame rejected on /mc_front/image_raw:" in proc.output()


@pytest.mark.parametrize("params,message", [
    ({"image_topics": ["image_raw", "/b/image_raw"]}, "image_topics: '/image_raw' has no namespace"),
    ({"image_topics": ["/a/image_raw", "/a/other_raw"]}, "are both in namespace /a"),
    pytest.param({"image_topics": ["/a/image_raw", "/b/image_raw"], "ground.enable": True},
                 "ground.enable with several image_topics needs each camera's pose from tf2",
                 marks=pytest.mark.skipif(tf2_ros is not None, reason="tf2 installed: several cameras may project")),
])
def test_bad_camera_lists_stop_startup_with_one_line(random_model, tmp_path, params, message):
    assert_startup_refused({"model": str(random_model), **params}, tmp_path / "node.log", message)


def test_one_camera_in_image_topics_projects_from_the_parameter_pose(ros, random_model, tmp_path, val_frames):
    """image_topics with ONE camera and ground.enable was refused as "several image_topics needs each
    camera's pose from tf2 ... run one node per camera": one camera's pose is ground.camera_xyz/rpy, as
    with image_topic (its outputs under the camera's namespace, its camera_info beside it)."""
    h = Harness("test_mc_single", image_topic="/mc_single/image_raw", out_ns="/mc_single")  # first: no node left
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable",
                       "image_topics": ["/mc_single/image_raw"], "ground.enable": True, "ground.use_tf": False},
                      tmp_path / "node.log")
    try:
        try:
            h.wait_connected()
        except AssertionError:
            raise AssertionError("node did not start:\n" + proc.output())
        key = (1_850_000_000, 0, "single_optical")
        h.pub_raw.publish(raw_image(val_frames[0][0], "rgb8", key))
        h.wait_for(lambda: key in h.received["labels"], 30, "labels under /mc_single")
        assert "ground projection into base_footprint from /mc_single/camera_info, camera pose from the " \
               "ground.camera_xyz/rpy parameters" in proc.output(), proc.output()
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_qos_auto_chooses_for_each_camera(ros, random_model, tmp_path):
    """qos auto with image_topics: a best-effort camera and a reliable one in one node each get the
    subscription that matches them, and both are served."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from test_node import _served_again_and_again
    a = Harness("test_mc_qos_a", image_topic="/mc_qos_a/image_raw", out_ns="/mc_qos_a")
    b = Harness("test_mc_qos_b", image_topic="/mc_qos_b/image_raw", out_ns="/mc_qos_b")  # reliable
    a.node.destroy_publisher(a.pub_raw)
    a.pub_raw = a.node.create_publisher(Image, "/mc_qos_a/image_raw",
                                        QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    proc = start_node({"model": str(random_model), "threads": 1,
                       "image_topics": ["/mc_qos_a/image_raw", "/mc_qos_b/image_raw"]}, tmp_path / "node.log")
    try:
        _served_again_and_again(a, proc, tries=120)
        _served_again_and_again(b, proc, tries=120)
        out = proc.output()
        # chosen at activation, or (the publisher not yet discovered then) followed at once after it
        assert ("; subscribed /mc_qos_a/image_raw best effort, /mc_qos_b/image_raw reliable (qos auto)" in out
                or "qos auto: /mc_qos_a/image_raw has a best-effort publisher now" in out), out
        assert "qos auto: /mc_qos_b/image_raw has a best-effort" not in out, out
    finally:
        a.close()
        b.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_a_camera_listed_twice_is_named_as_such():
    from seg_perception.ros.node import ConfigError, camera_namespaces
    with pytest.raises(ConfigError, match="image_topics names '/a/image_raw' twice"):
        camera_namespaces(["/a/image_raw", "/b/image_raw", "/a/image_raw"])
    assert camera_namespaces(["/a/image_raw", "/b/image_raw"]) == ["/a", "/b"]
