"""Scoring in eval-bag: labels of another size than the ground truth, ids outside the class
table (in the ground truth and in the predictions), palette PNGs in --gt-dir, runs with
nothing to time, and the metrics.json fields the docs must describe.

RANDOM-weights model (conftest.make_random_model) where a pipeline runs: plumbing, not accuracy."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seg_perception.data import bag_io
from seg_perception.evaluation.commands import evaluate
from seg_perception.evaluation.config import EXIT_NO_MATCH, EvalConfig
from seg_perception.evaluation.scoring import Counts, Scorer
from seg_perception.metrics import ConfusionMatrix
from test_bags import read_all, run_cli, small_bag, stamp, one_line_error

T0 = 1_700_000_000 * 10**9
ROOT = Path(__file__).resolve().parents[1]


def _scorer(**kw):
    counts = Counts()
    return Scorer(11, [3], counts, ignore_index=11, **kw), counts


def test_labels_of_the_network_size_are_resized_to_ground_truth_of_the_frame_size():
    """A node with output_size network publishes labels at the network's size: scored against
    ground truth of the frame's size after a nearest resize (pixel centres aligned), and counted.
    48x36 to 80x60 (x 5/3, not a whole factor, where OpenCV's plain INTER_NEAREST takes other
    pixels): ground-truth pixel x reads label pixel floor((x + 0.5) x 48 / 80), computed here."""
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 11, (60, 80), np.uint8)
    small = rng.integers(0, 11, (36, 48), np.uint8)
    s, c = _scorer()
    s.add_gt(1, gt)
    s.add_prediction(1, small, 0, frame_size=(60, 80))  # ground truth first, then the labels
    s.add_prediction(2, small, 1, frame_size=(60, 80))
    s.add_gt(2, gt)                                      # and the other way round
    s.finish()
    assert c.scored == 2 and c.labels_resized == 2 and c.gt_size_mismatch == 0
    ref = ConfusionMatrix(11)
    rows, cols = ((np.arange(n) + 0.5) * m / n for n, m in ((60, 36), (80, 48)))
    up = small[np.floor(rows).astype(int)[:, None], np.floor(cols).astype(int)[None, :]]
    assert not np.array_equal(up, cv2.resize(small, (80, 60), interpolation=cv2.INTER_NEAREST))
    ref.update(up, gt)
    ref.update(up, gt)
    np.testing.assert_array_equal(s.cm.mat, ref.mat)
    assert "2 frames had labels of another size than the ground truth (labels 48x36, ground truth 80x60" \
        in s.warned["labels_resized"]

    # Ground truth of another size than the frame is still a counted skip, named with both sizes.
    s, c = _scorer()
    s.add_gt(1, gt)
    s.add_prediction(1, small, 0, frame_size=(144, 192))
    s.finish()
    assert c.scored == 0 and c.gt_size_mismatch == 1 and c.labels_resized == 0
    assert "is 80x60 but the frame is 192x144: such frames are not scored" in s.warned["gt_size"]

    # Frame size not known: the same aspect ratio (within a pixel) is resized, another is skipped.
    s, c = _scorer()
    s.add_gt(1, gt)
    s.add_prediction(1, small, 0)
    s.add_gt(2, gt)
    s.add_prediction(2, small[:27], 1)  # 48x27: 16:9 against 4:3
    s.finish()
    assert c.scored == 1 and c.labels_resized == 1 and c.gt_size_mismatch == 1
    assert "is 80x60 but the labels are 48x27 (another aspect ratio)" in s.warned["gt_size"]


def test_ground_truth_ids_that_are_neither_class_nor_ignore_are_counted_and_named():
    gt = np.full((10, 10), 3, np.uint8)
    gt[:, 5:] = 15  # another table's id
    gt[0, :] = 11   # CamVid's ignore id: silently skipped, as always
    s, c = _scorer()
    s.add_gt(1, gt)
    s.add_prediction(1, np.full((10, 10), 3, np.uint8), 0)
    s.finish()
    assert c.scored == 1 and c.gt_unknown_id_pixels == 45 and int(s.cm.mat.sum()) == 45
    note = s.warned["gt_unknown_ids"]
    assert "\n" not in note and note.startswith("45 ground-truth pixels have id 15, neither a class")
    assert "ignore id 11" in note and "another class table?" in note


def test_the_cards_ignore_index_reaches_the_scorer(tmp_path, capsys, random_model):
    """Ground truth of ids 0-11 (11: CamVid's ignore id, from the card) and one pixel of id 13 a frame."""
    bag = tmp_path / "b"
    rng = np.random.default_rng(1)
    with bag_io.BagWriter(bag, "mcap") as w:
        for n in range(2):
            t = T0 + n * 10**8
            gt = rng.integers(0, 12, (48, 64), np.uint8)
            gt[0, 0] = 13
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            w.write("/camera/labels_gt", bag_io.image_msg(gt, "mono8", t, "c"), t)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0, err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["segmentation"]["gt_unknown_id_pixels"] == 2
    notes = [ln for ln in out.splitlines() if "ground-truth pixels have" in ln]
    assert len(notes) == 1 and "2 ground-truth pixels have id 13" in notes[0] and "ignore id 11" in notes[0]


def test_predicted_ids_past_the_table_are_wrong_and_counted():
    truth = np.full((4, 4), 10, np.uint8)
    pred = np.full((4, 4), 255, np.uint8)
    s, c = _scorer()
    s.add_gt(1, truth)
    s.add_prediction(1, pred, 0)
    s.finish()
    assert s.cm.iou()[10] == 0.0 and c.pred_unknown_id_pixels == 16
    assert "16 scored pixels were predicted as id 255, past the model's classes (0-10)" in s.warned["pred_unknown_ids"]
    assert s.cm.summary([str(i) for i in range(11)])["pixels"] == 16
    # the report's confusion picture counts them as misses of the row too (its rows were normalised
    # without them: class 10 showed full recall of its other pixels where the report said less)
    from seg_perception.evaluation.report import recall_rows
    half = np.full((4, 4), 10, np.uint8)
    half[:2] = 255  # 8 pixels right, 8 past the table
    s.add_gt(2, truth)
    s.add_prediction(2, half, 1)
    assert recall_rows(s.cm)[10, 10] == 8 / 32 and recall_rows(s.cm)[10].sum() == 8 / 32


def test_palette_png_ground_truth_folder_is_read_as_class_ids(tmp_path, random_model):
    """Palette PNGs (VOC, CVAT) hold class ids as indices; OpenCV would expand them to colours."""
    bag = small_bag(tmp_path / "b", 3)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    palette = sum(([k * 20, k * 10, 255 - k * 20] for k in range(12)), []) + [0] * (768 - 36)
    for _, msg in read_all(bag)["/camera/labels_gt"]:
        im = Image.fromarray(np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width), "P")
        im.putpalette(palette)
        im.save(gt_dir / f"{stamp(msg)}.png")
    by_topic, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), progress=False), "offline", tmp_path / "a")
    by_dir, _, code = evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=gt_dir, progress=False),
                               "offline", tmp_path / "d")
    assert code == 0 and by_dir.counts.scored == 3 and by_dir.counts.gt_unreadable == 0, by_dir.notes
    np.testing.assert_array_equal(by_dir.confusion.mat, by_topic.confusion.mat)


