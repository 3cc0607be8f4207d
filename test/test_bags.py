"""Bags in, bags out: make-bag in both storage formats and three encodings, offline
evaluation against metrics computed here independently (plain numpy on frames decoded
here), reports, and bad input.

The model has RANDOM weights (conftest.make_random_model): these tests check plumbing and
that every number equals an independent computation, not accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from seg_perception.cli import main
from seg_perception.data import bag_io
from seg_perception.evaluation.commands import evaluate
from seg_perception.evaluation.config import EvalConfig
from seg_perception.evaluation.make_bag import make_bag
from seg_perception.paths import sample_bag
from seg_perception.runtime.pipeline import Pipeline

SAMPLE = sample_bag()
INDICES = [0, 5, 9]  # of the 10 val frames of the camvid_sample fixture
T0 = 1_700_000_000 * 10**9
TS = get_typestore(Stores.ROS2_JAZZY)  # read back with rosbags directly, not with bag_io


def read_all(path: Path):
    """{topic: [(log time, decoded msg)]}, read with rosbags' own Reader."""
    out = {}
    with Reader(path) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, TS.deserialize_cdr(raw, conn.msgtype)))
    return out


def stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def pipe(random_model):
    return Pipeline.from_card(random_model, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def dataset(camvid_sample):
    from seg_perception.data.datasets import camvid
    return camvid(camvid_sample, "val")


def independent_metrics(preds, gts, n=11, drivable=(3,)):
    """mIoU / pixel accuracy / per-class IoU / drivable IoU, precision, recall with plain numpy."""
    tp = np.zeros(n)
    fp = np.zeros(n)
    fn = np.zeros(n)
    correct = total = 0
    d = dict(tp=0, fp=0, fn=0)
    for p, g in zip(preds, gts):
        valid = g < n
        p, g = p[valid].astype(int), g[valid].astype(int)
        correct += int((p == g).sum())
        total += g.size
        for c in range(n):
            tp[c] += np.sum((p == c) & (g == c))
            fp[c] += np.sum((p == c) & (g != c))
            fn[c] += np.sum((p != c) & (g == c))
        pd_, gd = np.isin(p, drivable), np.isin(g, drivable)
        d["tp"] += int((pd_ & gd).sum())
        d["fp"] += int((pd_ & ~gd).sum())
        d["fn"] += int((~pd_ & gd).sum())
    denom = tp + fp + fn
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    return {"miou": round(100 * float(np.nanmean(iou)), 2), "pixel_accuracy": round(100 * correct / total, 2),
            "iou": [None if np.isnan(v) else round(100 * float(v), 2) for v in iou],
            "drivable_iou": round(100 * d["tp"] / (d["tp"] + d["fp"] + d["fn"]), 2),
            "drivable_precision": round(100 * d["tp"] / (d["tp"] + d["fp"]), 2) if d["tp"] + d["fp"] else None,
            "drivable_recall": round(100 * d["tp"] / (d["tp"] + d["fn"]), 2)}


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "jpeg"])
def test_make_bag_then_offline_metrics_match_independent(tmp_path, fmt, encoding, random_model, pipe, dataset,
                                                         camvid_sample):
    bag = tmp_path / "bag"
    r = make_bag(bag, root=camvid_sample, fmt=fmt, encoding=encoding, rate=10, indices=INDICES)
    assert r.frames == 3
    storage = list(bag.glob("*.mcap" if fmt == "mcap" else "*.db3"))
    assert len(storage) == 1 and (bag / "metadata.yaml").is_file()

    topics = read_all(bag)
    image_topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    assert set(topics) == {image_topic, "/camera/camera_info", "/camera/labels_gt"}
    preds, gts = [], []
    for n, idx in enumerate(INDICES):
        want = T0 + n * 10**8  # 10 Hz
        msgs = {t: topics[t][n] for t in topics}
        for t, (logtime, msg) in msgs.items():
            assert logtime == want and stamp(msg) == want and msg.header.frame_id == "camera", t
        rgb, label = dataset.load(idx)
        img = msgs[image_topic][1]
        if encoding == "jpeg":
            assert img.format == "jpeg"
            bgr = cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_COLOR)
            assert np.abs(bgr.astype(int) - rgb[..., ::-1]).mean() < 4  # JPEG quality 90
            preds.append(pipe(bgr, "bgr").labels)
        else:
            assert (img.encoding, img.height, img.width, img.step) == (encoding, 360, 480, 480 * 3)
            arr = np.frombuffer(img.data, np.uint8).reshape(360, 480, 3)
            np.testing.assert_array_equal(arr, rgb if encoding == "rgb8" else rgb[..., ::-1])
            preds.append(pipe(rgb).labels)
        gt = msgs["/camera/labels_gt"][1]
        assert gt.encoding == "mono8" and (gt.height, gt.width) == label.shape
        np.testing.assert_array_equal(np.frombuffer(gt.data, np.uint8).reshape(label.shape), label)
        gts.append(label)
        info = msgs["/camera/camera_info"][1]
        assert (info.width, info.height) == (480, 360) and info.k[0] > 0

    cfg = EvalConfig(bag=bag, model=str(random_model), threads=1, keep_labels=True, progress=False)
    result, files, code = evaluate(cfg, "offline", tmp_path / "report")
    assert code == 0
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert m["frames"] == {"in": 3, "out": 3, "dropped": 0, "rejected": 0, "corrupt": 0, "duplicate_stamps": 0}
    for n, p in enumerate(preds):  # frame for frame, by stamp
        np.testing.assert_array_equal(result.labels_by_stamp[T0 + n * 10**8], p)
    ref = independent_metrics(preds, gts)
    seg = m["segmentation"]
    assert seg["frames_scored"] == 3
    assert seg["miou"] == pytest.approx(ref["miou"], abs=0.011)
    assert seg["pixel_accuracy"] == pytest.approx(ref["pixel_accuracy"], abs=0.011)
    assert list(seg["per_class_iou"].values()) == pytest.approx(ref["iou"], abs=0.011)
    assert m["drivable"]["classes"] == ["Road"]
    assert m["drivable"]["iou"] == pytest.approx(ref["drivable_iou"], abs=0.011)
    assert m["drivable"]["recall"] == pytest.approx(ref["drivable_recall"], abs=0.011)
    assert m["drivable"]["precision"] == pytest.approx(ref["drivable_precision"], abs=0.011)
    cm = np.array(m["confusion_matrix"]["pixels"])
    assert cm.shape == (11, 11) and cm.sum() == sum(int((g < 11).sum()) for g in gts)
    assert m["latency_ms"]["p50"] > 0 and m["fps"] > 0
    if fmt == "mcap" and encoding == "jpeg":  # the report's files, once
        for name in ("report.md", "confusion_matrix.png", "per_class_iou.png", "latency_hist.png"):
            assert (tmp_path / "report" / name).stat().st_size > 1000, name
        side = cv2.imread(str(files["sample_0"]))
        assert side.shape[0] == 360 and side.shape[1] >= 3 * 480  # input | overlay | ground truth
        md = (tmp_path / "report" / "report.md").read_text()
        assert f"mIoU **{seg['miou']:.2f}%**" in md


