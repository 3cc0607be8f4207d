"""A user's own dataset through every command: the shared dataset arguments, evaluate and
quantize on a folder dataset (with and without dataset.yaml), and the --ignore-index hint."""
import shutil

import pytest

from seg_perception.cli import build_parser, main

DATASET_COMMANDS = ("train", "evaluate", "quantize", "release", "pack-dataset", "make-bag", "bench")
CARD_COMMANDS = ("evaluate", "quantize", "release")  # a model card's classes stand in for a missing dataset.yaml


@pytest.fixture(scope="module")
def folder_dataset(camvid_sample, tmp_path_factory):
    """The CamVid sample packed as a folder dataset (train 10, val 10) with its dataset.yaml."""
    out = tmp_path_factory.mktemp("folder_ds")
    assert main(["pack-dataset", "--data", str(camvid_sample), "--out", str(out)]) == 0
    return out


def _subparsers():
    parser, _ = build_parser()
    return next(a for a in parser._actions if a.choices and "train" in a.choices).choices


def test_dataset_commands_share_one_definition():
    subs = _subparsers()
    seen = {}
    for name in DATASET_COMMANDS:
        opts = {o: a for a in subs[name]._actions for o in a.option_strings}
        for flag in ("--dataset", "--data", "--num-classes", "--ignore-index"):
            assert flag in opts, f"{name} lacks {flag}"
            # one wording for the commands that read a model card, one for those that read none
            seen.setdefault((flag, name in CARD_COMMANDS), set()).add((opts[flag].help, str(opts[flag].choices)))
    assert all(len(v) == 1 for v in seen.values()), seen