def test_unreadable_ground_truth_files_are_called_files(tmp_path, capsys, random_model):
    bag = small_bag(tmp_path / "b", 2)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for _, msg in read_all(bag)["/camera/labels_gt"]:  # 16-bit ids: not the 8-bit ids the metrics take
        cv2.imwrite(str(gt_dir / f"{stamp(msg)}.png"), np.full((msg.height, msg.width), 300, np.uint16))
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--gt-dir", gt_dir,
                           "--out", tmp_path / "r")
    line = one_line_error(err)
    assert rc == EXIT_NO_MATCH and "2 ground-truth files are not readable 8-bit label PNGs" in line, line
    assert "messages" not in line and "is uint16 in 1 channel(s); expected 8-bit class ids in one" in out


def test_no_prediction_means_no_fps_and_the_report_says_why(tmp_path, capsys, random_model):
    """Every frame rejected: FPS is n/a (null), not 0.0, and report.md carries the note."""
    bag = tmp_path / "depth"
    with bag_io.BagWriter(bag) as w:
        for i in range(2):
            t = T0 + i * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(np.zeros((8, 8), np.uint16), "16UC1", t, "c"), t)
    rc, out, err = run_cli(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r")
    assert rc == EXIT_NO_MATCH and "FPS n/a" in out, out
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["fps"] is None and m["frames"]["out"] == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "- no frame produced a prediction" in report
    assert re.search(r"\| 2 \| 0 \| 0 \| 2 \| 0 \| 0 \| n/a \|", report), report


def test_metrics_json_fields_are_documented():
    doc = (ROOT / "docs" / "evaluation.md").read_text()
    for field in ("wall_s", "undecodable", "labels_resized", "gt_unknown_id_pixels", "pred_unknown_id_pixels"):
        assert f"`{field}`" in doc, field
    assert "first to last frame published" in doc and "the whole run from opening the bag" in doc


def test_colour_ground_truth_in_a_folder_dataset_is_read_by_its_dataset_yaml(tmp_path, random_model):
    """A user's own colour masks (<root>/val/labels beside <root>/dataset.yaml): the ignore colour
    and a class's second colour are the dataset's, not in the card (one colour per class), which
    made every frame unscorable. Read by dataset.yaml, they score as the ids do."""
    from seg_perception.card import load_card
    card = load_card(random_model)
    bag = small_bag(tmp_path / "b", 3)
    root = tmp_path / "mine"
    gt_dir = root / "val" / "labels"
    gt_dir.mkdir(parents=True)
    colours = [list(map(int, c)) for c in card.class_colors]
    second = [1, 2, 3]  # Road's other colour (an annotation tool's second shade)
    classes = "\n".join(f"  - {{name: {n}, color: {[c, second] if i == 3 else c}}}"
                        for i, (n, c) in enumerate(zip(card.class_names, colours)))
    (root / "dataset.yaml").write_text(f"classes:\n{classes}\nignore_index: {card.ignore_index}\n"
                                       "ignore_color: [0, 0, 0]\n")
    lut = np.zeros((256, 3), np.uint8)  # ids past the classes (the ignore id): black, the ignore colour
    lut[: len(colours)] = colours
    for k, (_, msg) in enumerate(read_all(bag)["/camera/labels_gt"]):
        ids = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        if k == 0:
            lost = int((ids[:4] < len(colours)).sum())  # labelled pixels made unlabelled here
            ids[:4] = card.ignore_index  # some unlabelled pixels in any case
        rgb = lut[ids]
        rgb[(ids == 3) & (np.arange(msg.width)[None, :] % 2 == 0)] = second
        cv2.imwrite(str(gt_dir / f"{stamp(msg)}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    by_topic, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), progress=False), "offline", tmp_path / "a")
    by_dir, _, code = evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=gt_dir, progress=False),
                               "offline", tmp_path / "d")
    assert code == 0 and by_dir.counts.scored == 3 and by_dir.counts.gt_unreadable == 0, by_dir.notes
    # the same pixels as the ids on the topic, less those made unlabelled (black) in the first frame
    mine, ids = by_dir.confusion.mat, by_topic.confusion.mat
    assert (mine <= ids).all() and mine.sum() == ids.sum() - lost and lost > 0


def test_single_channel_ground_truth_is_read_as_its_dataset_yaml_says(tmp_path, random_model):
    """Masks of a user's own dataset in --gt-dir were read as raw ids whatever its dataset.yaml said,
    unlike train and evaluate: grey levels that are class colours (a 0/255 road mask) turned every
    class but the black one into unknown ids, and first_id: 1 masks (0 unlabelled) scored each pixel
    as the next class (a perfect model about 10 %). Read as the dataset reads them, they score as
    the ids on the bag's topic."""
    from seg_perception.card import load_card
    card = load_card(random_model)
    bag = small_bag(tmp_path / "b", 3)
    gt = [np.frombuffer(m.data, np.uint8).reshape(m.height, m.width) for _, m in read_all(bag)["/camera/labels_gt"]]
    stamps = [stamp(m) for _, m in read_all(bag)["/camera/labels_gt"]]
    ref, _, _ = evaluate(EvalConfig(bag=bag, model=str(random_model), progress=False), "offline", tmp_path / "a")
    n, ignore = len(card.class_names), card.ignore_index
    greys = {"grey": [20 * (i + 1) for i in range(n)], "first_id": None}
    for case, levels in greys.items():
        root = tmp_path / case
        gt_dir = root / "val" / "labels"
        gt_dir.mkdir(parents=True)
        if levels:  # each class's colour a grey level, unlabelled black
            classes = "\n".join(f"  - {{name: {c}, color: {[g] * 3}}}" for c, g in zip(card.class_names, levels))
            extra = "ignore_color: [0, 0, 0]\n"
            lut = np.zeros(256, np.uint8)
            lut[:n] = levels
        else:  # classes 1..n, 0 unlabelled
            classes = "\n".join(f"  - {c}" for c in card.class_names)
            extra = "first_id: 1\n"
            lut = np.zeros(256, np.uint8)
            lut[:n] = np.arange(1, n + 1)
        (root / "dataset.yaml").write_text(f"classes:\n{classes}\nignore_index: {ignore}\n{extra}")
        for ids, t in zip(gt, stamps):
            cv2.imwrite(str(gt_dir / f"{t}.png"), lut[ids])
        res, _, code = evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=gt_dir, progress=False),
                                "offline", tmp_path / f"r_{case}")
        assert code == 0 and res.counts.scored == 3, (case, res.notes)
        np.testing.assert_array_equal(res.confusion.mat, ref.confusion.mat, err_msg=case)


