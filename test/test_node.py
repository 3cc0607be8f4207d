"""The live node over real DDS: segmentation_node runs as its own process (console
script, config/jetson.yaml, a RANDOM-weights model from a temporary folder) and
this test process publishes CamVid val frames and records what comes back.

The raw-image node subscribes with qos 'reliable': with Fast DDS's default transports a
best-effort frame over ~0.5 MB is lost between processes (README, "Large frames"). The
JPEG node subscribes best effort (qos sensor_data), so that path runs over DDS too."""
from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest

from conftest import REPO
from ros_harness import Harness, assert_startup_refused, jpeg_image, raw_image, stamp_key, start_node
from seg_perception.data.classes import CAMVID
from seg_perception.runtime.legend import draw_legend
from seg_perception.ros.camera_health import StampGaps, camera_health, overload_note, served_fps
from seg_perception.ros.node import STAGES
from seg_perception.ros.rate_cap import RateCap
from seg_perception.runtime.pipeline import Pipeline


def rgb_to_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack RGB as UYVY or YUY2 (BT.601, chroma averaged over pixel pairs)."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.float32)
    y = yuv[..., 0]
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    h, w = y.shape
    out = np.empty((h, w, 2), np.float32)
    out[..., 1 if order == "uyvy" else 0] = y
    chroma = out[..., 0 if order == "uyvy" else 1]
    chroma[:, 0::2], chroma[:, 1::2] = u, v
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def as_array(msg) -> np.ndarray:
    ch = {"mono8": 1, "rgb8": 3}[msg.encoding]
    a = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * ch]
    return a.reshape(msg.height, msg.width) if ch == 1 else a.reshape(msg.height, msg.width, ch)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.fixture(scope="module")
def pipe(random_model):
    return Pipeline.from_card(random_model, backend="onnxruntime")


def _serve(proc, h, log, compressed=False):
    """Fixture body: wait until the node and the test client see each other, hand both to
    the tests, then require a clean exit (code 0) from the node."""
    try:
        h.wait_connected(compressed=compressed)
    except AssertionError:
        proc.stop()
        h.close()
        raise AssertionError("node did not start:\n" + log.read_text())
    yield proc, h
    h.close()
    assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def raw_node(ros, random_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = start_node({"model": str(random_model), "publish_confidence": True, "threads": 1,
                        "qos": "reliable"}, log)
    h = Harness("test_raw_client")
    yield from _serve(proc, h, log)


_seq = iter(range(1, 10**6))


def new_key(tag: str) -> tuple:
    n = next(_seq)
    return (1_700_000_000 + n, 1000 * n, f"{tag}_{n}")


def send_and_wait(h: Harness, msg, compressed: bool = False, timeout: float = 30.0) -> tuple:
    key = stamp_key(msg.header)
    (h.pub_jpeg if compressed else h.pub_raw).publish(msg)
    h.wait_for(lambda: key in h.received["labels"] and key in h.received["drivable_mask"],
               timeout, f"labels for {key}")
    return key


def check_outputs(h: Harness, key: tuple, shape: tuple, expected: np.ndarray, drivable=(3,)) -> np.ndarray:
    labels_msg = h.received["labels"][key]
    mask_msg = h.received["drivable_mask"][key]
    for m in (labels_msg, mask_msg):
        assert stamp_key(m.header) == key  # header copied unchanged
        assert m.encoding == "mono8" and (m.height, m.width) == shape
    labels, mask = as_array(labels_msg), as_array(mask_msg)
    assert labels.max() < 11
    np.testing.assert_array_equal(mask, np.where(np.isin(labels, drivable), 255, 0))
    assert agreement(labels, expected) > 0.999
    return labels


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2", "rgb8_padded"]


def encode(rgb: np.ndarray, enc: str):
    """-> (payload for the message, encoding name, pad, the frame the pipeline should see, layout)"""
    if enc == "rgb8_padded":
        return rgb, "rgb8", 64, rgb, "rgb"
    if enc in ("yuv422", "yuv422_yuy2"):
        packed = rgb_to_yuv422(rgb, "uyvy" if enc == "yuv422" else "yuy2")
        code = cv2.COLOR_YUV2RGB_UYVY if enc == "yuv422" else cv2.COLOR_YUV2RGB_YUY2
        return packed, enc, 0, cv2.cvtColor(packed, code), "rgb"
    if enc == "mono8":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return gray, enc, 0, gray, "mono"
    code = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA}[enc]
    return (rgb if code is None else cv2.cvtColor(rgb, code)), enc, 0, rgb, "rgb"


def test_every_encoding_is_segmented(raw_node, pipe, val_frames):
    proc, h = raw_node
    for i, enc in enumerate(ENCODINGS):
        rgb = val_frames[i % len(val_frames)][0]
        if i % 3 == 2:  # other frame sizes come back at their own size
            rgb = cv2.resize(rgb, (640, 480))
        payload, name, pad, seen, layout = encode(rgb, enc)
        key = send_and_wait(h, raw_image(payload, name, new_key(enc), pad=pad))
        expected = pipe(seen, layout, confidence=True)
        check_outputs(h, key, rgb.shape[:2], expected.labels)
        conf = h.received["confidence"].get(key)
        assert conf is not None and conf.encoding == "mono8" and (conf.height, conf.width) == rgb.shape[:2]
        assert stamp_key(conf.header) == key
        # the values too: the top class's probability x 255, as the pipeline computes it here
        diff = np.abs(as_array(conf).astype(int) - expected.confidence.astype(int))
        assert (diff <= 1).mean() > 0.999 and expected.confidence.std() > 1, (enc, diff.max())


def test_diagnostics_report_the_stream(raw_node, val_frames):
    proc, h = raw_node
    send_and_wait(h, raw_image(val_frames[0][0], "rgb8", new_key("diag")))  # not relying on earlier tests
    h.wait_for(lambda: h.diagnostics and int(h.diagnostics[-1]["frames_processed"]) >= 1, 10, "diagnostics")
    d = h.last_diag()
    for k in ("fps", "inference_ms", "end_to_end_ms", "frames_received", "frames_processed",
              "frames_dropped", "frames_rejected", "frames_missing_upstream") + STAGES:
        assert k in d
    assert float(d["inference_ms"]) > 0 and float(d["end_to_end_ms"]) >= float(d["inference_ms"])
    # processing covers every stage of the frame, inference included
    assert float(d["processing_ms"]) >= float(d["inference_ms"])
    assert float(d["end_to_end_ms"]) >= float(d["processing_ms"]) - 0.01
    # a camera that stops is not "ok": after a few seconds without frames the status says so
    h.wait_for(lambda: "no frames on /camera/image_raw for" in h.diagnostics[-1]["_message"], 15,
               "a stale-camera warning")


def test_overlay_only_while_subscribed(raw_node, val_frames):
    proc, h = raw_node
    rgb = val_frames[0][0]
    send_and_wait(h, raw_image(rgb, "rgb8", new_key("pre_overlay")))
    assert h.settled_diag()["frames_with_overlay"] == "0"
    h.subscribe_overlay()
    deadline = time.monotonic() + 30
    while not h.received["overlay"] and time.monotonic() < deadline:  # discovery takes a moment
        send_and_wait(h, raw_image(rgb, "rgb8", new_key("overlay")))
        time.sleep(0.2)
    assert h.received["overlay"], "no overlay after subscribing"
    key, msg = next(iter(h.received["overlay"].items()))
    assert stamp_key(msg.header) == key and msg.encoding == "rgb8" and (msg.height, msg.width) == (360, 480)
    labels = as_array(h.received["labels"][key])
    # Blended with alpha 0.5: where the class colour equals the pixel, the overlay is unchanged.
    over = as_array(msg).astype(int)
    palette = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                        [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                        [0, 128, 192]])
    expected = (rgb.astype(int) + palette[labels]) / 2
    # ... and the class legend (colour + name from the card) sits in the top-right corner.
    expected = draw_legend(np.round(expected).astype(np.uint8), CAMVID.names, palette)
    assert np.abs(over - expected.astype(int)).max() <= 1
    # Once nobody listens, the node stops drawing overlays again.
    h.node.destroy_subscription(h.overlay_sub)
    h.overlay_sub = None
    h.wait_for(lambda: h.node.count_subscribers("/segmentation/overlay") == 0, 15, "overlay unsubscribed")
    drawn = int(h.settled_diag()["frames_with_overlay"])
    assert drawn > 0
    stopped, deadline = False, time.monotonic() + 30  # (the node's own view of the match may lag)
    while not stopped and time.monotonic() < deadline:
        send_and_wait(h, raw_image(rgb, "rgb8", new_key("post_overlay")))
        now = int(h.settled_diag()["frames_with_overlay"])
        stopped, drawn = now == drawn, now
    assert stopped, "overlays still drawn with no subscriber"