def test_evaluate_folder_dataset_with_description(folder_dataset, random_model, capsys):
    rc = main(["evaluate", "--model", str(random_model), "--dataset", "folder", "--data", str(folder_dataset),
               "--split", "val", "--limit", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "on folder val (2 frames" in out and "mIoU" in out and "Road" in out


def test_evaluate_reads_the_folder_description(folder_dataset, random_model, tmp_path, capsys):
    """The folder's dataset.yaml decides classes and ignore value, not the card: the same frames
    with a description that differs from the card in each change what evaluate does."""
    import yaml
    doc = yaml.safe_load((folder_dataset / "dataset.yaml").read_text())
    assert doc["ignore_index"] == 11 and len(doc["classes"]) == 11  # as the card says

    def evaluate_with(changed: dict) -> tuple[int, str]:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(folder_dataset, folder)
        (folder / "dataset.yaml").write_text(yaml.safe_dump({**doc, **changed}))
        rc = main(["evaluate", "--model", str(random_model), "--dataset", "folder", "--data", str(folder),
                   "--split", "val", "--limit", "1", "--threads", "1"])
        out = capsys.readouterr()
        return rc, out.out + out.err

    rc, out = evaluate_with({"ignore_index": 255})  # CamVid's unlabelled 11 becomes a bad label value
    assert rc == 2 and "value 11 outside the 11 classes" in out, out
    rc, out = evaluate_with({"classes": doc["classes"] + [{"name": "Extra", "color": [1, 2, 3]}], "ignore_index": 255})
    assert rc == 2 and "folder val has 12 classes (Sky, Building" in out and "has 11 (Sky," in out, out
    swapped = [doc["classes"][1], doc["classes"][0]] + doc["classes"][2:]
    rc, out = evaluate_with({"classes": swapped})  # ids that mean other classes: a meaningless mIoU
    assert rc == 2 and "the same classes in another order (a folder dataset: list them in the model's order" in out, out


def test_evaluate_folder_without_description_uses_card(folder_dataset, random_model, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(folder_dataset, bare, ignore=shutil.ignore_patterns("dataset.yaml"))
    rc = main(["evaluate", "--model", str(random_model), "--dataset", "folder", "--data", str(bare),
               "--limit", "1", "--threads", "1"])
    assert rc == 0 and "Pedestrian" in capsys.readouterr().out  # class names from the card
    # Flags win over the card: CamVid's unlabelled value 11 is outside 11 classes -> the hint
    rc = main(["evaluate", "--model", str(random_model), "--dataset", "folder", "--data", str(bare),
               "--num-classes", "11", "--limit", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "value 11 outside the 11 classes" in err and "pass --ignore-index 11" in err
    assert len(err.strip().splitlines()) == 1


def test_a_typed_ignore_index_255_is_the_users_not_the_default(folder_dataset, random_model, tmp_path, capsys):
    """--ignore-index 255 typed by the user counts, though 255 is what a folder has when nothing is said:
    without dataset.yaml it wins over the card's ignore id (11 here); against a dataset.yaml that says
    11 it is a contradiction, not a silent no-op."""
    import cv2
    import numpy as np
    bare = tmp_path / "bare255"
    shutil.copytree(folder_dataset, bare, ignore=shutil.ignore_patterns("dataset.yaml"))
    for lab in (bare / "val" / "labels").iterdir():  # this tool marks unlabelled pixels 255, not 11
        ids = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
        assert (ids == 11).any()
        cv2.imwrite(str(lab), np.where(ids == 11, 255, ids).astype(np.uint8))
    args = ["evaluate", "--model", str(random_model), "--dataset", "folder", "--split", "val", "--limit", "1",
            "--threads", "1"]
    rc = main(args + ["--data", str(bare)])  # the card's 11 is the ignore id: 255 is a class that is not there
    assert rc == 2 and "pass --ignore-index 255" in capsys.readouterr().err
    rc = main(args + ["--data", str(bare), "--ignore-index", "255"])
    out = capsys.readouterr()
    assert rc == 0 and "mIoU" in out.out, out.err
    rc = main(args + ["--data", str(folder_dataset), "--ignore-index", "255"])
    err = capsys.readouterr().err
    assert rc == 2 and "--ignore-index 255 but" in err and "says the ignore id is 11: drop the flag" in err, err
    rc = main(["train", "--model", "essnet_d", "--dataset", "folder", "--data", str(folder_dataset),
               "--ignore-index", "255", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "says the ignore id is 11: drop the flag" in err and not (tmp_path / "run").exists(), err
    rc = main(["train", "--model", "essnet_d", "--dataset", "folder", "--data", str(folder_dataset),
               "--ignore-index", "11", "--train-split", "tr", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "no split 'tr'" in err and "name one of them with --train-split" in err, err


def test_folder_needs_data_one_line(random_model, capsys, tmp_path):
    assert main(["evaluate", "--model", str(random_model), "--dataset", "folder"]) == 2
    assert "--data is required for --dataset folder" in capsys.readouterr().err
    # bench calibrates its INT8 models on the named dataset: it must open, before any work
    assert main(["bench", "--dataset", "folder", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no split 'train' in" in err and "splits here: none" in err and len(err.strip().splitlines()) == 1


def test_quantize_on_folder_dataset(folder_dataset, random_model, tmp_path, capsys):
    src = tmp_path / "m.onnx"
    shutil.copy(random_model.with_suffix(".onnx"), src)
    shutil.copy(random_model.with_suffix(".onnx").with_suffix(".yaml"), src.with_suffix(".yaml"))
    rc = main(["quantize", "--onnx", str(src), "--dataset", "folder", "--data", str(folder_dataset),
               "--num-images", "2", "--method", "ort", "--eval", "--max-eval-images", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"calibrating on 2 images from folder {folder_dataset} train" in out
    assert "val (1 images, ONNX Runtime CPU)" in out
    # a dataset whose one split is not called train (CVAT's 'default'): --calib-split
    rc = main(["quantize", "--onnx", str(src), "--dataset", "folder", "--data", str(folder_dataset),
               "--calib-split", "val", "--num-images", "2", "--method", "ort", "--threads", "1", "--replace"])
    assert rc == 0 and f"calibrating on 2 images from folder {folder_dataset} val" in capsys.readouterr().out
    # without --calib-split: the split the card says the weights first trained on, as release calibrates
    # (a CVAT export's 'default' was refused: "no split 'train'"; here val stands for it)
    import yaml
    card = yaml.safe_load(src.with_suffix(".yaml").read_text())
    card["training"] = dict(card.get("training") or {}, train_split="val")
    src.with_suffix(".yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    rc = main(["quantize", "--onnx", str(src), "--dataset", "folder", "--data", str(folder_dataset),
               "--num-images", "2", "--method", "ort", "--threads", "1", "--replace"])
    assert rc == 0 and f"calibrating on 2 images from folder {folder_dataset} val" in capsys.readouterr().out


def test_quantize_refuses_data_of_other_classes_and_drops_stale_figures(folder_dataset, random_model, tmp_path,
                                                                      capsys):
    """Calibrating a folder model on CamVid (the --dataset default) is refused; an INT8 file made
    without --eval takes the card's previous INT8 figures away instead of inheriting them."""
    import yaml
    src = tmp_path / "m.onnx"
    shutil.copy(random_model.with_suffix(".onnx"), src)
    card = yaml.safe_load(random_model.with_suffix(".yaml").read_text())
    renamed = [{**c, "name": f"mine{i}"} for i, c in enumerate(card["classes"])]
    src.with_suffix(".yaml").write_text(yaml.safe_dump({**card, "classes": renamed,
                                                        "metrics": {"int8": {"miou_drop": 0.1}}}))
    rc = main(["quantize", "--onnx", str(src), "--data", str(folder_dataset), "--dataset", "folder",
               "--num-images", "2", "--method", "ort"])
    err = capsys.readouterr().err
    assert rc == 2 and "folder train has 11 classes (Sky," in err and "--calib-data DIR" in err, err
    assert len(err.strip().splitlines()) == 1
    frames = tmp_path / "frames"
    shutil.copytree(folder_dataset / "train" / "images", frames)
    rc = main(["quantize", "--onnx", str(src), "--calib-data", str(frames), "--num-images", "2", "--method", "ort"])
    assert rc == 0, capsys.readouterr()
    after = yaml.safe_load(src.with_suffix(".yaml").read_text())
    assert after["files"]["onnx_int8"] == "m_int8.onnx" and "int8" not in after["metrics"]


def _frame(path, value, ext=".jpg"):
    import cv2
    import numpy as np
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path) + ext, np.full((8, 12, 3), value, np.uint8))


def _mask(path, class_id):
    import cv2
    import numpy as np
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path) + ".png", np.full((8, 12), class_id, np.uint8))


def test_folder_dataset_reads_frames_in_subfolders_paired_by_path(tmp_path):
    """One folder per drive (images/seq1/, labels/seq1/) is a common layout: those frames are read,
    each paired with the label at the same path below labels/ (the same file name in two folders
    are two frames), in sorted order; a label without its image is named by that path; a flat
    dataset reads the same frames in the same order as it always did."""
    from seg_perception.data.datasets import DatasetError, image_folder
    (tmp_path / "dataset.yaml").write_text("classes: [a, b, c, d, e, f]\n")
    img, lab = tmp_path / "train" / "images", tmp_path / "train" / "labels"
    layout = {"f0": 0, "f1": 1, "seq1/f0": 2, "seq1/f2": 3, "seq2/deep/f0": 4, "seq2/f5": 5}
    for i, (name, cid) in enumerate(layout.items()):
        _frame(img / name, 40 * i)
        _mask(lab / name, cid)
    _mask(lab / "seq1" / "gone", 1)  # its image is missing
    (img / ".ipynb_checkpoints").mkdir()  # hidden: no data
    _frame(img / ".ipynb_checkpoints" / "f0", 0)
    (lab / "._f0.png").write_bytes(b"\0")
    ds = image_folder(tmp_path, "train")
    got = [p.relative_to(img).with_suffix("").as_posix() for p, _ in ds.pairs]
    assert got == ["f0", "f1", "seq1/f0", "seq1/f2", "seq2/deep/f0", "seq2/f5"], got
    assert [int(ds.load(i)[1][0, 0]) for i in range(len(ds))] == list(layout.values())
    assert [l.relative_to(lab).as_posix() for _, l in ds.pairs] == [f"{n}.png" for n in layout]
    alone = [n for n in ds.notes if "have no image" in n]
    assert len(alone) == 1 and "1 label(s)" in alone[0] and "(e.g. seq1/gone.png)" in alone[0], ds.notes
    _frame(img / "seq3" / "f9", 0)  # its label is at the top, not in labels/seq3/
    _mask(lab / "f9", 0)
    with pytest.raises(DatasetError, match=r"has no label: .*labels/seq3/f9.png does not exist \(.*labels/f9.png is "
                                           r"not its label: .*the same subfolder of labels/\)"):
        image_folder(tmp_path, "train")

    flat = tmp_path / "flat"  # names with dots, case, twins in two formats, stray files: as before
    flat.mkdir()
    (flat / "dataset.yaml").write_text("classes: [a, b]\n")
    for name, ext in (("b.2", ".jpg"), ("B", ".png"), ("a", ".jpg"), ("a", ".png"), ("c_1", ".bmp")):
        _frame(flat / "train" / "images" / name, 9, ext)
        _mask(flat / "train" / "labels" / name, 1)
    (flat / "train" / "images" / "notes.txt").write_text("x")
    (flat / "train" / "images" / "._a.jpg").write_bytes(b"\0")
    ds = image_folder(flat, "train")
    assert [(p.name, l.name) for p, l in ds.pairs] == [("B.png", "B.png"), ("a.jpg", "a.png"), ("a.png", "a.png"),
                                                       ("b.2.jpg", "b.2.png"), ("c_1.bmp", "c_1.png")]
    assert not [n for n in ds.notes if "have no image" in n]


def test_class_flags_other_than_camvids_are_refused_for_the_segnet_layout(camvid_sample, random_model, tmp_path,
                                                                          capsys):
    """--ignore-index / --num-classes with --dataset camvid (no label_colors.txt) were dropped unseen."""
    from seg_perception.data.datasets import DatasetError, open_dataset
    for flags, named in ((["--ignore-index", "5"], "--ignore-index 5"), (["--ignore-index", "0"], "--ignore-index 0"),
                         (["--num-classes", "5"], "--num-classes 5")):
        rc = main(["evaluate", "--model", str(random_model), "--data", str(camvid_sample), "--split", "val",
                   "--limit", "1", *flags])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{named} does not apply to --dataset camvid" in err and "--dataset folder" in err, err
    with pytest.raises(DatasetError, match="--num-classes 5 does not apply"):  # as train opens its splits
        open_dataset("camvid", camvid_sample, "train", num_classes=5, ignore_index=255)
    # CamVid's own figures, a default, or a card's classes are no contradiction
    assert len(open_dataset("camvid", camvid_sample, "val", num_classes=11, ignore_index=11, ignore_given=True))
    assert len(open_dataset("camvid", camvid_sample, "val", num_classes=0, ignore_index=255))
    assert len(open_dataset("camvid", camvid_sample, "val", num_classes=5, ignore_index=3, from_card=True))
