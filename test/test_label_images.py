"""Label images as labelling tools save them: palette PNGs (ids as palette indices), RGB masks
coloured as dataset.yaml says, ids saved as grey RGB, 16-bit ids; each read to the exact ids,
and each wrong form refused with one line naming the file and the way out."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import needs_torch
from seg_perception.cli import main
from seg_perception.data.classes import voc_colormap
from seg_perception.data.datasets import DatasetError, image_folder, open_dataset

COLOURS = {0: (128, 64, 128), 1: (70, 70, 70), 2: (220, 20, 60)}  # road, wall, person (display colours)
YAML = """classes:
  - {name: road, color: [128, 64, 128]}
  - {name: wall, color: [[70, 70, 70], [102, 102, 156]]}
  - {name: person, color: [220, 20, 60]}
ignore_color: [0, 0, 0]
drivable: [road]
"""


def _ids(seed: int = 0, shape=(24, 32)) -> np.ndarray:
    """Ids 0-2 in blocks, with a band of the ignore id 255."""
    rng = np.random.default_rng(seed)
    ids = np.kron(rng.integers(0, 3, (shape[0] // 4, shape[1] // 4)), np.ones((4, 4), int)).astype(np.uint8)
    ids[:, -4:] = 255
    return ids


def _folder(tmp_path, yaml_text=YAML, names=("a", "b")):
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True, exist_ok=True)
    if yaml_text is not None:
        (tmp_path / "dataset.yaml").write_text(yaml_text)
    for n in names:
        cv2.imwrite(str(tmp_path / "train" / "images" / f"{n}.jpg"), np.full((24, 32, 3), 90, np.uint8))
    return tmp_path / "train" / "labels"


def _rgb_mask(ids: np.ndarray) -> np.ndarray:
    rgb = np.zeros(ids.shape + (3,), np.uint8)  # 255 -> ignore_color black
    for cid, col in COLOURS.items():
        rgb[ids == cid] = col
    return rgb


def test_palette_png_reads_its_indices(tmp_path):
    labels = _folder(tmp_path, "classes: [road, wall, person]\n")
    want = [_ids(0), _ids(1)]
    for n, ids in zip("ab", want):
        im = Image.fromarray(ids, mode="P")
        im.putpalette([128, 64, 128, 70, 70, 70, 220, 20, 60] + [0, 0, 0] * 253)
        im.save(labels / f"{n}.png")
        assert cv2.imread(str(labels / f"{n}.png"), cv2.IMREAD_UNCHANGED).ndim == 3  # what OpenCV alone gave
    ds = image_folder(tmp_path, "train")
    for i, ids in enumerate(want):
        np.testing.assert_array_equal(ds.load(i)[1], ids)


def test_rgb_mask_maps_colours_to_ids(tmp_path):
    labels = _folder(tmp_path)
    ids = _ids(2)
    rgb = _rgb_mask(ids)
    rgb[:4, :4] = (102, 102, 156)  # wall's second colour
    ids[:4, :4] = 1
    cv2.imwrite(str(labels / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(labels / "b.bmp"), cv2.cvtColor(_rgb_mask(_ids(3)), cv2.COLOR_RGB2BGR))
    ds = image_folder(tmp_path, "train")
    assert ds.table.names == ("road", "wall", "person") and ds.table.colors[1] == (70, 70, 70)
    assert ds.table.drivable == (0,)
    np.testing.assert_array_equal(ds.load(0)[1], ids)
    np.testing.assert_array_equal(ds.load(1)[1], _ids(3))
    rgba = np.dstack([cv2.cvtColor(_rgb_mask(_ids(4)), cv2.COLOR_RGB2BGR), np.full((24, 32), 255, np.uint8)])
    cv2.imwrite(str(labels / "a.png"), rgba)
    np.testing.assert_array_equal(image_folder(tmp_path, "train").load(0)[1], _ids(4))


def test_unknown_colour_is_named_with_its_pixel_count(tmp_path):
    labels = _folder(tmp_path, names=("a",))
    rgb = _rgb_mask(_ids(5))
    rgb[0, :7] = (127, 64, 128)  # a blended edge
    cv2.imwrite(str(labels / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with pytest.raises(DatasetError, match=r"labels/a.png has 1 colour\(s\) that no class has in .*dataset.yaml "
                                           r"\(\(127, 64, 128\) on 7 px; 0.91 % of its pixels\).*save them as PNG"):
        image_folder(tmp_path, "train").load(0)


def test_colour_mask_without_colours_says_how(tmp_path):
    labels = _folder(tmp_path, "classes: [road, {name: wall, color: [70, 70, 70]}, person]\n", names=("a",))
    cv2.imwrite(str(labels / "a.png"), cv2.cvtColor(_rgb_mask(_ids(6)), cv2.COLOR_RGB2BGR))
    with pytest.raises(DatasetError, match="a colour image, but .*dataset.yaml gives no color to road, person"):
        image_folder(tmp_path, "train").load(0)
    (tmp_path / "dataset.yaml").unlink()
    with pytest.raises(DatasetError, match=r"a colour image: to read colour-coded labels give every class its "
                                           r"colour in dataset.yaml .*or save labels as single-channel PNGs"):
        image_folder(tmp_path, "train", num_classes=3).load(0)


def test_ids_saved_as_grey_rgb_and_16_bit(tmp_path):
    labels = _folder(tmp_path, "classes: [road, wall, person]\n")
    cv2.imwrite(str(labels / "a.png"), np.dstack([_ids(7)] * 3))
    cv2.imwrite(str(labels / "b.png"), _ids(8).astype(np.uint16))
    ds = image_folder(tmp_path, "train")
    np.testing.assert_array_equal(ds.load(0)[1], _ids(7))
    np.testing.assert_array_equal(ds.load(1)[1], _ids(8))
    wide = _ids(8).astype(np.uint16)
    wide[0, 0] = 256  # was cast to 0 (road) before the range check
    cv2.imwrite(str(labels / "b.png"), wide)
    with pytest.raises(DatasetError, match="labels/b.png has value 256: class ids and the ignore id must be 0..255"):
        image_folder(tmp_path, "train").load(1)
    (tmp_path / "dataset.yaml").unlink()
    for ignore in (256, 65535, 2, 0):  # 256 crashed training; 2 is a class id
        with pytest.raises(DatasetError, match=f"--ignore-index {ignore} must be a label value in 3..255") as e:
            image_folder(tmp_path, "train", num_classes=3, ignore_index=ignore)
        assert ("first_id: 1" in str(e.value)) == (ignore == 0)  # masks numbering the classes from 1
    (tmp_path / "dataset.yaml").write_text("classes: [road, wall, person]\n")
    with pytest.raises(DatasetError, match="--ignore-index 7 but .*dataset.yaml says the ignore id is 255"):
        image_folder(tmp_path, "train", ignore_index=7)


def test_jpeg_or_misnamed_labels_are_refused_up_front(tmp_path):
    labels = _folder(tmp_path, "classes: [road, wall, person]\n", names=("a",))
    cv2.imwrite(str(labels / "a.jpg"), _ids(9))
    with pytest.raises(DatasetError, match="label .*labels/a.jpg of image .*a.jpg is not a lossless image: save "
                                           "labels as PNG"):
        image_folder(tmp_path, "train")
    (labels / "a.jpg").unlink()
    (labels / "a.json").write_text('{"shapes": []}')  # LabelMe's polygons: not a mask
    with pytest.raises(DatasetError, match="label .*labels/a.json of image .*a.jpg is an annotation file, not a mask: "
                                           "export the annotations as PNG masks"):
        image_folder(tmp_path, "train")
    (labels / "a.json").unlink()
    cv2.imwrite(str(labels / "a_mask.png"), _ids(9))
    with pytest.raises(DatasetError, match=r"has no label: .*labels/a.png does not exist \(the nearest name in the "
                                           r"label folder is a_mask.png: a label has its image's name\)$"):
        image_folder(tmp_path, "train")
    # among other labels the hint names the closest (it named whichever the folder listed first)
    shutil.rmtree(tmp_path / "train")
    labels = _folder(tmp_path, "classes: [road, wall, person]\n", names=("0001TP_006690",))
    for n in ("0016E5_00901", "0016E5_08159", "Seq05VD_f00000", "0006R0_f01890", "0001TP_008550", "0016E5_05130",
              "Seq05VD_f05100", "0006R0_f03930", "0001TP_006690_L", "0016E5_07965", "Seq05VD_f02370"):
        cv2.imwrite(str(labels / f"{n}.png"), _ids(9))
    with pytest.raises(DatasetError, match=r"labels/0001TP_006690.png does not exist \(the nearest name in the label "
                                           r"folder is 0001TP_006690_L.png:"):
        image_folder(tmp_path, "train")
    # a label another image has is not the hint (f001's nearest was f003.png, f003.jpg's own label)
    shutil.rmtree(tmp_path / "train")
    labels = _folder(tmp_path, "classes: [road, wall, person]\n", names=("f000", "f001", "f002", "f003"))
    for n in ("f000", "f002", "f003", "f001_mask"):
        cv2.imwrite(str(labels / f"{n}.png"), _ids(9))
    with pytest.raises(DatasetError, match=r"labels/f001.png does not exist \(the nearest name in the label "
                                           r"folder is f001_mask.png:"):
        image_folder(tmp_path, "train")
    (labels / "f001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"labels/f001.png does not exist$"):
        image_folder(tmp_path, "train")


@pytest.mark.parametrize("text, match", [
    ("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [[4, 5, 6], [1, 2, 3]]}]\n",
     r"colour \[1, 2, 3\] is given to both a and b"),
    ("classes: [{name: a, color: [1, 2, 3]}, b]\nignore_color: [[1, 2, 3]]\n",
     r"colour \[1, 2, 3\] is given to both a and ignore_color"),
    ("classes: [a, b]\nignore_color: [0, 0]\n", r"ignore_color must be \[r, g, b\] in 0..255, or a list"),
    ("classes: [{name: a, color: []}, b]\n", r"class 0 \(a\) color must be"),
])
def test_bad_label_colours_one_line(tmp_path, text, match):
    _folder(tmp_path, text, names=())
    with pytest.raises(DatasetError, match=match):
        image_folder(tmp_path, "train")


def test_packed_colour_dataset_holds_the_ids(tmp_path):
    """pack-dataset turns a colour-coded dataset into ids that read back without the colours."""
    src = tmp_path / "src"
    labels = _folder(src)
    for n, seed in zip("ab", (10, 11)):
        cv2.imwrite(str(labels / f"{n}.png"), cv2.cvtColor(_rgb_mask(_ids(seed)), cv2.COLOR_RGB2BGR))
    assert main(["pack-dataset", "--dataset", "folder", "--data", str(src), "--splits", "train",
                 "--out", str(tmp_path / "packed")]) == 0
    packed = image_folder(tmp_path / "packed", "train")
    assert packed.table.names == ("road", "wall", "person") and packed.table.ignore_index == 255
    for i, seed in enumerate((10, 11)):
        np.testing.assert_array_equal(packed.load(i)[1], _ids(seed))


@needs_torch
def test_cvat_segmentation_mask_export_trains_as_it_is(tmp_path, camvid_sample, capsys):
    """CVAT's Segmentation Mask export (Pascal VOC layout, labelmap.txt, RGB masks) is a folder
    dataset as it comes out of the zip: ids follow labelmap.txt, the run's card carries its names."""
    from seg_perception.data.classes import CAMVID
    from seg_perception.data.datasets import camvid
    root = tmp_path / "task_export"
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass", "SegmentationObject"):
        (root / sub).mkdir(parents=True)
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(CAMVID.names, CAMVID.colors)]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    src = camvid(camvid_sample, "train")
    want = []
    for i in range(4):
        img, ids = src.load(i)
        name = f"frame_{i:06d}"
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rgb = np.zeros(ids.shape + (3,), np.uint8)  # void: CVAT's background
        for k, col in enumerate(CAMVID.colors):
            rgb[ids == k] = col
        cv2.imwrite(str(root / "SegmentationClass" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "SegmentationObject" / f"{name}.png"), rgb[..., ::-1])  # not read
        want.append(np.where(ids == CAMVID.ignore_index, 0, ids + 1))
    (root / "ImageSets/Segmentation/default.txt").write_text("\n".join(f"frame_{i:06d}" for i in range(4)) + "\n")

    ds = image_folder(root, "default")
    assert ds.table.names == ("background",) + CAMVID.names and ds.table.colors[4] == CAMVID.colors[3]
    for i in range(4):
        np.testing.assert_array_equal(ds.load(i)[1], want[i])
    with pytest.raises(DatasetError, match=r"no split 'val' in .*splits here: default\)"):
        image_folder(root, "val")

    # the README's command: from the shipped model, whose classifier rows follow the names
    assert main(["train", "--model", "rdsnet", "--dataset", "folder", "--data", str(root), "--out",
                 str(tmp_path / "run"), "--train-split", "default", "--val-split", "none",  # ships the last epoch
                 "--init", "rdsnet_camvid", "--epochs", "1", "--batch-size", "2", "--width", "96", "--height", "72",
                 "--threads", "1"]) == 0
    assert "classifier matched by class name: 11 of 12 classes from it, new: background" in capsys.readouterr().out
    card = (tmp_path / "run" / "rdsnet_folder.yaml").read_text()
    assert "name: background" in card and "name: Bicyclist" in card
    # a val list copied from the training list instead of moved out of it
    (root / "ImageSets/Segmentation/val.txt").write_text("frame_000003\n")
    assert main(["train", "--model", "rdsnet", "--dataset", "folder", "--data", str(root), "--out",
                 str(tmp_path / "run2"), "--train-split", "default", "--val-split", "val", "--epochs", "1",
                 "--width", "96", "--height", "72", "--threads", "1"]) == 2
    assert ("1 of the 1 'val' frames are training frames too (e.g. " in capsys.readouterr().err)


