"""Live evaluation over real rclpy/DDS: the bag is played into segmentation_node running
as its own process (started by eval-bag, or already running and attached to), and
what comes back must equal the offline pipeline's labels frame for frame.

RANDOM-weights model (conftest.make_random_model): plumbing and equality, not accuracy."""
from __future__ import annotations

import json
import time

import numpy as np

from ros_harness import start_node
from seg_perception.cli import main
from seg_perception.data import bag_io
from seg_perception.evaluation.commands import evaluate
from seg_perception.evaluation.config import EXIT_NODE, EvalConfig
from seg_perception.evaluation.make_bag import make_bag
from test_bags import read_all, stamp

INDICES = [1, 4, 7, 9]  # of the 10 val frames of the camvid_sample fixture


def offline(bag, model, tmp_path):
    cfg = EvalConfig(bag=bag, model=str(model), threads=1, keep_labels=True, progress=False)
    result, _, code = evaluate(cfg, "offline", tmp_path / "offline")
    assert code == 0
    return result


def assert_same_as_offline(live, ref):
    assert live.mode == "live" and live.counts.frames_in == len(INDICES)
    assert live.counts.frames_out == len(INDICES) and live.counts.dropped == 0 and live.counts.rejected == 0
    assert sorted(live.labels_by_stamp) == sorted(ref.labels_by_stamp)
    for s, labels in ref.labels_by_stamp.items():
        np.testing.assert_array_equal(live.labels_by_stamp[s], labels, err_msg=f"stamp {s}")
    np.testing.assert_array_equal(live.confusion.mat, ref.confusion.mat)
    assert live.metrics()["segmentation"] == ref.metrics()["segmentation"]
    assert live.node["received"] == live.node["processed"] == len(INDICES)
    assert len(live.latencies_ms) == len(INDICES) and min(live.latencies_ms) > 0


def test_live_started_node_raw_frames_match_offline(tmp_path, random_model, camvid_sample):
    """rgb8 frames (518 KB each): the started node subscribes with qos 'reliable'."""
    bag = tmp_path / "raw"
    make_bag(bag, root=camvid_sample, fmt="sqlite3", encoding="rgb8", rate=2, indices=INDICES)
    ref = offline(bag, random_model, tmp_path)
    cfg = EvalConfig(bag=bag, model=str(random_model), threads=1, keep_labels=True, progress=False,
                     out_bag=tmp_path / "outputs")
    live, files, code = evaluate(cfg, "live", tmp_path / "live")
    assert code == 0
    assert_same_as_offline(live, ref)
    node_log = (tmp_path / "live" / "node.log").read_text()
    assert "segmenting /camera/image_raw" in node_log
    m = json.loads(files["metrics"].read_text())
    assert m["model"]["node"] == "started" and m["node"]["lost_before_node"] == 0
    assert m["fps"] > 0 and m["latency_ms"]["p95"] >= m["latency_ms"]["p50"] > 0
    # 4 frames recorded at 2 Hz: 1.5 s of recording, played at its own pace
    pb = m["playback"]
    assert pb["asked"] == "recorded timing x1" and pb["recorded_s"] == 1.5 and 1.5 <= pb["played_s"] < 1.7, pb
    assert "real-time factor" in files["report"].read_text()
    # The outputs bag: inputs plus what the node published, labels equal to offline again.
    topics = read_all(tmp_path / "outputs")
    assert len(topics["/camera/image_raw"]) == len(topics["/camera/labels_gt"]) == len(INDICES)
    assert len(topics["/segmentation/overlay"]) == len(INDICES)
    assert len(topics["/segmentation/labels"]) == len(topics["/segmentation/drivable_mask"]) == len(INDICES)
    labels_at = {}
    for t_log, msg in topics["/segmentation/labels"]:
        labels = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
        np.testing.assert_array_equal(labels, ref.labels_by_stamp[stamp(msg)])
        assert t_log > stamp(msg)  # recorded at input time + measured latency
        labels_at[stamp(msg)] = labels
    for _, msg in topics["/segmentation/drivable_mask"]:  # 255 on the card's drivable class (Road = 3)
        mask = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
        np.testing.assert_array_equal(mask, np.where(labels_at[stamp(msg)] == 3, 255, 0))
    # The bag's CameraInfo was played to the node, as `ros2 bag play` would: its segmentation/camera_info
    # (the frames' own calibration, at their size) came back for every frame and is in the outputs bag.
    assert m["model"]["camera_info"] == ("/camera/camera_info played on /camera/camera_info (4 messages); "
                                         "segmentation/camera_info came back for 4 of the 4 frames answered")
    assert "- CameraInfo: /camera/camera_info played on" in files["report"].read_text()
    played = {stamp(msg): msg for _, msg in topics["/camera/camera_info"]}
    assert sorted(stamp(msg) for _, msg in topics["/segmentation/camera_info"]) == sorted(labels_at)
    for t_log, msg in topics["/segmentation/camera_info"]:
        assert (msg.width, msg.height) == (480, 360) and msg.header.frame_id == played[stamp(msg)].header.frame_id
        np.testing.assert_array_equal(msg.k, played[stamp(msg)].k)
        assert t_log > stamp(msg)
    # evaluated again, the outputs bag plays its camera's CameraInfo, not this run's segmentation/camera_info
    from seg_perception.evaluation.out_bag import copy_topics
    with bag_io.BagReader(tmp_path / "outputs") as reader:
        assert copy_topics(reader, "/camera/image_raw", "/camera/labels_gt") == \
            ["/camera/camera_info", "/camera/image_raw", "/camera/labels_gt"]