def test_a_rejected_frame_leaves_its_stamp_to_a_good_one(tmp_path, random_model):
    """Offline, a frame the pipeline rejected (an encoding it cannot read) claimed its header stamp:
    a good frame of the same stamp after it was counted as a repeated stamp and not scored, and its
    ground truth showed as ground truth without a frame."""
    t = 1_700_000_000 * 10**9
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag, "mcap") as w:
        bad = bag_io.image_msg(img, "rgb8", t, "cam")
        bad.encoding = "nv21"  # not readable: rejected
        w.write("/camera/image_raw", bad, t)
        w.write("/camera/image_raw", bag_io.image_msg(img, "rgb8", t, "cam"), t + 1)
        w.write("/camera/labels_gt", bag_io.image_msg(np.zeros((48, 64), np.uint8), "mono8", t, "cam"), t + 2)
    res, _, code = evaluate(EvalConfig(bag=bag, model=str(random_model), progress=False), "offline", tmp_path / "r")
    c = res.counts
    assert c.rejected == 1 and c.frames_out == 1 and c.scored == 1, c
    assert c.duplicate_stamps == 0 and c.gt_without_frame == 0, c


def test_stamps_in_seconds_with_a_fraction_pair_in_time_order(tmp_path):
    """Label PNGs named by a time in seconds (f"{stamp:.6g}.png" and the like: fractions of several
    widths) were ordered by the fraction's digits as a whole number, .2 .5 .25 .75, so in order mode
    ground truth went to the wrong frames. Frame numbers still compare as numbers."""
    from seg_perception.evaluation.scoring import GroundTruthFolder
    names = ["1700000000.75", "1700000000.2", "1700000000.5", "1700000000.25"]
    for n in names:
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.zeros((2, 2), np.uint8))
    folder = GroundTruthFolder(tmp_path, 4)
    assert folder.mode == "order"
    assert [p.stem for p in folder.by_order] == ["1700000000.2", "1700000000.25", "1700000000.5", "1700000000.75"]
    other = tmp_path / "frames"
    other.mkdir()
    for n in ("frame_10", "frame_2", "seq1.10", "seq1.9"):
        cv2.imwrite(str(other / f"{n}.png"), np.zeros((2, 2), np.uint8))
    assert [p.stem for p in GroundTruthFolder(other, 4).by_order] == ["frame_2", "frame_10", "seq1.9", "seq1.10"]
    # <sec>.<nanosec> names, some nanoseconds unpadded (50 ms written 50000000): numbers, as before
    nanos = tmp_path / "nanos"
    nanos.mkdir()
    for n in ("1700000000.100000000", "1700000000.150000000", "1700000000.50000000", "1700000000.200000000"):
        cv2.imwrite(str(nanos / f"{n}.png"), np.zeros((2, 2), np.uint8))
    assert [p.stem.split(".")[1] for p in GroundTruthFolder(nanos, 4).by_order] == [
        "50000000", "100000000", "150000000", "200000000"]