def test_metadata_is_what_ros2_jazzy_reads(tmp_path, camvid_sample):
    """`ros2 bag info` is not installable here: check the fields rosbag2 (Jazzy) decodes instead."""
    bag = tmp_path / "bag"
    make_bag(bag, root=camvid_sample, encoding="jpeg", indices=[1], compress=True)
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == [p.name for p in bag.glob("*.mcap")]
    assert info["message_count"] == 3 and info["duration"]["nanoseconds"] == 0
    for t in info["topics_with_message_count"]:
        meta = t["topic_metadata"]
        assert meta["serialization_format"] == "cdr" and meta["type_description_hash"].startswith("RIHS01_")
        assert isinstance(meta["offered_qos_profiles"], list)  # version 9: a YAML sequence
    for key in ("compression_format", "compression_mode", "files", "custom_data", "ros_distro"):
        assert key in info
    with Reader(bag) as r:  # zstd chunks read back
        assert r.message_count == 3


def test_sample_bag_is_small_and_complete():
    assert SAMPLE == Path(__file__).resolve().parent / "data" / "camvid_val_sample"  # ships in test/data
    assert bag_io.bag_size(SAMPLE) <= 5 * 1024 * 1024
    topics = read_all(SAMPLE)
    imgs = topics["/camera/image_raw/compressed"]
    gts = topics["/camera/labels_gt"]
    assert len(imgs) == len(gts) == len(topics["/camera/camera_info"]) == 20
    assert [stamp(m) for _, m in imgs] == [stamp(m) for _, m in gts]