def bad_raw_messages(rgb):
    short = raw_image(rgb, "rgb8", new_key("short"))
    short.data = short.data[: len(short.data) // 2]
    narrow = raw_image(rgb, "rgb8", new_key("narrow"))
    narrow.step = rgb.shape[1] * 3 - 3
    zero = raw_image(rgb[:1], "rgb8", new_key("zero"))
    zero.height, zero.width, zero.step = 0, 0, 0
    huge = raw_image(rgb[:2, :2], "mono8", new_key("huge"))
    huge.width, huge.height, huge.step = 70_000, 70_000, 70_000
    return [
        (raw_image(rgb, "nv12", new_key("enc")), "unsupported encoding 'nv12'"),
        (short, "less than step x height"),
        (narrow, "is smaller than width x channels"),
        (zero, "is empty"),
        (huge, "exceeds the max_image_pixels cap"),
        (raw_image(rgb[:, :, :2].copy(), "16UC1", new_key("16bit")),
         "encoding '16UC1' is a depth or measurement image, not a camera frame"),
    ]


def rejected(h):
    return int(h.last_diag().get("frames_rejected", 0))


def test_bad_messages_are_rejected_and_good_frames_still_served(raw_node, pipe, val_frames):
    proc, h = raw_node
    rgb = val_frames[3][0]
    expected = pipe(rgb).labels
    for bad, reason in bad_raw_messages(rgb):
        before = rejected(h)
        h.pub_raw.publish(bad)
        h.wait_for(lambda: rejected(h) == before + 1, 15, f"rejection of '{reason}'")
        key = send_and_wait(h, raw_image(rgb, "rgb8", new_key("after_bad")))
        check_outputs(h, key, (360, 480), expected)
        assert stamp_key(bad.header) not in h.received["labels"]  # nothing published for it
        assert reason in proc.output(), f"no log line for '{reason}'"
    # A burst of bad frames: each is rejected (or replaced while waiting), the node keeps serving.
    # (DDS itself keeps only the newest of frames sent faster than depth-1 QoS delivers them.)
    before = rejected(h)
    for _ in range(5):
        for bad, _ in bad_raw_messages(rgb):
            h.pub_raw.publish(bad)
            time.sleep(0.01)
    key = send_and_wait(h, raw_image(rgb, "rgb8", new_key("after_burst")))
    check_outputs(h, key, (360, 480), expected)
    h.wait_for(lambda: rejected(h) > before, 10, "burst rejections")
    # The same reason is not logged once per frame: one line, then throttled.
    assert proc.output().count("unsupported encoding 'nv12'") <= 3
    # Counted exactly: of frames with a new reason sent 20 ms apart, the first that reaches the node
    # is logged, the rest (as many as the rejection count says arrived) are counted, and the first
    # one after 5 s gives that count.
    reason = "unsupported encoding 'nv21'"
    before = int(h.settled_diag()["frames_rejected"])
    t_diag = time.perf_counter()
    for _ in range(4):
        h.pub_raw.publish(raw_image(rgb, "nv21", new_key("throttle")))
        time.sleep(0.02)
    h.wait_for(lambda: rejected(h) > before, 10, f"rejections of '{reason}'")
    time.sleep(1.5)  # a diagnostics period more, for any of the four still on its way
    arrived = int(h.settled_diag()["frames_rejected"]) - before
    t_seen = time.monotonic()
    assert arrived >= 2, arrived  # else nothing was throttled
    # One line for all that arrived: a frame that reached the node 5 s or more after the first would
    # have logged a second (no time bound here: on a loaded machine settling took over 3 s)
    assert proc.output().count(reason) == 1
    time.sleep(5.2 - (time.monotonic() - t_seen))  # the first line was logged before t_seen
    before = rejected(h)
    h.pub_raw.publish(raw_image(rgb, "nv21", new_key("throttle")))
    h.wait_for(lambda: proc.output().count(reason) == 2, 15, "the log line after 5 s")
    # (and in the counters, so that the next test's starting diagnostics include it)
    h.wait_for(lambda: rejected(h) == before + 1, 15, "its rejection in the diagnostics")
    # Frames served earlier do not keep the camera "ok" while every new one is rejected: from the
    # third in a row (2-4 of the burst arrived, and this one) the status says so.
    h.wait_for(lambda: any("frames were all rejected (none processed since): " + reason in d["_message"]
                           for d in list(h.diagnostics) if d["_t"] > t_diag), 5, "the rejected-run warning")
    lines = [ln for ln in proc.output().splitlines() if reason in ln]
    assert f"(and {arrived - 1} more like it)" in lines[1] and "more like it" not in lines[0], lines
    assert proc.proc.poll() is None


def test_no_backlog_newest_frame_wins(raw_node, val_frames):
    """A burst faster than the model: frames waiting while one is processed are replaced
    by newer ones (counted as dropped), the newest frame is always served, and the node says
    that the camera is faster than it (once in the log, in each diagnostics while it lasts)."""
    proc, h = raw_node
    d0 = h.settled_diag()
    t0 = time.perf_counter()
    sec = new_key("burst")[0]
    # stamped as a 200 Hz camera (5 ms apart), after every earlier test frame; 40 frames make
    # 5 ms the median stamp period
    keys = [(sec, 5_000_000 * i, f"burst_{i}") for i in range(40)]
    for i, k in enumerate(keys):
        h.pub_raw.publish(raw_image(val_frames[i % 6][0], "rgb8", k))
        time.sleep(0.005)
    h.wait_for(lambda: keys[-1] in h.received["labels"], 30, "the newest frame of the burst")
    d = h.settled_diag()
    served = sum(k in h.received["labels"] for k in keys)
    received = int(d["frames_received"]) - int(d0["frames_received"])
    dropped = int(d["frames_dropped"]) - int(d0["frames_dropped"])
    late = int(d["frames_late"]) - int(d0["frames_late"])
    # (frames DDS itself discarded under depth-1 QoS never reach the node's counters)
    assert served + dropped + late == received
    assert late == 0  # (workers: 2 only) a frame finished early waits for its camera's older one
    assert d["inferences_at_once_max"] == "1"  # one worker: frames wait, never run side by side
    assert d["max_batch"] == "1" and d["camera_rate_changes"] == "0"  # auto on a CPU: one frame an inference
    assert dropped > 0, "a burst faster than the model must replace waiting frames"
    assert served < len(keys)
    with h.lock:
        told = [d["_message"] for d in h.diagnostics if d["_t"] > t0 and "faster than the node" in d["_message"]]
    assert told, [d["_message"] for d in h.diagnostics[-3:]]
    # The rate comes from the median gap of the stamps that arrived: 200 Hz when DDS delivered
    # every frame; frames it replaced (depth 1) make the gaps multiples of 5 ms.
    hz = re.search(r"camera at ([0-9.]+) Hz is faster than the node \(", told[0]).group(1)
    # (a loaded machine loses more of them: a gap of any multiple of 5 ms)
    assert hz == "200.0" if received == len(keys) else any(hz == f"{200 / k:.1f}" for k in range(1, 200)), told[0]
    assert "per frame at 480x360): newer frames replace waiting ones" in told[0]
    assert proc.output().count("is faster than the node") == 1  # logged once, not per frame


def test_a_parameter_set_while_running_is_refused_with_the_way_to_apply_it(raw_node):
    """`ros2 param set` of a parameter the node read at start-up would be accepted and do
    nothing: it is refused with the reason; use_sim_time (rclpy's own) still changes."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    proc, h = raw_node
    setp = h.node.create_client(SetParameters, "/segmentation_node/set_parameters")
    assert setp.wait_for_service(timeout_sec=30)

    def set_one(name, value):
        fut = setp.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        h.wait_for(fut.done, 30, "set_parameters")
        return fut.result().results[0]
    res = set_one("output_size", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="network"))
    assert not res.successful and res.reason.startswith("output_size: read at start-up only; restart the node")
    assert set_one("use_sim_time", ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=False)).successful
    h.node.destroy_client(setp)
    # which is which, in the descriptions (`ros2 param describe`, rqt_reconfigure's tooltips)
    from rcl_interfaces.srv import DescribeParameters
    desc = h.node.create_client(DescribeParameters, "/segmentation_node/describe_parameters")
    assert desc.wait_for_service(timeout_sec=30)
    fut = desc.call_async(DescribeParameters.Request(names=["output_size", "max_rate", "drivable_classes"]))
    h.wait_for(fut.done, 30, "describe_parameters")
    said = [d.description for d in fut.result().descriptors]
    assert said[0].endswith("[read at start-up/configure]") and all(d.endswith("[live: a running node takes a "
                                                                               "change]") for d in said[1:]), said
    h.node.destroy_client(desc)


def test_live_parameters_are_taken_by_the_next_frame(raw_node, val_frames):
    """`ros2 param set` of max_rate, drivable_classes, overlay_alpha, overlay_legend or
    diagnostics_period was refused (restart the node): a robot could not slow its segmentation when
    parked, nor tune its drivable classes in the field. They are taken while running, checked first (a bad value or a call that
    mixes them with a start-up parameter changes nothing), and the next frame uses them."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParametersAtomically
    proc, h = raw_node
    setp = h.node.create_client(SetParametersAtomically, "/segmentation_node/set_parameters_atomically")
    assert setp.wait_for_service(timeout_sec=30)
    kinds = {float: ("PARAMETER_DOUBLE", "double_value"), bool: ("PARAMETER_BOOL", "bool_value"),
             int: ("PARAMETER_INTEGER", "integer_value"), list: ("PARAMETER_INTEGER_ARRAY", "integer_array_value")}

    def set_params(**values):
        params = []
        for name, v in values.items():
            kind, field = kinds[type(v)]
            params.append(Parameter(name=name, value=ParameterValue(type=getattr(ParameterType, kind), **{field: v})))
        fut = setp.call_async(SetParametersAtomically.Request(parameters=params))
        h.wait_for(fut.done, 30, "set_parameters_atomically")
        return fut.result().result

    def mask_of_next_frame(tag):
        key = send_and_wait(h, raw_image(val_frames[1][0], "rgb8", new_key(tag)))
        return as_array(h.received["labels"][key]), as_array(h.received["drivable_mask"][key])

    rgb = val_frames[1][0]
    labels, mask = mask_of_next_frame("live_before")
    np.testing.assert_array_equal(mask, np.where(labels == 3, 255, 0))  # the card's: Road
    try:
        assert set_params(drivable_classes=[0, 3]).successful
        labels, mask = mask_of_next_frame("live_sky_road")
        np.testing.assert_array_equal(mask, np.where(np.isin(labels, [0, 3]), 255, 0))
        assert h.settled_diag()["drivable_classes"] == "0,3"
        # none, as `ros2 param set ... drivable_classes "[]"` sends it: an empty array typed bool
        none = Parameter(name="drivable_classes", value=ParameterValue(type=ParameterType.PARAMETER_BOOL_ARRAY))
        fut = setp.call_async(SetParametersAtomically.Request(parameters=[none]))
        h.wait_for(fut.done, 30, "set drivable_classes []")
        assert fut.result().result.successful, fut.result().result.reason
        assert not mask_of_next_frame("live_none")[1].any()
        res = set_params(drivable_classes=[11])
        assert not res.successful and res.reason.startswith("drivable class 11 is not one of the model's classes")
        for bad, why in ((-1.0, "max_rate must be 0 (every frame) or 0.01 to 1000"),
                         ("fast", "max_rate must be a number")):
            value = (ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=bad) if isinstance(bad, str)
                     else ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=bad))
            fut = setp.call_async(SetParametersAtomically.Request(parameters=[Parameter(name="max_rate", value=value)]))
            h.wait_for(fut.done, 30, "set max_rate")
            assert not fut.result().result.successful and why in fut.result().result.reason
        res = set_params(overlay_alpha=1.5)
        assert not res.successful and "overlay_alpha must be a number within [0, 1]" in res.reason
        # diagnostics_period: 1 s -> 0.1 s, the timer started again at once
        res = set_params(diagnostics_period=0.0)
        assert not res.successful and "diagnostics_period must be 0.01 to 3600 seconds, not 0.0" in res.reason
        assert set_params(diagnostics_period=0.1).successful
        t0 = time.perf_counter()
        time.sleep(1.5)
        fast = [d for d in list(h.diagnostics) if d["_t"] > t0 + 0.2]  # (those sent before the change: by 0.2 s)
        assert len(fast) >= 8, f"{len(fast)} /diagnostics messages in 1.3 s at diagnostics_period 0.1"
        assert set_params(diagnostics_period=1.0).successful  # and back: the 0.1 s timer is gone
        t0 = time.perf_counter()
        time.sleep(2.5)
        slow = [d for d in list(h.diagnostics) if d["_t"] > t0 + 0.2]
        assert 1 <= len(slow) <= 3, f"{len(slow)} /diagnostics messages in 2.3 s at diagnostics_period 1"

        assert set_params(max_rate=2.0, overlay_alpha=0.25, overlay_legend=False).successful
        d = h.settled_diag()
        assert d["max_rate"] == "2" and d["drivable_classes"] == ""  # the refused [11] changed nothing
        skipped = int(d["frames_skipped"])
        for i in range(6):  # 20 Hz for 0.3 s, within one turn of the cap's 0.5 s: the first is admitted
            h.pub_raw.publish(raw_image(rgb, "rgb8", new_key(f"live_burst_{i}")))
            time.sleep(0.05)  # (back to back, the depth-1 writer would replace them before they went out)
        h.wait_for(lambda: int(h.diagnostics[-1]["frames_skipped"]) >= skipped + 3, 30, "frames skipped by max_rate")
        # one start-up parameter among them: refused whole, the live one unchanged
        res = set_params(max_rate=0.0, threads=2)
        assert not res.successful and res.reason.startswith("threads: read at start-up only") \
            and "max_rate alone would be taken at once" in res.reason, res.reason
        assert h.settled_diag()["max_rate"] == "2"
    finally:  # (asserted after: a failure above is the one to see)
        restored = set_params(max_rate=0.0, drivable_classes=[3], overlay_alpha=0.5, overlay_legend=True,
                              diagnostics_period=1.0)
        h.node.destroy_client(setp)
    assert restored.successful, restored.reason
    d = h.settled_diag()
    assert d["max_rate"] == "0" and d["drivable_classes"] == "3"
    labels, mask = mask_of_next_frame("live_after")
    np.testing.assert_array_equal(mask, np.where(labels == 3, 255, 0))
    said = [ln for ln in proc.output().splitlines() if "taken while running" in ln]
    assert any("drivable classes ['Sky', 'Road'] (were ['Road'])" in ln for ln in said), said
    assert any("max_rate 2 (was 0" in ln and "overlay_alpha 0.25" in ln for ln in said), said
    assert any("diagnostics_period 0.1 s (was 1)" in ln for ln in said), said


