"""Datasets: CamVid loads, and bad data gives one error naming the file."""
import shutil

import cv2
import numpy as np
import pytest

from seg_perception.data.datasets import DatasetError, camvid, image_folder
from seg_perception.data.transforms import EvalResize, TrainAugment


def test_camvid_layout_loads(camvid_sample):
    for split in ("train", "val"):
        ds = camvid(camvid_sample, split)
        assert len(ds) == 10
        img, lab = ds.load(0)
        assert img.shape == (360, 480, 3) and img.dtype == np.uint8
        assert lab.shape == (360, 480) and lab.max() <= 11


def test_full_camvid_has_both_splits(camvid_full):
    assert (len(camvid(camvid_full, "train")), len(camvid(camvid_full, "val"))) == (367, 101)
    img, lab = camvid(camvid_full, "val").load(0)
    assert img.shape == (360, 480, 3) and lab.shape == (360, 480) and lab.max() <= 11


def test_missing_dataset_path(tmp_path):
    with pytest.raises(DatasetError, match="not found at"):
        camvid(tmp_path / "nope", "train")


def test_missing_folder_split_names_the_splits_there(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "labels").mkdir()
    with pytest.raises(DatasetError, match=r"no split 'val' in .*splits here: train\)$"):
        image_folder(tmp_path, "val", num_classes=5)
    from seg_perception.train.loop import TrainConfig, build
    cv2.imwrite(str(tmp_path / "train/images/x.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "train/labels/x.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"splits here: train\): name one of them with --val-split \(or train "
                                           r"without validation: --val-split none\)"):
        build(TrainConfig(model="essnet_d", dataset="folder", data=str(tmp_path), out=str(tmp_path / "run"),
                          num_classes=5))
    with pytest.raises(DatasetError, match="dataset folder not found at"):
        image_folder(tmp_path / "nope", "val", num_classes=5)


def test_flat_folder_is_told_to_move_into_a_split(tmp_path):
    """images/ + labels/ straight in --data: the hint says to move them into train/ (it said --data
    names a folder inside the dataset, because its own images/ matched in the folder above), and a
    dataset beside a flat one gets no stray hint either."""
    for d in (tmp_path / "flat", tmp_path / "good" / "train"):
        for sub in ("images", "labels"):
            (d / sub).mkdir(parents=True)
        cv2.imwrite(str(d / "images/x.png"), np.zeros((8, 8, 3), np.uint8))
        cv2.imwrite(str(d / "labels/x.png"), np.zeros((8, 8), np.uint8))
    flat = tmp_path / "flat"
    with pytest.raises(DatasetError, match=r"splits here: none; .*flat holds images/ and labels/ directly: move "
                                           r"them into .*flat/train/ \(validation frames into .*flat/val/\)\)$"):
        image_folder(flat, "train", num_classes=2)
    with pytest.raises(DatasetError, match=r"flat holds images/ and labels/ directly.*: this is a folder dataset, "
                                           r"add --dataset folder$"):
        camvid(flat, "train")
    with pytest.raises(DatasetError, match=r"good/train.txt not found \(splits here: none\): this is a folder "
                                           r"dataset, add --dataset folder$"):
        camvid(tmp_path / "good", "train")
    with pytest.raises(DatasetError, match=r"--data names a folder inside the dataset: --data .*good\)$"):
        image_folder(tmp_path / "good" / "train", "train", num_classes=2)
    (flat / "train").mkdir()
    for sub in ("images", "labels"):
        shutil.move(str(flat / sub), str(flat / "train" / sub))
    assert len(image_folder(flat, "train", num_classes=2)) == 1


def test_images_and_labels_folders_of_splits_read_as_they_are(tmp_path):
    """images/<split>/ + labels/<split>/ (mmsegmentation's and YOLO's layout) was told to move
    images/ and labels/ into train/, after which train read images/val/ too (subfolders pair by
    path) and val frames were trained on. Each split now reads its own folders."""
    ds = tmp_path / "mm"
    for split, n in (("train", 3), ("val", 2)):
        for sub in ("images", "labels"):
            (ds / sub / split).mkdir(parents=True)
        for k in range(n):
            cv2.imwrite(str(ds / "images" / split / f"{split}{k}.jpg"), np.zeros((8, 8, 3), np.uint8))
            cv2.imwrite(str(ds / "labels" / split / f"{split}{k}.png"), np.zeros((8, 8), np.uint8))
    train, val = image_folder(ds, "train", num_classes=2), image_folder(ds, "val", num_classes=2)
    assert [p[0].name for p in train.pairs] == ["train0.jpg", "train1.jpg", "train2.jpg"]
    assert [p[1].name for p in val.pairs] == ["val0.png", "val1.png"]
    with pytest.raises(DatasetError, match=r"no split 'test' in .*mm \(test/images not found; splits here: train, val\)"):
        image_folder(ds, "test", num_classes=2)
    shutil.rmtree(ds / "labels" / "val")
    with pytest.raises(DatasetError, match=r"no label folder .*mm/labels/val \(labels/ holds train/\): the labels go "
                                           r"in labels/val/"):
        image_folder(ds, "val", num_classes=2)
    # subfolders of a flat images/ that are no splits (one per drive) are not offered as splits
    flat = tmp_path / "alone" / "flat"
    for sub in ("images", "labels"):
        (flat / sub / "seq1").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"splits here: none; .*flat holds images/ and labels/ directly: move"):
        image_folder(flat, "train", num_classes=2)