def test_offline_timing_runs_the_graph_the_node_runs(tmp_path, random_model):
    """eval-bag offline and evaluate timed the model with its confidence output (max, exp and sum
    over the logits, about a tenth of a small net on a CPU), which the node skips unless it
    publishes confidence: their latency and FPS read worse than the node's."""
    from seg_perception.evaluation import split_accuracy
    from seg_perception.evaluation.offline import make_pipeline
    from seg_perception.card import load_card
    pipe = make_pipeline(EvalConfig(bag=tmp_path, model=str(random_model), backend="onnxruntime"),
                         load_card(random_model))
    assert [o.name for o in pipe.backend.session.get_outputs()] == ["labels"]
    seen = {}
    real = split_accuracy.Pipeline.from_card

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)
    split_accuracy.Pipeline.from_card = spy
    try:
        frames = tmp_path / "d"
        for split in ("val",):
            for sub in ("images", "labels"):
                (frames / split / sub).mkdir(parents=True)
            cv2.imwrite(str(frames / split / "images" / "a.png"), np.zeros((36, 48, 3), np.uint8))
            cv2.imwrite(str(frames / split / "labels" / "a.png"), np.zeros((36, 48), np.uint8))
        card = load_card(random_model)
        (frames / "dataset.yaml").write_text("classes: [" + ", ".join(card.class_names) + "]\n"
                                             f"ignore_index: {card.ignore_index}\n")
        res = split_accuracy.evaluate(random_model, str(frames), dataset="folder", split="val")
    finally:
        split_accuracy.Pipeline.from_card = real
    assert seen.get("confidence") is False and res["frames"] == 1


