"""Training: a tiny real run on CamVid frames (small resolution, few images) proves the
loop, checkpoints, exact resume, the CSV log and the model card."""
import csv
import json

import pytest
import torch

from seg_perception.card import load_card
from seg_perception.train.loop import TrainConfig, train

TINY = dict(model="essnet_d", epochs=2, batch_size=2, width=96, height=72, eval_every=1,
            max_train_images=4, max_val_images=2, threads=1, precision="fp32",
            memory_format="channels_last", workers=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, camvid_root):
    out = tmp_path_factory.mktemp("straight")
    best = train(TrainConfig(data=str(camvid_root), out=str(out), **TINY), log=lambda *_: None)
    return out, best


def test_run_writes_weights_card_log(straight):
    out, best = straight
    assert best.is_file()
    card = load_card(best)
    assert card.architecture == "essnet_d" and card.num_classes == 11
    assert (card.input_width, card.input_height) == (96, 72)
    # the card's mIoU is the mean of its per-class IoU (the classes val holds), as best_metrics.json says
    per_class = [v for v in card.metrics["val_per_class_iou"].values() if v is not None]
    assert card.metrics["val_miou"] == pytest.approx(sum(per_class) / len(per_class), abs=0.01)
    assert json.loads((out / "best_metrics.json").read_text())["miou"] == card.metrics["val_miou"]
    assert set(card.metrics["val_per_class_iou"]) == set(card.class_names)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["train_loss"]) > 0 for r in rows)


def test_resume_continues_exactly(straight, tmp_path, camvid_root):
    """1 epoch, stop, resume for the 2nd: the same weights as 2 epochs in one go, and one log row
    per epoch even when the stop came after an epoch's row but before its checkpoint."""
    out, _ = straight
    cfg = dict(TINY, epochs=2)
    first = TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=1))
    train(first, log=lambda *_: None)
    with open(tmp_path / "log.csv", "a") as f:  # epoch 2 logged, its checkpoint never written, a row cut off
        f.write("2,full,9.99999,0.0001,,,1.0,\r\n3,fu")
    # (--keep last: which scored weights ship is not the recipe, and the card is written at the end)
    resumed = TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, keep="last"))
    # The LR schedule of a 2-epoch run is recomputed on resume, and the log says so.
    lines = []
    train(resumed, resume=True, log=lines.append)
    changed = [l for l in lines if "settings changed since the checkpoint" in l]
    assert len(changed) == 1 and changed[0].endswith(": epochs 1 -> 2"), lines
    assert any("poly learning rate is recomputed for 2 epochs" in l for l in lines), lines
    a = torch.load(out / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["train_loss"] != "9.99999"
    # the change travels with the run (checkpoint and card), so `release` can tell a mixed recipe
    assert torch.load(tmp_path / "last.pt", weights_only=False)["changed_on_resume"] == ["epochs 1 -> 2"]
    assert "changed_on_resume" not in load_card(straight[1].with_suffix(".yaml")).training
    again = []  # the same recipe, scored less often: nothing to report
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, eval_every=2)), resume=True,
          log=again.append)
    assert any("resumed from" in l for l in again) and not any("changed" in l for l in again), again
    assert torch.load(tmp_path / "last.pt", weights_only=False)["changed_on_resume"] == ["epochs 1 -> 2"]
    card = load_card(tmp_path / straight[1].with_suffix(".yaml").name)
    assert card.training["changed_on_resume"] == ["epochs 1 -> 2"] and card.training["epoch"] == 2
    assert card.training["seed"] == 0 and card.training["clip_grad"] is None and card.training["max_train_images"] == 4
    assert card.training["data"] == str(camvid_root.resolve())


def test_bad_model_and_schedule(tmp_path, camvid_root):
    with pytest.raises(ValueError, match="unknown model"):
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(TINY, model="nope")),
              log=lambda *_: None)
    for bad, message in (({"epochs": 0}, "--epochs must be at least 1"), ({"batch_size": 0}, "--batch-size must be"),
                         ({"lr": 0.0}, "--lr must be above 0")):
        with pytest.raises(ValueError, match=message):
            train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(TINY, **bad)), log=lambda *_: None)
    with pytest.raises(ValueError, match="valid choices: poly, plateau"):
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path), schedule="cosine", **TINY),
              log=lambda *_: None)