def test_a_split_folder_of_another_name_is_told_to_name_it_as_a_split(tmp_path):
    """ADE20K's training/ + validation/: --data training is one split of the dataset above it (it was
    told to move its images/ into training/train/)."""
    for split in ("training", "validation"):
        for sub in ("images", "labels"):
            (tmp_path / "ds" / split / sub).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"training/ looks like one split of the dataset in .*ds \(beside "
                                           r"validation/\): --data .*ds --train-split training, and --val-split"):
        image_folder(tmp_path / "ds" / "training", "train", num_classes=2)


def test_non_image_files_in_the_folders_are_no_labels_without_an_image(tmp_path):
    """Windows' Thumbs.db, desktop.ini, macOS's .DS_Store, a notes.txt beside the frames are left alone:
    not counted as labels that have no image (Thumbs.db was '1 label(s) ... have no image')."""
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True)
        for stray in ("Thumbs.db", "desktop.ini", ".DS_Store", "notes.txt"):
            (tmp_path / "train" / sub / stray).write_bytes(b"\0")
    cv2.imwrite(str(tmp_path / "train/images/x.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "train/labels/x.png"), np.zeros((8, 8), np.uint8))
    ds = image_folder(tmp_path, "train", num_classes=2)
    assert len(ds) == 1 and not ds.notes, ds.notes
    cv2.imwrite(str(tmp_path / "train/labels/gone.png"), np.zeros((8, 8), np.uint8))  # a label alone is still said
    notes = image_folder(tmp_path, "train", num_classes=2).notes
    assert len(notes) == 1 and "1 label(s) in" in notes[0] and "(e.g. gone.png)" in notes[0], notes

def test_image_without_label(tmp_path, camvid_sample):
    (tmp_path / "val").mkdir()
    shutil.copy(camvid(camvid_sample, "val").pairs[0][0], tmp_path / "val" / "a.png")
    (tmp_path / "val.txt").write_text("val/a.png valannot/a.png\n")
    with pytest.raises(DatasetError, match="has no label: .*valannot/a.png"):
        camvid(tmp_path, "val")


def test_label_out_of_range_names_file(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train/images/x.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "train/labels/x.png"), np.full((8, 8), 7, np.uint8))
    ds = image_folder(tmp_path, "train", num_classes=5)
    with pytest.raises(DatasetError, match=r"labels/x.png has value 7 outside the 5 classes"):
        ds.load(0)
    # ids 0-4 with the ignore id 255, resized with Pillow's default (bicubic for 8-bit grey images)
    from PIL import Image
    yy, xx = np.mgrid[:32, :32]
    ids = np.where(xx > yy, 255, np.where(yy > 20, 3, 0)).astype(np.uint8)  # a diagonal edge to unlabelled
    Image.fromarray(ids).resize((45, 45)).save(tmp_path / "train/labels/x.png")
    cv2.imwrite(str(tmp_path / "train/images/x.png"), np.zeros((45, 45, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"labels/x.png has \d+ different values outside the 5 classes \(e.g. 5, "
                                           r".*resize labels with nearest-neighbour"):
        ds.load(0)


def test_masks_numbered_from_one_with_first_id(tmp_path):
    """Masks whose classes run 1..N with 0 unlabelled (many annotation tools): the range error
    names first_id: 1, which reads them as ids 0..N-1 with 0 ignored (the ignore id it advised
    first, N, silently dropped the last class and learnt the unlabelled pixels as the first)."""
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train/images/x.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "train/images/y.tif"), np.zeros((4, 4, 3), np.uint8))  # read, as .tif labels are
    mask = np.array([[0, 1, 2, 3]] * 4, np.uint8)
    for stem in ("x", "y"):
        cv2.imwrite(str(tmp_path / f"train/labels/{stem}.png"), mask)
    cv2.imwrite(str(tmp_path / "train/labels/z.png"), mask)  # its image is missing
    (tmp_path / "dataset.yaml").write_text("classes: [sky, grass, road]\n")
    ds = image_folder(tmp_path, "train")
    assert len(ds) == 2 and any("1 label(s) in" in n and "z.png" in n for n in ds.notes), ds.notes
    with pytest.raises(DatasetError, match="has value 3 outside the 3 classes .*set first_id: 1 in dataset.yaml"):
        ds.load(0)
    (tmp_path / "dataset.yaml").write_text("classes: [sky, grass, road]\nfirst_id: 1\n")
    _, lab = image_folder(tmp_path, "train").load(0)
    np.testing.assert_array_equal(lab[0], [255, 0, 1, 2])
    (tmp_path / "dataset.yaml").write_text("classes: [sky, grass, road]\nfirst_id: 2\n")
    with pytest.raises(DatasetError, match="first_id must be 0 .* or 1"):
        image_folder(tmp_path, "train")
    (tmp_path / "dataset.yaml").write_text("classes: [sky, grass, road]\nignore_index: 0\n")
    with pytest.raises(DatasetError, match="first_id: 1"):
        image_folder(tmp_path, "train")
    (tmp_path / "dataset.yaml").unlink()  # classes from --num-classes: the hint says to write the file
    with pytest.raises(DatasetError, match="write a dataset.yaml with the classes and first_id: 1"):
        image_folder(tmp_path, "train", num_classes=3).load(0)
    cv2.imwrite(str(tmp_path / "train/images/x.jpg"), np.zeros((4, 4, 3), np.uint8))  # a twin of x.png
    twins = image_folder(tmp_path, "train", num_classes=4)
    assert [i.name for i, _ in twins.pairs] == ["x.jpg", "x.png", "y.tif"], twins.pairs
    assert any("several formats (e.g. x.jpg and x.png)" in n for n in twins.notes), twins.notes
    colours = "classes: [{name: sky, color: [0, 0, 255]}, {name: grass, color: [0, 255, 0]}, road]\nfirst_id: 1\n"
    (tmp_path / "dataset.yaml").write_text(colours)
    with pytest.raises(DatasetError, match="first_id: 1 is for masks that hold class ids"):
        image_folder(tmp_path, "train")


def test_augment_keeps_label_values_and_size(val_frames):
    img, lab = val_frames[0]
    aug = TrainAugment((240, 176), ignore_index=11, seed=3)
    for _ in range(5):
        a, b = aug(img, lab)
        assert a.shape == (176, 240, 3) and b.shape == (176, 240)
        assert set(np.unique(b)) <= set(np.unique(lab)) | {11}


def test_translation_moves_the_label_with_the_image():
    """Every other alignment test turns translation off. Here a frame whose grey level is 20 x its
    label (an id per pixel, so a shift of one pixel shows) is augmented with shifts of up to 8
    pixels: at every pixel not ignored the image still reads the label, and the label's border
    (where the shift moved the frame away) is the ignore id, as the image's is black."""
    rng = np.random.default_rng(4)
    lab = rng.integers(0, 11, (360, 480)).astype(np.uint8)
    img = np.dstack([lab * 20] * 3).astype(np.uint8)
    aug = TrainAugment((240, 176), ignore_index=11, scale=(1.0, 1.0), base=(480, 360), translate_px=8, jitter=0)
    shifted = 0
    for i in range(10):
        got_img, got_lab = aug(img, lab, np.random.default_rng((6, i)))
        kept = got_lab != 11
        assert kept.mean() > 0.85
        np.testing.assert_array_equal(got_img[..., 0][kept], got_lab[kept].astype(np.uint8) * 20)
        assert (got_img[~kept] == 0).all()
        shifted += not kept.all()
    assert shifted >= 8  # a shift of (0, 0) is 1 draw in 289


def _frame_with_one_small_thing():
    """Road everywhere but a 4x4 patch of class 7 near a corner, and an ignored strip."""
    lab = np.zeros((360, 480), np.uint8)
    lab[20:24, 440:444] = 7
    lab[:, :8] = 11
    img = np.dstack([lab * 20] * 3).astype(np.uint8)
    return img, lab


def test_class_crop_puts_a_small_class_into_half_the_crops():
    img, lab = _frame_with_one_small_thing()
    def share_with_patch(p):
        aug = TrainAugment((96, 64), ignore_index=11, scale=(1.0, 1.0), base=(480, 360), translate_px=0, jitter=0, class_crop=p)
        hits = [7 in aug(img, lab, np.random.default_rng((5, i)))[1] for i in range(300)]
        return np.mean(hits)
    # placed at random, a 96x64 window holds the patch in about 2 % of the crops; with class_crop 1
    # road and class 7 (the ignored id is never drawn) are drawn equally often
    assert share_with_patch(0.0) < 0.08
    assert 0.4 < share_with_patch(1.0) < 0.6
    assert 0.15 < share_with_patch(0.4) < 0.35


def test_class_crop_off_draws_the_crops_it_always_drew():
    """class_crop 0 takes nothing more from the generator: a run resumed or repeated without it
    sees the same crops as before the option existed (the plain corner draw, checked here)."""
    img, lab = _frame_with_one_small_thing()
    aug = TrainAugment((96, 64), ignore_index=11, scale=(1.0, 1.0), base=(480, 360), translate_px=0, jitter=0)
    rng = np.random.default_rng(9)
    _, got = aug(img, lab, np.random.default_rng(9))
    flip = rng.random() < 0.5
    ref = lab[:, ::-1] if flip else lab
    y0, x0 = int(rng.integers(0, 360 - 64 + 1)), int(rng.integers(0, 480 - 96 + 1))
    np.testing.assert_array_equal(got, ref[y0:y0 + 64, x0:x0 + 96])


def test_augment_at_scale_one_shows_the_frame_as_the_runtime_does():
    """A 16:9 frame for a 4:3 model: the pipeline stretches it to the model's size, so scale 1.0
    must show that stretched frame (fitting it by its larger side showed objects 25 % wider
    than the network ever sees them at run time)."""
    rng = np.random.default_rng(0)
    lab = np.kron(rng.integers(0, 11, (9, 16)), np.ones((40, 40), np.int64)).astype(np.uint8)  # 640x360
    img = np.dstack([lab * 20] * 3).astype(np.uint8)
    aug = TrainAugment((480, 360), ignore_index=11, scale=(1.0, 1.0), base=(480, 360), translate_px=0, jitter=0)
    want = cv2.resize(lab, (480, 360), interpolation=cv2.INTER_NEAREST)
    for i in range(4):
        _, got = aug(img, lab, np.random.default_rng(i))
        assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1])


