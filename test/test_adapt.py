"""`seg-perception adapt`: BatchNorm statistics re-estimated on unlabelled frames of a camera.

The statistics are checked against a direct computation, the frames against where they come
from in a recording, the written model against ONNX Runtime, and the whole command against
a real camera shift: CamVid frames with another white balance, which the shipped model
misreads until it has seen some of them."""
from __future__ import annotations

import copy

import cv2
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from seg_perception.card import load_card
from seg_perception.cli import main
from seg_perception.data import bag_io
from seg_perception.files import sha256
from seg_perception.runtime.frame_sources import read_frames
from seg_perception.train.batchnorm_adaptation import reestimate_batchnorm

T0 = 1_700_000_000 * 10**9


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _sample_bag():
    from seg_perception.paths import sample_bag
    return sample_bag()


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5)).eval()


def _batches():
    """Three batches whose means differ, so that pooled and per-batch statistics differ too."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 8, 10, generator=g) * s + m for m, s in ((0.0, 1.0), (2.0, 0.5), (-1.0, 2.0))]


def test_blend_one_gives_the_exact_statistics_of_the_new_frames():
    net = _net()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    tracked = net[1].num_batches_tracked.clone()
    shifts = reestimate_batchnorm(net, iter(_batches()), 1.0)
    with torch.no_grad():  # the first BatchNorm's input does not depend on any statistics
        x = torch.cat([net[0](b) for b in _batches()]).transpose(0, 1).flatten(1).double()
    assert torch.allclose(net[1].running_mean.double(), x.mean(1), atol=1e-5)
    assert torch.allclose(net[1].running_var.double(), x.var(1), rtol=1e-4)
    per_batch = torch.stack([net[0](b).transpose(0, 1).flatten(1).var(1) for b in _batches()]).mean(0)
    assert (per_batch.double() - x.var(1)).abs().max() > 0.1  # an average of batch figures would fail above
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())  # no learned weight moved
    assert torch.equal(net[1].num_batches_tracked, tracked)
    assert not any(m.training for m in net.modules())
    assert [s.name for s in shifts] == ["1", "4"] and all(s.shift > 0 for s in shifts)


def test_blend_mixes_training_and_new_statistics():
    base = _net()
    with torch.no_grad():
        base[1].running_mean.copy_(torch.tensor([0.5, -0.5, 1.0, 0.0]))
        base[1].running_var.copy_(torch.tensor([2.0, 1.0, 0.5, 3.0]))
    full, half, none = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    reestimate_batchnorm(full, iter(_batches()), 1.0)
    reestimate_batchnorm(half, iter(_batches()), 0.5)
    reestimate_batchnorm(none, iter(_batches()), 0.0)
    for key in ("running_mean", "running_var"):
        b, f, h = (getattr(m[1], key) for m in (base, full, half))
        assert torch.allclose(h, (b + f) / 2, atol=1e-6)
        assert torch.equal(getattr(none[1], key), b)
        assert (f - b).abs().max() > 0.1


def test_adaptation_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="blend must be between 0"):
        reestimate_batchnorm(_net(), iter(_batches()), 1.5)
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        reestimate_batchnorm(nn.Conv2d(3, 3, 1), iter(_batches()), 0.5)
    with pytest.raises(ValueError, match="no frames"):
        reestimate_batchnorm(_net(), iter([]), 0.5)


def _numbered_bag(path, n=12, broken=()):
    """n bgr8 frames whose grey level says their index (10 * i); `broken` ones cannot be read."""
    with bag_io.BagWriter(path, "mcap") as w:
        for i in range(n):
            t = T0 + i * 10**8
            msg = bag_io.image_msg(np.full((24, 32, 3), 10 * i, np.uint8), "bgr8", t, "cam")
            if i in broken:
                msg.height = 99  # more rows than its data holds
            w.write("/cam/image_raw", msg, t)
            w.write("/cam/camera_info", bag_io.camera_info_msg(32, 24, t, "cam"), t)
    return path


def test_frames_spread_over_a_recording(tmp_path):
    bag = _numbered_bag(tmp_path / "bag", broken=(7,))
    first = read_frames(bag, 4)
    assert [int(f[0, 0, 0]) // 10 for f, _ in first.frames] == [0, 1, 2, 3]
    assert first.frames[0][1] == "bgr"
    spread = read_frames(bag, 4, spread=True)
    assert [int(f[0, 0, 0]) // 10 for f, _ in spread.frames] == [0, 4, 11]  # 7 is broken: skipped, not replaced
    assert [int(f[0, 0, 0]) // 10 for f, _ in read_frames(bag, 5, spread=True).frames] == [0, 3, 6, 8, 11]
    assert read_frames(bag, 4, spread=True, image_topic="/cam/image_raw").note.startswith("3 frames of /cam/image_raw")
    every = read_frames(bag, 50, spread=True)
    assert len(every.frames) == 11 and every.skipped == 1 and "1 unreadable messages skipped; the first: " in every.note
    # an interrupted recording's folder (its metadata.yaml never written) is still a bag, not a folder of images
    (bag / "metadata.yaml").unlink()
    assert [int(f[0, 0, 0]) // 10 for f, _ in read_frames(bag, 4, spread=True).frames] == [0, 4, 11]
    with pytest.raises(bag_io.BagError, match="holds sensor_msgs/msg/CameraInfo, not an image"):
        read_frames(bag, 2, image_topic="/cam/camera_info")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_frames(tmp_path / "nope", 2)
    with pytest.raises(ValueError, match="at least 1"):
        read_frames(bag, 0)


def test_a_bag_with_two_cameras_needs_its_topic_named(tmp_path):
    bag = tmp_path / "two"
    with bag_io.BagWriter(bag, "mcap") as w:
        for i in range(3):
            t = T0 + i * 10**8
            for cam, level in (("front", 10), ("rear", 200)):
                w.write(f"/{cam}/image_raw", bag_io.image_msg(np.full((8, 8), level, np.uint8), "mono8", t, cam), t)
    with pytest.raises(bag_io.BagError, match="2 image topics to choose from; pass --image-topic"):
        read_frames(bag, 2)
    got = read_frames(bag, 2, image_topic="/rear/image_raw")
    assert [int(f[0, 0]) for f, _ in got.frames] == [200, 200] and got.frames[0][1] == "mono"
    both = read_frames(bag, 5, spread=True, image_topic=["/front/image_raw", "/rear/image_raw"])
    assert [int(f[0, 0]) for f, _ in both.frames] == [10, 10, 10, 200, 200]  # 5 shared out: 3 + 2
    assert both.note.startswith("3 frames of /front/image_raw") and "; 2 frames of /rear/image_raw" in both.note
    with pytest.raises(ValueError, match="named twice"):
        read_frames(bag, 4, image_topic=["/rear/image_raw", "/rear/image_raw"])
    with pytest.raises(ValueError, match="1 frames cannot be shared out between 2 camera topics"):
        read_frames(bag, 1, image_topic=["/front/image_raw", "/rear/image_raw"])
    with pytest.raises(ValueError, match="not a rosbag2: camera topics apply to a bag"):
        read_frames(tmp_path, 2, image_topic="/front/image_raw")


def test_frames_before_the_damage_of_a_cut_recording_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    bag = tmp_path / "cut"
    with bag_io.BagWriter(bag, "mcap") as w:  # ~0.9 MB a frame: the writer closes a chunk every frame or two
        for i in range(8):
            t = T0 + i * 10**8
            w.write("/cam/image_raw", bag_io.image_msg(rng.integers(0, 255, (480, 640, 3), np.uint8), "rgb8", t, "c"), t)
    f = next(bag.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.6)])  # power lost mid-recording
    got = read_frames(bag, 8, spread=True)
    readable = 0
    with bag_io.BagReader(bag) as r:
        try:
            for _ in r.messages(["/cam/image_raw"], decode=False):
                readable += 1
        except bag_io.BagError:
            pass
    # every frame before the cut, not only the picks of 8 spread over all 8 that fell before it
    assert 2 <= len(got.frames) == readable < 8 and "damaged" in got.note, got.note


def test_no_readable_frames_says_why(tmp_path):
    bag = tmp_path / "depth"
    with bag_io.BagWriter(bag, "mcap") as w:
        for i in range(3):
            t = T0 + i * 10**8
            w.write("/cam/image_raw", bag_io.image_msg(np.zeros((4, 4), np.float32), "32FC1", t, "cam"), t)
    with pytest.raises(FileNotFoundError, match=r"no readable frames in .*\(3 unreadable messages; the first: "
                                                r".*32FC1"):
        read_frames(bag, 3, spread=True)


def test_frames_spread_over_a_folder(camvid_sample):
    got = read_frames(camvid_sample / "val", 3, spread=True)
    names = sorted((camvid_sample / "val").iterdir())
    assert len(got.frames) == 3 and got.frames[0][0].shape == (360, 480, 3)
    import cv2
    assert np.array_equal(got.frames[2][0], cv2.imread(str(names[-1]))[:, :, ::-1])


def test_a_damaged_image_in_a_folder_is_skipped_and_counted(tmp_path):
    """One unreadable file among a folder's frames stopped adapt; a bag's unreadable message is
    skipped and counted, and so is it now."""
    import cv2
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), 50 * i, np.uint8))
    (tmp_path / "f3.png").write_bytes(b"not a png")
    got = read_frames(tmp_path, 4, spread=True)
    assert len(got.frames) == 3 and got.skipped == 1 and "f3.png" in got.why, (got.note, got.why)
    assert "3 frames from" in got.note and "1 unreadable files skipped" in got.note


def test_frames_of_a_dataset_root_leave_its_labels_out(camvid_sample):
    """Pointed at a dataset's root (CamVid: train/ beside trainannot/), the masks are not frames."""
    got = read_frames(camvid_sample, 100)
    frames = sorted(p for d in ("train", "val") for p in (camvid_sample / d).iterdir())
    assert len(got.frames) == len(frames) == 20, got.note
    assert all(f.ndim == 3 and f.shape[2] == 3 for f, _ in got.frames)
    assert "20 label images of a dataset layout left out" in got.note