def test_the_live_report_prints_the_node_capacity_it_points_to(tmp_path):
    """report.md's live text says the node's capacity is 'its processing_ms below', but the stage
    medians (processing_ms among them) were dropped, and 'stages None' was printed as a counter."""
    from seg_perception.evaluation.report import write_report
    from seg_perception.evaluation.scoring import EvalResult
    base = dict(mode="live", bag="b", image_topic="/camera/image_raw", image_type="sensor_msgs/msg/Image",
                gt_source=None, model={"name": "m", "backend": "onnxruntime"}, class_names=["a", "b"],
                palette=np.zeros((2, 3), np.uint8), drivable_classes=[], counts=Counts(frames_in=2, frames_out=2),
                latencies_ms=[10.0, 12.0], fps=5.0, wall_s=1.0)
    node = {"received": 2, "inference_ms": 8.0, "stages": {"inference_ms": 8.0, "processing_ms": 11.5}}
    write_report(EvalResult(**base, node=node), tmp_path / "a")
    text = (tmp_path / "a" / "report.md").read_text()
    assert "processing_ms 11.5" in text and text.count("inference_ms") == 1, text
    write_report(EvalResult(**base, node={"received": 2, "stages": None}), tmp_path / "b")
    text = (tmp_path / "b" / "report.md").read_text()
    assert "stages" not in text and "received 2" in text, text


