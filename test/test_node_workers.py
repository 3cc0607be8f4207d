"""workers: 2 over real DDS: two model copies serve overlapping frames, and each camera's
outputs still leave in stamp order with every frame accounted for."""
from __future__ import annotations

import time

import numpy as np

from ros_harness import Harness, raw_image, stamp_key, start_node
from seg_perception.runtime.pipeline import Pipeline


def test_two_workers_overlap_frames_and_publish_in_stamp_order(ros, random_model, tmp_path, val_frames):
    proc = start_node({"model": str(random_model), "threads": 1, "workers": 2, "qos": "reliable",
                       "image_topic": "/workers_camera/image_raw"}, tmp_path / "node.log")
    h = Harness("test_workers_client", image_topic="/workers_camera/image_raw")
    try:
        try:
            h.wait_connected()
        except AssertionError:
            raise AssertionError("node did not start:\n" + proc.output())
        # a burst far faster than one inference: the second worker takes frames the first cannot
        keys = [(1_800_000_000 + i, 1000 * i, f"wk_{i}") for i in range(30)]
        for k in keys:
            h.pub_raw.publish(raw_image(val_frames[k[0] % 6][0], "rgb8", k))
            time.sleep(0.004)
        h.wait_for(lambda: keys[-1] in h.received["labels"], 60, "the newest frame of the burst")
        d = h.settled_diag()
        with h.lock:
            arrived = [k for k in h.received["labels"] if k in keys]
        assert arrived == sorted(arrived), "outputs of one camera must leave in stamp order"
        received, processed = int(d["frames_received"]), int(d["frames_processed"])
        assert processed == len(arrived)
        assert received == processed + int(d["frames_dropped"]) + int(d["frames_late"]) + int(d["frames_rejected"])
        assert d["workers"] == "2"
        per_worker = [int(n) for n in d["frames_per_worker"].split()]
        assert len(per_worker) == 2 and min(per_worker) > 0, d["frames_per_worker"]
        assert int(d["frames_late"]) == 0  # a frame finished early waited for the older one
        assert sum(per_worker) == processed
        assert d["inferences_at_once_max"] == "2"  # the two copies ran at the same time, not in turns
        # both copies of the model give the pipeline's labels
        pipe = Pipeline.from_card(random_model, backend="onnxruntime")
        for k in arrived[-3:]:
            labels = np.frombuffer(bytes(h.received["labels"][k].data), np.uint8).reshape(360, 480)
            assert (labels == pipe(val_frames[k[0] % 6][0]).labels).mean() > 0.999
            assert stamp_key(h.received["labels"][k].header) == k
    finally:
        h.close()
        assert proc.stop() == 0, proc.output()


def test_a_clock_that_goes_back_under_two_workers_is_one_jump_for_consumers(monkeypatch):
    """A bag played in a loop with workers: 2: the old time's last frame (99 s) still in one worker
    while the other takes the loop's first (0 s). The new frame did not wait for the old one (a
    later stamp is no older frame), went out first, and the old one followed: stamps 0, 99, 1 for
    consumers, two jumps back for one loop. Frames are ordered by (clock era, stamp) now: the old
    time's last frame goes out first, then the new time's, one jump, nothing counted late."""
    import threading
    from types import SimpleNamespace
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    from seg_perception.ros import node as node_module
    from seg_perception.ros.node import CameraStream, SegmentationNode

    monkeypatch.setattr(node_module, "ORDER_WAIT_S", 30.0)  # a stalled test thread must not time the wait out
    cam = CameraStream("/camera/image_raw", False)
    published = []
    node = SimpleNamespace(cameras=[cam], max_batch=1, _next_first=0, _slot_lock=threading.Condition(),
                           _stop=threading.Event(), _outputs_open=True, _activation=1, multi=False,
                           context=SimpleNamespace(ok=lambda: True),
                           get_logger=lambda: SimpleNamespace(warning=lambda *a, **k: None),
                           _publish_in_order=lambda c, header, *rest: published.append(header.stamp.sec))
    node._time_went_back = lambda c, stamp: SegmentationNode._time_went_back(node, c, stamp)
    node._finished = lambda c, msg: SegmentationNode._finished(node, c, msg)

    def take(sec):  # a worker takes the camera's newest frame
        cam.slot = (SimpleNamespace(header=Header(stamp=Time(sec=sec))), 0.0)
        return SegmentationNode._take_batch(node)[0][1]

    def publish(msg):  # that worker's frame is done: published (in order), then finished
        SegmentationNode._publish(node, cam, msg, None, 0.0, 0.0, 0.0, 1)
        SegmentationNode._finished(node, cam, msg)

    publish(take(98))
    old = take(99)  # worker 1: the old time's last frame, still running
    new = take(0)   # worker 2: the loop's first frame: the clock went back
    assert cam.stats.time_jumps == 1
    t = threading.Thread(target=publish, args=(new,))  # worker 2 done first
    t.start()
    time.sleep(0.3)
    assert published == [98], published  # it waits for the old time's frame
    publish(old)
    t.join(5)
    assert published == [98, 99, 0], published
    publish(take(1))
    assert published == [98, 99, 0, 1] and cam.stats.time_jumps == 1 and cam.stats.late == 0


def test_a_frame_is_counted_once_when_counting_it_raises(monkeypatch):
    """A frame _process had rejected (its count taken) was rejected again by the worker's catch-all
    when something after the count raised (the log line): 2 rejected for 1 received, and the
    counters no longer added up (received = processed + dropped + rejected + late + skipped).
    The real worker loop, with a stand-in node whose logger fails once."""
    import threading
    from types import SimpleNamespace
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    from seg_perception.ros.node import CameraStream, SegmentationNode

    cam = CameraStream("/camera/image_raw", False)
    calls = []

    def error(message, **kwargs):
        calls.append(message)
        if len(calls) == 1:
            raise RuntimeError("the log is down")
    node = SimpleNamespace(cameras=[cam], max_batch=1, _next_first=0, _slot_lock=threading.Condition(),
                           _stop=threading.Event(), _activation=1, multi=False, max_pixels=1 << 24,
                           pipelines=[None], _last_error={}, _suppressed={},
                           context=SimpleNamespace(ok=lambda: True),
                           get_logger=lambda: SimpleNamespace(error=error, warning=lambda *a, **k: None))
    for name in ("_take_batch", "_process", "_reject", "_finished", "_time_went_back"):
        setattr(node, name, getattr(SegmentationNode, name).__get__(node))
    bad = SimpleNamespace(header=Header(stamp=Time(sec=1)), encoding="no_such_encoding", height=2, width=2,
                          step=6, data=bytes(12), is_bigendian=0)
    cam.slot = (bad, 0.0)
    worker = threading.Thread(target=SegmentationNode._work, args=(node, 0))
    worker.start()
    try:
        end = time.monotonic() + 10
        while (cam.slot is not None or cam.in_flight) and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.5)  # the worker's catch-all, after the frame was finished
    finally:
        node._stop.set()
        with node._slot_lock:
            node._slot_lock.notify_all()
        worker.join(5)
    assert cam.stats.rejected == 1, (cam.stats.rejected, calls)
    assert not cam.in_flight