def test_frames_of_a_cvat_export_leave_its_masks_out(tmp_path):
    """CVAT's / Pascal VOC's layout: SegmentationClass/ and SegmentationObject/ hold masks."""
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
        (tmp_path / sub).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / sub / f"f{i}.{'jpg' if sub == 'JPEGImages' else 'png'}"),
                        np.full((8, 8, 3), 40 * i, np.uint8))
    (tmp_path / "._f0.jpg").write_bytes(b"\0\5\26\7")  # macOS's resource fork beside a frame
    got = read_frames(tmp_path, 100)
    assert len(got.frames) == 3 and "6 label images of a dataset layout left out" in got.note, got.note
    with pytest.raises(ValueError, match="SegmentationClass is a dataset's label folder .*pass the frames' folder"):
        read_frames(tmp_path / "SegmentationClass", 100)


def _cast(img):
    """Another camera's white balance: red up, blue down (what the shipped model misreads)."""
    return np.clip(img.astype(np.float32) * np.array([1.25, 1.0, 0.7]), 0, 255).astype(np.uint8)


def test_adapt_recovers_a_camera_shift(tmp_path, capsys, camvid_sample, shipped_model):
    """Frames of the sample with a colour cast: the shipped model loses most of its accuracy on
    them; adapted on the cast training frames (no labels), it regains most on the cast val ones."""
    import cv2
    from seg_perception.evaluation.split_accuracy import evaluate
    shifted = tmp_path / "camvid_cast"
    for split in ("train", "val"):
        (shifted / split).mkdir(parents=True)
        (shifted / f"{split}annot").symlink_to(camvid_sample / f"{split}annot")
        (shifted / f"{split}.txt").write_text((camvid_sample / f"{split}.txt").read_text())
        for f in (camvid_sample / split).iterdir():
            assert cv2.imwrite(str(shifted / split / f.name), _cast(cv2.imread(str(f))[:, :, ::-1])[:, :, ::-1])
    rc, out, err = _run(capsys, "adapt", "--model", shipped_model, "--frames", shifted / "train", "--out",
                        tmp_path / "adapted", "--threads", 1)
    assert rc == 0, err
    card_path = tmp_path / "adapted" / "rdsnet_camvid_adapted.yaml"
    assert f"wrote {card_path}" in out and "10 frames from" in out and "warning" not in out

    def miou(card, data):
        return evaluate(load_card(card), str(data), "camvid", "val", backend="onnxruntime", threads=1)["miou"]
    clean, cast, adapted = miou(shipped_model, camvid_sample), miou(shipped_model, shifted), miou(card_path, shifted)
    print(f"sample val mIoU: clean {clean:.1f}, cast {cast:.1f}, cast after adaptation {adapted:.1f}")
    assert cast < clean - 30, (clean, cast)  # the shift is real
    assert adapted > cast + 20, (cast, adapted)  # and adaptation undoes most of it