def test_evaluate_json_has_null_not_nan(tmp_path):
    """evaluate --json of frames whose labels are all ignore wrote NaN for the mIoU, which is no
    JSON (jq and browsers refuse the whole file); eval-bag's metrics.json said null already."""
    from seg_perception.evaluation.split_accuracy import write_json

    def refuse(name):
        raise ValueError(f"{name} in the file")
    write_json({"miou": float("nan"), "per_class_iou": {"a": np.float32("nan"), "b": np.float32(1.5)}},
               tmp_path / "r.json")
    got = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert got == {"miou": None, "per_class_iou": {"a": None, "b": 1.5}}


def test_ground_truth_read_two_ways_stops_eval_bag(tmp_path, random_model):
    """Masks of ids with a class whose dataset.yaml colour is white: a frame of 0 and 255 alone reads
    as colours (255 the white class), one with another id as ids. train refuses such a dataset;
    eval-bag scored it, half the frames wrong. Now it stops with the same words."""
    import pytest
    from seg_perception.card import load_card
    from seg_perception.evaluation.config import EvalError
    card = load_card(random_model)
    bag = small_bag(tmp_path / "b", 3)
    gt_dir = tmp_path / "mine" / "val" / "labels"
    gt_dir.mkdir(parents=True)
    colours = [[0, 0, 0], [255, 255, 255]] + [[10 * i, 0, 0] for i in range(2, len(card.class_names))]
    classes = "\n".join(f"  - {{name: {n}, color: {c}}}" for n, c in zip(card.class_names, colours))
    (tmp_path / "mine" / "dataset.yaml").write_text(f"classes:\n{classes}\nignore_index: {card.ignore_index}\n")
    for k, (_, msg) in enumerate(read_all(bag)["/camera/labels_gt"]):
        lab = np.zeros((msg.height, msg.width), np.uint8)
        lab[:4] = 255
        if k == 1:
            lab[10:20] = 1  # an id that is no class's grey colour: this frame reads as ids
        cv2.imwrite(str(gt_dir / f"{stamp(msg)}.png"), lab)
    with pytest.raises(EvalError, match=r"ground truth in .*labels: single-channel labels read two ways: 2 by their "
                                        r"grey levels as .*, 1 as class ids"):
        evaluate(EvalConfig(bag=bag, model=str(random_model), gt_dir=gt_dir, progress=False), "offline", tmp_path / "r")


def test_ground_truth_of_a_labelmap_dataset_reads_by_its_colours(tmp_path):
    """A CVAT export's labelmap.txt gives the colours (background black, road white) and dataset.yaml
    only names the drivable class: train reads a 0/255 mask as background and road, eval-bag read it
    as ids (road the ignore id), because it looked at dataset.yaml alone."""
    from types import SimpleNamespace
    from seg_perception.evaluation.common import dataset_label_reading
    from seg_perception.evaluation.scoring import GroundTruthFolder
    root = tmp_path / "cvat"
    for sub in ("images", "labels"):
        (root / "val" / sub).mkdir(parents=True)
    (root / "labelmap.txt").write_text("background:0,0,0::\nroad:255,255,255::\n")
    (root / "dataset.yaml").write_text("drivable: [road]\n")
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    cv2.imwrite(str(root / "val" / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(root / "val" / "labels" / "a.png"), mask)
    card = SimpleNamespace(class_names=["background", "road"], ignore_index=255)
    folder = GroundTruthFolder(root / "val" / "labels", 1)
    folder.dataset_reading = dataset_label_reading(folder.folder, card)
    np.testing.assert_array_equal(folder.lookup(0, 0), (mask > 0).astype(np.uint8))
    # labels linked in from elsewhere (a dataset assembled by symlinks) are still this split's
    elsewhere = tmp_path / "store" / "a.png"
    elsewhere.parent.mkdir()
    (root / "val" / "labels" / "a.png").rename(elsewhere)
    (root / "val" / "labels" / "a.png").symlink_to(elsewhere)
    assert dataset_label_reading(folder.folder, card) is not None
