"""pack-dataset and dataset.yaml: a packed CamVid split reads back as a folder dataset with
CamVid's classes, identical labels and near-identical frames; bad descriptions get one line."""
from pathlib import Path

import numpy as np
import pytest

from seg_perception.cli import main
from seg_perception.data.classes import CAMVID
from seg_perception.data.datasets import DatasetError, camvid, image_folder, read_description
from seg_perception.data.pack import pack_dataset


def test_packed_camvid_reads_back_as_folder(tmp_path, camvid_full, capsys):
    camvid_root = camvid_full  # counts the full val split (101 frames)
    assert main(["pack-dataset", "--data", str(camvid_root), "--splits", "val", "--out", str(tmp_path)]) == 0
    assert "val: 101 frames" in capsys.readouterr().out
    packed = image_folder(tmp_path, "val")  # classes from dataset.yaml, no flags
    assert packed.table.names == CAMVID.names and packed.table.colors == CAMVID.colors
    assert packed.table.ignore_index == 11 and packed.table.drivable == (3,)
    orig = camvid(camvid_root, "val")
    assert len(packed) == len(orig)
    for i in (0, 50, 100):
        (a, la), (b, lb) = orig.load(i), packed.load(i)
        np.testing.assert_array_equal(la, lb)
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0  # JPEG q95


def test_description_by_names_and_flags_mismatch(tmp_path):
    (tmp_path / "dataset.yaml").write_text("classes: [ground, wall, person]\nignore_index: 255\ndrivable: [ground]\n")
    table = read_description(tmp_path)
    assert table.names == ("ground", "wall", "person") and table.drivable == (0,)
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    with pytest.raises(DatasetError, match="--num-classes 5 but .*dataset.yaml lists 3 classes"):
        image_folder(tmp_path, "train", num_classes=5)


@pytest.mark.parametrize("text, match", [
    ("classes: [only]\n", "at least two classes"),
    ("classes: [a, b]\nignore_index: 1\n", "ignore_index must be a label value in 2..255"),
    ("classes: [a, b]\ndrivable: [road]\n", "drivable class 'road' is neither"),
    ("classes: [{name: a, color: [1, 2]}, b]\n", "color must be \\[r, g, b\\]"),
    ("classes: [a, b\n", "not valid YAML at line 2"),
    ("class_names: [a, b]\n", "unknown key 'class_names' \\(did you mean 'classes'\\?\\); the keys are name, classes"),
    ("- a\n- b\n", "must be a mapping with name, classes, ignore_index, ignore_color, drivable, labels"),
    ("classes: [a, b]\nlabels: colours\n", "labels must be 'ids'"),
])
def test_bad_description_one_line(tmp_path, text, match):
    (tmp_path / "dataset.yaml").write_text(text)
    with pytest.raises(DatasetError, match=match):
        read_description(tmp_path)


def test_folder_without_classes_says_how(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    with pytest.raises(DatasetError, match="write .*dataset.yaml or pass --num-classes"):
        image_folder(tmp_path, "train")


def test_pack_refuses_a_folder_that_holds_frames(tmp_path, camvid_sample):
    """Packing into a folder with an earlier packing's frames (or into the dataset itself) would
    mix them into the training split: refused before anything is written."""
    assert main(["pack-dataset", "--data", str(camvid_sample), "--splits", "val", "--out", str(tmp_path / "p")]) == 0
    with pytest.raises(DatasetError, match=r"p already holds a dataset \(dataset.yaml\): pack into a new"):
        pack_dataset("camvid", camvid_sample, ["train"], tmp_path / "p")
    (tmp_path / "p" / "dataset.yaml").rename(tmp_path / "dataset.yaml")
    with pytest.raises(DatasetError, match=r"p/val already holds 20 files: pack into a new or empty folder"):
        pack_dataset("camvid", camvid_sample, ["val"], tmp_path / "p")
    (tmp_path / "dataset.yaml").rename(tmp_path / "p" / "dataset.yaml")
    with pytest.raises(DatasetError, match="is the dataset itself"):
        pack_dataset("folder", tmp_path / "p", ["val"], tmp_path / "p")
    with pytest.raises(DatasetError, match=r"splits here: val\): name one of them with --splits$"):
        pack_dataset("folder", tmp_path / "p", ["train"], tmp_path / "q")


def test_frames_of_one_name_in_two_formats_both_pack(tmp_path):
    """a.jpg and a.png in one images folder (or one name in two folders) would pack to one a.jpg,
    the second overwriting the first while the count said two: each keeps its own file."""
    import cv2
    for sub in ("images", "labels"):
        (tmp_path / "ds" / "train" / sub).mkdir(parents=True)
    (tmp_path / "ds" / "dataset.yaml").write_text("classes: [ground, wall]\n")
    cv2.imwrite(str(tmp_path / "ds" / "train" / "images" / "a.jpg"), np.full((8, 8, 3), 40, np.uint8))
    cv2.imwrite(str(tmp_path / "ds" / "train" / "images" / "a.png"), np.full((8, 8, 3), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "ds" / "train" / "labels" / "a.png"), np.ones((8, 8), np.uint8))
    assert pack_dataset("folder", tmp_path / "ds", ["train"], tmp_path / "out", log=lambda *_: None) == {"train": 2}
    packed = image_folder(tmp_path / "out", "train")
    assert len(packed) == 2
    assert sorted(int(packed.load(i)[0].mean()) // 20 for i in range(2)) == [2, 10]  # both frames, not one twice


def test_packed_ids_are_not_read_back_as_colours(tmp_path):
    """Classes coloured white and black: a frame whose ids are 0 and 255 (ignored) only, packed as a
    grey PNG, read back as colours (lane became ground, the ignored pixels lane), decided frame by
    frame. The packed dataset.yaml says `labels: ids`: every frame reads back as the ids it had."""
    import cv2
    ds = tmp_path / "ds"
    for sub in ("images", "labels"):
        (ds / "train" / sub).mkdir(parents=True)
    (ds / "dataset.yaml").write_text("classes:\n  - {name: lane, color: [255, 255, 255]}\n"
                                     "  - {name: ground, color: [0, 0, 0]}\nignore_color: [128, 128, 128]\n")
    colour = {"f": [(255, 255, 255), (128, 128, 128)], "g": [(255, 255, 255), (0, 0, 0)]}
    for name, (top, bottom) in colour.items():
        cv2.imwrite(str(ds / "train" / "images" / f"{name}.png"), np.full((8, 8, 3), 90, np.uint8))
        lab = np.zeros((8, 8, 3), np.uint8)
        lab[:4], lab[4:] = top[::-1], bottom[::-1]  # (BGR)
        cv2.imwrite(str(ds / "train" / "labels" / f"{name}.png"), lab)
    source = image_folder(ds, "train")
    want = {Path(p).stem: source.load(i)[1] for i, (p, _) in enumerate(source.pairs)}
    assert set(np.unique(want["f"])) == {0, 255} and set(np.unique(want["g"])) == {0, 1}
    assert pack_dataset("folder", ds, ["train"], tmp_path / "out", log=lambda *_: None) == {"train": 2}
    packed = image_folder(tmp_path / "out", "train")
    assert "labels: ids" in (tmp_path / "out" / "dataset.yaml").read_text()
    for i, (p, lp) in enumerate(packed.pairs):
        assert cv2.imread(str(lp), cv2.IMREAD_UNCHANGED).ndim == 2  # plain id PNGs, as any tool reads them
        np.testing.assert_array_equal(packed.load(i)[1], want[Path(p).stem])