def test_sample_bag_spans_the_val_sequence(camvid_full):
    """The first and the last CamVid val frame are in it."""
    from seg_perception.data.datasets import camvid
    val = camvid(camvid_full, "val")
    topics = read_all(SAMPLE)
    first = cv2.imdecode(np.frombuffer(topics["/camera/image_raw/compressed"][0][1].data, np.uint8),
                         cv2.IMREAD_COLOR)
    last_gt = np.frombuffer(topics["/camera/labels_gt"][-1][1].data, np.uint8).reshape(360, 480)
    assert np.abs(first.astype(int) - val.load(0)[0][..., ::-1]).mean() < 4
    np.testing.assert_array_equal(last_gt, val.load(len(val) - 1)[1])


# --------------------------------------------------------------------- bad input
def small_bag(path: Path, frames, fmt="mcap", gt_shape=None, gt_shift_ns=0, corrupt_at=None, encoding="rgb8"):
    """A hand-made bag of small random frames; optional damage."""
    rng = np.random.default_rng(0)
    with bag_io.BagWriter(path, fmt) as w:
        for n in range(frames):
            t = T0 + n * 10**8
            if n == corrupt_at:
                w.write_raw("/camera/image_raw", bag_io.IMAGE, b"\x00\x01\x00\x00\x07", t)
            else:
                img = rng.integers(0, 255, (48, 64, 3), np.uint8)
                w.write("/camera/image_raw", bag_io.image_msg(img, encoding, t, "cam"), t)
            gt = rng.integers(0, 12, gt_shape or (48, 64), np.uint8)
            w.write("/camera/labels_gt", bag_io.image_msg(gt, "mono8", t + gt_shift_ns, "cam"), t)
    return path


def run_cli(capsys, *args):
    rc = main(list(map(str, args)))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_ground_truth_of_other_classes_is_refused(tmp_path, capsys, random_model, camvid_sample):
    """make-bag states what its label ids mean; a model of another class table is refused before
    it scores them (ids 0-3 of a user's 4 classes scored as CamVid's Sky..Pavement mean nothing)."""
    bag = tmp_path / "bag"
    make_bag(bag, root=camvid_sample, encoding="rgb8", indices=[1])
    meta = bag / "metadata.yaml"
    stated = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert json.loads(stated[bag_io.GT_CLASSES_KEY])[:2] == ["Sky", "Building"]
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "ok")
    assert rc == 0, err
    mine = json.dumps(["road", "sidewalk", "person", "other"])
    info = yaml.safe_load(meta.read_text())
    info["rosbag2_bagfile_information"]["custom_data"][bag_io.GT_CLASSES_KEY] = mine  # as a 4-class make-bag states
    meta.write_text(yaml.safe_dump(info))
    assert json.loads(bag_io.BagReader(bag).custom_data[bag_io.GT_CLASSES_KEY]) == json.loads(mine)
    for mode in ("offline", "live"):
        rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--mode", mode, "--out", tmp_path / mode)
        line = one_line_error(err)
        assert rc == 2 and "has 4 classes (road, sidewalk, person, other)" in line and "--model" in line, line
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "nogt")
    assert rc == 0, err
    # into the folder of the run with ground truth: its accuracy figures do not stay beside this report
    assert (tmp_path / "ok" / "confusion_matrix.png").is_file()
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "ok")
    assert rc == 0 and not (tmp_path / "ok" / "confusion_matrix.png").exists(), err
    assert not (tmp_path / "ok" / "per_class_iou.png").exists() and (tmp_path / "ok" / "report.md").is_file()
    # demo names the same way out, and has it
    demo = ["demo", "--bag", bag, "--model", random_model, "--mode", "offline", "--out", tmp_path / "demo"]
    rc, out, err = run_cli(capsys, *demo)
    assert rc == 2 and "--no-gt to measure speed only" in one_line_error(err)
    rc, out, err = run_cli(capsys, *demo, "--no-gt")
    assert rc == 0, err
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "input | prediction overlay\n" in report and "| ground truth" not in report


