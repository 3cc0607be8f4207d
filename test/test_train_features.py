"""Training features beyond the plain loop: gradual grouping, the encoder-first stage,
Cityscapes layout, and data parallel through torchrun (gloo on the CPU)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from seg_perception.card import load_card
from seg_perception.data.datasets import DatasetError, cityscapes
from seg_perception.nets import build_model
from seg_perception.train import grouping
from seg_perception.train.loop import TrainConfig, train

TINY = dict(batch_size=2, width=96, height=72, eval_every=1, max_train_images=4, max_val_images=2,
            threads=1, precision="fp32",
            memory_format="channels_last")


def test_gradual_grouping_converts_to_identical_grouped_model():
    torch.manual_seed(0)
    net = build_model("essnet_dg4", 11).eval()
    n = grouping.make_gradual(net)
    assert n == 26  # two pointwise convs in each of the 13 encoder modules
    x = torch.randn(1, 3, 64, 96)
    grouping.set_alpha(net, 0.5)
    with torch.no_grad():
        half = net(x)
    grouping.set_alpha(net, 0.0)
    with torch.no_grad():
        dense_at_zero = net(x)
    grouping.finalize(net)
    assert not any(isinstance(m, grouping.GradualPointwise) for m in net.modules())
    with torch.no_grad():
        grouped = net(x)
    torch.testing.assert_close(grouped, dense_at_zero, rtol=1e-5, atol=1e-5)
    assert (half - dense_at_zero).abs().max() > 1e-3  # alpha really mixes the off-group blocks
    # The converted model has the grouped parameter count of the registry's essnet_dg4.
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in build_model("essnet_dg4", 11).parameters())


def test_alpha_schedule():
    assert [grouping.alpha_at(e, 4) for e in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_grouping_ramp_counts_the_full_network_epochs():
    """With an encoder stage first, the ramp starts with the full network (it had run during the
    encoder epochs and ended early, or inside the encoder stage)."""
    from seg_perception.train.loop import grouping_alpha
    cfg = TrainConfig(model="essnet_dg2", data="x", out="y", encoder_epochs=2, epochs=4, gradual_grouping_epochs=2)
    assert [grouping_alpha(cfg, e) for e in range(6)] == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]


def test_gradual_grouping_run_saves_grouped_weights(tmp_path, camvid_root):
    best = train(TrainConfig(model="essnet_dg2", data=str(camvid_root), out=str(tmp_path), epochs=2,
                             gradual_grouping_epochs=1, **TINY), log=lambda *_: None)
    state = torch.load(best, weights_only=True)
    net = build_model("essnet_dg2", 11)
    net.load_state_dict(state)  # loads into true grouped convs: the shape check is strict
    assert load_card(best).training["gradual_grouping_epochs"] == 1


def test_gradual_grouping_scores_the_grouped_network_it_saves(tmp_path, camvid_root):
    """Mid-ramp the training network is dense (alpha > 0); what is validated, picked as best and
    saved is the grouped network: the card's figure is that of the saved weights. A ramp that
    would not end before the last epoch is refused."""
    from seg_perception.train.loop import build, evaluate_model, validate
    cfg = TrainConfig(model="essnet_dg2", data=str(camvid_root), out=str(tmp_path / "run"), epochs=2,
                      gradual_grouping_epochs=1, keep="best", **TINY)
    best = train(cfg, log=lambda *_: None)
    run = build(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "again")}), log=lambda *_: None)
    net = build_model("essnet_dg2", 11)
    net.load_state_dict(torch.load(best, weights_only=True))
    cm = evaluate_model(net, run.val_ds, cfg.width, cfg.height, run.mean.tolist(), run.std.tolist(), run.device)
    assert load_card(best).metrics["val_miou"] == pytest.approx(100 * cm.miou(), abs=0.006)  # (card: 2 decimals)
    grouping.set_alpha(run.model, 1.0)  # the first epoch's dense network
    grouped = evaluate_model(grouping.finalized_copy(run.model), run.val_ds, cfg.width, cfg.height, run.mean.tolist(),
                             run.std.tolist(), run.device)
    dense = evaluate_model(run.model, run.val_ds, cfg.width, cfg.height, run.mean.tolist(), run.std.tolist(), run.device)
    assert validate(run).miou() == grouped.miou() != dense.miou()
    with pytest.raises(ValueError, match="--gradual-grouping-epochs must be 0 or more and below --epochs"):
        train(TrainConfig(**{**cfg.__dict__, "gradual_grouping_epochs": 2}), log=lambda *_: None)


def test_encoder_stage_labels_are_the_block_centres():
    from seg_perception.train.loop import encoder_labels
    labels = torch.arange(16).repeat(1, 16, 1)  # column index as the label, 16x16
    assert encoder_labels(labels)[0, 0].tolist() == [4, 12]  # the centre of each 8-pixel block, not 0 and 8


def test_encoder_first_stage(tmp_path, camvid_root):
    lines = []
    train(TrainConfig(model="erfnet", data=str(camvid_root), out=str(tmp_path), epochs=1, encoder_epochs=1,
                      **TINY), log=lines.append)
    log = open(tmp_path / "log.csv").read().splitlines()
    assert log[1].split(",")[1] == "encoder" and log[2].split(",")[1] == "full"
    assert any("encoder stage done" in ln for ln in lines)


def test_encoder_epochs_on_a_network_without_an_encoder_is_one_line(tmp_path, camvid_root):
    """--encoder-epochs with cgnet (no .encoder) stopped with an AttributeError traceback."""
    import pytest
    with pytest.raises(ValueError, match="--encoder-epochs: cgnet has no encoder stage to train first"):
        train(TrainConfig(model="cgnet", data=str(camvid_root), out=str(tmp_path), epochs=1, encoder_epochs=1,
                          **TINY), log=lambda *_: None)


def test_more_torchrun_processes_than_gpus_is_one_line(tmp_path, camvid_root, monkeypatch):
    """torchrun --nproc_per_node 2 on the lent single GPU died with CUDA's 'invalid device ordinal'."""
    import pytest
    import torch
    from seg_perception.train import loop
    monkeypatch.setattr(loop, "_distributed", lambda: (1, 1, 2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"process 1 of torchrun has no GPU of its own \(1 here\): "
                                         r"--nproc_per_node at most the GPU count"):
        loop.build(TrainConfig(model="rdsnet", data=str(camvid_root), out=str(tmp_path), epochs=1, **TINY))


def test_cityscapes_layout_and_train_ids(tmp_path, val_frames):
    img, _ = val_frames[0]
    for split in ("train", "val"):
        (tmp_path / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (tmp_path / "gtFine" / split / "aachen").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / f"leftImg8bit/{split}/aachen/aachen_000000_000019_leftImg8bit.png"), img)
        lab = np.zeros(img.shape[:2], np.uint8)
        lab[:100], lab[100:200], lab[200:] = 7, 26, 3  # road, car, 'out of roi' (ignored)
        cv2.imwrite(str(tmp_path / f"gtFine/{split}/aachen/aachen_000000_000019_gtFine_labelIds.png"), lab)
    ds = cityscapes(tmp_path, "train")
    _, train_ids = ds.load(0)
    assert set(np.unique(train_ids)) == {0, 13, 255}
    assert ds.table.num_classes == 19 and ds.table.names[13] == "car"
    # frames straight in the split folder, as exports in Cityscapes' layout write them
    for sub, name in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
        (tmp_path / f"{sub}/val/aachen/aachen_000000_000019_{name}.png").rename(
            tmp_path / f"{sub}/val/frame_7_{name}.png")
    np.testing.assert_array_equal(cityscapes(tmp_path, "val").load(0)[1], train_ids)
    with pytest.raises(DatasetError, match=r"no image/label pairs in .*leftImg8bit/test \(frames: "
                                           r"<city>/\*_leftImg8bit.png\)"):
        (tmp_path / "leftImg8bit/test").mkdir()
        cityscapes(tmp_path, "test")


