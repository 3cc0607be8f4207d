"""Resume edge cases: --epochs lowered to the epochs trained, a finished run resumed again,
--init / --name / precision on resume, settings compared as they act, and damaged checkpoints."""
import csv
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import make_random_model
from seg_perception.card import load_card
from seg_perception.train.checkpoint import atomic_save, load_checkpoint
from seg_perception.train.loop import TrainConfig, _changed_settings, train

TINY = dict(model="essnet_d", epochs=2, batch_size=2, width=96, height=72, crop_width=64, crop_height=48,
            eval_every=1, max_train_images=4, max_val_images=2, threads=1, precision="fp32",
            memory_format="channels_last", workers=0)


class Stop(BaseException):
    pass


def _files(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_epochs_lowered_to_those_trained_finish_the_run(tmp_path, camvid_root):
    """A 4-epoch run stopped after its 3rd (not validated: --eval-every 2), resumed with --epochs 3:
    it did nothing, so weights and card stayed at epoch 2 and the change was never saved. Now epoch 3
    is validated and shipped, and last.pt keeps the shorter plan; resumed once more, nothing is written."""
    cfg = dict(TINY, epochs=4, eval_every=2, keep="last")

    def stop(msg):
        if msg.startswith("[train] epoch 3/"):
            raise Stop()
    with pytest.raises(Stop):
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), log=stop)
    lines = []
    best = train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=3)), resume=True,
                 log=lines.append)
    assert any("epoch 3 is the last of --epochs 3 now: val mIoU" in line for line in lines), lines
    card = load_card(best.with_suffix(".yaml"))
    assert card.training["epoch"] == 3 and card.training["epochs_planned"] == 3
    assert card.training["changed_on_resume"] == ["epochs 4 -> 3"]
    assert card.training["train_loss"] is not None
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 2 and ck["config"]["epochs"] == 3 and ck["changed_on_resume"] == ["epochs 4 -> 3"]
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2]["val_miou"], rows
    before = _files(tmp_path)
    again = []
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=3)), resume=True, log=again.append)
    assert any("has finished its 3 epochs: nothing to do" in line for line in again), again
    assert _files(tmp_path) == before


def test_finished_run_without_validation_resumed_again_writes_nothing(tmp_path, camvid_root):
    """A finished --val-split none run resumed with the same flags rewrote its weights and card (and
    lost the card's train_loss)."""
    cfg = TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(TINY, val_split="none", keep="last"))
    best = train(cfg, log=lambda *_: None)
    loss = load_card(best.with_suffix(".yaml")).training["train_loss"]
    assert loss is not None
    before = _files(tmp_path)
    train(cfg, resume=True, log=lambda *_: None)
    assert _files(tmp_path) == before
    assert load_card(best.with_suffix(".yaml")).training["train_loss"] == loss


def test_init_is_kept_on_resume_and_another_is_refused(tmp_path, camvid_root):
    """--init left off on resume made the card say init None; another --init was silently ignored."""
    source = make_random_model(tmp_path / "src", onnx=False)
    out = tmp_path / "run"
    cfg = dict(TINY, epochs=1)
    train(TrainConfig(data=str(camvid_root), out=str(out), init=str(source), **cfg), log=lambda *_: None)
    best = train(TrainConfig(data=str(camvid_root), out=str(out), **dict(cfg, epochs=2)), resume=True,
                 log=lambda *_: None)
    assert load_card(best.with_suffix(".yaml")).training["init"] == str(source)
    assert load_checkpoint(out / "last.pt")["config"]["init"] == str(source)
    before = _files(out)
    other = make_random_model(tmp_path / "other", onnx=False, seed=1)
    with pytest.raises(ValueError, match="--init applies only at a run's start: resume without --init"):
        train(TrainConfig(data=str(camvid_root), out=str(out), init=str(other), **dict(cfg, epochs=3)), resume=True,
              log=lambda *_: None)
    assert _files(out) == before


def test_another_name_on_resume_is_refused(tmp_path, camvid_root):
    """A changed --name orphaned the run's files and could ship the last weights labelled best."""
    cfg = dict(TINY, epochs=1)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), log=lambda *_: None)
    before = _files(tmp_path)
    with pytest.raises(ValueError, match="is the run of --name essnet_d_camvid, not renamed: resume with --name "
                                         "essnet_d_camvid, or start a new --out"):
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=2, name="renamed")),
              resume=True, log=lambda *_: None)
    assert _files(tmp_path) == before
    # the default name spelled out is the same run
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=2, name="essnet_d_camvid")),
          resume=True, log=lambda *_: None)


def test_precision_or_layout_changed_on_resume_is_noted_and_recorded(tmp_path, camvid_root):
    """An explicit --memory-format (or --precision) other than the checkpoint's was accepted silently;
    the card now records both, and --max-val-images beside --max-train-images."""
    cfg = dict(TINY, epochs=1)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), log=lambda *_: None)
    lines = []
    best = train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=2, memory_format="contiguous")),
                 resume=True, log=lines.append)
    assert any(line.endswith("epochs 1 -> 2, memory_format channels_last -> contiguous") for line in lines), lines
    assert load_checkpoint(tmp_path / "last.pt")["changed_on_resume"] == [
        "epochs 1 -> 2", "memory_format channels_last -> contiguous"]
    training = load_card(best.with_suffix(".yaml")).training
    assert training["precision"] == "fp32" and training["memory_format"] == "contiguous"
    assert training["max_val_images"] == 2 and training["max_train_images"] == 4


def test_settings_are_compared_as_they_act(tmp_path, monkeypatch):
    """--crop typed out at the model size, or a teacher by an absolute path instead of a relative
    one, counted as recipe changes."""
    teacher = make_random_model(tmp_path / "teacher", onnx=False)
    monkeypatch.chdir(tmp_path)
    base = dict(model="essnet_d", data="d", out="o", width=96, height=72)
    saved = asdict(TrainConfig(**base, teacher="teacher/random_essnet_d.yaml"))
    assert _changed_settings(saved, TrainConfig(**base, crop_width=96, crop_height=72, teacher=str(teacher))) == []
    assert _changed_settings(saved, TrainConfig(**base, crop_width=64, crop_height=72, teacher=str(teacher))) == [
        ("crop_width", 96, 64)]


def test_negative_seed_is_refused_before_anything(tmp_path, camvid_root):
    with pytest.raises(ValueError, match="--seed must be 0 or more, got -1"):
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "run"), **dict(TINY, seed=-1)),
              log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_checkpoint_writes_are_synced_and_damaged_ones_are_named(tmp_path, monkeypatch):
    """The write was not fsynced and left its temp file when torch.save failed; an empty last.pt
    failed on resume with a blank EOFError."""
    import os
    import stat
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode)
                                                               else "file"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert events == ["file", "replace", "folder"]  # the data on disk before the rename, then the rename
    with pytest.raises(Exception):
        atomic_save({"epoch": 2, "bad": lambda: 0}, path)  # a lambda does not pickle
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and load_checkpoint(path) == {"epoch": 1}
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"checkpoint {path} cannot be read \\(EOFError\\): it is empty, cut off "
                                         "or not a checkpoint; restore a copy of it, or start again in another --out"):
        load_checkpoint(path)
