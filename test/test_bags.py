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
    iou = np.where(tp + fn > 0, tp / np.maximum(denom, 1), np.nan)  # classes present in the ground truth
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


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
def test_metadata_is_what_ros2_humble_and_jazzy_read(tmp_path, camvid_sample, fmt):
    """`ros2 bag` is not installable here: check the fields rosbag2 decodes instead. Humble (0.15,
    JetPack 6) reads `offered_qos_profiles` as a string (`as<std::string>`, a YAML sequence there is a
    bad conversion) and knows versions up to 8's fields; Jazzy reads version 8 as well, and its mcap
    plugin decodes the channels' QoS by the version in the file's serialized metadata."""
    bag = tmp_path / "bag"
    make_bag(bag, root=camvid_sample, encoding="jpeg", indices=[1], compress=True, fmt=fmt)
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8 and info["storage_identifier"] == fmt
    suffix = ".mcap" if fmt == "mcap" else ".db3"
    assert info["relative_file_paths"] == [p.name for p in bag.glob("*" + suffix)]
    assert info["message_count"] == 3 and info["duration"]["nanoseconds"] == 0
    for t in info["topics_with_message_count"]:
        meta = t["topic_metadata"]
        assert meta["serialization_format"] == "cdr" and meta["type_description_hash"].startswith("RIHS01_")
        assert isinstance(meta["offered_qos_profiles"], str)
    for key in ("compression_format", "compression_mode", "custom_data", "ros_distro"):
        assert key in info
    assert [sorted(f) for f in info["files"]] == [["duration", "message_count", "path", "starting_time"]]
    data = next(bag.glob("*" + suffix))
    if fmt == "mcap":
        assert b"version: 8" in data.read_bytes()  # the 'rosbag2' metadata record (not compressed)
    else:
        import sqlite3
        with sqlite3.connect(data) as db:
            assert {q for (q,) in db.execute("SELECT offered_qos_profiles FROM topics")} == {""}
    with Reader(bag) as r:  # zstd chunks / messages read back
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
    # CamVid's own splits are the same frames in any copy of CamVid: trained on its val elsewhere is
    # trained on these (a folder dataset's split counts only in the folder it trained on: below)
    for split, command, held_in in (("train", data, False), ("train+val", "--data /elsewhere/camvid", True),
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
        assert "every frame timed (the model ran two blank frames first, untimed" in report  # warm-up said
        assert ("(frames the model trained on: not held out)" in said) == held_in, said
        assert ("not_held_out" in metrics) == held_in
    assert "from the same recipe trained on train: 61.50" in metrics["not_held_out"]
    # trained on train alone, but val chose its weights: the epoch kept as val's best (--keep best, the
    # default with a val split), or the learning rate cut by val's score (--schedule plateau). The note
    # missed both: the figure read as held out. Kept the last epoch on a poly schedule, val is held out.
    card.metrics = {k: v for k, v in card.metrics.items() if k != "val_miou_not_held_out"}
    for extra, how in (({"best_epoch": 7}, "kept the epoch that scored best on val"),
                       ({"epoch": 9, "schedule": "plateau"}, "cut its learning rate by its val score (plateau schedule)"),
                       ({"epoch": 9}, "")):
        card.training = {"dataset": "camvid", "train_split": "train", "val_split": "val", "schedule": "poly",
                         "command": f"seg-perception train {data}", **extra}
        card.save(card.path)
        out = tmp_path / f"picked_{len(extra)}_{bool(how)}"
        rc, said, err = run_cli(capsys, "eval-bag", bag, "--model", card.path, "--mode", "offline", "--out", out)
        assert rc == 0, err
        report = (out / "report.md").read_text()
        assert ("(frames the model's training was scored on: not held out)" in said) == bool(how), said
        assert (f"**Not held out:** the ground truth is CamVid val, and {card.name} {how}: these accuracy figures "
                "are not held out" in report) == bool(how), report
    # a bag that does not say where its frames come from, and a card that does not say what it trained on
    meta = bag / "metadata.yaml"
    info = yaml.safe_load(meta.read_text())
    del info["rosbag2_bagfile_information"]["custom_data"][bag_io.GT_SOURCE_KEY]
    meta.write_text(yaml.safe_dump(info))
    card.training = {"note": "hand-written"}
    card.save(card.path)
    rc, said, err = run_cli(capsys, "eval-bag", bag, "--model", card.path, "--mode", "offline", "--out", tmp_path / "o")
    assert rc == 0 and "not held out" not in said, err


def _mybot_dataset(root: Path, name: str = "") -> Path:
    """A folder dataset of CamVid's classes (the fixture model's) with dataset.yaml: 2 train and 2 val
    frames at 96x72, id PNGs."""
    from seg_perception.data.classes import CAMVID
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / split / "images" / f"f{i}.png"), rng.integers(0, 255, (72, 96, 3), np.uint8))
            cv2.imwrite(str(root / split / "labels" / f"f{i}.png"), rng.integers(0, 11, (72, 96), np.uint8))
    classes = [{"name": n, "color": list(c)} for n, c in zip(CAMVID.names, CAMVID.colors)]
    (root / "dataset.yaml").write_text(yaml.safe_dump({**({"name": name} if name else {}), "classes": classes,
                                                       "ignore_index": 255}))
    return root