@pytest.mark.skipif(not hasattr(torch.distributed, "is_available") or not torch.distributed.is_available(),
                    reason="torch built without distributed")
def test_torchrun_data_parallel(tmp_path, camvid_root):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 1000), "-m", "seg_perception.cli", "train", "--model", "essnet_d",
           "--data", str(camvid_root), "--out", str(tmp_path), "--epochs", "1", "--batch-size", "2",
           "--width", "96", "--height", "72", "--max-train-images", "8", "--max-val-images", "2",
           "--threads", "1", "--eval-every", "1", "--schedule", "plateau"]  # (rank 0's val figure goes to all)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "world 2" in res.stdout
    assert (tmp_path / "essnet_d_camvid.pt").is_file()
    # Each rank trains on its half: 4 of the 8 frames at batch 2 = 2 optimizer steps (4 unsharded).
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    steps = {int(st["step"]) for st in ck["optimizer"]["state"].values()}
    assert steps == {2}, steps


def test_non_finite_steps_are_skipped_not_applied(tmp_path, val_frames):
    """A batch whose labels are all 'ignore' makes the weighted loss 0/0 = NaN: that step is
    skipped (counted in the log), the weights stay finite and the run finishes. (Labels that are
    all 'ignore' in the whole split are refused up front.)"""
    img, _ = val_frames[0]
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (tmp_path / "data" / split / sub).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / "data" / split / "images" / f"{split}{i}.png"), cv2.resize(img, (96, 72)))
            lab = np.full((72, 96), 255 if split == "train" and i == 0 else 0, np.uint8)
            cv2.imwrite(str(tmp_path / "data" / split / "labels" / f"{split}{i}.png"), lab)
    lines = []
    best = train(TrainConfig(model="essnet_d", dataset="folder", data=str(tmp_path / "data"), out=str(tmp_path / "run"),
                             num_classes=3, epochs=1, batch_size=1, width=96, height=72, threads=1),
                 log=lines.append)
    assert any("1 steps skipped: non-finite" in ln for ln in lines), lines
    state = torch.load(best, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    (tmp_path / "data/train/images/train1.png").unlink()
    (tmp_path / "data/train/labels/train1.png").unlink()
    with pytest.raises(ValueError, match="no pixel of the 'train' labels is one of the 3 classes \\(all carry "
                                         "the ignore id 255\\)"):
        train(TrainConfig(model="essnet_d", dataset="folder", data=str(tmp_path / "data"), out=str(tmp_path / "r2"),
                          num_classes=3, epochs=1, batch_size=1, width=96, height=72, threads=1), log=lines.append)