def test_live_parameters_reach_every_worker_and_camera(random_model, val_frames):
    """The node's change reaches each worker's pipeline and each camera's rate cap (the live test
    above runs one of each), all checked before any is applied, and the overlay's look is the new
    one: alpha 0 without the legend is the frame itself."""
    import threading
    from types import SimpleNamespace
    from seg_perception.ros.node import ConfigError, SegmentationNode
    pipes = [Pipeline.from_card(random_model, backend="onnxruntime", threads=1) for _ in range(2)]
    logged = []
    log = SimpleNamespace(info=logged.append, warning=logged.append)
    node = SimpleNamespace(pipeline=pipes[0], pipelines=pipes, card=pipes[0].card, max_rate=0.0,
                           cameras=[SimpleNamespace(cap=RateCap(0.0)) for _ in range(2)],
                           _slot_lock=threading.Condition(), get_logger=lambda: log)
    apply = SegmentationNode._apply_live.__get__(node)
    apply({"max_rate": 4, "drivable_classes": [0, 1], "overlay_alpha": 0.0, "overlay_legend": False})
    assert node.max_rate == 4.0 and all(cam.cap.period == 0.25 for cam in node.cameras)
    rgb = val_frames[0][0]
    for pipe in pipes:
        assert pipe.drivable_classes == [0, 1]
        res = pipe(rgb, overlay=True)
        np.testing.assert_array_equal(res.drivable, np.where(np.isin(res.labels, [0, 1]), 255, 0))
        np.testing.assert_array_equal(res.overlay, rgb)
    assert any("max_rate 4 each (was 0" in m and "drivable classes ['Sky', 'Building'] (were ['Road'])" in m
               for m in logged), logged
    for bad in ({"drivable_classes": [2], "overlay_alpha": 2.0}, {"max_rate": 1.0, "drivable_classes": [-1]}):
        with pytest.raises((ConfigError, ValueError)):
            apply(bad)
    assert node.max_rate == 4.0 and all(p.drivable_classes == [0, 1] and p.overlay_alpha == 0.0 for p in pipes)