def test_evaluate_says_not_held_out_by_the_runs_training_record(tmp_path, capsys):
    """`evaluate` decides "trained on these frames" as eval-bag does for a bag: the card's training
    record (dataset kind, the folder it trained on, its splits) against --dataset/--data/--split; not
    the card's dataset name, which is dataset.yaml's name: (a run on 'mybot' lost the note, a run
    on an unnamed folder flagged the train split of any other folder)."""
    from conftest import make_random_model
    from seg_perception.card import load_card
    from seg_perception.evaluation.common import trained_splits

    def run_on(data: Path, name: str) -> Path:
        card = load_card(make_random_model(tmp_path / f"run_{name or 'unnamed'}", "essnet_d", 96, 72, onnx=False))
        card.dataset = name or "folder"  # the card's dataset: dataset.yaml's name (folder without one)
        card.training = {"dataset": "folder", "data": str(data.resolve()), "train_split": "train",
                         "command": f"seg-perception train --dataset folder --data {data}"}
        card.save(card.path)
        return card.path

    def note(card_path, data, split) -> str:
        rc, out, err = run_cli(capsys, "evaluate", "--model", card_path, "--dataset", "folder", "--data", data,
                               "--split", split, "--backend", "torch", "--threads", "1")
        assert rc == 0, err
        return "\n".join(ln for ln in out.splitlines() if "note:" in ln)

    mybot = _mybot_dataset(tmp_path / "mybot", name="mybot")
    named = run_on(mybot, "mybot")
    said = note(named, mybot, "train")
    assert "random_essnet_d trained on train: these frames are not held out" in said, said
    # the shipped models' wording (a train-alone figure on the card) is not said of a user's run
    assert "recipe" not in said and "card's val mIoU" not in said
    assert note(named, mybot, "val") == ""
    picked = load_card(named)  # val picked the kept epoch (--keep best): its score is not held out either
    picked.training = dict(picked.training, val_split="val", best_epoch=3)
    picked.save(picked.path)
    assert "random_essnet_d kept the epoch that scored best on val: these frames are not held out" in \
        note(named, mybot, "val")
    plain = _mybot_dataset(tmp_path / "plain")
    unnamed = run_on(plain, "")
    assert note(unnamed, mybot, "train") == ""  # another folder's train split: other frames
    assert "not held out" in note(unnamed, tmp_path / "mybot" / ".." / "plain", "train")  # the same folder
    # CamVid's own splits are one public dataset's, wherever a copy lies; a list of a copy's own is not
    camvid = load_card(named)
    camvid.training = {"dataset": "camvid", "train_split": "train+val", "data": "/elsewhere/camvid"}
    assert trained_splits(camvid, "camvid", str(tmp_path / "copy"), "val") == "train+val"
    assert trained_splits(camvid, "folder", str(tmp_path / "copy"), "val") == ""
    camvid.training["train_split"] = "seen_train+seen_val"
    assert trained_splits(camvid, "camvid", str(tmp_path / "copy"), "seen_val") == ""
    assert trained_splits(camvid, "camvid", "/elsewhere/camvid", "seen_val") == "seen_train+seen_val"