def test_live_attached_to_running_node_jpeg(tmp_path, random_model, camvid_sample, monkeypatch):
    """A node someone else started (best-effort sensor_data QoS, compressed input): --attach,
    in the environment's ROS domain, with the model named by the node's /diagnostics. The bag's
    CameraInfo goes to the topic the node's diagnostics name (its own camera_info_topic)."""
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(random_model.parent))
    bag = tmp_path / "jpeg"
    make_bag(bag, root=camvid_sample, fmt="mcap", encoding="jpeg", rate=2, indices=INDICES)
    ref = offline(bag, random_model, tmp_path)
    node = start_node({"model": str(random_model), "use_compressed": True, "threads": 1,
                        "image_topic": "/attach_cam/image_raw", "camera_info_topic": "/attach_cam/calib"},
                       tmp_path / "node.log")
    try:
        cfg = EvalConfig(bag=bag, model="", attach=True, keep_labels=True, progress=False,
                         publish_topic="/attach_cam/image_raw/compressed", startup_timeout=90)
        live, _, code = evaluate(cfg, "live", tmp_path / "live")
    finally:
        assert node.stop() == 0, node.output()
    assert code == 0
    assert live.model["node"] == "attached" and live.model["name"] == "random_essnet_d"  # from /diagnostics
    assert_same_as_offline(live, ref)
    assert live.model["camera_info"] == ("/camera/camera_info played on /attach_cam/calib (4 messages); "
                                         "segmentation/camera_info came back for 4 of the 4 frames answered")


def test_an_attached_evaluation_notes_drivable_classes_changed_during_it(ros, tmp_path, random_model, camvid_sample):
    """drivable_classes is a live parameter now: changed on the node while an attached evaluation
    plays, the drivable scores (made with the classes read at the start) would mix two definitions
    without a word. The report says so, a change and a change back included (the end alone looked
    unchanged)."""
    import threading
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from ros_harness import Harness
    bag = tmp_path / "raw"
    make_bag(bag, root=camvid_sample, fmt="mcap", encoding="rgb8", rate=1, indices=INDICES)  # 4 s of frames
    node = start_node({"model": str(random_model), "threads": 1, "image_topic": "/drv_cam/image_raw",
                       "diagnostics_period": 0.5}, tmp_path / "node.log")
    h = Harness("drv_watcher", image_topic="/drv_cam/image_raw")
    setp = h.node.create_client(SetParameters, "/segmentation_node/set_parameters")
    changed = threading.Event()

    def set_drivable(ids):
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=ids)
        fut = setp.call_async(SetParameters.Request(parameters=[Parameter(name="drivable_classes", value=value)]))
        end = time.monotonic() + 20
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.02)

    def change_at_the_first_labels():
        while not changed.is_set():
            with h.lock:
                seen = bool(h.received["labels"])
            if seen:
                set_drivable([0, 3])
                time.sleep(1.5)  # three diagnostics periods with Sky and Road, then back to the card's Road
                set_drivable([3])
                changed.set()
            time.sleep(0.02)
    watcher = threading.Thread(target=change_at_the_first_labels, daemon=True)
    watcher.start()
    try:
        cfg = EvalConfig(bag=bag, model=str(random_model), attach=True, progress=False,
                         publish_topic="/drv_cam/image_raw", startup_timeout=90)
        live, _, code = evaluate(cfg, "live", tmp_path / "live")
    finally:
        changed.set()
        watcher.join(timeout=30)
        h.node.destroy_client(setp)
        h.close()
        assert node.stop() == 0, node.output()
    assert code == 0 and "taken while running: drivable classes ['Sky', 'Road']" in node.output()
    assert "taken while running: drivable classes ['Road']" in node.output()
    note = [n for n in live.notes if "drivable_classes changed during the run" in n]
    assert note and "(Road -> Sky, Road -> Road)" in note[0], live.notes