def test_a_camera_clock_that_goes_back_is_still_served(raw_node, pipe, val_frames):
    """A bag played in a loop (or sim time reset) restarts the stamps at an earlier time: the
    frames after the jump are served, not dropped as late until the clock catches up, and the
    jump is counted and said once."""
    proc, h = raw_node
    d0 = h.settled_diag()
    said = proc.output().count("camera stamps went back by")  # (earlier tests may send older stamps)
    time.sleep(5.1)  # past the warning's throttle (one line per 5 s) from an earlier test's stamps
    send_and_wait(h, raw_image(val_frames[0][0], "rgb8", new_key("before_loop")))
    # the same "bag" again: years before every stamp so far, then onward from there
    looped = [(1_600_000_000 + i, 0, f"looped_{i}") for i in range(3)]
    for i, key in enumerate(looped):
        send_and_wait(h, raw_image(val_frames[i + 1][0], "rgb8", key))
        check_outputs(h, key, (360, 480), pipe(val_frames[i + 1][0]).labels)
    d = h.settled_diag()
    assert int(d["stamps_went_back"]) - int(d0["stamps_went_back"]) == 1  # the first looped frame only
    assert int(d["frames_late"]) == int(d0["frames_late"])
    assert proc.output().count("camera stamps went back by") == said + 1, proc.output()[-2000:]
    send_and_wait(h, raw_image(val_frames[5][0], "rgb8", new_key("after_loop")))  # forward again: served

@pytest.fixture(scope="module")
def jpeg_node(ros, random_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("node_jpeg") / "node.log"
    proc = start_node({"model": str(random_model), "use_compressed": True, "threads": 1, "qos": "sensor_data",
                        "image_topic": "/cam2/image_raw"}, log)
    h = Harness("test_jpeg_client", image_topic="/cam2/image_raw")
    yield from _serve(proc, h, log, compressed=True)


def test_compressed_jpeg_and_png(jpeg_node, pipe, val_frames):
    proc, h = jpeg_node
    for img, _ in val_frames[:3]:
        msg = jpeg_image(img, new_key("jpeg"))
        decoded = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
        key = send_and_wait(h, msg, compressed=True)
        check_outputs(h, key, (360, 480), pipe(decoded, "bgr").labels)
    png = jpeg_image(val_frames[4][0], new_key("png"))
    png.format = "png"
    png.data = __import__("array").array("B", cv2.imencode(".png", cv2.cvtColor(val_frames[4][0],
                                                                                cv2.COLOR_RGB2BGR))[1].tobytes())
    key = send_and_wait(h, png, compressed=True)
    check_outputs(h, key, (360, 480), pipe(val_frames[4][0]).labels)
    # undecodable bytes: rejected, next frame served
    bad = jpeg_image(val_frames[0][0], new_key("garbage"))
    bad.data = bad.data[:200]
    before = rejected(h)
    h.pub_jpeg.publish(bad)
    h.wait_for(lambda: rejected(h) == before + 1, 15, "rejection of a truncated JPEG")
    assert "cannot be decoded" in proc.output()
    key = send_and_wait(h, jpeg_image(val_frames[0][0], new_key("jpeg_after")), compressed=True)
    assert key in h.received["labels"]


def test_a_remapped_camera_is_read_compressed_under_its_new_name(ros, random_model, tmp_path, val_frames):
    """use_compressed with -r camera/image_raw:=/front/image_raw: as image_transport does, the base topic is
    remapped and /compressed appended (/front/image_raw/compressed); appending first left the rule
    unmatched and the node on /camera/image_raw/compressed (while its camera_info followed the remap)."""
    from ros_harness import TEST_NODE_PARAMS
    from seg_perception.runtime.node_process import NodeProcess
    h = Harness("test_remap_jpeg_client", image_topic="/remap_jpeg/image_raw")  # first: a failure leaves no node
    proc = NodeProcess({**TEST_NODE_PARAMS, "model": str(random_model), "threads": 1, "use_compressed": True,
                        "image_topic": "camera/image_raw"}, tmp_path / "node.log",
                       params_file=REPO / "config" / "jetson.yaml",
                       ros_args=["-r", "camera/image_raw:=/remap_jpeg/image_raw"])
    try:
        try:
            h.wait_connected(compressed=True)
        except AssertionError:
            raise AssertionError("the node does not read /remap_jpeg/image_raw/compressed:\n" + proc.output())
        key = send_and_wait(h, jpeg_image(val_frames[0][0], new_key("remap_jpeg")), compressed=True)
        assert as_array(h.received["labels"][key]).shape == val_frames[0][0].shape[:2]
        assert h.last_diag()["topic"] == "/remap_jpeg/image_raw/compressed"
        assert "segmenting /remap_jpeg/image_raw/compressed with" in proc.output()
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_rejections_are_throttled_by_kind_not_by_their_numbers():
    from seg_perception.ros.camera_health import rejection_kind
    a, b = (f"compressed image ({n} bytes, format 'jpeg') cannot be decoded" for n in (1002, 98765))
    assert rejection_kind(a) == rejection_kind(b)  # one kind: one line, then a count, every 5 s
    assert rejection_kind("image size 640x480 exceeds the cap") == rejection_kind("image size 6000x6000 exceeds the cap")
    assert rejection_kind("unsupported encoding 'nv12'; supported: ...") != rejection_kind(
        "unsupported encoding 'nv21'; supported: ...")


@pytest.mark.parametrize("params,message", [
    ({"model": "no_such_model"}, "unknown model 'no_such_model'; valid choices:"),
    ({"precision": "fp64"}, "unknown precision 'fp64'; valid choices: fp32, fp16, int8"),
    ({"backend": "tpu"}, "unknown backend 'tpu'; valid choices: auto, tensorrt, onnxruntime, torch"),
    ({"backend": "torch", "precision": "fp32", "weights": "/nonexistent/w.pt"},
     "weights file /nonexistent/w.pt not found"),
    ({"qos": "fast"}, "unknown qos 'fast'; valid choices: sensor_data, reliable, auto"),
    ({"workers": 0}, "workers must be 1-8, not 0"),
    ({"drivable_classes": "[3, 40]"}, "drivable class 40 is not one of the model's classes"),
    ({"modle": "no_such_model"}, "unknown parameter 'modle': did you mean 'model'?"),
    ({"input_widht": 320}, "unknown parameter 'input_widht': did you mean 'input_width'?"),
    ({"diagnostics_period": 0.0}, "diagnostics_period must be 0.01 to 3600 seconds, not 0.0"),
    ({"diagnostics_period": 1e300}, "diagnostics_period must be 0.01 to 3600 seconds, not 1e+300"),
    ({"ground.enable": "'false'"}, "ground.enable must be true or false, got 'false' (a string: write true or "),
    ({"ground.enable": True, "ground.rectified": "'no'"}, "ground.rectified must be true or false, got 'no'"),
    ({"ground.enable": True, "ground.camera_xyz": "[0.0, .nan, 1.0]"},
     "ground.camera_xyz must be a list of 3 finite numbers"),
    ({"ground.enable": True, "ground.base_frame": "/base_link"}, "ground.base_frame must be a tf2 frame name"),
    ({"ground.enable": True, "ground.base_frame": "''"}, "ground.base_frame must be a tf2 frame name"),
    ({"threads": -1}, "threads must be 0 (the runtime's default) or a number of threads, not -1"),
    ({"max_image_pixels": 0}, "max_image_pixels must be 1 or more, not 0"),
    ({"bond_heartbeat_period": -1.0}, "bond_heartbeat_period must be 0 (no bond) or 0.01 to 1 seconds, not -1.0"),
    ({"max_rate": -5}, "max_rate must be 0 (every frame) or 0.01 to 1000 frames a second, not -5.0"),
    # rcl keeps the params file's value over a -p of another type, without a word
    ({"input_width": 640.0}, "-p input_width:=640.0 did not reach the node: it got 0, the params file's value "
                             "(rclpy takes a params file's integer before a command-line double)"),
    ({"use_compressed": 1}, "-p use_compressed:=1 did not reach the node: it got False, the params file's"),
    ({"ground.camera_xzy": "[0.0, 0.0, 1.0]"}, "did you mean 'ground.camera_xyz'? (the parameters are listed in "
                                               "config/nav2.yaml and docs/navigation.md)"),
    ({"bond_heartbeat_period": 2.5}, "bond_heartbeat_period must be 0 (no bond) or 0.01 to 1 seconds, not 2.5"),
    ({"image_topic": "/cam/image raw"}, "image_topic: '/cam/image raw' is not a valid topic name"),
    ({"camera_info_topic": "/cam/info/"}, "camera_info_topic: '/cam/info/' is not a valid topic name"),
    # the name it had before camera_info_topic served segmentation/camera_info too
    ({"ground.camera_info_topic": "/cam/info"}, "did you mean 'camera_info_topic'?"),
    ({"image_topics": "['/a/image_raw', '/b/image_raw']", "camera_info_topic": "/cam/info"},
     "camera_info_topic names one topic but image_topics has several cameras"),
    ({"ground.enable": True, "ground.tf_timeout": 5.0}, "ground.tf_timeout must be 0 to 1 s"),
    # a camera at or below the ground plane: refused at start-up, not ground outputs off at the first frame
    ({"ground.enable": True, "ground.camera_xyz": "[0.3, 0.0, -0.2]"}, "ground.camera_xyz's z must be > 0"),
    ({"ground.enable": True, "ground.max_range": "far"}, "ground.max_range must be a number, got 'far'"),
])
def test_bad_parameters_stop_startup_with_one_line(random_model, tmp_path, params, message):
    assert_startup_refused({"model": str(random_model), **params}, tmp_path / "node.log", message)


def test_drivable_classes_given_empty_means_none(ros, random_model, tmp_path):
    """`drivable_classes: []` (README: none) reaches rclpy untyped and left the parameter unset: the
    node ran the card's Road without a word."""
    h = Harness("test_no_drivable_client", image_topic="/no_drivable/image_raw")  # first: a failure leaves no node
    proc = start_node({"model": str(random_model), "threads": 1, "drivable_classes": "[]",
                       "image_topic": "/no_drivable/image_raw"}, tmp_path / "node.log")
    try:
        h.wait_for(lambda: h.diagnostics and h.diagnostics[-1].get("topic") == "/no_drivable/image_raw", 60,
                   "the node's diagnostics")
        assert h.last_diag()["drivable_classes"] == "", h.last_diag()
        assert "drivable classes []" in proc.output() and "no drivable classes" in proc.output()
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_startup_refusal_names_the_node_as_started(random_model, tmp_path):
    """Several nodes from one launch file: the 'cannot start' line is logged as the node (its name
    and namespace), not as segmentation_node."""
    from ros_harness import TEST_NODE_PARAMS
    from seg_perception.runtime.node_process import NodeProcess
    proc = NodeProcess({**TEST_NODE_PARAMS, "model": str(random_model), "workers": 0}, tmp_path / "node.log",
                       params_file=REPO / "config" / "jetson.yaml",
                       ros_args=["-r", "__node:=seg_front", "-r", "__ns:=/robot1"])
    try:
        rc = proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    fatal = [ln for ln in proc.output().splitlines() if "cannot start" in ln]
    assert rc == 2 and len(fatal) == 1 and "[robot1.seg_front]: cannot start: workers must be 1-8" in fatal[0], \
        proc.output()


def test_a_number_parameter_given_as_text_stops_startup(random_model, tmp_path):
    """The number parameters take integers too (dynamic typing), so rclpy no longer checks their
    type: the node does. (A params file, since rcl keeps a params file's number over a text `-p`.)"""
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_rate: fast\n")
    assert_startup_refused({"model": str(random_model)}, tmp_path / "node.log",
                           "max_rate must be a number, not 'fast' (default 0.0)", params_file=params)


def test_a_model_that_cannot_run_stops_startup_with_one_line(random_model, tmp_path):
    """An ONNX file that loads but fails on a frame is found at start-up (the warm-up frame),
    in one line, not as a traceback or as an error on every camera frame."""
    from conftest import onnx_that_fails_to_run
    bad = onnx_that_fails_to_run(tmp_path / "fails.onnx")
    assert_startup_refused({"model": str(random_model), "onnx": str(bad)}, tmp_path / "node.log",
                           "fails on a test frame at 480x360 (Fail: ")


def test_confidence_from_a_model_without_it_stops_startup(random_model, tmp_path):
    """An ONNX file exported without the confidence output cannot feed publish_confidence:
    start-up says so, rather than every frame failing while the node looks up."""
    from seg_perception.card import load_card
    from seg_perception.runtime.backends import labels_only_graph
    onnx_path = tmp_path / "labels_only.onnx"
    onnx_path.write_bytes(labels_only_graph(load_card(random_model).file("onnx")))
    assert_startup_refused({"model": str(random_model), "onnx": str(onnx_path), "publish_confidence": True},
                           tmp_path / "node.log", "publish_confidence needs the model's confidence output")


def test_ctrl_c_while_starting_stops_quietly(random_model, tmp_path):
    """Ctrl-C (or ros2 launch's SIGINT) while the model loads: rclpy shuts its context down, and where
    the KeyboardInterrupt is lost inside a native call (a real node signalled 0.8-2 s into start-up
    never saw one), start-up failed on the dead context (publisher creation) and the node ended with
    a traceback and status 1. Now it stops with status 0 and says nothing more."""
    import subprocess
    import sys
    script = tmp_path / "interrupted.py"
    script.write_text(f"""
import os, signal, sys, time
from seg_perception.ros import node as n

class Interrupted(n.SegmentationNode):
    def _configure(self):
        try:  # Ctrl-C as the model starts loading, its KeyboardInterrupt swallowed as a native call may
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        super()._configure()

sys.exit(n.run(Interrupted, args=["--ros-args", "-p", "model:={random_model}", "-p", "backend:=onnxruntime",
                                  "-p", "precision:=fp32", "-p", "threads:=1"]))
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr + r.stdout, r.stdout + r.stderr


def test_ctrl_c_with_frames_in_flight_drops_them_without_errors(ros, random_model, tmp_path, val_frames):
    """SIGINT while frames run: rclpy has shut the context down before destroy_node waits for the
    frames in flight, so their publish failed and each was logged as an ERROR 'frame rejected:
    processing failed: RCLError ... context is invalid'. They are dropped quietly now."""
    import threading
    # its own camera topic: on /camera/image_raw the module's node answered (its subscription,
    # diagnostics and labels), so SIGINT could reach this node while it was still importing
    h = Harness("test_ctrl_c_in_flight_client", image_topic="/sigint_camera/image_raw")  # first: no node left
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable",
                       "image_topic": "/sigint_camera/image_raw"}, tmp_path / "node.log")
    stop = threading.Event()
    img = val_frames[0][0]

    def camera():  # faster than the node: a frame is nearly always in flight
        while not stop.is_set():
            h.pub_raw.publish(raw_image(img, "rgb8", new_key("sigint")))
            time.sleep(1 / 30)
    t = threading.Thread(target=camera)
    try:
        h.wait_connected()
        t.start()
        h.wait_for(lambda: len(h.received["labels"]) >= 3, 60, "labels")
        rc = proc.stop()
    finally:
        stop.set()
        if t.is_alive():  # not started when the node never connected: join() would raise, leaving it running
            t.join()
        h.close()
        proc.stop()
    out = proc.output()
    assert rc == 0 and "[ERROR]" not in out and "context is invalid" not in out, out