def test_augment_shrinks_a_large_frame_as_the_runtime_does():
    """A 1920x1080 frame for a 480x360 model: the pipeline shrinks it with INTER_AREA, so the crop
    at scale 1.0 must be that image (INTER_LINEAR at 4x reads 4 of every 16 pixels: fine detail
    aliases into patterns the network never sees at run time). A frame at the model's size keeps
    the linear resize of the recipe so far."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    lab = np.zeros((1080, 1920), np.uint8)
    aug = TrainAugment((480, 360), ignore_index=11, scale=(1.0, 1.0), base=(480, 360), translate_px=0, jitter=0)
    want = EvalResize((480, 360))(img, lab)[0]  # what Pipeline.preprocess feeds the network
    assert not np.array_equal(want, cv2.resize(img, (480, 360), interpolation=cv2.INTER_LINEAR))
    for i in range(4):
        got, _ = aug(img, lab, np.random.default_rng(i))
        assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1])
    portrait = img[:720, :270]  # narrower but taller than the input: shrunk in height, also with INTER_AREA
    want = EvalResize((480, 360))(portrait, lab[:720, :270])[0]
    got, _ = aug(portrait, lab[:720, :270], np.random.default_rng(0))
    assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1])
    frame = EvalResize((480, 360))(img, lab)[0]
    half = TrainAugment((240, 180), ignore_index=11, scale=(0.5, 0.5), base=(480, 360), translate_px=0, jitter=0)
    got, _ = half(frame, lab[:360, :480], np.random.default_rng(0))
    linear = cv2.resize(frame, (240, 180), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(got, linear) or np.array_equal(got, linear[:, ::-1])


@pytest.mark.parametrize("scale", [0.63, 1.37])
def test_centred_label_resize_keeps_labels_on_the_frame(scale):
    """Stripes 5 pixels wide of ids 0 and 1, grey 0 and 200: where a resized frame pixel is above 100,
    the 1-stripe weighs most in its linear blend. --label-resize centred gives that id; OpenCV's
    INTER_NEAREST (nearest, the recipe so far) is shifted and disagrees at stripe edges."""
    lab = np.tile((np.arange(480) // 5 % 2).astype(np.uint8), (360, 1))
    img = np.dstack([lab * 200] * 3).astype(np.uint8)
    size = (round(480 * scale) // 8 * 8, round(360 * scale) // 8 * 8)
    wrong = {}
    for mode in ("centred", "nearest"):
        aug = TrainAugment(size, ignore_index=11, scale=(scale, scale), base=(480, 360), translate_px=0, jitter=0,
                           label_resize=mode)
        got_img, got_lab = aug(img, lab, np.random.default_rng(0))
        level = got_img[..., 0].astype(int)
        clear = np.abs(level - 100) > 2  # not a blend of (about) one half each, which either id may take
        wrong[mode] = np.mean(got_lab[clear] != (level[clear] > 100))
    assert wrong["centred"] == 0 and wrong["nearest"] > 0.03, wrong