def test_colour_coded_ground_truth_folder_is_read_with_the_cards_colours(tmp_path, random_model):
    """eval-bag --gt-dir with RGB colour-coded label PNGs (a folder dataset's labels) reads them with
    the model card's class colours (eval-bag reads no dataset.yaml): scored as the same ids saved
    as id PNGs or palette PNGs, which stay read as ids."""
    from PIL import Image
    from seg_perception.card import load_card
    bag = small_bag(tmp_path / "b", 3)
    palette = load_card(random_model).palette
    folders = {k: tmp_path / k for k in ("ids", "palette", "rgb")}
    for f in folders.values():
        f.mkdir()
    for _, msg in read_all(bag)["/camera/labels_gt"]:
        ids = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        ids[ids == 11] = 0  # the ignore id has no colour on the card
        cv2.imwrite(str(folders["ids"] / f"{stamp(msg)}.png"), ids)
        im = Image.fromarray(ids, mode="P")
        im.putpalette(palette.ravel().tolist())
        im.save(folders["palette"] / f"{stamp(msg)}.png")
        cv2.imwrite(str(folders["rgb"] / f"{stamp(msg)}.png"), cv2.cvtColor(palette[ids], cv2.COLOR_RGB2BGR))
    results = {k: evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=f, progress=False), "offline",
                           tmp_path / f"r_{k}")[0] for k, f in folders.items()}
    for k, r in results.items():
        assert r.counts.scored == 3 and r.counts.gt_unreadable == 0, (k, r.counts, r.notes)
    np.testing.assert_array_equal(results["rgb"].confusion.mat, results["ids"].confusion.mat)
    np.testing.assert_array_equal(results["palette"].confusion.mat, results["ids"].confusion.mat)
    assert results["ids"].confusion.mat.sum() == 3 * 48 * 64
    # a colour no class of the card has: that frame is an unreadable ground truth, and the note says why
    first = sorted(folders["rgb"].iterdir())[0]
    rgb = cv2.imread(str(first))
    rgb[0, 0] = (1, 2, 3)
    cv2.imwrite(str(first), rgb)
    r = evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=folders["rgb"], progress=False), "offline",
                 tmp_path / "r_bad")[0]
    assert r.counts.scored == 2 and r.counts.gt_unreadable == 1
    assert any("model card's class colours" in n for n in r.notes), r.notes


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
    # Cut in half: the one (mcap) chunk is read up to the cut (it was lost whole), as is every intact
    # message of an sqlite3 file (test_damaged_bags.py). Cut before its channels, nothing reads.
    bag = small_bag(tmp_path / "cut_mcap", 4, "mcap")
    f = next(bag.glob("*.mcap"))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 5 and "read up to the cut; 2 frames can be read, 2 of the 4 recorded frames" in line, line
    f.write_bytes(data[:200])
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and "cannot open bag" in line and "nothing in it can be read" in line, line
    assert "cut short after 0 messages" in line and "it ends inside the chunk at byte" in line  # where it breaks off
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
    meta = bag / "metadata.yaml"  # as make-bag records where its ground truth comes from
    info = yaml.safe_load(meta.read_text())
    info["rosbag2_bagfile_information"]["custom_data"] = {
        bag_io.GT_SOURCE_KEY: json.dumps({"dataset": "camvid", "split": "val", "data": "/elsewhere/camvid"})}
    meta.write_text(yaml.safe_dump(info))
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
    # what the ground truth's ids mean and where its frames come from travel with it (they were lost: eval-bag
    # on the outputs bag then checked no classes and said nothing of frames the model trained on)
    given = bag_io.BagReader(bag).custom_data
    assert given and bag_io.BagReader(tmp_path / "out").custom_data == given


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