def test_a_frame_failing_after_shutdown_is_dropped_not_rejected(ros):
    """The race the test above hits now and then: SIGINT between the worker's check of the context
    and its next rclpy call (an output's subscription count), which raised 'publisher's context is
    invalid' into an ERROR 'frame rejected'. With the context shut down, a failing frame is dropped."""
    import threading
    from types import SimpleNamespace
    import rclpy
    from seg_perception.ros.node import CameraStream, SegmentationNode
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    logged = []
    node = SimpleNamespace(context=ctx, _slot_lock=threading.Condition(), multi=False, _last_error={},
                           _suppressed={}, get_logger=lambda: SimpleNamespace(error=logged.append))
    cam = CameraStream("/x/image_raw", False)
    why = "processing failed: RCLError: failed to get subscription count: publisher's context is invalid"
    SegmentationNode._reject(node, cam, why)  # serving: a real rejection
    assert (cam.stats.rejected, cam.stats.dropped, len(logged)) == (1, 0, 1)
    ctx.shutdown()
    SegmentationNode._reject(node, cam, why)
    assert (cam.stats.rejected, cam.stats.dropped, len(logged)) == (1, 1, 1), logged


def test_stamp_gaps_count_frames_that_never_arrived():
    g = StampGaps()
    period = 66_666_667  # 15 Hz
    stamps = [i * period for i in range(40) if i not in (20, 21, 22, 30)]
    for t in stamps:
        g.add(*divmod(t, 1_000_000_000))
    assert g.missing == 4
    assert abs(g.period - period / 1e9) < 1e-6
    g.add(*divmod(stamps[5], 1_000_000_000))  # an old stamp (a replayed frame) is no gap
    assert g.missing == 4
    assert g.recent() == 4 and g.recent(now=time.monotonic() + StampGaps.RECENT_S + 1) == 0  # in the past


def test_stamp_gaps_under_heavy_loss_pauses_and_jitter():
    import numpy as np
    rng = np.random.default_rng(0)
    period = 66_666_667  # 15 Hz
    # 60 % of the frames lost: the median gap is the loss, not the camera's period
    kept = [i for i in range(600) if i == 0 or rng.random() > 0.6]
    g = StampGaps()
    for i in kept:
        g.add(*divmod(i * period, 1_000_000_000))
    assert abs(g.period - period / 1e9) < 1e-6, g.period
    before_known = sum(b - a - 1 for a, b in zip(kept[:5], kept[1:6]))  # gaps before the period is known
    assert g.missing == kept[-1] + 1 - len(kept) - before_known
    # the camera stops for 5 s and starts again: a pause, not 75 lost frames
    g2 = StampGaps()
    for t in [i * period for i in range(30)] + [5 * 10**9 + i * period for i in range(30)]:
        g2.add(*divmod(t, 1_000_000_000))
    assert g2.missing == 0 and g2.pauses == 1
    # stamps taken at publish time on a loaded machine: +-40 % jitter, nothing lost
    g3 = StampGaps()
    t = 0
    for _ in range(200):
        t += int(period * (1 + rng.uniform(-0.4, 0.4)))
        g3.add(*divmod(t, 1_000_000_000))
    assert g3.missing == 0 and abs(g3.period - period / 1e9) < 0.3 * period / 1e9