def test_a_report_on_frames_the_model_trained_on_says_so(tmp_path, capsys, random_model, camvid_sample):
    """make-bag records the dataset and split of its ground truth; scored by a model whose card
    trained on that split (the shipped ones trained on train+val, the sample bag is val frames),
    the report, metrics.json and the summary line say the figures are not held out."""
    import shutil
    from seg_perception.card import load_card
    bag = tmp_path / "bag"
    make_bag(bag, root=camvid_sample, encoding="rgb8", indices=[1])
    stated = bag_io.BagReader(bag).custom_data[bag_io.GT_SOURCE_KEY]
    assert json.loads(stated) == {"dataset": "camvid", "split": "val", "data": str(camvid_sample.resolve())}
    folder = tmp_path / "model"
    shutil.copytree(random_model.parent, folder)
    card = load_card(folder / random_model.name)
    data = f"--data {camvid_sample}"
    for split, command, held_in in (("train", data, False), ("train+val", "--data /elsewhere/camvid", False),
                                    ("train+val", data, True)):
        card.training = dict(card.training, dataset="camvid", train_split=split, command=f"seg-perception train {command}",
                             recipe_run={"train_split": "train"})
        card.metrics = dict(card.metrics, val_miou=61.5, val_miou_not_held_out=80.0)
        card.save(card.path)
        out = tmp_path / split
        rc, said, err = run_cli(capsys, "eval-bag", bag, "--model", card.path, "--mode", "offline", "--out", out)
        assert rc == 0, err
        report = (out / "report.md").read_text()
        metrics = json.loads((out / "metrics.json").read_text())["segmentation"]
        assert ("**Not held out:** the ground truth is CamVid val" in report) == held_in, report
        assert ("(frames the model trained on: not held out)" in said) == held_in, said
        assert ("not_held_out" in metrics) == held_in
    assert "from the same recipe trained on train: 61.50" in metrics["not_held_out"]
    # a bag that does not say where its frames come from, and a card that does not say what it trained on
    meta = bag / "metadata.yaml"
    info = yaml.safe_load(meta.read_text())
    del info["rosbag2_bagfile_information"]["custom_data"][bag_io.GT_SOURCE_KEY]
    meta.write_text(yaml.safe_dump(info))
    card.training = {"note": "hand-written"}
    card.save(card.path)
    rc, said, err = run_cli(capsys, "eval-bag", bag, "--model", card.path, "--mode", "offline", "--out", tmp_path / "o")
    assert rc == 0 and "not held out" not in said, err


def test_shipped_sample_bag_states_its_classes():
    """The demo's sample bag says its ground truth is CamVid's, so a model of other classes
    (a user's own) is refused by demo and eval-bag instead of scored id by id."""
    from seg_perception.data.classes import CAMVID
    from seg_perception.paths import sample_bag
    stated = bag_io.BagReader(sample_bag()).custom_data[bag_io.GT_CLASSES_KEY]
    assert tuple(json.loads(stated)) == CAMVID.names
    assert json.loads(bag_io.BagReader(sample_bag()).custom_data[bag_io.GT_SOURCE_KEY])["split"] == "val"


def test_missing_and_truncated_bags(tmp_path, capsys, random_model):
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "nope", "--model", random_model, "--out", tmp_path / "r")
    assert rc == 2 and "not found" in one_line_error(err)
    # Cut in half: nothing of the one (mcap) chunk reads. A cut after whole chunks is evaluated up
    # to the cut, and so is every intact message of an sqlite3 file (test_damaged_bags.py).
    bag = small_bag(tmp_path / "cut_mcap", 4, "mcap")
    f = next(bag.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and "cannot open bag" in line and "nothing in it can be read" in line, line
    assert "cannot be read past byte" in line  # where it breaks off
    bag = small_bag(tmp_path / "cut_sqlite3", 4, "sqlite3")
    f = next(bag.glob("*.db3"))
    f.write_bytes(f.read_bytes()[:4096])  # the first page only: no messages
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and "nothing in it can be read" in line and "ends after page 1 of" in line, line
    f.unlink()  # metadata.yaml without the file it lists
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and f"lists {f.name}, not in the folder" in line, line
    rc, out, err = run_cli(capsys, "eval-bag", bag / "metadata.yaml", "--model", random_model, "--out", tmp_path / "r")
    assert rc == 2 and f"lists {f.name}, not in the folder" in one_line_error(err)  # metadata.yaml means its folder
    (tmp_path / "empty").mkdir()
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "empty", "--model", random_model)
    assert rc == 2 and "not a rosbag2 folder" in one_line_error(err)