# --------------------------------------------------------------------- bags that are not what they say
def _metadata(bag: Path):
    meta = bag / "metadata.yaml"
    return meta, yaml.safe_load(meta.read_text())


def test_metadata_that_disagrees_with_its_storage_file_says_what_disagrees(tmp_path, capsys, random_model):
    """rosbags takes the topics from metadata.yaml and the messages from the file: where they differ
    it reads none, and the error named no cause ("topic ... has no messages", exit 3)."""
    import struct
    from seg_perception.data.mcap_salvage import add_chunk_crcs
    for case in ("renamed", "type"):
        bag = small_bag(tmp_path / case, 3)
        meta, info = _metadata(bag)
        t = info["rosbag2_bagfile_information"]["topics_with_message_count"][0]["topic_metadata"]
        assert t["name"] == "/camera/image_raw"
        if case == "renamed":
            t["name"] = "/front/image_raw"
        else:
            t["type"] = bag_io.COMPRESSED
        meta.write_text(yaml.safe_dump(info))
        rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--no-gt")
        line = one_line_error(err)
        assert rc == 2, line
        if case == "renamed":
            assert "lists /front/image_raw as sensor_msgs/msg/Image (cdr), but its storage file has no such topic " \
                   "(it holds /camera/image_raw (sensor_msgs/msg/Image)" in line, line
        else:
            assert "but its storage file holds sensor_msgs/msg/Image there: correct metadata.yaml" in line, line
    # the file's own channel says another serialisation than ROS 2's cdr (metadata.yaml says cdr)
    bag = small_bag(tmp_path / "xdr", 3)
    f = next(bag.glob("*.mcap"))
    data = bytearray(f.read_bytes().replace(b"\x03\x00\x00\x00cdr", b"\x03\x00\x00\x00xdr"))
    pos = 8
    while data[pos] != 0x0F:  # the chunks' checksums are written again below (add_chunk_crcs)
        (n,) = struct.unpack_from("<Q", data, pos + 1)
        if data[pos] == 0x06:
            data[pos + 9 + 24:pos + 9 + 28] = bytes(4)
        pos += 9 + n
    f.write_bytes(bytes(data))
    add_chunk_crcs(f)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--no-gt")
    line = one_line_error(err)
    assert rc == 2 and "stores /camera/image_raw serialised as 'xdr', not ROS 2's 'cdr'" in line, line


def test_files_that_are_not_bags_are_named_so(tmp_path, capsys, random_model):
    """A PNG, an archive or a gzip of a bag was 'truncated or damaged, try ros2 bag reindex'."""
    import gzip
    import zipfile
    bag = small_bag(tmp_path / "b", 2)
    mcap = next(bag.glob("*.mcap"))
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((4, 4), np.uint8))
    with zipfile.ZipFile(tmp_path / "bag.zip", "w") as z:
        z.write(mcap, mcap.name)
    (tmp_path / "bag.mcap.gz").write_bytes(gzip.compress(mcap.read_bytes()))
    for name, said in (("frame.png", "frame.png is not a rosbag2 file (it starts like neither an MCAP nor an sqlite3"),
                       ("bag.zip", "bag.zip is a zip archive, not a rosbag2 file: unpack it"),
                       ("bag.mcap.gz", "bag.mcap.gz is a gzip archive, not a rosbag2 file: unpack it")):
        rc, out, err = run_cli(capsys, "eval-bag", tmp_path / name, "--model", random_model, "--out", tmp_path / "r")
        line = one_line_error(err)
        assert rc == 2 and said in line and "reindex" not in line and "damaged" not in line, line
    # metadata.yaml says the files are compressed whole, the file is plain: read, and said so
    meta, info = _metadata(bag)
    info["rosbag2_bagfile_information"].update(compression_mode="file", compression_format="zstd")
    meta.write_text(yaml.safe_dump(info))
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0 and "offline: 2 frames in, 2 out" in out, (out, err)
    assert "says its files are compressed whole (compression_mode: file), but they are plain" in out
    # an empty storage file is empty, not "damaged pages"
    (tmp_path / "empty.db3").write_bytes(b"")
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "empty.db3", "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and line.endswith("nothing in it can be read (its file is empty (0 bytes))"), line