def test_stamp_gaps_a_camera_that_slows_down_loses_nothing():
    """A USB camera halves its rate in the dark (auto exposure): 30 -> 15 Hz gives a run of equal
    double gaps, a new period, not a frame lost at every one (49 were counted, and the node warned of
    lost frames for 13 s). Uneven long gaps stay losses; after a pause the period is learnt anew."""
    fast, slow = 33_333_333, 66_666_667
    g = StampGaps()
    stamps = [i * fast for i in range(300)] + [299 * fast + i * slow for i in range(1, 150)]
    for t in stamps:
        g.add(*divmod(t, 1_000_000_000))
    assert g.missing == 0 and g.rate_changes == 1 and abs(g.period - slow / 1e9) < 1e-6, (g.missing, g.period)
    lossy = StampGaps()  # 15 Hz with frames lost in uneven bursts: every one counted
    kept = [i for i in range(200) if i % 7 not in (3, 4) and i % 11 != 5]
    for i in kept:
        lossy.add(*divmod(i * slow, 1_000_000_000))
    before_known = sum(b - a - 1 for a, b in zip(kept[:5], kept[1:6]))  # gaps before the period is known
    assert lossy.rate_changes == 0 and lossy.missing == kept[-1] + 1 - len(kept) - before_known
    paused = StampGaps()  # stops at 30 Hz, comes back at 15 Hz
    for t in [i * fast for i in range(60)] + [5 * 10**9 + i * slow for i in range(60)]:
        paused.add(*divmod(t, 1_000_000_000))
    assert paused.missing == 0 and paused.pauses == 1 and abs(paused.period - slow / 1e9) < 1e-6
    assert paused.rate_changes == 1 and paused.rate_change == pytest.approx((fast / 1e6, slow / 1e6), abs=0.01)


def test_overload_note_only_when_the_camera_outruns_the_node():
    note = overload_note(30.0, 14.2, 68.4, 3, (480, 360))
    assert note.startswith("camera at 30.0 Hz is faster than the node (14.2 FPS, 68 ms per frame at 480x360)")
    assert overload_note(30.0, 28.0, 30.0, 3, (480, 360)) == ""   # keeps up (within 10 %)
    assert overload_note(30.0, 14.2, 68.4, 0, (480, 360)) == ""   # nothing replaced since the last report
    assert overload_note(0.0, 14.2, 68.4, 3, (480, 360)) == ""    # camera period not known yet
    assert overload_note(30.0, 0.0, 0.0, 3, (480, 360)) == ""     # nothing served lately
    # max_rate below the camera's: the node is asked for that rate, not the camera's
    assert overload_note(30.0, 9.5, 68.4, 3, (480, 360), max_rate=10.0) == ""
    note = overload_note(30.0, 6.0, 160.0, 3, (480, 360), max_rate=10.0)
    assert note.startswith("max_rate 10 (camera at 30.0 Hz) is faster than the node (6.0 FPS") and \
        note.endswith("(or lower max_rate)")
    assert overload_note(30.0, 14.2, 68.4, 3, (480, 360), max_rate=50.0).startswith("camera at 30.0 Hz")


def test_command_line_values_the_node_did_not_get_are_found():
    """rclpy takes the first value set in its type order (bool, integer, double, string, arrays): a
    -p of a later type than the params file's is dropped for the file's. Only that is flagged: not
    NaN, not a later params file's value of the same type, not rcl's y/n booleans."""
    from seg_perception.ros.param_overrides import command_line_values, not_taken
    argv = ["segmentation_node", "-p", "x:=1", "--ros-args", "--params-file", "f.yaml", "-p", "input_width:=640.0",
            "--param", "workers:=two", "-p", "max_rate:=10", "-p", "drivable_classes:=[]", "-p", "model:='5'",
            "-p", "segmentation_node:threads:=1.5", "-p", "other_node:qos:=1", "-r", "a:=b", "-p",
            "ground.camera_xyz:=[0.0, .nan, 1.0]", "-p", "use_compressed:=y", "-p", "input_height:=480",
            "-p", "diagnostics_period:=1e+300", "-p", "image_topic:=1_000",
            "--", "-p", "model:=outside"]
    given = command_line_values(argv, "segmentation_node")
    assert given == {"input_width": "640.0", "workers": "two", "max_rate": "10", "drivable_classes": "[]",
                     "model": "'5'", "threads": "1.5", "ground.camera_xyz": "[0.0, .nan, 1.0]",
                     "use_compressed": "y", "input_height": "480", "diagnostics_period": "1e+300",
                     "image_topic": "1_000"}
    taken = {"input_width": 0, "workers": 1, "max_rate": 10, "drivable_classes": None, "model": "5", "threads": 0,
             "ground.camera_xyz": [0.0, float("nan"), 1.0], "use_compressed": True,
             "input_height": 0,  # (a params file after the -p: its own choice, same type)
             "diagnostics_period": 1e300, "image_topic": "1_000"}  # (a double for rcl, text for PyYAML; text)
    assert not_taken(given, taken, taken) == [("input_width", "640.0", 0), ("workers", "two", 1),
                                              ("threads", "1.5", 0)]


def test_max_rate_admits_a_steady_share_of_a_faster_camera():
    """A 30 Hz camera with 3 ms of arrival jitter, capped at 10 Hz: every third frame (not every
    fourth when the third comes early); at 12 Hz, 12 a second on average; after a pause, one
    frame at once and no burst to catch up; 0: every frame."""
    rng = np.random.default_rng(0)
    arrivals = [i / 30 + rng.uniform(-0.003, 0.003) for i in range(300)]  # 10 s

    def admitted(hz, times):
        cap = RateCap(hz)
        return [t for t in times if cap.admit(t)]
    ten = admitted(10.0, arrivals)
    assert len(ten) in (100, 101)  # (frames at 0 and at 9.97 s: both ends of the 10 s)
    assert max(np.diff(ten)) < 0.11 and min(np.diff(ten)) > 0.09  # every third frame, no 4-frame gaps
    assert abs(len(admitted(12.0, arrivals)) - 120) <= 1
    # at half the camera's rate: every second frame, not pairs and gaps (the frame before the due
    # one is half a cap period early, and must not take the turn when it comes a little late)
    fifteen = admitted(15.0, arrivals)
    assert len(fifteen) in (150, 151) and max(np.diff(fifteen[1:])) < 0.075 and min(np.diff(fifteen[1:])) > 0.06
    seven = np.diff(admitted(7.5, arrivals)[1:])
    assert seven.max() < 0.14 and seven.min() > 0.126  # every fourth
    # a lost due frame: the next one takes the turn (not the one after), the phase kept
    lossy = [t for i, t in enumerate(arrivals) if i % 30 != 15]
    assert len(admitted(10.0, lossy)) in (100, 101)
    assert admitted(0.0, arrivals) == arrivals
    assert len(admitted(45.0, arrivals)) == 300  # a cap above the camera's rate takes every frame
    # a pause of 5 s, then the camera again: the first frame at once, then every third
    resumed = arrivals[:30] + [15 + t for t in arrivals[:30]]
    got = admitted(10.0, resumed)
    after = [t for t in got if t >= 15]
    assert after[0] == resumed[30] and len(after) in (10, 11) and min(np.diff(after)) > 0.06
    cap = RateCap(10.0)
    assert cap.admit(1.0) and not cap.admit(1.04)
    cap.restart()  # a new activation
    assert cap.admit(1.06)