def test_missing_topic_lists_what_the_bag_holds(tmp_path, capsys, random_model):
    bag = small_bag(tmp_path / "b", 2)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--image-topic", "/front/image")
    line = one_line_error(err)
    assert rc == 2 and "topic /front/image is not in bag" in line
    assert "/camera/image_raw (sensor_msgs/msg/Image, 2 msgs)" in line and "/camera/labels_gt" in line
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--gt-topic", "/gt")
    assert rc == 2 and "ground-truth topic /gt is not in bag" in one_line_error(err)


def test_corrupt_message_and_bad_encoding_are_counted_skips(tmp_path, capsys, random_model):
    bag = small_bag(tmp_path / "b", 4, corrupt_at=1)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "1 frame message on /camera/image_raw cannot be deserialised" in one_line_error(err)  # partial
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["frames"]["in"] == 4 and m["frames"]["corrupt"] == 1 and m["frames"]["out"] == 3
    assert m["segmentation"]["frames_scored"] == 3 and m["segmentation"]["gt_without_frame"] == 1
    assert "1 corrupt" in out and "cannot deserialise" in out
    bag2 = small_bag(tmp_path / "b2", 2, encoding="nv12")
    rc, out, err = run_cli(capsys, "eval-bag", bag2, "--model", random_model, "--out", tmp_path / "r2")
    assert rc == 3 and "none of the 2 frames produced a prediction (2 rejected" in one_line_error(err)
    assert "unsupported encoding 'nv12'" in out


def test_ground_truth_of_wrong_size_or_stamp(tmp_path, capsys, random_model):
    bag = small_bag(tmp_path / "size", 2, gt_shape=(24, 32))
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 3 and "2 ground-truth images differ in size from their frame" in line
    assert "is 32x24 but the frame is 64x48" in out
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["segmentation"]["gt_size_mismatch"] == 2 and m["frames"]["out"] == 2
    bag = small_bag(tmp_path / "shift", 2, gt_shift_ns=1)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2")
    assert rc == 3 and "2 frames have no ground truth with their header stamp" in one_line_error(err)
    # Timing-only runs need no ground truth at all.
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r3", "--no-gt")
    assert rc == 0 and "segmentation" not in json.loads((tmp_path / "r3" / "metrics.json").read_text())


def test_ground_truth_folder_by_stamp_equals_topic(tmp_path, random_model):
    bag = small_bag(tmp_path / "b", 3)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for _, msg in read_all(bag)["/camera/labels_gt"]:
        arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
        cv2.imwrite(str(gt_dir / f"{stamp(msg)}.png"), arr)
    by_topic, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), progress=False), "offline", tmp_path / "a")
    by_dir, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=gt_dir, progress=False),
                            "offline", tmp_path / "b2")
    assert by_dir.counts.scored == 3 and "matched by stamp" in by_dir.gt_source
    np.testing.assert_array_equal(by_dir.confusion.mat, by_topic.confusion.mat)


def test_output_bag_holds_inputs_and_predictions(tmp_path, random_model):
    bag = small_bag(tmp_path / "b", 3, fmt="sqlite3")
    cfg = EvalConfig(bag=bag, model=str(random_model), keep_labels=True, out_bag=tmp_path / "out",
                     out_bag_format="sqlite3", progress=False)
    result, _, code = evaluate(cfg, "offline", tmp_path / "r")
    assert code == 0
    topics = read_all(tmp_path / "out")
    assert {"/camera/image_raw", "/camera/labels_gt", "/segmentation/labels", "/segmentation/drivable_mask",
            "/segmentation/overlay"} <= set(topics)
    for t_log, msg in topics["/segmentation/labels"]:
        assert t_log >= stamp(msg)  # recorded after its input
        labels = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)
        np.testing.assert_array_equal(labels, result.labels_by_stamp[stamp(msg)])
    assert len(topics["/segmentation/overlay"]) == 3 and topics["/segmentation/overlay"][0][1].encoding == "rgb8"
    times = [t for msgs in topics.values() for t, _ in msgs]
    assert len(times) == 15


def test_make_bag_refuses_to_overwrite(tmp_path, capsys, camvid_sample):
    (tmp_path / "bag").mkdir()
    rc, out, err = run_cli(capsys, "make-bag", "--data", camvid_sample, "--out", tmp_path / "bag", "--frames", 1)
    assert rc == 2 and "exists already" in one_line_error(err)