@pytest.mark.parametrize("text, match", [
    ("background:0,0,0::\nroad:128,64::\n", r"labelmap.txt:2: expected 'name:r,g,b:parts:actions'"),
    ("background:0,0,0::\n", r"lists 1 class\(es\)"),
    ("a:1,2,3::\nb:1,2,3::\n", r"colour \[1, 2, 3\] is given to both a and b"),
])
def test_bad_labelmap_one_line(tmp_path, text, match):
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "labelmap.txt").write_text(text)
    with pytest.raises(DatasetError, match=match):
        image_folder(tmp_path, "default")


def test_labelmap_without_colours_reads_voc_palette_colours(tmp_path):
    """Datumaro's VOC export with the source labels writes 'name:::' and draws the masks in the
    PASCAL VOC palette (id 1 (128, 0, 0), id 2 (0, 128, 0)); a 1-channel mask holds the ids."""
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:::\nroad:::\nperson:::\n")
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\nb\n")
    ids = _ids(12)
    ids[ids == 255] = 0
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    rgb[ids == 1], rgb[ids == 2] = (128, 0, 0), (0, 128, 0)
    for n in "ab":
        cv2.imwrite(str(tmp_path / "JPEGImages" / f"{n}.jpg"), np.full((24, 32, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "b.png"), ids)
    ds = image_folder(tmp_path, "default")
    assert ds.table.colors == ((0, 0, 0), (128, 0, 0), (0, 128, 0))
    np.testing.assert_array_equal(ds.load(0)[1], ids)
    np.testing.assert_array_equal(ds.load(1)[1], ids)


def test_label_of_a_turned_frame_or_another_size_says_why(tmp_path):
    labels = _folder(tmp_path, "classes: [road, wall, person]\n", names=("a",))
    cv2.imwrite(str(labels / "a.png"), _ids(13).T.copy())
    with pytest.raises(DatasetError, match=r"labels/a.png is 24x32 but image .*a.jpg is 32x24 \(turned: .*EXIF"):
        image_folder(tmp_path, "train").load(0)
    # another size: the message says how to fix it (nearest-neighbour, never linear), not only what is wrong
    cv2.imwrite(str(labels / "a.png"), _ids(13)[::2, ::2].copy())
    with pytest.raises(DatasetError, match=r"labels/a.png is 16x12 but image .*a.jpg is 32x24: resize the label to "
                                           r"32x24 with nearest-neighbour \(cv2.INTER_NEAREST, PIL Image.NEAREST; "
                                           r"never linear"):
        image_folder(tmp_path, "train").load(0)


def test_voc_layout_with_classes_from_flags_keeps_its_notes(tmp_path):
    """No labelmap.txt and no dataset.yaml (--num-classes gives the classes): a listed frame without a
    mask is still left out with a note, as with a classes file."""
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\nb\n")
    for n in "ab":
        cv2.imwrite(str(tmp_path / "JPEGImages" / f"{n}.jpg"), np.full((24, 32, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "a.png"), _ids(4))
    ds = image_folder(tmp_path, "default", num_classes=3)
    assert len(ds) == 1 and len(ds.notes) == 1 and "left out" in ds.notes[0], ds.notes


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_frames_with_an_exif_turn_are_noted_as_they_are_read(tmp_path, suffix):
    """A 180° EXIF tag keeps the frame's size, so no size check can catch labels drawn on the other
    view: the dataset says which view it reads (frames without a tag: no note). OpenCV turns JPEG
    frames, and PNG frames in newer releases; the note follows what this OpenCV does."""
    from seg_perception.data.datasets import opencv_applies_exif
    labels = _folder(tmp_path, "classes: [road, wall, person]\n", names=("a", "b"))
    stored = np.zeros((24, 32, 3), np.uint8)
    stored[:12] = 200  # bright top half as stored: the bottom half once turned upright
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 3
    (tmp_path / "train/images/b.jpg").unlink()
    im.save(tmp_path / f"train/images/b{suffix}", exif=exif, quality=95)
    for n in "ab":
        cv2.imwrite(str(labels / f"{n}.png"), _ids(3))
    ds = image_folder(tmp_path, "train")
    turns = opencv_applies_exif("JPEG" if suffix == ".jpg" else "PNG")
    assert turns or suffix == ".png"  # JPEG: since OpenCV 3.1
    assert len(ds.notes) == 1 and f"1 of the 2 frames carry an EXIF orientation (e.g. b{suffix}: turned 180°" in \
        ds.notes[0], ds.notes
    assert ("are read upright" in ds.notes[0]) == turns and ("read as stored" in ds.notes[0]) == (not turns)
    read = ds.load(1)[0]
    assert (read[:12].mean() < 20 and read[12:].mean() > 180) == turns
    (tmp_path / f"train/images/b{suffix}").unlink()
    cv2.imwrite(str(tmp_path / f"train/images/b{suffix}"), stored)
    assert image_folder(tmp_path, "train").notes == []


def test_16_bit_frames_read_as_the_node_reads_them_and_low_bit_data_is_named(tmp_path, caplog, monkeypatch):
    """A 16-bit PNG frame keeps its high byte (the node's reading of rgb16/mono16); a folder of 12-bit
    data in the low bits would train on near-black frames, and a warning says so, once."""
    import seg_perception.data.datasets as datasets
    monkeypatch.setattr(datasets, "_warned_low_bits", False)
    _folder(tmp_path, "classes: [road, wall, person]\n", names=("a", "b"))
    full = np.random.default_rng(0).integers(0, 65536, (24, 32, 3), dtype=np.uint16)
    for name, frame in (("a", full), ("b", full >> 4)):  # b: 12-bit values
        (tmp_path / f"train/images/{name}.jpg").unlink()
        cv2.imwrite(str(tmp_path / f"train/images/{name}.png"), frame)
        cv2.imwrite(str(tmp_path / f"train/labels/{name}.png"), _ids(3))
    ds = image_folder(tmp_path, "train")
    with caplog.at_level("WARNING"):
        img = ds.load(0)[0]
        assert not caplog.records
        np.testing.assert_array_equal(img, (full >> 8).astype(np.uint8)[..., ::-1])
        assert ds.load(1)[0].max() <= 15  # 4095 >> 8
    assert len(caplog.records) == 1 and "b.png is a 16-bit image whose values all sit below 4096" in caplog.text


def test_description_ids_order_and_yaml_values(tmp_path):
    """Classes with ids in any order are put in id order (drivable follows the names); a name YAML
    reads as a value, an unknown key in a class, a repeated name and a lone drivable name."""
    _folder(tmp_path, "classes:\n  - {name: road, id: 1}\n  - {name: background, id: 0}\n  - {name: car, id: 2}\n"
                      "drivable: road\n", names=("a",))
    cv2.imwrite(str(tmp_path / "train/labels/a.png"), _ids(14))
    ds = image_folder(tmp_path, "train")
    assert ds.table.names == ("background", "road", "car") and ds.table.drivable == (1,)
    for text, match in [
        ("classes: [{name: a, id: 0}, {name: b}]\n", r"class ids must be 0..1, each once, on every class or on none"),
        ("classes: [{name: a, id: 0}, {name: b, id: 2}]\n", r"class ids must be 0..1"),
        ("classes: [{name: a, colour: [1, 2, 3]}, b]\n", r"class 0 \(a\) has unknown key 'colour' \(did you mean "
                                                        r"'color'\?\)"),
        ("classes: [a, yes, b]\n", r"class 1 is True, not a name: .*quote the name"),
        ("classes: [a, b, a]\n", r"class name\(s\) a listed twice"),
    ]:
        (tmp_path / "dataset.yaml").write_text(text)
        with pytest.raises(DatasetError, match=match):
            image_folder(tmp_path, "train")


def test_classes_as_a_mapping_of_name_to_colour(tmp_path):
    """classes: {road: [r, g, b], ...} reads as the list of {name, color} in the order written (it was
    refused with 'must list at least two classes' although it gave three); a mapping of anything
    but colours (YOLO's 0: name) is refused with the list form."""
    labels = _folder(tmp_path, "classes: {road: [128, 64, 128], wall: [[70, 70, 70], [102, 102, 156]], "
                               "person: [220, 20, 60]}\nignore_color: [0, 0, 0]\ndrivable: [road]\n", names=("a",))
    cv2.imwrite(str(labels / "a.png"), cv2.cvtColor(_rgb_mask(_ids(15)), cv2.COLOR_RGB2BGR))
    ds = image_folder(tmp_path, "train")
    assert ds.table.names == ("road", "wall", "person") and ds.table.drivable == (0,)
    assert ds.table.colors == ((128, 64, 128), (70, 70, 70), (220, 20, 60))
    np.testing.assert_array_equal(ds.load(0)[1], _ids(15))
    (tmp_path / "dataset.yaml").write_text("classes:\n  road:\n  wall:\n  person:\n")  # names alone
    assert image_folder(tmp_path, "train").table.names == ("road", "wall", "person")
    (tmp_path / "dataset.yaml").write_text("classes: {0: road, 1: wall}\n")
    with pytest.raises(DatasetError, match=r"'classes' as a mapping gives each class its colour \(road: \[128, 64, "
                                           r"128\]\), got 0: 'road'; or list them in id order: classes: \[road, wall\]$"):
        image_folder(tmp_path, "train")

def test_dataset_yml_bom_and_labelmap_colours_for_a_names_only_description(tmp_path):
    """dataset.yml is read too; a BOM is no part of a name; a names-only description beside
    CVAT's labelmap.txt takes the labelmap's colours by name (and adds drivable)."""
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labelmap.txt").write_bytes("\ufeff# label:color_rgb:parts:actions\r\nbackground:0,0,0::\r\n"
                                            "road:128,64,128::\r\nperson:220,20,60::\r\n"
                                            "ignored:224,224,192::\r\n".encode())
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\n")
    cv2.imwrite(str(tmp_path / "JPEGImages" / "a.jpg"), np.full((24, 32, 3), 90, np.uint8))
    ids = _ids(15)
    ids[ids == 255] = 0
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    rgb[ids == 1], rgb[ids == 2] = (128, 64, 128), (220, 20, 60)
    rgb[:2] = (224, 224, 192)  # Datumaro's VOC void
    want = ids.copy()
    want[:2] = 255
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    ds = image_folder(tmp_path, "default")
    assert ds.table.names == ("background", "road", "person")  # 'ignored' is no class
    np.testing.assert_array_equal(ds.load(0)[1], want)
    (tmp_path / "dataset.yml").write_text("classes: [background, road, person]\ndrivable: [road]\n")
    ds = image_folder(tmp_path, "default")
    assert ds.table.drivable == (1,) and ds.table.colors[2] == (220, 20, 60)
    np.testing.assert_array_equal(ds.load(0)[1], want)


def test_messages_for_what_users_hand_in(tmp_path, camvid_sample):
    """JPEG data named .png; a colour label under --dataset camvid; a folder dataset read as CamVid;
    masks/ instead of labels/; no frames at all."""
    from seg_perception.data.datasets import camvid
    labels = _folder(tmp_path / "own", "classes: [road, wall, person]\n", names=("a",))
    ok, jpeg = cv2.imencode(".jpg", _ids(16))
    (labels / "a.png").write_bytes(jpeg.tobytes())
    with pytest.raises(DatasetError, match="labels/a.png is JPEG data under another name: .*export the labels as PNG"):
        image_folder(tmp_path / "own", "train").load(0)
    with pytest.raises(DatasetError, match=r"train.txt not found \(splits here: none\): this is a folder dataset, "
                                           "add --dataset folder"):
        camvid(tmp_path / "own", "train")
    (labels.parent / "masks").mkdir()
    labels.rename(labels.parent / "labels_old")
    with pytest.raises(DatasetError, match=r"no label folder .*train/labels \(train/ holds labels_old/, masks/\): the "
                                           "labels go in train/labels/"):
        image_folder(tmp_path / "own", "train")
    (tmp_path / "own/train/labels").mkdir()
    (tmp_path / "own/train/images/a.jpg").unlink()
    with pytest.raises(DatasetError, match=r"no image/label pairs in .*train/images \(.png, .jpg"):
        image_folder(tmp_path / "own", "train")

    cam = tmp_path / "camvid_rgb"
    (cam / "train").mkdir(parents=True)
    (cam / "trainannot").mkdir()
    img, ids = camvid(camvid_sample, "train").load(0)
    cv2.imwrite(str(cam / "train/x.png"), img[..., ::-1])
    cv2.imwrite(str(cam / "trainannot/x.png"), cv2.cvtColor(_rgb_mask(_ids(17)), cv2.COLOR_RGB2BGR))
    (cam / "train.txt").write_text("train/x.png trainannot/x.png\n")
    with pytest.raises(DatasetError, match="is a colour image, but --dataset camvid reads labels as class ids: "
                                           "for colour-coded labels use --dataset folder"):
        camvid(cam, "train").load(0)


def test_unknown_colour_advice_names_labelmap(tmp_path):
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nroad:128,64,128::\n")
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\n")
    cv2.imwrite(str(tmp_path / "JPEGImages" / "a.jpg"), np.full((24, 32, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "a.png"), cv2.cvtColor(_rgb_mask(_ids(18)), cv2.COLOR_RGB2BGR))
    with pytest.raises(DatasetError, match=r"2 colour\(s\) that no class has in .*labelmap.txt \(\(220, 20, 60\) "
                                           r"on .*a class missing there\? add it \(name:r,g,b::\)"):
        image_folder(tmp_path, "default").load(0)


def test_palette_png_of_an_rgb_mask_reads_by_colour(tmp_path):
    """An RGB mask re-saved as a palette PNG (an optimiser, an editor) has indices in its own order:
    with dataset.yaml's colours its palette says so and the colours count; a VOC-style palette PNG
    whose palette agrees with the classes' colours, or says nothing of them, keeps its indices."""
    labels = _folder(tmp_path, names=("a", "b", "c"))
    ids = _ids(19)
    rgb = _rgb_mask(ids)
    Image.fromarray(rgb).quantize(colors=4, method=Image.Quantize.MEDIANCUT).save(labels / "a.png")
    with Image.open(labels / "a.png") as im:
        assert im.mode == "P" and not np.array_equal(np.array(im), np.where(ids == 255, 0, ids))  # indices != ids
    voc = Image.fromarray(np.where(ids == 255, 255, ids).astype(np.uint8), mode="P")
    voc.putpalette([128, 64, 128, 70, 70, 70, 220, 20, 60] + [0, 0, 0] * 252 + [224, 224, 192])
    voc.save(labels / "b.png")
    other = Image.fromarray(ids, mode="P")
    other.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] * 64)  # display colours of its own
    other.save(labels / "c.png")
    ds = image_folder(tmp_path, "train")
    for i in range(3):
        np.testing.assert_array_equal(ds.load(i)[1], ids, err_msg=f"label {i}")