def test_max_rate_serves_a_faster_camera_at_the_capped_rate(ros, random_model, tmp_path, val_frames):
    """max_rate: 3 (an integer, as a user writes it) against a 12 Hz camera for 4 s: about 12 frames
    segmented, the others counted as skipped (not dropped: the node is faster than 3 Hz), and no
    overload warning."""
    h = Harness("test_rate_client", image_topic="/rate_camera/image_raw")  # first: a failure leaves no node
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable", "max_rate": 3,
                       "diagnostics_period": 0.5, "image_topic": "/rate_camera/image_raw"}, tmp_path / "node.log")
    try:
        try:
            h.wait_connected()
        except AssertionError:
            raise AssertionError("node did not start:\n" + proc.output())
        d0 = h.settled_diag()
        sec = new_key("rate")[0]
        frames = [cv2.resize(rgb, (240, 180), interpolation=cv2.INTER_AREA) for rgb, _ in val_frames]
        keys = [(sec + i // 12, 83_333_333 * (i % 12), f"rate_{i}") for i in range(48)]
        t0 = time.perf_counter()
        for i, k in enumerate(keys):
            time.sleep(max(0.0, t0 + i / 12 - time.perf_counter()))
            h.pub_raw.publish(raw_image(frames[i % 6], "rgb8", k))
        d = h.settled_diag()
        served = sum(k in h.received["labels"] for k in keys)
        received = int(d["frames_received"]) - int(d0["frames_received"])
        skipped = int(d["frames_skipped"]) - int(d0["frames_skipped"])
        dropped = int(d["frames_dropped"]) - int(d0["frames_dropped"])
        assert keys[0] in h.received["labels"]  # the first frame at once
        # 3 Hz over 4 s (+ the first), with the test's own timing jitter; fewer where a loaded machine
        # makes the node slower than 3 Hz now and then (those frames dropped, not skipped)
        assert 8 <= served <= 14, (served, d)
        assert received == served + skipped + dropped and skipped >= 20 and dropped <= 10, d
        assert d["max_rate"] == "3" and "faster than the node" not in d["_message"]
        assert "at most 3 frames a second" in proc.output()
    finally:
        h.close()
        rc = proc.stop()
    assert rc == 0, proc.output()


def test_the_shipped_model_serves_another_resolution(ros, tmp_path, val_frames):
    """input_width/height with the shipped (dynamic-shape) ONNX: no export by hand."""
    proc = start_node({"model": "essnet_d_camvid", "backend": "onnxruntime", "precision": "fp32", "threads": 1,
                       "input_width": 320, "input_height": 240, "qos": "reliable",
                       "image_topic": "/res_camera/image_raw"}, tmp_path / "node.log")
    h = Harness("test_resolution_client", image_topic="/res_camera/image_raw")  # no other node answers
    try:
        try:
            h.wait_connected()
        except AssertionError:
            raise AssertionError("node did not start:\n" + proc.output())
        rgb = val_frames[0][0]
        key = send_and_wait(h, raw_image(rgb, "rgb8", new_key("res")))
        labels = as_array(h.received["labels"][key])
        assert labels.shape == rgb.shape[:2]
        ref = Pipeline.from_card(REPO / "models" / "essnet_d_camvid.yaml", backend="onnxruntime", width=320, height=240)
        assert agreement(labels, ref(rgb).labels) > 0.999
        assert "320x240" in proc.output()
    finally:
        h.close()
        proc.stop()


def test_a_camera_of_incompatible_qos_is_named_in_diagnostics(ros, random_model, tmp_path):
    """qos: reliable and a best-effort camera never meet: the status says which policy and what to set,
    instead of 'waiting for frames'."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "reliable",
                       "image_topic": "/qos_camera/image_raw"}, tmp_path / "node.log")
    h = Harness("test_qos_client", image_topic="/qos_camera/image_raw")
    try:
        pub = h.node.create_publisher(Image, "/qos_camera/image_raw",
                                      QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        h.wait_for(lambda: h.diagnostics and "incompatible" in h.diagnostics[-1]["_message"], 60,
                   "an incompatible-QoS status")
        msg = h.diagnostics[-1]["_message"]
        assert "policy RELIABILITY; qos: reliable): set qos: sensor_data" in msg, msg
        # that publisher gone (the harness's own, which matches, stays and sends nothing): the status
        # says what is true now, not the mismatch for good
        h.node.destroy_publisher(pub)
        h.wait_for(lambda: "incompatible" not in h.diagnostics[-1]["_message"], 30, "the mismatch cleared")
    finally:
        h.close()
        proc.stop()


def test_qos_auto_follows_the_camera_publishers(ros, random_model, tmp_path):
    """A reliable camera's large frames mostly fail to reach the default best-effort subscription over
    Fast DDS; qos: reliable never matches a best-effort camera. auto subscribes as the publishers
    are: reliable while all are, best effort while one is not, and serves frames either way."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    proc = start_node({"model": str(random_model), "threads": 1, "qos": "auto", "diagnostics_period": 0.2,
                       "image_topic": "/auto_camera/image_raw"}, tmp_path / "node.log")
    h = Harness("test_qos_auto_client", image_topic="/auto_camera/image_raw")  # a reliable camera

    def served():
        return _served_again_and_again(h, proc)

    def subscribed(qos):
        h.wait_for(lambda: h.diagnostics and h.diagnostics[-1].get("subscription_qos") == qos, 60,
                   f"subscription_qos {qos}")
    try:
        try:
            subscribed("reliable (qos auto)")
        except AssertionError:
            raise AssertionError("no reliable subscription:\n" + proc.output())
        served()
        infos = h.node.get_subscriptions_info_by_topic("/auto_camera/image_raw")
        assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.RELIABLE]
        best_effort = h.node.create_publisher(Image, "/auto_camera/image_raw",
                                              QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        subscribed("best effort (qos auto)")
        h.pub_raw, reliable = best_effort, h.pub_raw  # frames from the best-effort camera are served
        served()
        assert "incompatible" not in h.diagnostics[-1]["_message"], h.diagnostics[-1]["_message"]
        h.node.destroy_publisher(best_effort)
        h.pub_raw = reliable
        subscribed("reliable (qos auto)")
        served()
        log = proc.output()
        assert "; subscribed reliable (qos auto)" in log  # at activation: no publisher yet, or the harness's
        assert "qos auto: /auto_camera/image_raw has a best-effort publisher now: subscribing best effort" in log
        assert "qos auto: /auto_camera/image_raw has only reliable publishers now: subscribing reliable" in log
        assert "incompatible" not in log  # auto follows a best-effort camera: nothing for the user to set
    finally:
        h.close()
        proc.stop()


def _served_again_and_again(h: Harness, proc, tries: int = 40) -> None:
    """One frame sent every 0.5 s until answered: a new subscription matches its publishers after a while."""
    rgb = np.full((48, 64, 3), 90, np.uint8)
    key = stamp_key(raw_image(rgb, "rgb8", new_key("auto")).header)
    for _ in range(tries):
        h.pub_raw.publish(raw_image(rgb, "rgb8", key))
        try:
            return h.wait_for(lambda: key in h.received["labels"], 0.5, "labels")
        except AssertionError:
            continue
    raise AssertionError(f"no labels for {key}:\n" + proc.output())


def test_qos_auto_follows_a_best_effort_camera_at_once(ros, random_model, tmp_path):
    """A best-effort camera there at activation gets a best-effort subscription; one that comes while the
    subscription is reliable is followed when the middleware reports the mismatch, not at the next
    diagnostics, which may be an hour away (here 60 s)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    h = Harness("test_qos_auto_be_client", image_topic="/auto_be_camera/image_raw")
    h.node.destroy_publisher(h.pub_raw)
    h.pub_raw = h.node.create_publisher(Image, "/auto_be_camera/image_raw", best_effort)
    params = {"model": str(random_model), "threads": 1, "diagnostics_period": 60.0}  # qos: the default
    proc = start_node({**params, "image_topic": "/auto_be_camera/image_raw"}, tmp_path / "node.log")
    h2 = Harness("test_qos_auto_late_client", image_topic="/auto_late_camera/image_raw")  # reliable
    proc2 = start_node({**params, "image_topic": "/auto_late_camera/image_raw"}, tmp_path / "node2.log")
    try:
        _served_again_and_again(h, proc, tries=120)
        out = proc.output()  # (a publisher not yet discovered at activation is followed at once after it)
        assert ("; subscribed best effort (qos auto)" in out or "has a best-effort publisher now" in out), out
        _served_again_and_again(h2, proc2, tries=120)
        assert "; subscribed reliable (qos auto)" in proc2.output()
        h2.pub_raw = h2.node.create_publisher(Image, "/auto_late_camera/image_raw", best_effort)
        t0 = time.monotonic()
        _served_again_and_again(h2, proc2, tries=40)  # 20 s, a third of diagnostics_period
        assert time.monotonic() - t0 < 20
        assert "has a best-effort publisher now: subscribing best effort" in proc2.output()
    finally:
        h.close()
        h2.close()
        proc.stop()
        proc2.stop()


def test_qos_auto_chooses_at_activation_from_the_publishers_there(monkeypatch, random_model):
    """The choice at activation, without DDS discovery's timing (the live tests accept either a choice
    at activation or a switch right after it): a best-effort publisher there, best effort; reliable
    ones or none, reliable; sensor_data and reliable keep theirs whatever publishes."""
    import rclpy
    from types import SimpleNamespace
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from seg_perception.ros.lifecycle import ManagedSegmentationNode
    cases = [("auto", [ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE], ReliabilityPolicy.BEST_EFFORT),
             ("auto", [ReliabilityPolicy.RELIABLE], ReliabilityPolicy.RELIABLE),
             ("auto", [], ReliabilityPolicy.RELIABLE),
             ("reliable", [ReliabilityPolicy.BEST_EFFORT], ReliabilityPolicy.RELIABLE),
             ("sensor_data", [ReliabilityPolicy.RELIABLE], ReliabilityPolicy.BEST_EFFORT)]
    for i, (qos, offered, chosen) in enumerate(cases):
        monkeypatch.setattr(ManagedSegmentationNode, "get_publishers_info_by_topic", lambda self, topic, offered=offered:
                            [SimpleNamespace(qos_profile=QoSProfile(depth=1, reliability=r)) for r in offered])
        ctx = rclpy.Context()
        rclpy.init(args=["--ros-args", "-p", f"model:={random_model}", "-p", "threads:=1", "-p", f"qos:={qos}",
                         "-p", f"image_topic:=/qos_choice_{i}/image_raw"], context=ctx)
        node = None
        try:
            node = ManagedSegmentationNode(f"seg_qos_choice_{i}", context=ctx)
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            assert node.cameras[0].in_qos.reliability == chosen, (qos, offered)
        finally:
            if node is not None:
                node._release()
                node.destroy_node()
            rclpy.shutdown(context=ctx)


def test_qos_auto_keeps_its_subscription_while_no_publisher_is_there():
    """A camera driver restarting leaves the topic without publishers for a moment: nothing to follow,
    so the subscription is not made again twice for it."""
    from seg_perception.ros.subscription_qos import auto_reliable
    assert auto_reliable([], reliable=True) and not auto_reliable([], reliable=False)
    assert auto_reliable([True, True], reliable=False)
    assert not auto_reliable([True, False], reliable=True)


def test_camera_health_levels_as_an_integrator_reads_them():
    """Found by running the node against a monitor: a wrong topic stayed OK ("waiting") for good, a
    stuck model stayed OK while frames arrived, a model failing on every frame was WARN like bad input
    and was hidden once the camera stopped."""
    from diagnostic_msgs.msg import DiagnosticStatus as D
    base = dict(shown="/cam/image_raw", received=100, processed=90, rejected_in_a_row=0, last_rejection="",
                incompatible_qos="", serving_s=60.0, silent_s=0.05, period_s=0.05, idle_s=0.1,
                processing_s=0.05, missing_now=0, missing=0)

    def health(**kw):
        return camera_health(**{**base, **kw})
    assert health() == (D.OK, "ok")
    # no frame yet: waiting at first, a warning once the wait is long
    assert health(received=0, processed=0, serving_s=3.0) == (D.OK, "waiting for frames on /cam/image_raw")
    level, msg = health(received=0, processed=0, serving_s=12.0, silent_s=None)
    assert level == D.WARN and "no frames on /cam/image_raw in 12 s" in msg
    # frames arrive, nothing finishes: stuck (ERROR), unless the model is that slow
    level, msg = health(idle_s=15.0)
    assert level == D.ERROR and "no frame finished for 15 s while frames arrive" in msg
    assert health(idle_s=15.0, processing_s=2.0)[0] == D.OK  # 10 processing times not passed yet
    assert health(idle_s=15.0, cap_period_s=10.0)[0] == D.OK  # max_rate 0.1: one frame taken every 10 s
    assert health(idle_s=15.0, silent_s=15.0)[0] == D.WARN  # the camera stopped: not the model
    # failing in the node: ERROR, also once the camera has stopped; bad input: WARN
    failed = dict(rejected_in_a_row=5, last_rejection="processing failed: RuntimeError: CUDA error")
    for silent in (0.05, 30.0):
        level, msg = health(silent_s=silent, **failed)
        assert level == D.ERROR and "failed in the node: processing failed: RuntimeError" in msg, msg
    level, msg = health(rejected_in_a_row=5, last_rejection="unsupported encoding 'foo16'")
    assert level == D.WARN and "all rejected" in msg
    assert health(rejected_in_a_row=5, last_rejection="unsupported encoding", silent_s=30.0)[1].startswith(
        "no frames on /cam/image_raw for 30 s")
    assert health(processed=0, idle_s=1.0) == (D.WARN, "frames received but none processed")
    assert health(missing_now=4, missing=9)[0] == D.WARN
    # a driver relaunched with a QoS that cannot match after serving: the mismatch, not "stopped"
    qos = "camera publisher's QoS is incompatible: set qos: sensor_data"
    assert health(incompatible_qos=qos, silent_s=30.0) == (D.WARN, qos)


def test_served_fps_falls_to_zero_when_frames_stop():
    """The rate was (n - 1) / (last - first) over the frames of the last 5 s: 25 FPS stayed 25 with
    the camera stopped for 4 s."""
    done = [100.0 + i / 25 for i in range(125)]  # 5 s at 25 FPS, up to t = 104.96
    assert abs(served_fps(done, 104.97, since_first_s=60.0) - 25.0) < 0.3
    assert 9.0 < served_fps(done, 108.0, since_first_s=60.0) < 11.0  # 2 s of the last 5 had frames
    assert served_fps(done, 110.5, since_first_s=60.0) == 0.0
    # 2 s after the first frame: its rate, not averaged over the 5 s window with the wait before it
    assert abs(served_fps(done[-50:], 104.97, since_first_s=2.0) - 25.0) < 1.0



def test_a_60_hz_camera_reads_as_60_fps():
    """The node kept the last 200 finish times for a 5 s window: every frame of a 60 Hz camera
    served read as 40 FPS, and one drop brought an overload note."""
    from seg_perception.ros.node import CameraStream
    cam = CameraStream("/c/image_raw", False, "/c/")
    for i in range(600):
        cam.done_times.append(100.0 + i / 60)
    assert abs(served_fps(list(cam.done_times), 109.99, since_first_s=60.0) - 60.0) < 0.5


def test_outputs_without_subscribers_are_not_filled():
    """Labels and the drivable mask were filled (two frame-size copies each) and published with no
    subscriber: ~2 ms a 1080p frame per camera for a setup that reads only the grid. The one a
    subscriber has goes out; processed counts the frame either way."""
    import threading
    from types import SimpleNamespace
    from std_msgs.msg import Header
    from sensor_msgs.msg import CameraInfo
    from seg_perception.ros.camera_info_out import CameraInfoFeed
    from seg_perception.ros.node import CameraStream, SegmentationNode
    sent = []

    class Pub:
        def __init__(self, name, subscribers):
            self.name, self.subscribers = name, subscribers

        def get_subscription_count(self):
            return self.subscribers

        def publish(self, m):
            sent.append(self.name)
    cam = CameraStream("/c/image_raw", False, "/c/")
    cam.pub_labels, cam.pub_drivable, cam.pub_overlay = Pub("labels", 0), Pub("drivable", 1), Pub("overlay", 0)
    cam.pub_info, cam.info = Pub("camera_info", 0), CameraInfoFeed(None, "/c/camera_info")
    cam.info.latest = CameraInfo(width=6, height=4)
    node = SimpleNamespace(_slot_lock=threading.Condition())
    res = SimpleNamespace(labels=np.zeros((4, 6), np.uint8), drivable=np.zeros((4, 6), np.uint8), overlay=None,
                          confidence=None, timings={"pre_ms": 1.0, "infer_ms": 2.0, "post_ms": 1.0}, frame_size=(6, 4))
    SegmentationNode._publish_in_order(node, cam, Header(), res, 0.0, 0.0, 0.5)
    assert sent == ["drivable"] and cam.stats.processed == 1 and cam.info.status == "no subscriber"
    cam.pub_info.subscribers = 1  # the same for segmentation/camera_info
    SegmentationNode._publish_in_order(node, cam, Header(), res, 0.0, 0.0, 0.5)
    assert sent == ["drivable", "drivable", "camera_info"] and cam.info.status == "published at 6x4"


def test_max_rate_serves_the_newest_frame_when_the_worker_is_behind():
    """A frame max_rate skipped never replaced the admitted frame still waiting for a busy worker:
    the node served a frame up to a cap period older than the camera's newest. Now the newer frame
    takes the waiting one's turn (the older one counts as skipped); nothing more is served."""
    import threading
    from types import SimpleNamespace
    from std_msgs.msg import Header
    from seg_perception.ros.node import CameraStream, SegmentationNode
    cam = CameraStream("/c/image_raw", False, "/c/")
    cam.cap = RateCap(10.0)
    node = SimpleNamespace(_slot_lock=threading.Condition())

    def frame(t):
        h = Header()
        h.stamp.sec, h.stamp.nanosec = int(t), int(round(t % 1 * 1e9))
        return SimpleNamespace(header=h)
    frames = [frame(100 + i / 30) for i in range(3)]
    for f in frames:  # 30 Hz, no worker free: the first is admitted, the next two come before its turn
        SegmentationNode._on_frame(node, cam, f)
    assert cam.slot[0] is frames[2] and cam.stats.skipped == 2 and cam.stats.dropped == 0