def test_ros1_bag_is_named_and_the_conversion_it_suggests_works(tmp_path, capsys, random_model):
    import shlex
    import subprocess
    import sys
    from rosbags.rosbag1 import Writer as Ros1Writer
    ts = get_typestore(Stores.ROS1_NOETIC)
    Image, Header = ts.types["sensor_msgs/msg/Image"], ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    with Ros1Writer(tmp_path / "cam.bag") as w:
        c = w.add_connection("/camera/image_raw", Image.__msgtype__, typestore=ts)
        for n in range(3):
            msg = Image(header=Header(seq=n, stamp=Time(sec=1_700_000_000 + n, nanosec=5), frame_id="cam"),
                        height=36, width=48, encoding="rgb8", is_bigendian=0, step=48 * 3,
                        data=np.full(36 * 48 * 3, 40 * n, np.uint8))
            w.write(c, (1_700_000_000 + n) * 10**9, ts.serialize_ros1(msg, Image.__msgtype__))
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "cam.bag", "--model", random_model, "--no-gt")
    line = one_line_error(err)
    assert rc == 2 and "is a ROS 1 bag" in line
    command = shlex.split(line.split("'")[1])
    assert Path(command[0]).name == "rosbags-convert"
    if command[0] == "rosbags-convert":  # on PATH; else the message gave where pip put it
        command[0] = str(Path(sys.executable).parent / "rosbags-convert")
    subprocess.run(command, check=True, capture_output=True)
    with bag_io.BagReader(tmp_path / "cam_ros2") as r:
        got = [(m.msg.header.stamp.sec, m.msg.width, int(m.msg.data[0])) for m in r.messages(["/camera/image_raw"])]
    assert got == [(1_700_000_000 + n, 48, 40 * n) for n in range(3)]


def test_frame_without_ground_truth_is_named_in_the_output(tmp_path, capsys, random_model):
    rng = np.random.default_rng(0)
    with bag_io.BagWriter(tmp_path / "b", "mcap") as w:
        for n in range(3):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            if n != 1:
                w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", t, "c"), t)
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "b", "--model", random_model, "--out", tmp_path / "r")
    assert rc == 0 and "on 2 frames" in out, (out, err)
    assert "[eval-bag] note: 1 frame has no ground truth of the same header stamp: not scored" in out


@pytest.mark.parametrize("names", [
    ["frame_{}.png".format(i) for i in range(1, 11)],    # frame_10 would sort before frame_2 as text
    ["{:06d}.png".format(i) for i in range(10)],          # zero-padded frame numbers, not stamps
    ["{}.png".format(i) for i in range(1, 11)],           # consecutive numbers: frames, not stamps 1 ns apart
])
def test_ground_truth_folder_in_frame_order(tmp_path, random_model, names):
    """One PNG per frame, named by frame number: matched in number order, not text order."""
    bag = small_bag(tmp_path / "b", 10)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for name, (_, msg) in zip(names, read_all(bag)["/camera/labels_gt"]):
        cv2.imwrite(str(gt_dir / name), np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width))
    by_topic, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), progress=False), "offline", tmp_path / "a")
    by_dir, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=gt_dir, progress=False),
                            "offline", tmp_path / "b2")
    assert by_dir.counts.scored == 10 and "order" in by_dir.gt_source, by_dir.gt_source
    np.testing.assert_array_equal(by_dir.confusion.mat, by_topic.confusion.mat)


def test_ground_truth_all_ignore_gives_strict_json(tmp_path, capsys, random_model):
    """Frames whose ground truth is all 'ignore' have no mIoU: metrics.json says null, not NaN
    (which is not JSON: jq and browsers refuse the whole file)."""
    bag = tmp_path / "b"
    with bag_io.BagWriter(bag, "mcap") as w:
        for n in range(2):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(np.full((48, 64, 3), 90, np.uint8), "rgb8", t, "cam"), t)
            w.write("/camera/labels_gt", bag_io.image_msg(np.full((48, 64), 11, np.uint8), "mono8", t, "cam"), t)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    text = (tmp_path / "r" / "metrics.json").read_text()

    def refuse(name):
        raise ValueError(f"{name} in metrics.json")
    m = json.loads(text, parse_constant=refuse)
    assert m["segmentation"]["miou"] is None and m["segmentation"]["pixels"] == 0, m["segmentation"]