def test_metadata_listing_other_files_than_the_folder_holds(tmp_path, capsys, random_model):
    """A storage file renamed: the advice names it. A stale metadata.yaml that lists 2 of the 3
    files: the third is named, not its frames called lost; without the metadata all are read."""
    import shutil
    from test_damaged_bags import split_bag
    bag = small_bag(tmp_path / "b", 2)
    mcap = next(bag.glob("*.mcap"))
    mcap.rename(bag / "rec_0.mcap")
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and f"lists {mcap.name}, not in the folder, which holds rec_0.mcap: if that is the bag's file " \
                       f"renamed, pass it directly ({bag / 'rec_0.mcap'})" in line, line
    rc, out, err = run_cli(capsys, "eval-bag", bag / "rec_0.mcap", "--model", random_model, "--out", tmp_path / "r",
                           "--threads", 1)
    assert rc == 0 and "2 frames in, 2 out" in out, (out, err)  # the advice works
    split = split_bag(tmp_path / "split", "mcap")
    meta, info = _metadata(split)
    i = info["rosbag2_bagfile_information"]
    i["relative_file_paths"], i["files"] = i["relative_file_paths"][:2], i["files"][:2]
    meta.write_text(yaml.safe_dump(info))
    rc, out, err = run_cli(capsys, "eval-bag", split, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                           "--threads", 1)
    assert rc == 5 and "offline: 4 frames in" in out, (out, err)
    assert "split_2.mcap in its folder is not listed in its metadata.yaml, so not read (a stale metadata.yaml? " \
           "move it aside" in out, out
    assert "2 of the 6 recorded frames on /camera/image_raw are not read, probably in split_2.mcap" in err, err
    assert "lost" not in err, err
    shutil.move(str(meta), str(tmp_path / "stale.yaml"))  # as the note says
    rc, out, err = run_cli(capsys, "eval-bag", split, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                           "--threads", 1)
    assert rc == 0 and "offline: 6 frames in" in out, (out, err)


def test_default_report_folder_of_a_bare_storage_file_is_named_by_its_stem(tmp_path, capsys, random_model,
                                                                            monkeypatch):
    """eval-bag on an .mcap file alone wrote reports/eval_rec.mcap_offline by default: the report
    folder is named by the bag, not its file's extension; a folder named by its metadata.yaml by the folder."""
    bag = small_bag(tmp_path / "b", 2)
    alone = next(bag.glob("*.mcap")).rename(tmp_path / "rec.mcap")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "eval-bag", alone, "--model", random_model, "--threads", 1)
    assert rc == 0 and (tmp_path / "reports" / "eval_rec_offline" / "report.md").is_file(), (out, err)
    assert f"report: {Path('reports') / 'eval_rec_offline' / 'report.md'}" in out, out
    from seg_perception.evaluation.demo import default_out
    bag = small_bag(tmp_path / "my_bag", 1)
    assert default_out(bag / "metadata.yaml", "live") == default_out(bag, "live") == Path("reports/eval_my_bag_live")