def test_bad_validation_label_stops_the_run_before_training(tmp_path, camvid_sample):
    """A label the validation split cannot use is reported before the first epoch, not when the
    first validation comes round (epochs of a long run later)."""
    import shutil

    import cv2
    from seg_perception.data.datasets import DatasetError
    data = tmp_path / "camvid"
    shutil.copytree(camvid_sample, data)
    label = data / (data / "val.txt").read_text().split()[1]
    lab = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 40
    cv2.imwrite(str(label), lab)
    lines = []
    with pytest.raises(DatasetError, match=f"label {label} has value 40 outside the 11 classes"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "run"), **dict(TINY, eval_every=5)), log=lines.append)
    assert not any("epoch" in line for line in lines), lines


def test_resume_with_another_lr_applies_it(tmp_path, camvid_root):
    """--lr and --weight-decay changed on resume are the ones trained with from there on (the
    optimizer's saved state must not bring the old ones back), and the log says so."""
    cfg = dict(TINY, epochs=2)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=1)), log=lambda *_: None)
    base = TrainConfig(**dict(cfg, data="", out="")).lr
    lines = []
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, lr=2 * base, weight_decay=1e-3)),
          resume=True, log=lines.append)
    assert any(f"lr {base} -> {2 * base}" in line for line in lines), lines
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert float(rows[1]["lr"]) == pytest.approx(2 * base * (1 - 1 / 2) ** 0.9, rel=1e-3), rows
    opt = torch.load(tmp_path / "last.pt", weights_only=False)["optimizer"]
    assert all(g["weight_decay"] == 1e-3 for g in opt["param_groups"])


def test_resume_into_a_mistyped_folder_names_the_run_nearby(tmp_path):
    from types import SimpleNamespace
    from seg_perception.train.loop import restore
    (tmp_path / "r200_train").mkdir()
    (tmp_path / "r200_train" / "last.pt").write_bytes(b"x")
    (tmp_path / "h13_other").mkdir()
    (tmp_path / "h13_other" / "last.pt").write_bytes(b"x")
    lines = []
    restore(SimpleNamespace(out=tmp_path / "r200_trian", main=True), lines.append)
    assert lines == [f"[train] --resume: no {tmp_path / 'r200_trian' / 'last.pt'} yet, starting fresh (note: "
                     f"{tmp_path / 'r200_train'} holds a run to continue; if that is the one meant, stop and fix --out)"]
    lines.clear()
    restore(SimpleNamespace(out=tmp_path / "e200_new", main=True), lines.append)
    assert lines == [f"[train] --resume: no {tmp_path / 'e200_new' / 'last.pt'} yet, starting fresh"]


def test_a_run_folder_is_not_restarted_or_shared(straight, tmp_path, camvid_root):
    """A command without --resume on a run's folder started it again over its last.pt, log and
    shipped weights; a second process on the same folder interleaved its rows and checkpoints;
    fewer --epochs than already trained gave a complex learning rate."""
    import fcntl
    import shutil
    out, _ = straight
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = (run / "last.pt").read_bytes()
    cfg = TrainConfig(data=str(camvid_root), out=str(run), **TINY)
    with pytest.raises(ValueError, match="holds a run \\(last.pt\\): --resume continues it"):
        train(cfg, log=lambda *_: None)
    assert (run / "last.pt").read_bytes() == before
    with open(run / ".train.lock", "a") as held:  # another training in that folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another training is running in"):
            train(cfg, resume=True, log=lambda *_: None)
    with pytest.raises(ValueError, match="has trained 2 epochs, more than this command's 1: resume with --epochs 2"):
        train(TrainConfig(data=str(camvid_root), out=str(run), **dict(TINY, epochs=1)), resume=True,
              log=lambda *_: None)
    train(cfg, resume=True, log=lambda *_: None)  # the lock is released after each run: this one may go on
    carried = tmp_path / "carried"  # a finished run carried without its last.pt: its log and weights stay
    shutil.copytree(out, carried)
    (carried / "last.pt").unlink()
    log_before = (carried / "log.csv").read_text()
    for resume in (False, True):
        with pytest.raises(ValueError, match="a run's log of 2 epochs but no last.pt"):
            train(TrainConfig(data=str(camvid_root), out=str(carried), **TINY), resume=resume, log=lambda *_: None)
    assert (carried / "log.csv").read_text() == log_before