def test_node_that_cannot_start_is_one_line_exit_4(tmp_path, capsys, random_model):
    bag = tmp_path / "b"
    with bag_io.BagWriter(bag) as w:
        w.write("/camera/image_raw", bag_io.image_msg(np.zeros((8, 8, 3), np.uint8), "rgb8", 1, "c"), 1)
    rc = main(["eval-bag", str(bag), "--mode", "live", "--model", str(random_model), "--param", "qos:=fast",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_NODE and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "segmentation_node exited with code 2" in err and "unknown qos 'fast'" in err
    rc = main(["eval-bag", str(bag), "--attach", "--model", str(random_model), "--publish-topic", "/nobody/here",
               "--startup-timeout", "3", "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_NODE and "no segmentation node answers on /nobody/here" in err and len(err.splitlines()) == 1


def test_frames_the_node_rejects_are_named_not_mistaken_for_stamps(tmp_path, capsys, random_model):
    """Every frame of an encoding the node cannot read: the error names the node's reason."""
    from seg_perception.evaluation.config import EXIT_NO_MATCH
    bag = tmp_path / "depth"
    with bag_io.BagWriter(bag) as w:
        for i in range(3):
            t = 10**9 + i * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(np.zeros((8, 8), np.uint16), "16UC1", t, "c"), t)
    rc = main(["eval-bag", str(bag), "--mode", "live", "--model", str(random_model), "--threads", "1",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_NO_MATCH and len(err.splitlines()) == 1, err
    assert "the node rejected 3 of the 3 frames played: encoding '16UC1' is a depth or measurement image" in err, err


def test_demo_exports_onnx_and_reports(tmp_path, capsys, monkeypatch):
    """The demo on the shipped sample bag, with a stand-in model that has weights but no ONNX file
    (as the trained default model may ship): exported once into the cache, then live."""
    from conftest import make_random_model
    models = tmp_path / "models"
    make_random_model(models, onnx=False)
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(models))
    monkeypatch.setenv("SEG_PERCEPTION_CACHE", str(tmp_path / "cache"))
    rc = main(["demo", "--model", "random_essnet_d", "--out", str(tmp_path / "demo"), "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert list((tmp_path / "cache" / "onnx").glob("random_essnet_d-*/random_essnet_d.onnx"))
    assert "mIoU" in out and "latency p50" in out and "report:" in out
    # live, frames answered per second are capped by the playback (5 Hz): not given as the node's speed
    assert ("FPS answered (at most the playback's rate)" in out) == ("live replay" in out), out
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert m["mode"] == "live" and m["frames"]["in"] == 20
    assert m["frames"]["out"] + m["frames"]["dropped"] + m["frames"]["rejected"] == 20
    assert m["frames"]["rejected"] == 0 and m["frames"]["out"] > 0
    assert (tmp_path / "demo" / "outputs_bag" / "metadata.yaml").is_file()
    # four sample frames are picked before playback; one the node dropped (a loaded machine) has no picture
    pictures = len(list((tmp_path / "demo" / "samples").glob("*.png")))
    assert pictures == 4 or (m["frames"]["dropped"] > 0 and pictures <= 4), (pictures, m["frames"])


def test_bench_node_prints_every_stage(random_model, capsys, camvid_sample):
    """The benchmark command runs end to end (figures are printed, not asserted)."""
    from seg_perception.evaluation.bench_node import bench_node, to_markdown
    r = bench_node(random_model, frames=3, threads=1, data=camvid_sample, log=lambda *_: None)
    assert r["frames_answered"] == 3
    for k in ("backend_infer_ms", "pipeline_pre_ms", "pipeline_post_ms", "node_publish_to_labels_ms"):
        assert r[k]["p95"] >= r[k]["p50"] >= 0
    # the pipeline's own stages may round to 0.00 ms (a frame at the model's size needs no resize:
    # about 10 us, 0.00 on an idle machine, which failed CI once); the inference and the round trip not
    assert r["backend_infer_ms"]["p50"] > 0 and r["pipeline_pre_ms"]["max"] < r["backend_infer_ms"]["p50"]
    # publish -> labels includes the inference: it cannot be shorter than the backend's best run
    assert r["node_publish_to_labels_ms"]["p50"] > 0.5 * r["backend_infer_ms"]["p50"]
    # the overhead is timed inside the node, per frame: conversion, resize, fill and publish take
    # time, and it is part of the processing
    stages = r["node_internal"]["stages_ms_p50"]
    assert stages["processing_ms"] >= stages["inference_ms"] > 0
    assert 0 < r["node_overhead_ms_p50"] < stages["processing_ms"]
    assert "budget" in to_markdown(r)


def test_bench_frames_without_camvid_come_from_the_sample_bag(tmp_path, monkeypatch, camvid_sample):
    """Outside a checkout there is no CamVid: bench-node times the installed sample bag's frames."""
    from seg_perception.evaluation.bench_node import bench_frames
    from seg_perception.paths import sample_bag
    from seg_perception.runtime.frame_sources import read_frames
    monkeypatch.setenv("SEG_PERCEPTION_CAMVID", str(tmp_path / "no_camvid"))
    said = []
    got = bench_frames(25, log=said.append)
    sample = read_frames(sample_bag(), 20).frames
    assert len(got) == 25 and got[0].shape == (360, 480, 3)
    assert np.array_equal(got[0], sample[0][0][:, :, ::-1]) and np.array_equal(got[20], got[0])  # RGB, repeated
    assert len(said) == 1 and "CamVid is not at" in said[0] and "20 frames" in said[0]
    assert len(bench_frames(3, data=camvid_sample, log=said.append)) == 3 and len(said) == 1


def test_sigterm_stops_the_node_it_started(tmp_path, random_model):
    """SIGTERM to eval-bag (a CI timeout, systemd) ended it at once and left the node it had
    started running, orphaned; it now unwinds as Ctrl-C does: the node is stopped, exit 143."""
    import os
    import signal
    import subprocess
    import sys
    import time
    bag = tmp_path / "b"
    with bag_io.BagWriter(bag) as w:  # 60 s of frames at 2 Hz: still playing when the signal comes
        for n in range(120):
            t = 10**9 + n * 5 * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(np.zeros((72, 96, 3), np.uint8), "rgb8", t, "c"), t)
    proc = subprocess.Popen([sys.executable, "-m", "seg_perception.cli", "eval-bag", str(bag), "--mode", "live",
                             "--no-gt", "--model", str(random_model), "--threads", "1", "--out", str(tmp_path / "r")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def children():
        try:
            return [int(c) for c in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
        except OSError:
            return []
    deadline = time.monotonic() + 60
    while not children() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    nodes = children()
    assert nodes, proc.communicate()
    time.sleep(3)  # the node up and frames flowing
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err, (proc.returncode, out, err)
    deadline = time.monotonic() + 15
    while any(os.path.exists(f"/proc/{n}") for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [n for n in nodes if os.path.exists(f"/proc/{n}") and "Z" not in open(f"/proc/{n}/stat").read().split()[2]]
    assert not alive, f"node process(es) {alive} still running"


def test_node_counters_include_late_and_skipped_frames():
    """A frame a second worker finished after a newer one went out is 'late', neither processed nor
    dropped: without it the drain's 'nothing left' check never held with workers:=2, and every such
    run waited out --drain-timeout. The same for frames a node's max_rate skipped."""
    from seg_perception.evaluation.live import _counters, counters_add_up
    values = {"frames_received": "9", "frames_processed": "6", "frames_dropped": "1", "frames_rejected": "0"}
    c = _counters(values)
    assert c["frames_late"] == c["frames_skipped"] == 0  # a node from before the counters
    assert not counters_add_up(c)
    assert counters_add_up(_counters({**values, "frames_late": "2"}))
    assert counters_add_up(_counters({**values, "frames_skipped": "2"}))
    assert counters_add_up(_counters({**values, "frames_late": "1", "frames_skipped": "1"}))
    assert set(_counters({"other": "1"}).values()) == {0}


def test_playback_pace_says_when_the_player_fell_behind():
    from seg_perception.evaluation.live import Published, playback_pace
    frames = [Published(t_pub=10.0 + 0.1 * i, index=i, t_ns=i * 50_000_000) for i in range(11)]  # 20 Hz bag
    pace, note = playback_pace(frames, rate=0.0, speed=1.0)  # asked: 0.5 s, took 1.0 s
    assert pace == {"asked": "recorded timing x1", "recorded_s": 0.5, "played_s": 1.0, "realtime_factor": 0.5,
                    "behind_pct": 100.0, "max_late_ms": 500.0}
    assert "playback fell behind the asked pace (recorded timing x1): 11 frames went out in 1.00 s instead " \
           "of 0.50 s" in note
    assert playback_pace(frames, rate=10.0, speed=1.0)[1] == ""  # 10 Hz asked: on time
    assert playback_pace(frames, rate=0.0, speed=0.5)[1] == ""   # half speed: on time
    assert playback_pace(frames[:1], rate=0.0, speed=1.0) == (None, "")
    # on time overall, but frame 5 went out 0.4 s late and the rest in a burst after it
    stalled = [Published(t_pub=10.0 + (0.05 * i if i < 5 else max(0.65, 0.05 * i)), index=i, t_ns=i * 50_000_000)
               for i in range(21)]
    pace, note = playback_pace(stalled, rate=0.0, speed=1.0)
    assert pace["behind_pct"] == 0.0 and pace["max_late_ms"] == 400.0
    assert note.startswith("playback stalled: frame 5 went out 0.40 s after its time"), note


def test_live_names_repeated_stamps_rejections_and_long_gaps(tmp_path, capsys, random_model):
    """A camera that repeats a stamp, a frame the node refuses and a 30 s pause in the recording:
    live mode announced frames it never played, gave no reason for the rejection (only node.log had
    it) and slept through the pause without a word."""
    t0 = 1_700_000_000 * 10**9
    rng = np.random.default_rng(0)
    bag = tmp_path / "b"
    # (recorded s, header stamp, encoding): frame 1 repeats frame 0's stamp, frame 3 comes 30 s later
    frames = [(0.0, 1, "rgb8"), (0.1, 1, "rgb8"), (0.2, 3, "16UC1"), (30.2, 4, "rgb8"), (30.3, 5, "rgb8")]
    with bag_io.BagWriter(bag) as w:
        for t_s, st, enc in frames:
            img = np.zeros((48, 64), np.uint8) if enc == "16UC1" else rng.integers(0, 255, (48, 64, 3), np.uint8)
            w.write("/camera/image_raw", bag_io.image_msg(img, enc, t0 + st, "c"), t0 + int(t_s * 1e9))
    rc = main(["eval-bag", str(bag), "--mode", "live", "--model", str(random_model), "--threads", "1", "--no-gt",
               "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "playing 4 frames (1 more repeat an earlier frame's header stamp: not played" in out, out
    assert "5 frames in, " in out and "1 rejected, 1 with a repeated header stamp" in out, out
    assert "1 frame repeats an earlier frame's header stamp (the first: 1700000000.000000001): not played" in out
    assert "1 frame rejected by the node: encoding '16UC1' is a depth or measurement image" in out, out
    assert "the recorded time jumps 1 time between frames (by 30.0 s before frame 3): played as a pause of at " \
           "most 5 s" in out and "--rate" in out, out
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["frames"]["out"] + m["frames"]["dropped"] == 3 and m["frames"]["duplicate_stamps"] == 1
    assert any("16UC1" in r for r in m["frames"]["rejected_reasons"]), m["frames"]
    pb = m["playback"]
    assert pb["recorded_s"] == 30.3 and pb["gaps_cut_s"] == 25.0 and 5.0 <= pb["played_s"] < 8, pb
    assert m["model"]["camera_info"] == "none in the bag beside the image topic: not played"


def test_frames_lost_before_the_node_name_the_fast_dds_profile(monkeypatch):
    """Frames DDS lost on the way in were 'dropped' with no hint; bench-camera names the profile."""
    from pathlib import Path
    from seg_perception.evaluation.live import _lost_in_dds_note
    for k in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(k, raising=False)
    note = _lost_in_dds_note(7, 15)
    assert note.startswith("7 of the 15 frames played never reached the node (lost in DDS on the way in; counted "
                           "as dropped): this player, like a camera driver, has no Fast DDS profile"), note
    xml = note.split("FASTRTPS_DEFAULT_PROFILES_FILE=")[1].split(" ")[0]
    assert Path(xml).name == "fastdds_large_frames.xml" and Path(xml).is_file(), xml
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", xml)  # set already: the profile is no remedy to name
    assert _lost_in_dds_note(7, 15).endswith("counted as dropped): a lower --rate or --speed loses fewer")


def test_live_labels_at_the_network_size_are_scored(tmp_path, random_model, camvid_sample):
    """A node with output_size network answers 480x360 labels for 960x720 JPEG frames and ground
    truth: every frame was a gt_size_mismatch and the run exited 3. Now the labels are resized to
    the ground truth (the frame's size, read from the JPEG header) and counted. The bag's 960x720
    CameraInfo (beside the compressed topic's raw one) is played, and the outputs bag holds the
    node's segmentation/camera_info for the 480x360 labels: K and P halved about pixel centres."""
    import cv2
    from seg_perception.data.datasets import camvid
    ds = camvid(camvid_sample, "val")
    bag = tmp_path / "big"
    with bag_io.BagWriter(bag, "mcap") as w:
        w.set_custom_data(bag_io.GT_CLASSES_KEY, json.dumps(list(ds.table.names)))
        for k in range(2):
            rgb, lab = ds.load(k)
            rgb = cv2.resize(rgb, (960, 720), interpolation=cv2.INTER_LINEAR)
            lab = cv2.resize(lab, (960, 720), interpolation=cv2.INTER_NEAREST_EXACT)
            t = 1_700_000_000 * 10**9 + k * 250_000_000
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            w.write(bag_io.DEFAULT_COMPRESSED_TOPIC, bag_io.compressed_msg(buf.tobytes(), "jpeg", t, "cam"), t)
            info = bag_io.camera_info_msg(960, 720, t, "cam")
            info.k[:] = [800, 0, 500, 0, 810, 300, 0, 0, 1]  # off centre: the shift of pixel centres shows
            info.p[:] = [800, 0, 500, -40, 0, 810, 300, 0, 0, 0, 1, 0]
            w.write(bag_io.DEFAULT_INFO_TOPIC, info, t)
            w.write(bag_io.DEFAULT_GT_TOPIC, bag_io.image_msg(lab, "mono8", t, "cam"), t)
    cfg = EvalConfig(bag=bag, model=str(random_model), threads=1, progress=False, keep_labels=True,
                     node_params={"output_size": "network"}, out_bag=tmp_path / "outputs")
    live, files, code = evaluate(cfg, "live", tmp_path / "live")
    assert code == 0, live.notes
    assert {labels.shape for labels in live.labels_by_stamp.values()} == {(360, 480)}
    c = live.counts
    assert c.scored == 2 and c.labels_resized == 2 and c.gt_size_mismatch == 0, live.notes
    m = json.loads(files["metrics"].read_text())
    assert m["segmentation"]["labels_resized"] == 2 and m["segmentation"]["pixels"] > 0
    assert any("labels 480x360, ground truth 960x720" in n for n in live.notes), live.notes
    assert live.model["camera_info"].endswith("came back for 2 of the 2 frames answered"), live.model
    out = read_all(tmp_path / "outputs")["/segmentation/camera_info"]
    assert sorted(stamp(msg) for _, msg in out) == sorted(live.labels_by_stamp)
    half = lambda c: (c + 0.5) / 2 - 0.5  # noqa: E731  (a 960-pixel row's centres on a 480-pixel one)
    for _, msg in out:
        assert (msg.width, msg.height, msg.header.frame_id) == (480, 360, "cam")
        np.testing.assert_allclose(msg.k, [400, 0, half(500), 0, 405, half(300), 0, 0, 1])
        np.testing.assert_allclose(msg.p, [400, 0, half(500), -20, 0, 405, half(300), 0, 0, 0, 1, 0])


def test_the_outputs_bag_holds_the_grid_of_a_ground_enabled_node(tmp_path, random_model, camvid_sample):
    """A node with ground.enable projects during the run, as the bag's CameraInfo is played to it, and
    its drivable grid (the Nav2 costmap's input) goes into the outputs bag beside the labels, each
    frame's with that frame's stamp in the robot's frame, for RViz."""
    bag = tmp_path / "ground"
    make_bag(bag, root=camvid_sample, fmt="mcap", encoding="jpeg", rate=1, indices=INDICES[:2])
    ground = {"ground.enable": True, "ground.use_tf": False, "ground.camera_xyz": "[0.0, 0.0, 1.0]",
              "ground.camera_rpy": "[0.0, 0.35, 0.0]"}
    cfg = EvalConfig(bag=bag, model=str(random_model), threads=1, progress=False, node_params=ground,
                     out_bag=tmp_path / "outputs")
    live, _, code = evaluate(cfg, "live", tmp_path / "live")
    assert code == 0 and live.counts.frames_out >= 1, live.notes
    topics = read_all(tmp_path / "outputs")
    answered = sorted(stamp(msg) for _, msg in topics["/segmentation/labels"])
    grids = topics["/segmentation/drivable_grid"]
    assert sorted(stamp(msg) for _, msg in grids) == answered  # (the first frame builds the lookups: a busy
    for t_log, msg in grids:                                   # machine may drop the second)
        cells = np.asarray(msg.data)
        assert msg.header.frame_id == "base_footprint" and t_log > stamp(msg)
        assert np.isin(cells, [-1, 0, 100]).all() and (cells >= 0).sum() > 100, np.unique(cells)


def test_live_names_a_camera_info_of_another_resolution(tmp_path, random_model, camvid_sample):
    """A bag whose CameraInfo is another resolution's (640x480 for 480x360 frames): the node sends
    no segmentation/camera_info for its frames, and the report says so, with the node's reason."""
    from seg_perception.data.datasets import camvid
    ds = camvid(camvid_sample, "val")
    bag = tmp_path / "wrong_info"
    with bag_io.BagWriter(bag, "mcap") as w:
        for k in range(2):
            rgb, _ = ds.load(k)
            t = 1_700_000_000 * 10**9 + k * 250_000_000
            w.write(bag_io.DEFAULT_IMAGE_TOPIC, bag_io.image_msg(rgb, "rgb8", t, "cam"), t)
            w.write(bag_io.DEFAULT_INFO_TOPIC, bag_io.camera_info_msg(640, 480, t, "cam"), t)
    cfg = EvalConfig(bag=bag, model=str(random_model), threads=1, progress=False)
    live, files, code = evaluate(cfg, "live", tmp_path / "live")
    assert code == 0 and live.counts.frames_out == 2, live.notes
    assert live.model["camera_info"].endswith("came back for 0 of the 2 frames answered"), live.model
    warning = next(n for n in live.notes if "segmentation/camera_info came back" in n)
    assert "frame is 480x360 but CameraInfo is 640x480" in warning, warning
    assert warning in files["report"].read_text()


def test_live_single_answer_and_an_undecodable_one(tmp_path, random_model, camvid_sample, monkeypatch):
    """Two frames answered, the first with labels that do not decode: it is counted (undecodable),
    not in latency, so in = out + dropped + rejected + undecodable; one decoded answer gives no FPS
    (was 0.0)."""
    import seg_perception.evaluation.live as live_mod
    real = live_mod.decode_labels
    calls = []

    def decode_first_fails(msg):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("label image has encoding 'rgb8'; expected mono8 class ids")
        return real(msg)
    monkeypatch.setattr(live_mod, "decode_labels", decode_first_fails)
    bag = tmp_path / "jpeg"
    make_bag(bag, root=camvid_sample, fmt="mcap", encoding="jpeg", rate=4, indices=[0, 1])
    cfg = EvalConfig(bag=bag, model=str(random_model), threads=1, progress=False)
    live, files, code = evaluate(cfg, "live", tmp_path / "live")
    c = live.counts
    assert code == 0 and c.frames_in == 2 and c.frames_out == 1 and c.undecodable == 1, live.notes
    assert c.frames_in == c.frames_out + c.dropped + c.rejected + c.undecodable
    assert len(live.latencies_ms) == 1 and live.fps is None
    m = json.loads(files["metrics"].read_text())
    assert m["fps"] is None and m["frames"]["undecodable"] == 1
    assert "1 undecodable" in live.summary_line() and "FPS n/a" in live.summary_line()
    assert "| n/a |" in files["report"].read_text()


def test_two_runs_at_once_never_share_a_ros_domain():
    """Benches and live evaluations drew a private domain at random (1 in 100 for two at once to share
    one and answer each other's frames), and test sessions took theirs from the pid. A domain is now
    held (an flock) while in use: another process draws another, and it is free again when the
    holder ends, however it ends."""
    import os
    import subprocess
    import sys
    import conftest
    from seg_perception.runtime import node_process
    if getattr(conftest, "_SESSION_DOMAIN", None):  # drawn by conftest (not a ROS_DOMAIN_ID set beforehand)
        assert node_process.hold_domain([int(os.environ["ROS_DOMAIN_ID"])]) is None  # this session's own
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from seg_perception.runtime.node_process "
                              "import private_domain; print(private_domain(), flush=True); time.sleep(120)"],
                             stdout=subprocess.PIPE, text=True, cwd=conftest.REPO)
    try:
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"the child drew no domain: {line!r}"
        theirs = int(line)
        assert theirs in node_process.PRIVATE_DOMAINS
        assert node_process.hold_domain([theirs]) is None
        mine = [node_process.private_domain() for _ in range(60)]
        assert theirs not in mine and str(mine[-1]) != os.environ["ROS_DOMAIN_ID"]
        assert all(a != b for a, b in zip(mine, mine[1:])), mine  # the one given up is not drawn again at once
        assert node_process.hold_domain([mine[-1]]) is None  # held by this process until the next draw
    finally:
        child.kill()
        child.wait()
    again = node_process.hold_domain([theirs])  # a SIGKILLed holder leaves it free
    assert again is not None
    os.close(again[1])


def test_a_domain_id_another_run_holds_is_refused(tmp_path, capsys, random_model):
    """--domain-id N was taken as given, unheld: an evaluation on the domain a bench (or another
    evaluation) was using played its frames to that run's node, and answers mixed. Now it is held
    like a drawn one, and refused in one line while another run holds it."""
    import os
    import subprocess
    import sys
    import conftest
    from seg_perception.runtime import node_process
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from seg_perception.runtime.node_process "
                              "import private_domain; print(private_domain(), flush=True); time.sleep(120)"],
                             stdout=subprocess.PIPE, text=True, cwd=conftest.REPO)
    bag = tmp_path / "b"
    with bag_io.BagWriter(bag) as w:
        w.write("/camera/image_raw", bag_io.image_msg(np.zeros((8, 8, 3), np.uint8), "rgb8", 1, "c"), 1)
    try:
        theirs = int(child.stdout.readline())
        rc = main(["eval-bag", str(bag), "--mode", "live", "--model", str(random_model), "--domain-id", str(theirs),
                   "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert f"ROS domain {theirs} is held by a seg-perception run on this machine" in err and "--domain-id" in err
        assert not (tmp_path / "r" / "node.log").exists()  # refused before a node was started
    finally:
        child.kill()
        child.wait()
    # free again: asked for, it is held by this process (another run would be refused) until the next draw
    assert node_process.private_domain(theirs) == theirs
    assert node_process.private_domain(theirs) == theirs  # asked again: this process's own, kept
    assert node_process.hold_domain([theirs]) is None and node_process.domain_held(theirs)
    other = node_process.private_domain()
    assert other != theirs and not node_process.domain_held(theirs)
    assert str(other) != os.environ["ROS_DOMAIN_ID"]


def test_a_node_on_a_private_domain_keeps_it_held_while_it_runs(random_model, tmp_path):
    """The run's lock alone freed the domain when the run ended, even where its node lived on (a bench
    killed with SIGKILL leaves an orphan node): the node shares the hold until it ends."""
    import os
    from seg_perception.runtime import node_process
    from seg_perception.runtime.node_process import NodeProcess, private_domain, ros_env
    domain = private_domain()
    node = NodeProcess({"model": str(random_model), "threads": 1, "backend": "onnxruntime", "precision": "fp32"},
                       tmp_path / "node.log", env=ros_env(domain))
    try:
        other = private_domain()  # this process gives the first domain up: its node still holds it
        assert other != domain and node.running(), node.output()
        assert node_process.hold_domain([domain]) is None
    finally:
        node.stop()
    freed = node_process.hold_domain([domain])
    assert freed is not None
    os.close(freed[1])