def test_default_topics_of_another_type_are_named(tmp_path, capsys, random_model):
    String = bag_io.typestore().types["std_msgs/msg/String"]
    with bag_io.BagWriter(tmp_path / "s") as w:
        w.write("/camera/image_raw", String(data="not a frame"), T0)
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "s", "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and "(/camera/image_raw holds std_msgs/msg/String, not an image); pass --image-topic" in line, line
    # ground truth as PNG CompressedImage: the error says what runs instead
    with bag_io.BagWriter(tmp_path / "g") as w:
        w.write("/camera/image_raw", bag_io.image_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", T0, "c"), T0)
        png = cv2.imencode(".png", np.zeros((48, 64), np.uint8))[1].tobytes()
        w.write("/camera/labels_gt", bag_io.compressed_msg(png, "png", T0, "c"), T0)
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "g", "--model", random_model, "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == 2 and "holds sensor_msgs/msg/CompressedImage" in line and "--gt-dir" in line and "--no-gt" in line
    rc, out, err = run_cli(capsys, "eval-bag", tmp_path / "g", "--model", random_model, "--out", tmp_path / "r",
                           "--no-gt", "--threads", 1)
    assert rc == 0, err


@pytest.mark.parametrize("rate", [float("inf"), 2e9, float("nan"), 0.0])
def test_make_bag_rate_that_would_repeat_stamps_is_refused(tmp_path, rate):
    """Stamps are whole nanoseconds: at inf (or over 1e9 frames/s) every frame got the same one."""
    with pytest.raises(ValueError, match="--rate must be a finite number of frames per second above 0 and at most 1e9"):
        make_bag(tmp_path / "b", root=tmp_path, rate=rate)
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------- repeated stamps, rejections
def stamped_bag(path: Path, stamps, gt_stamps=(), encodings=None):
    """Frames with the given header stamps (recorded 0.1 s apart), ground truth with gt_stamps."""
    rng = np.random.default_rng(1)
    with bag_io.BagWriter(path) as w:
        for n, st in enumerate(stamps):
            t = T0 + n * 10**8
            enc = (encodings or {}).get(n, "rgb8")
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), enc, st, "c"), t)
            if n < len(gt_stamps):
                w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8",
                                                              gt_stamps[n], "c"), t)
    return path


def test_frames_with_repeated_stamps_are_counted_and_evaluated_where_nothing_is_matched(tmp_path, capsys, random_model):
    """A driver that stamps every frame 0: frames were skipped without a count. Now they are counted
    (summary, metrics.json, report.md); with ground truth matched by stamp they are evaluated but not
    scored, and without ground truth (or with it in frame order) nothing is lost."""
    bag = stamped_bag(tmp_path / "zero", [0] * 4, gt_stamps=[0] * 4)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0, err
    assert "4 frames in, 4 out, 0 dropped, 0 rejected, 3 with a repeated header stamp" in out, out
    assert "3 frames repeat an earlier frame's header stamp (the first: 0.000000000): evaluated, but not scored" \
           in out and "--gt-dir with one PNG per frame" in out, out
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["frames"]["duplicate_stamps"] == 3 and m["frames"]["out"] == 4
    seg = m["segmentation"]
    # every ground-truth message is accounted for: one scored with the first frame, three repeats of its stamp
    assert (seg["frames_scored"], seg["repeated_stamp"], seg["gt_without_frame"], seg["gt_repeated_stamp"]) == \
        (1, 3, 0, 3), seg
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| corrupt | repeated stamps |" in report and "| 4 | 4 | 0 | 0 | 0 | 3 |" in report, report
    assert "repeated stamp 3" in report and "gt repeated stamp 3" in report
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "n", "--no-gt",
                           "--threads", 1)
    assert rc == 0 and "4 frames in, 4 out" in out and "evaluated all the same" in out, out
    assert json.loads((tmp_path / "n" / "metrics.json").read_text())["frames"]["out"] == 4