@needs_torch
def test_binary_0_255_masks_warn_that_the_class_is_never_learnt(tmp_path):
    """Two classes in 0/255 masks: 255 is the default ignore id, so the second class has no
    pixel; training says so instead of reporting 100 % on a class it never saw."""
    from seg_perception.train.loop import TrainConfig, train
    labels = _folder(tmp_path / "data", "classes: [background, road]\n", names=("a", "b"))
    for n in "ab":
        mask = np.zeros((24, 32), np.uint8)
        mask[12:] = 255
        cv2.imwrite(str(labels / f"{n}.png"), mask)
    lines = []
    train(TrainConfig(model="essnet_d", dataset="folder", data=str(tmp_path / "data"), out=str(tmp_path / "run"),
                      epochs=1, batch_size=2, width=32, height=24, threads=1, val_split="none", keep="last"),
          log=lines.append)
    warning = [ln for ln in lines if "warning" in ln]
    assert warning == ["[train] warning: 1 class(es) have no pixel in the training labels and will not be learnt: "
                       "road; 50 % of the pixels carry the ignore id 255: if that value marks a class (a 0/255 "
                       "mask), re-save the masks with class ids 0..1"], lines


def test_a_class_missing_from_val_is_said(tmp_path):
    """A class with no val pixel is left out of val mIoU (which picks checkpoints and goes in the
    card) whether or not the model predicts it; training says so, and the card names it."""
    from seg_perception.train.loop import TrainConfig, train
    mask = np.zeros((24, 32), np.uint8)
    mask[8:16], mask[16:] = 1, 2
    for split, classes in (("train", (0, 1, 2)), ("val", (0, 1))):
        for sub in ("images", "labels"):
            (tmp_path / split / sub).mkdir(parents=True)
        for n in "ab":
            cv2.imwrite(str(tmp_path / split / "images" / f"{n}.jpg"), np.full((24, 32, 3), 90, np.uint8))
            cv2.imwrite(str(tmp_path / split / "labels" / f"{n}.png"), np.where(np.isin(mask, classes), mask, 0))
    (tmp_path / "dataset.yaml").write_text("classes: [sky, grass, road]\n")
    lines = []
    train(TrainConfig(model="essnet_d", dataset="folder", data=str(tmp_path), out=str(tmp_path / "run"),
                      epochs=1, batch_size=2, width=32, height=24, threads=1, eval_every=1), log=lines.append)
    assert any("1 class(es) have no pixel in the 'val' labels: road" in ln for ln in lines), lines
    from seg_perception.card import load_card
    m = load_card(tmp_path / "run" / "essnet_d_folder.yaml").metrics
    assert m["val_per_class_iou"]["road"] is None and m["val_classes_absent"] == ["road"]