def test_adapted_model_is_complete_and_runs_in_onnxruntime(tmp_path, capsys, shipped_model, val_frames):
    from seg_perception.runtime.backends import OnnxRuntimeBackend, TorchBackend
    rc, out, err = _run(capsys, "adapt", "--model", shipped_model, "--frames", _sample_bag(), "--out", tmp_path,
                        "--name", "mine", "--num-frames", 6, "--blend", 1, "--threads", 1)
    assert rc == 0, err
    assert "warning: only 6 frames" in out
    card, source = load_card(tmp_path / "mine.yaml"), load_card(shipped_model)
    assert card.name == "mine" and card.files["weights"] == "mine.pt" and card.files["onnx"] == "mine.onnx"
    a = card.training["adaptation"]
    assert a["from_model"] == source.name and a["frames"] == 6 and a["blend"] == 1.0 and a["image_topics"] is None
    assert "val_miou" not in card.metrics and card.metrics["params"] == source.metrics["params"]
    assert card.training["weights_sha256"] == sha256(card.file("weights"))  # its own weights, not the source's
    new_sd, old_sd = torch.load(card.file("weights")), torch.load(source.file("weights"))
    assert any(not torch.equal(new_sd[k], old_sd[k]) for k in new_sd if k.endswith("running_mean"))
    assert all(torch.equal(new_sd[k], old_sd[k]) for k in new_sd if "running" not in k and "tracked" not in k)
    frame = val_frames[0][0]
    ort = OnnxRuntimeBackend(card, 480, 360, threads=1).infer(frame)[0]
    pt = TorchBackend(card, 480, 360, threads=1).infer(frame)[0]
    assert (ort == pt).mean() > 0.999
    again = ["adapt", "--model", shipped_model, "--frames", _sample_bag(), "--out", tmp_path, "--name", "mine",
             "--num-frames", 2, "--threads", 1]
    rc, out, err = _run(capsys, *again)  # an earlier adaptation (or another model) is not written over unasked
    assert rc == 2 and "mine.yaml exists" in err and "--replace" in err, err
    assert load_card(tmp_path / "mine.yaml").training["adaptation"]["frames"] == 6
    rc, out, err = _run(capsys, *again, "--replace")
    assert rc == 0 and load_card(tmp_path / "mine.yaml").training["adaptation"]["frames"] == 2, err