def test_repeated_ground_truth_stamp_is_counted(tmp_path, random_model):
    """Three ground-truth messages, two of one stamp before its frame: the second replaced the first
    and vanished from the counts (frames_scored 1, gt_without_frame 1 of 3)."""
    rng = np.random.default_rng(2)
    with bag_io.BagWriter(tmp_path / "b") as w:
        for n, st in enumerate((T0, T0, T0 + 5)):  # two ground truths of T0, then one of a stamp no frame has
            w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", st, "c"),
                    T0 + n)
        w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", T0, "c"),
                T0 + 10)
    result, files, code = evaluate(EvalConfig(bag=tmp_path / "b", model=str(random_model), threads=1, progress=False),
                                   "offline", tmp_path / "r")
    c = result.counts
    assert (c.scored, c.gt_without_frame, c.gt_repeated_stamp) == (1, 1, 1), c
    assert any("1 ground-truth message repeats the header stamp of an earlier one" in n for n in result.notes)


def test_a_ground_truth_repeating_a_stamp_already_scored_is_counted_as_a_repeat():
    """A frame met its ground truth, then a second ground truth of that stamp arrives: a repeat
    (it was left waiting and reported as a ground truth without a frame)."""
    from seg_perception.evaluation.scoring import Counts, Scorer
    scorer = Scorer(3, [0], Counts())
    labels = np.zeros((4, 4), np.uint8)
    scorer.add_prediction(T0, labels, 0)
    scorer.add_gt(T0, labels)
    scorer.add_gt(T0, labels)
    scorer.finish()
    c = scorer.counts
    assert (c.scored, c.gt_repeated_stamp, c.gt_without_frame) == (1, 1, 0), c


def test_rejected_frames_are_counted_per_reason(tmp_path, capsys, random_model):
    """Offline, 5 rejections of 3 causes showed only the first cause."""
    encodings = {1: "nv12", 2: "nv12", 3: "16UC1", 4: "nv12", 5: "32FC1"}
    bag = stamped_bag(tmp_path / "b", [T0 + n for n in range(7)], encodings=encodings)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0 and "7 frames in, 2 out, 0 dropped, 5 rejected" in out, (out, err)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    reasons = m["frames"]["rejected_reasons"]
    assert sorted(reasons.values()) == [1, 1, 3] and sum(reasons.values()) == 5, reasons
    note = next(line for line in out.splitlines() if "frames rejected" in line)
    assert "5 frames rejected: 3 x " in note and "nv12" in note and "16UC1" in note and "32FC1" in note, note


def test_options_a_mode_would_ignore_are_refused(tmp_path, capsys, camvid_sample):
    """Offline eval-bag took --rate 5 or --param name:=value and ignored them (an offline run is
    in-process, as fast as it can); --no-gt beside --gt-dir scored nothing; live mode's numbers
    were unchecked (--domain-id -1 failed inside the started node; --startup-timeout -5 blamed the
    node); make-bag --encoding rgb8 --jpeg-quality 20 wrote no JPEG. Each is one line, exit 2,
    before any work."""
    bag = tmp_path / "bag"
    for args, message in (
            (["--rate", "5"], "--rate applies to --mode live (the node over DDS)"),
            (["--param", "max_rate:=5", "--speed", "2"], "--speed, --param apply to --mode live"),
            (["--no-gt", "--gt-dir", str(tmp_path)], "--no-gt and --gt-dir exclude each other")):
        rc, _, err = run_cli(capsys, "eval-bag", bag, "--out", tmp_path / "r", *args)
        assert rc == 2 and message in one_line_error(err), err
    for args, message in ((["--domain-id", "-1"], "must be 0 to 232 (ROS_DOMAIN_ID's range), got -1"),
                          (["--domain-id", "233"], "got 233"),
                          (["--startup-timeout", "-5"], "must be above 0, got -5"),
                          (["--drain-timeout", "0"], "must be above 0, got 0"),
                          (["--samples", "-3"], "must be 0 (none) or more, got -3")):
        with pytest.raises(SystemExit) as e:
            main(["eval-bag", str(bag), "--mode", "live", *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
    rc, _, err = run_cli(capsys, "make-bag", "--data", camvid_sample, "--out", bag, "--encoding", "rgb8",
                         "--jpeg-quality", "20")
    assert rc == 2 and "--jpeg-quality applies to --encoding jpeg, not rgb8" in one_line_error(err), err
    assert not bag.exists()