def test_datumaro_ignored_entry_in_index_masks(tmp_path):
    """Datumaro's VOC export lists 'ignored' last in labelmap.txt; its index masks give void pixels
    that place (3 here), its RGB masks (224, 224, 192): both read as the ignore id."""
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nroad:128,0,0::\nperson:0,128,0::\n"
                                           "ignored:224,224,192::\n")
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\n")
    cv2.imwrite(str(tmp_path / "JPEGImages" / "a.jpg"), np.full((24, 32, 3), 90, np.uint8))
    ids = _ids(20)
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "a.png"), np.where(ids == 255, 3, ids).astype(np.uint8))
    ds = image_folder(tmp_path, "default")
    assert ds.table.names == ("background", "road", "person") and ds.table.ignore_index == 255
    np.testing.assert_array_equal(ds.load(0)[1], ids)
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nignored:224,224,192::\nroad:128,0,0::\n")
    with pytest.raises(DatasetError, match="'ignored' must be the last entry"):
        image_folder(tmp_path, "default")


def _camvid_export(root, names, colours, masks, frames=None):
    """A CamVid export as CVAT writes it (Datumaro's camvid format): label_colors.txt, train.txt
    with '/train/NAME.jpg trainannot/NAME.png' per frame (quoted where a name has spaces, the
    label left out for a frame nobody annotated), frames in train/, masks in trainannot/."""
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    (root / "label_colors.txt").write_text("".join(f"{' '.join(map(str, c)) if c else ''} {n}\n"
                                                   for n, c in zip(names, colours)))
    lines = []
    for i, mask in enumerate(masks):
        name = f"frame {i}" if i == 1 else f"frame_{i}"
        img = frames[i] if frames is not None else np.full(mask.shape[:2] + (3,), 90, np.uint8)
        cv2.imwrite(str(root / "train" / f"{name}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "trainannot" / f"{name}.png"), mask[..., ::-1] if mask.ndim == 3 else mask)
        lines.append(f'"/train/{name}.jpg" "trainannot/{name}.png"' if " " in name
                     else f"/train/{name}.jpg trainannot/{name}.png")
    cv2.imwrite(str(root / "train" / "empty.jpg"), np.zeros((8, 8, 3), np.uint8))
    lines.append("/train/empty.jpg ")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


@needs_torch
def test_cvat_camvid_export_evaluates_as_it_is(tmp_path, camvid_sample, capsys):
    """CVAT's "CamVid 1.0" export of a task with CamVid's classes: colour masks, black where nobody
    labelled (the export's unlisted background), read by --dataset camvid or folder alike."""
    from seg_perception.data.classes import CAMVID
    from seg_perception.data.datasets import camvid
    src = camvid(camvid_sample, "train")
    frames, masks, want = [], [], []
    for i in range(3):
        img, ids = src.load(i)
        rgb = np.zeros(ids.shape + (3,), np.uint8)
        for k, col in enumerate(CAMVID.colors):
            rgb[ids == k] = col
        frames.append(img), masks.append(rgb), want.append(np.where(ids == CAMVID.ignore_index, 255, ids))
    root = _camvid_export(tmp_path / "export", CAMVID.names, CAMVID.colors, masks, frames)
    for kind in ("camvid", "folder"):
        ds = open_dataset(kind, root, "train")
        assert ds.table.names == CAMVID.names and ds.table.colors == CAMVID.colors and len(ds) == 3
        assert "1 frame(s) listed in" in ds.notes[0] and "have no label and are left out (e.g. /train/empty.jpg" in ds.notes[0]
        for i in range(3):
            np.testing.assert_array_equal(ds.load(i)[1], want[i])
    assert main(["evaluate", "--model", "rdsnet_camvid", "--dataset", "camvid", "--data", str(root),
                 "--split", "train", "--backend", "torch", "--threads", "1", "--width", "96", "--height", "72"]) == 0
    out = capsys.readouterr().out
    assert "[evaluate] note: 1 frame(s) listed in" in out and "mIoU" in out
    with pytest.raises(DatasetError, match=r"no split 'val' in .*\(val.txt not found; splits here: train\)"):
        open_dataset("folder", root, "val")
    # trained under --dataset camvid it is a folder dataset's run: not named like the shipped CamVid models
    assert main(["train", "--model", "rdsnet", "--dataset", "camvid", "--data", str(root), "--out",
                 str(tmp_path / "run"), "--val-split", "none", "--epochs", "1", "--batch-size", "2",
                 "--width", "64", "--height", "48", "--crop", "64x48", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "[train] note: 1 frame(s) listed in" in out and "note: no class is marked drivable" in out
    assert (tmp_path / "run" / "rdsnet_folder.yaml").is_file()
    # CVAT's KITTI export is refused with the exports that are read
    (tmp_path / "kitti" / "default" / "image_2").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"KITTI's layout .* export the task as 'CamVid 1.0'"):
        open_dataset("folder", tmp_path / "kitti", "default")


def test_camvid_export_without_colours_with_index_masks_background_and_void(tmp_path):
    ids = _ids(0)  # 0 road, 1 wall, 2 person, 255 unlabelled
    index = np.where(ids == 255, 0, ids + 1).astype(np.uint8)  # the export's index: 0 its background
    # no colours: index i is painted in the VOC palette's colour i
    voc = np.array(voc_colormap(4), np.uint8)
    ds = open_dataset("camvid", _camvid_export(tmp_path / "a", ["road", "wall", "person"], [None] * 3,
                                                [voc[index]]), "train")
    assert ds.table.colors == tuple(voc_colormap(4)[1:])
    np.testing.assert_array_equal(ds.load(0)[1], ids)
    # index masks (exported without the colour map)
    cols = [COLOURS[k] for k in range(3)]
    ds = open_dataset("folder", _camvid_export(tmp_path / "b", ["road", "wall", "person"], cols, [index]), "train")
    np.testing.assert_array_equal(ds.load(0)[1], ids)
    # a listed black background is a class (index 0), CamVid's Void is unlabelled
    ds = open_dataset("camvid", _camvid_export(tmp_path / "c", ["road", "background", "wall", "Void", "person"],
                                                [cols[0], (0, 0, 0), cols[1], (64, 64, 64), cols[2]],
                                                [np.array([[(0, 0, 0), (128, 64, 128), (64, 64, 64), (220, 20, 60)]],
                                                          np.uint8)]), "train")
    assert ds.table.names == ("background", "road", "wall", "person")
    np.testing.assert_array_equal(ds.load(0)[1], [[0, 1, 255, 3]])


@pytest.mark.parametrize("text, match", [
    ("128 64 road\n1 2 3 wall\n", r"label_colors.txt:1: expected 'r g b name' \(or a name alone\)"),
    ("1 2 3 road\n", r"lists 1 class\(es\)"),
    ("1 2 3 a\n1 2 3 b\n", r"colour \[1, 2, 3\] is given to both a and b"),
    ("1 2 3 a\n4 5 6 a\n", r"class name\(s\) a listed twice"),
])
def test_bad_label_colors_one_line(tmp_path, text, match):
    (tmp_path / "label_colors.txt").write_text(text)
    (tmp_path / "train.txt").write_text("")
    with pytest.raises(DatasetError, match=match):
        open_dataset("camvid", tmp_path, "train")


def test_camvid_export_colour_messages_name_label_colors(tmp_path):
    mask = np.array([[(128, 64, 128), (1, 2, 3)]], np.uint8)
    ds = open_dataset("camvid", _camvid_export(tmp_path / "a", ["road", "wall"], [(128, 64, 128), (70, 70, 70)],
                                                [mask]), "train")
    with pytest.raises(DatasetError, match=r"1 colour\(s\) that no class has in .*label_colors.txt \(\(1, 2, 3\) on "
                                           r"1 px; 50 % of its pixels\): a class missing there\? add it \(r g b name\)"):
        ds.load(0)
    ds = open_dataset("camvid", _camvid_export(tmp_path / "b", ["road", "wall"], [(128, 64, 128), None], [mask]),
                      "train")
    with pytest.raises(DatasetError, match=r"gives no color to wall: give every class its label colour "
                                           r"\('r g b name' per line\)"):
        ds.load(0)


def test_camvid_export_with_a_description_beside_it(tmp_path):
    """dataset.yaml beside a CamVid export adds drivable (and a name); the classes stay label_colors.txt's,
    whose indices the masks hold: colour and index masks read the same."""
    cols = [COLOURS[k] for k in range(3)]
    index = np.where(_ids(0) == 255, 0, _ids(0) + 1).astype(np.uint8)
    for sub, mask in (("rgb", _rgb_mask(_ids(0))), ("index", index)):
        root = _camvid_export(tmp_path / sub, ["road", "wall", "person"], cols, [mask])
        (root / "dataset.yaml").write_text("drivable: road\n")
        for kind in ("camvid", "folder"):
            ds = open_dataset(kind, root, "train")
            assert ds.table.drivable == (0,) and ds.table.names == ("road", "wall", "person")
            np.testing.assert_array_equal(ds.load(0)[1], _ids(0))
    (root / "dataset.yaml").write_text(YAML)  # the same names, with colours: read by the export's, said so
    ds = open_dataset("folder", root, "train")
    np.testing.assert_array_equal(ds.load(0)[1], _ids(0))
    assert any("ignore_color, class colours not used: the export's masks follow label_colors.txt" in n
               for n in ds.notes)
    (root / "dataset.yaml").write_text("classes: [wall, road, person]\n")
    with pytest.raises(DatasetError, match=r"lists classes \['wall', 'road', 'person'\], label_colors.txt "
                                           r"\['road', 'wall', 'person'\].*drop its classes or list the same"):
        open_dataset("camvid", root, "train")


def test_labelmap_with_a_description_of_drivable_only(tmp_path):
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nroad:128,64,128::\n")
    (tmp_path / "dataset.yaml").write_text("drivable: [road]\n")
    cv2.imwrite(str(tmp_path / "JPEGImages/a.jpg"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "SegmentationClass/a.png"), np.full((4, 4, 3), (128, 64, 128), np.uint8)[..., ::-1])
    cv2.imwrite(str(tmp_path / "JPEGImages/b.jpg"), np.zeros((4, 4, 3), np.uint8))  # nobody annotated it
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\nb\n")
    ds = image_folder(tmp_path, "default")
    assert ds.table.names == ("background", "road") and ds.table.drivable == (1,) and len(ds) == 1
    assert "1 frame(s) listed in" in ds.notes[0] and "(e.g. b;" in ds.notes[0]
    np.testing.assert_array_equal(ds.load(0)[1], np.ones((4, 4)))


def test_camvid_export_flags_and_a_deleted_class_line(tmp_path):
    index = np.where(_ids(0) == 255, 0, _ids(0) + 1).astype(np.uint8)
    root = _camvid_export(tmp_path / "a", ["road", "wall"], [COLOURS[0], COLOURS[1]], [index])  # 'person' deleted
    ds = open_dataset("camvid", root, "train")
    with pytest.raises(DatasetError, match=r"has value 3 outside the 2 classes that .*label_colors.txt lists: "
                                           r"a class missing there"):
        ds.load(0)
    # --dataset camvid takes a folder dataset's class flags for an export, as --dataset folder does
    with pytest.raises(DatasetError, match=r"--num-classes 7 but .*label_colors.txt lists 2 classes"):
        open_dataset("camvid", root, "train", num_classes=7)
    with pytest.raises(DatasetError, match=r"--ignore-index 3 but .*ignore id is 255: drop the flag \(the export "
                                           r"marks unlabelled pixels itself"):
        open_dataset("camvid", root, "train", ignore_index=3)
    # evaluate/quantize with a model card: the card's ignore id is a stand-in, the user's flag is checked
    card_kw = {"num_classes": 2, "class_names": ["road", "wall"], "from_card": True}
    assert len(open_dataset("camvid", root, "train", ignore_index=11, **card_kw)) == 1
    with pytest.raises(DatasetError, match=r"--ignore-index 3 but"):
        open_dataset("camvid", root, "train", ignore_index=3, ignore_given=True, **card_kw)


def test_data_one_level_off_or_an_archive(tmp_path):
    root = _camvid_export(tmp_path / "export", ["road", "wall"], [COLOURS[0], COLOURS[1]], [_rgb_mask(_ids(0) % 2)])
    for kind in ("camvid", "folder"):
        with pytest.raises(DatasetError, match=r"splits here: none; the dataset is one level down: --data .*export\)$"):
            open_dataset(kind, tmp_path, "train")
        with pytest.raises(DatasetError, match=r"--data names a folder inside the dataset: --data .*export\)$"):
            open_dataset(kind, root / "trainannot", "train")
    (tmp_path / "task.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match=r"task.zip is an archive: unpack it"):
        open_dataset("camvid", tmp_path / "task.zip", "train")
    with pytest.raises(DatasetError, match=r"train.txt is a file: pass the dataset's folder with --data \(here: .*export\)"):
        open_dataset("folder", root / "train.txt", "train")
    shutil.rmtree(root / "train")  # exported without its images
    with pytest.raises(DatasetError, match=r"does not exist \(an export without its images\?"):
        open_dataset("camvid", root, "train")


def test_labelmap_index_masks_with_a_description_of_other_classes(tmp_path):
    """Index masks hold labelmap.txt's ids: a dataset.yaml of other classes (background left out)
    would shift every id by one; refused. Colour masks are read by colour and may be described."""
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    for sub in ("JPEGImages", "SegmentationClass"):
        (tmp_path / sub).mkdir()
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\nroad:128,64,128::\nwall:70,70,70::\n")
    (tmp_path / "dataset.yaml").write_text("classes: [road, wall]\nignore_color: [0, 0, 0]\n")
    cv2.imwrite(str(tmp_path / "JPEGImages/a.jpg"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "ImageSets/Segmentation/default.txt").write_text("a\n")
    cv2.imwrite(str(tmp_path / "SegmentationClass/a.png"), np.full((4, 4, 3), (128, 64, 128), np.uint8)[..., ::-1])
    np.testing.assert_array_equal(image_folder(tmp_path, "default").load(0)[1], np.zeros((4, 4)))  # road = 0
    im = Image.fromarray(np.ones((4, 4), np.uint8), mode="P")  # a palette says road by its colour
    im.putpalette([0, 0, 0, 128, 64, 128, 70, 70, 70] + [0] * 759)
    im.save(tmp_path / "SegmentationClass/a.png")
    np.testing.assert_array_equal(image_folder(tmp_path, "default").load(0)[1], np.zeros((4, 4)))
    cv2.imwrite(str(tmp_path / "SegmentationClass/a.png"), np.ones((4, 4), np.uint8))  # bare ids
    with pytest.raises(DatasetError, match=r"lists classes \['road', 'wall'\], labelmap.txt \['background', 'road', "
                                           r"'wall'\], and the masks hold labelmap.txt's ids"):
        image_folder(tmp_path, "default")


def test_palette_in_another_class_order_and_grey_colour_masks_read_by_colour(tmp_path):
    """A tool numbering the classes in another order than dataset.yaml, its palette giving each
    index its class's colour: the colours count even where most pixels sit at an index that
    agrees (the background); and a single-channel 0/255 mask whose grey levels are the yaml's
    colours (background black, crack white) reads as 0/1, not as the ignore id 255."""
    yaml_text = ("classes:\n  - {name: background, color: [0, 0, 0]}\n  - {name: road, color: [128, 64, 128]}\n"
                 "  - {name: car, color: [0, 0, 142]}\n")
    labels = _folder(tmp_path / "swap", yaml_text, names=("a",))
    ids = np.zeros((24, 32), np.uint8)  # 75 % background
    ids[18:, :16], ids[18:, 16:] = 1, 2  # road, car
    swapped = np.choose(ids, [0, 2, 1]).astype(np.uint8)  # the tool's order: 1 = car, 2 = road
    im = Image.fromarray(swapped, mode="P")
    im.putpalette([0, 0, 0, 0, 0, 142, 128, 64, 128] + [0, 0, 0] * 253)
    im.save(labels / "a.png")
    np.testing.assert_array_equal(image_folder(tmp_path / "swap", "train").load(0)[1], ids)
    yaml_text = "classes:\n  - {name: background, color: [0, 0, 0]}\n  - {name: crack, color: [255, 255, 255]}\n"
    labels = _folder(tmp_path / "crack", yaml_text, names=("a",))
    cv2.imwrite(str(labels / "a.png"), np.where(ids > 0, 255, 0).astype(np.uint8))
    np.testing.assert_array_equal(image_folder(tmp_path / "crack", "train").load(0)[1], (ids > 0).astype(np.uint8))


def _low_bit_png(path, values: np.ndarray, bits: int, palette=None) -> None:
    """A greyscale (or, with ``palette``, indexed) PNG of 1, 2 or 4 bits per pixel, written here: the
    oldest Pillow the package supports saves greyscale at 8 bits whatever ``bits`` says."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w = values.shape
    per_byte = 8 // bits
    padded = np.zeros((h, -(-w // per_byte) * per_byte), np.uint8)
    padded[:, :w] = values
    groups = padded.reshape(h, -1, per_byte).astype(np.uint16)
    packed = sum(groups[..., k] << (8 - bits * (k + 1)) for k in range(per_byte)).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in packed)  # filter type 0 on every row
    colour_type = 0 if palette is None else 3
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour_type, 0, 0, 0))
    if palette is not None:
        png += chunk(b"PLTE", bytes(palette))
    Path(path).write_bytes(png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_1_2_and_4_bit_grey_and_palette_masks_keep_their_ids(tmp_path):
    """A binary mask saved as PIL mode "1" holds 0/1, and 2- and 4-bit greyscale PNGs 0..3 and
    0..15, but decoders scale them to 0..255 (class 1 became the ignore id 255, with no error):
    they read as the values the file holds. Palette PNGs of 1, 2 or 4 bits keep their indices, and
    a 1-bit mask whose black and white are dataset.yaml's colours reads by them."""
    labels = _folder(tmp_path / "binary", "classes: [background, obstacle]\n", names=("a",))
    obstacle = np.zeros((24, 32), bool)
    obstacle[12:, 8:] = True
    Image.fromarray(obstacle).save(labels / "a.png")  # mode "1": a 1-bit greyscale PNG
    assert Image.open(labels / "a.png").mode == "1"
    assert cv2.imread(str(labels / "a.png"), cv2.IMREAD_UNCHANGED).max() == 255  # what OpenCV alone gives
    np.testing.assert_array_equal(image_folder(tmp_path / "binary", "train").load(0)[1], obstacle.astype(np.uint8))
    names = "classes: [" + ", ".join(f"c{i}" for i in range(16)) + "]\n"
    for bits in (2, 4):
        ids = (np.arange(24 * 32).reshape(24, 32) % (1 << bits)).astype(np.uint8)
        labels = _folder(tmp_path / f"grey{bits}", names, names=("a",))
        _low_bit_png(labels / "a.png", ids, bits)
        assert np.array_equal(np.asarray(Image.open(labels / "a.png")) // (255 // ((1 << bits) - 1)), ids) or \
            np.array_equal(np.asarray(Image.open(labels / "a.png")), ids)  # the file is what it says
        with open(labels / "a.png", "rb") as f:
            assert f.read(26)[24:26] == bytes([bits, 0])  # bit depth, greyscale
        np.testing.assert_array_equal(image_folder(tmp_path / f"grey{bits}", "train").load(0)[1], ids)
        labels = _folder(tmp_path / f"palette{bits}", names, names=("a",))
        _low_bit_png(labels / "a.png", ids, bits, sum(([17 * i, 0, 255 - 17 * i] for i in range(1 << bits)), []))
        assert np.array_equal(np.asarray(Image.open(labels / "a.png")), ids)
        with open(labels / "a.png", "rb") as f:
            assert f.read(26)[24:26] == bytes([bits, 3])  # bit depth, palette
        np.testing.assert_array_equal(image_folder(tmp_path / f"palette{bits}", "train").load(0)[1], ids)
    yaml_text = "classes:\n  - {name: road, color: [255, 255, 255]}\n  - {name: car, color: [0, 0, 142]}\n" \
                "ignore_color: [0, 0, 0]\n"  # black unlabelled, white road: read by the colours shown
    labels = _folder(tmp_path / "coloured", yaml_text, names=("a",))
    Image.fromarray(obstacle).save(labels / "a.png")
    np.testing.assert_array_equal(image_folder(tmp_path / "coloured", "train").load(0)[1],
                                  np.where(obstacle, 0, 255).astype(np.uint8))


def test_colour_masks_without_a_description_read_by_the_model_cards_colours(tmp_path):
    """evaluate --model CARD --dataset folder on colour masks and no dataset.yaml: the card's class
    colours read them (as eval-bag --gt-dir does), where it said 'give every class its colour in
    dataset.yaml'. Id masks stay ids (the card's colours may be display colours alone); a colour
    the card has not is an error that says to describe the dataset."""
    ids = _ids(0)
    ids[ids == 255] = 0  # no unlabelled pixels: the card gives no colour for them
    for sub in ("images", "labels"):
        (tmp_path / "val" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "val/images/a.png"), np.zeros(ids.shape + (3,), np.uint8))
    cv2.imwrite(str(tmp_path / "val/labels/a.png"), cv2.cvtColor(_rgb_mask(ids), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "val/images/b.png"), np.zeros(ids.shape + (3,), np.uint8))
    cv2.imwrite(str(tmp_path / "val/labels/b.png"), ids)  # ids, not colours
    card_kw = {"num_classes": 3, "class_names": ["road", "wall", "person"], "from_card": True,
               "class_colors": [COLOURS[i] for i in range(3)]}
    ds = open_dataset("folder", tmp_path, "val", **card_kw)
    np.testing.assert_array_equal(ds.load(0)[1], ids)
    np.testing.assert_array_equal(ds.load(1)[1], ids)
    with pytest.raises(DatasetError, match=r"give every class its colour in dataset.yaml"):
        open_dataset("folder", tmp_path, "val", **{k: v for k, v in card_kw.items() if k != "class_colors"}).load(0)
    rgb = _rgb_mask(ids)
    rgb[:2] = (1, 2, 3)  # a colour no class of the card has
    cv2.imwrite(str(tmp_path / "val/labels/a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with pytest.raises(DatasetError, match=r"read with the model card's class colours.*give the dataset's in "
                                           r"dataset.yaml"):
        open_dataset("folder", tmp_path, "val", **card_kw).load(0)


def test_a_palette_in_another_order_with_an_unlisted_colour_is_an_error_not_a_swap(tmp_path):
    """A tool's palette numbering the classes in its own order (index 1 coloured as dataset.yaml's
    person, 2 as obstacle) plus a void colour dataset.yaml does not list (VOC's border): most pixels
    decided, so a frame mostly road read its indices as ids, obstacle and person swapped, without a
    word (and a frame mostly obstacle stopped on the unknown colour). Now such a palette is one
    error that names the two readings and the fix; either fix reads the frame."""
    from seg_perception.data.label_images import read_label
    yaml_text = ("classes:\n  - {name: road, color: [128, 64, 128]}\n  - {name: obstacle, color: [200, 0, 0]}\n"
                 "  - {name: person, color: [0, 0, 200]}\n")
    labels = _folder(tmp_path / "pal", yaml_text, names=("a",))
    index = np.zeros((24, 32), np.uint8)  # 75 % road
    index[18:, :8], index[18:, 8:16], index[:2] = 1, 2, 255  # the tool's 1 = person, 2 = obstacle; void
    im = Image.fromarray(index, mode="P")
    palette = [128, 64, 128, 0, 0, 200, 200, 0, 0] + [0, 0, 0] * 252 + [224, 224, 192]
    im.putpalette(palette)
    im.save(labels / "a.png")
    ds = image_folder(tmp_path / "pal", "train")
    with pytest.raises(DatasetError, match=r"its palette gives index 1 the colour of class id 2 in .*dataset.yaml and "
                                           r"index 255 a colour no class has \[224, 224, 192\]: if the indices are "
                                           r"the class ids, set labels: ids in .*; if the colours name the classes"):
        ds.load(0)
    (tmp_path / "pal" / "dataset.yaml").write_text(yaml_text + "ignore_color: [224, 224, 192]\n")
    want = np.choose(index.clip(max=3), [0, 2, 1, 0]).astype(np.uint8)
    want[:2] = 255
    np.testing.assert_array_equal(read_label(labels / "a.png", image_folder(tmp_path / "pal", "train").label_colors),
                                  want)
    (tmp_path / "pal" / "dataset.yaml").write_text(yaml_text + "labels: ids\n")
    np.testing.assert_array_equal(image_folder(tmp_path / "pal", "train").load(0)[1], index)


@needs_torch
def test_id_masks_with_a_white_class_read_two_ways_stop_training(tmp_path, capsys):
    """Masks of class ids (0 background, 1 lane, 255 unlabelled) with dataset.yaml's display colours
    black and white: a frame without lane holds only 0 and 255, which read as the colours black and
    white, so its unlabelled pixels became lane; frames with lane read as ids. Training went on
    without a word. Now a dataset read both ways stops with what to set (labels: ids), and so does
    evaluate."""
    yaml_text = "classes:\n  - {name: background, color: [0, 0, 0]}\n  - {name: lane, color: [255, 255, 255]}\n"
    names = ("a", "b", "c", "d")
    labels = _folder(tmp_path / "ids", yaml_text, names=names)
    for k, n in enumerate(names):
        lab = np.zeros((24, 32), np.uint8)
        lab[:4] = 255  # unlabelled
        if k < 2:
            lab[12:, 10:20] = 1  # lane in a and b only
        cv2.imwrite(str(labels / f"{n}.png"), lab)
    run = ["train", "--model", "essnet_d", "--dataset", "folder", "--data", str(tmp_path / "ids"), "--val-split",
           "none", "--keep", "last", "--epochs", "1", "--width", "32", "--height", "24", "--batch-size", "2",
           "--threads", "1", "--precision", "fp32", "--out", str(tmp_path / "run")]
    assert main(run) != 0
    err = capsys.readouterr().err
    assert "single-channel labels read two ways: 2 by their grey levels as" in err and "2 as class ids" in err, err
    assert "set labels: ids in" in err and "Traceback" not in err, err
    (tmp_path / "ids" / "dataset.yaml").write_text(yaml_text + "labels: ids\n")
    assert main(run) == 0, capsys.readouterr().err
    # grey colour masks whose frames read alike either way are no mix: black background, grey road, white
    # unlabelled (ignore_color); a frame of 0 and 255 alone, or all unlabelled, says nothing of the reading
    yaml_text = ("classes:\n  - {name: bg, color: [0, 0, 0]}\n  - {name: road, color: [128, 128, 128]}\n"
                 "ignore_color: [255, 255, 255]\n")
    labels = _folder(tmp_path / "grey", yaml_text, names=("a", "b", "c"))
    for n, levels in zip(("a", "b", "c"), ((0, 128), (0, 255), (255, 255))):
        lab = np.full((24, 32), levels[0], np.uint8)
        lab[12:] = levels[1]
        cv2.imwrite(str(labels / f"{n}.png"), lab)
    ds = image_folder(tmp_path / "grey", "train")
    assert [sorted(np.unique(ds.load(i)[1])) for i in range(3)] == [[0, 1], [0, 255], [255]]
    ds.check_label_reading()


@needs_torch
def test_id_masks_read_two_ways_across_splits_stop_training_and_packing(tmp_path, capsys):
    """The same masks (ids 0 and 1, 255 unlabelled; dataset.yaml's colours black and white) with
    lane in every train frame and in no val frame: train read as ids, val's 0/255 frames as colours,
    and each split alone was not mixed, so val's unlabelled strip was scored as lane (and pack-dataset
    wrote it as lane under labels: ids). Both now stop with the two-ways error."""
    from seg_perception.data.pack import pack_dataset
    yaml_text = "classes:\n  - {name: background, color: [0, 0, 0]}\n  - {name: lane, color: [255, 255, 255]}\n"
    root = tmp_path / "ids"
    for split, lane in (("train", True), ("val", False)):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for n in ("a", "b"):
            cv2.imwrite(str(root / split / "images" / f"{n}.jpg"), np.full((24, 32, 3), 90, np.uint8))
            lab = np.zeros((24, 32), np.uint8)
            lab[:4] = 255  # unlabelled
            if lane:
                lab[12:, 10:20] = 1
            cv2.imwrite(str(root / split / "labels" / f"{n}.png"), lab)
    (root / "dataset.yaml").write_text(yaml_text)
    run = ["train", "--model", "essnet_d", "--dataset", "folder", "--data", str(root), "--keep", "last",
           "--epochs", "1", "--width", "32", "--height", "24", "--batch-size", "2", "--threads", "1",
           "--precision", "fp32", "--out", str(tmp_path / "run")]
    assert main(run) != 0
    err = capsys.readouterr().err
    assert "single-channel labels read two ways: 2 by their grey levels as" in err and "2 as class ids" in err, err
    with pytest.raises(DatasetError, match="single-channel labels read two ways"):
        pack_dataset("folder", root, ["train", "val"], tmp_path / "packed")
    assert not (tmp_path / "packed" / "dataset.yaml").exists()


def test_grey_colour_masks_with_a_colour_missing_from_the_list_name_that_colour(tmp_path):
    """dataset.yaml's class colours all grey (CamVid's Sky is 128, 128, 128) and the masks using one grey
    it does not list: the mask was read as ids saved as grey RGB, and the error advised --ignore-index 70
    (a listed colour's level), never naming the unlisted colour. Now the colour error names it; class ids
    saved as grey RGB, where one level happens to be a listed colour, still read as ids."""
    yaml_text = ("classes:\n  - {name: sky, color: [128, 128, 128]}\n  - {name: wall, color: [70, 70, 70]}\n"
                 "  - {name: road, color: [200, 200, 200]}\n")
    labels = _folder(tmp_path / "grey", yaml_text, names=("a",))
    grey = np.full((24, 32), 128, np.uint8)
    grey[8:, :] = 200
    grey[16:, :8] = 70
    grey[16:, 8:12] = 90  # not listed
    cv2.imwrite(str(labels / "a.png"), np.repeat(grey[..., None], 3, axis=2))
    with pytest.raises(DatasetError, match=r"has 1 colour\(s\) that no class has in .*\(\(90, 90, 90\) on 32 px"):
        image_folder(tmp_path / "grey", "train").load(0)
    # class ids saved as grey RGB, mostly background: black is class 0's colour and white the ignore_color,
    # the same either way: read as ids
    yaml_text = ("classes:\n  - {name: bg, color: [0, 0, 0]}\n  - {name: a, color: [9, 9, 200]}\n"
                 "  - {name: b, color: [1, 200, 1]}\nignore_color: [255, 255, 255]\n")
    labels = _folder(tmp_path / "ids", yaml_text, names=("a",))
    ids = np.zeros((24, 32), np.uint8)
    ids[12:, :4], ids[12:, 4:8], ids[:2] = 1, 2, 255
    cv2.imwrite(str(labels / "a.png"), np.repeat(ids[..., None], 3, axis=2))
    np.testing.assert_array_equal(image_folder(tmp_path / "ids", "train").load(0)[1], ids)


def test_colour_masks_under_labels_ids_say_labels_ids(tmp_path):
    """RGB masks with labels: ids in dataset.yaml were said to hold colours 'that no class has in
    dataset.yaml', naming the very colours it lists, and '1e+02 %' of the pixels: the cause is
    labels: ids, which the error now names."""
    labels = _folder(tmp_path, YAML + "labels: ids\n", names=("a",))
    cv2.imwrite(str(labels / "a.png"), cv2.cvtColor(_rgb_mask(_ids()), cv2.COLOR_RGB2BGR))
    with pytest.raises(DatasetError, match=r"is a colour image, but .*dataset.yaml says labels: ids .*drop labels: ids"):
        image_folder(tmp_path, "train").load(0)
    (tmp_path / "dataset.yaml").write_text("classes: [{name: a, color: [1, 2, 3]}, {name: b, color: [4, 5, 6]}]\n")
    with pytest.raises(DatasetError, match=r"; 100 % of its pixels\)"):
        image_folder(tmp_path, "train").load(0)


def test_float_labels_are_read_when_whole_and_refused_otherwise(tmp_path):
    """A float TIFF label (1.6) was cut to class 1 without a word; whole values (GIS tools write ids
    as floats) are ids."""
    labels = _folder(tmp_path, "classes: [road, wall, person]\n", names=("a",))
    ids = _ids()
    cv2.imwrite(str(labels / "a.tiff"), ids.astype(np.float32))
    np.testing.assert_array_equal(image_folder(tmp_path, "train").load(0)[1], ids)
    cv2.imwrite(str(labels / "a.tiff"), np.full((24, 32), 1.6, np.float32))
    with pytest.raises(DatasetError, match=r"a.tiff holds float32 values that are not all whole numbers"):
        image_folder(tmp_path, "train").load(0)