def test_adapt_on_two_cameras_records_both(tmp_path, capsys, shipped_model):
    bag = tmp_path / "two"
    rng = np.random.default_rng(1)
    with bag_io.BagWriter(bag, "mcap") as w:
        for i in range(4):
            t = T0 + i * 10**8
            for cam in ("front", "rear"):
                img = rng.integers(0, 255, (60, 80, 3), np.uint8)
                w.write(f"/{cam}/image_raw", bag_io.image_msg(img, "rgb8", t, cam), t)
    rc, out, err = _run(capsys, "adapt", "--model", shipped_model, "--frames", bag, "--out", tmp_path / "o",
                        "--num-frames", 6, "--image-topic", "/front/image_raw", "/rear/image_raw", "--threads", 1)
    assert rc == 0, err
    a = load_card(tmp_path / "o" / f"{shipped_model.stem}_adapted.yaml").training["adaptation"]
    assert a["image_topics"] == ["/front/image_raw", "/rear/image_raw"] and a["frames"] == 6
    assert "3 frames of /front/image_raw" in out and "3 frames of /rear/image_raw" in out


def test_adapt_bad_arguments_are_one_line(tmp_path, capsys, shipped_model):
    cases = [(["--blend", 0], "--blend must be above 0"),
             (["--batch", 0], "--batch must be at least 1"),
             (["--num-frames", 0], "--num-frames must be at least 1"),
             (["--frames", tmp_path / "missing"], "frames source .* not found"),
             (["--out", shipped_model.parent, "--name", shipped_model.stem], "is the model being adapted"),
             # its Q/DQ graph would have been written over with a float one, the card still naming it
             (["--out", shipped_model.parent, "--name", shipped_model.stem + "_int8"],
              "is a file of the model being adapted")]
    for extra, message in cases:
        args = ["adapt", "--model", shipped_model, "--frames", _sample_bag(), "--out", tmp_path / "o"] + extra
        rc, out, err = _run(capsys, *args)
        assert rc == 2, (extra, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and re.search(message, lines[0]), (extra, err)
    assert not (tmp_path / "o").exists()