def test_a_model_in_out_without_a_run_is_not_trained_over(straight, tmp_path, camvid_root):
    """--out holding a model (shipped, adapted: NAME.pt and NAME.yaml) but no run (no last.pt, no
    log.csv) had its weights and card overwritten silently; with --resume too ("no last.pt yet,
    starting fresh")."""
    import shutil
    out, best = straight
    folder = tmp_path / "models"
    folder.mkdir()
    for f in (best, best.with_suffix(".yaml")):
        shutil.copy(f, folder)
    before = _files_of(folder)
    with pytest.raises(FileExistsError, match=f"{folder / best.name} exists \\(a model, and no run in this "
                       "folder to continue\\): choose another --out or --name"):
        train(TrainConfig(data=str(camvid_root), out=str(folder), **TINY), log=lambda *_: None)
    with pytest.raises(FileExistsError, match="a model, and no run"):  # --resume would start fresh over it
        train(TrainConfig(data=str(camvid_root), out=str(folder), **TINY), resume=True, log=lambda *_: None)
    (folder / best.name).unlink()  # the card alone is a model too
    with pytest.raises(FileExistsError, match="a model, and no run"):
        train(TrainConfig(data=str(camvid_root), out=str(folder), **TINY), log=lambda *_: None)
    assert _files_of(folder) == {k: v for k, v in before.items() if k != best.name}


def _files_of(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".train.lock"}


def test_non_finite_batchnorm_statistics_stop_the_run_before_they_are_saved(tmp_path, camvid_root):
    """A forward pass whose loss is skipped as non-finite has already moved the BatchNorm
    statistics: NaN there broke every later evaluation while last.pt kept saving it."""
    from seg_perception.train.loop import _check_finite, build
    run = build(TrainConfig(data=str(camvid_root), out=str(tmp_path), **TINY), log=lambda *_: None)
    _check_finite(run, 0)
    bn = next(m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite in epoch 1 .*running_var"):
        _check_finite(run, 0)


def test_ctrl_c_during_train_says_how_to_continue(tmp_path, camvid_root, capsys):
    """Ctrl-C printed "interrupted" alone: the run continues from its last.pt with --resume, and says so."""
    import os
    import signal
    import threading
    from seg_perception.cli import main
    out = tmp_path / "run"
    returned = threading.Event()

    def ctrl_c_after_the_first_checkpoint():
        while not returned.is_set() and not (out / "last.pt").is_file():
            returned.wait(0.02)
        if not returned.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in a terminal

    stopper = threading.Thread(target=ctrl_c_after_the_first_checkpoint)
    stopper.start()
    try:  # epochs enough that the run is still training when the signal arrives
        rc = main(["train", "--model", "essnet_d", "--data", str(camvid_root), "--out", str(out), "--epochs", "1000",
                   "--batch-size", "2", "--width", "96", "--height", "72", "--eval-every", "1000", "--threads", "1",
                   "--precision", "fp32", "--memory-format", "channels_last", "--workers", "0",
                   "--max-train-images", "4", "--max-val-images", "2"])
    finally:
        returned.set()
        stopper.join()
    err = capsys.readouterr().err
    assert rc == 130 and (out / "last.pt").is_file(), err
    assert "interrupted: the same command with --resume continues the run" in err.strip().splitlines()[-1], err
