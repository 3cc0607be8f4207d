"""Resume edge cases: --epochs lowered to the epochs trained, a finished run resumed again,
--init / --name / precision on resume, settings compared as they act, and damaged checkpoints."""
import csv
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import make_random_model
from seg_perception.card import load_card, weights_mismatch
from seg_perception.files import sha256
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


def test_a_run_stopped_while_shipping_writes_weights_and_card_again_on_resume(tmp_path, camvid_root):
    """A final run (no val) ships after its last checkpoint: stopped in between, --resume found
    nothing left to train and never wrote the weights (release then found "only last.pt"); stopped
    between the weights and the card, the new weights sat beside the previous card. The card records
    the hash of its weights, and a resume writes both again from last.pt."""
    cfg = TrainConfig(data=str(camvid_root), out=str(tmp_path), command="seg-perception train ...",
                      **dict(TINY, val_split="none", keep="last"))
    best = train(cfg, log=lambda *_: None)
    card_path = best.with_suffix(".yaml")
    shipped = torch.load(best, weights_only=True)
    assert load_card(card_path).training["weights_sha256"] == sha256(best)
    assert weights_mismatch(load_card(card_path)) is None

    best.unlink()
    card_path.unlink()  # stopped after the last checkpoint, before anything shipped
    lines = []
    train(cfg, resume=True, log=lines.append)
    assert any("is missing: the last epoch's weights and card written again from last.pt" in ln for ln in lines), lines
    again = torch.load(best, weights_only=True)
    assert all(torch.equal(shipped[k], again[k]) for k in shipped)
    card = load_card(card_path)
    assert card.training["epoch"] == 2 and card.training["train_loss"] is not None and weights_mismatch(card) is None

    other = {k: v + 1 if v.is_floating_point() else v for k, v in shipped.items()}
    atomic_save(other, best)  # other weights beside the card (a stop between the two, or put there by hand)
    assert "is not the weights file its card" in weights_mismatch(load_card(card_path))
    lines = []  # a command whose recipe differs from the run's would write its own recipe into the card
    train(TrainConfig(**{**asdict(cfg), "lr": 0.5}), resume=True, log=lines.append)
    assert any("not written again, as this command's settings differ from the run's (lr" in ln for ln in lines)
    assert "is not the weights file its card" in weights_mismatch(load_card(card_path))
    lines = []
    train(TrainConfig(**{**asdict(cfg), "command": "seg-perception train ... --resume"}), resume=True,
          log=lines.append)
    assert any("is not the weights file its card" in ln and ".pt.replaced" in ln for ln in lines), lines
    again = torch.load(best, weights_only=True)
    assert all(torch.equal(shipped[k], again[k]) for k in shipped) and weights_mismatch(load_card(card_path)) is None
    kept = torch.load(best.with_name(best.name + ".replaced"), weights_only=True)  # not overwritten: kept
    assert all(torch.equal(other[k], kept[k]) for k in other)
    card = load_card(card_path)
    assert card.training["command"] == "seg-perception train ..."  # the run's, not the resuming command's
    before = _files(tmp_path)
    train(cfg, resume=True, log=lambda *_: None)  # consistent now: nothing is written
    assert _files(tmp_path) == before


def test_a_card_written_again_keeps_the_recipe_changes_of_the_run(tmp_path, camvid_root):
    """The card written again for a finished run recorded an empty changed_on_resume: a run raised from
    1 to 2 epochs on resume (refused by release) passed for one recipe."""
    cfg = dict(TINY, epochs=1, val_split="none", keep="last")
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), log=lambda *_: None)
    longer = TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=2))
    best = train(longer, resume=True, log=lambda *_: None)
    assert load_card(best.with_suffix(".yaml")).training["changed_on_resume"] == ["epochs 1 -> 2"]
    best.with_suffix(".yaml").unlink()
    train(longer, resume=True, log=lambda *_: None)
    assert load_card(best.with_suffix(".yaml")).training["changed_on_resume"] == ["epochs 1 -> 2"]


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
    assert not any("--threads" in line for line in lines), lines
    assert load_checkpoint(tmp_path / "last.pt")["changed_on_resume"] == [
        "epochs 1 -> 2", "memory_format channels_last -> contiguous"]
    training = load_card(best.with_suffix(".yaml")).training
    assert training["precision"] == "fp32" and training["memory_format"] == "contiguous"
    assert training["max_val_images"] == 2 and training["max_train_images"] == 4
    lines = []  # another --threads: the same recipe, said (not recorded), since the sums run in another order
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=3, memory_format="contiguous",
                                                                       threads=2)), resume=True, log=lines.append)
    assert any("note: --threads 1 -> 2 since the checkpoint" in line for line in lines), lines
    assert load_checkpoint(tmp_path / "last.pt")["changed_on_resume"] == [
        "epochs 1 -> 2", "memory_format channels_last -> contiguous", "epochs 2 -> 3"]


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
    # how often val is scored is no recipe, except under the plateau schedule, whose patience counts evaluations
    assert _changed_settings(asdict(TrainConfig(**base)), TrainConfig(**base, eval_every=2)) == []
    assert _changed_settings(asdict(TrainConfig(**base, schedule="plateau")),
                             TrainConfig(**base, schedule="plateau", eval_every=2, max_val_images=9)) == [
        ("eval_every", 5, 2), ("max_val_images", 0, 9)]


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


# ------------------------------------------------------------------ classes on resume, --init by name
GROUND, SKY, TREE = (0, 160, 0), (0, 0, 255), (140, 70, 20)
CLASSES = [{"name": "ground", "color": list(GROUND)}, {"name": "sky", "color": list(SKY)},
           {"name": "tree", "color": list(TREE)}]
FOLDER_TINY = dict(TINY, dataset="folder", val_split="none", keep="last", epochs=1, max_val_images=0)


def _write_classes(data: Path, classes, **extra) -> None:
    import yaml
    (data / "dataset.yaml").write_text(yaml.safe_dump({"classes": classes, **extra}, sort_keys=False))


def _folder_dataset(data: Path) -> Path:
    """4 frames of 96x72 with RGB masks: sky on top, ground below, a tree in between."""
    import cv2
    import numpy as np
    (data / "train" / "images").mkdir(parents=True)
    (data / "train" / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = np.zeros((72, 96, 3), np.uint8)
        horizon = 30 + 4 * i
        mask[:horizon], mask[horizon:] = SKY, GROUND
        mask[horizon - 12:horizon + 6, 20 + 10 * i:40 + 10 * i] = TREE
        img = (mask.astype(np.int16) // 2 + rng.integers(0, 60, mask.shape)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(data / "train" / "images" / f"f{i}.png"), img[..., ::-1])
        cv2.imwrite(str(data / "train" / "labels" / f"f{i}.png"), mask[..., ::-1])
    _write_classes(data, CLASSES)
    return data


def _strip_classes(out: Path) -> None:
    """last.pt as the code before the class record wrote it."""
    import torch
    ck = load_checkpoint(out / "last.pt")
    ck.pop("classes", None)
    torch.save(ck, out / "last.pt")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A folder dataset of three classes (ground, sky, tree) and a 1-epoch run on it."""
    root = tmp_path_factory.mktemp("classes")
    data = _folder_dataset(root / "data")
    out = root / "run"
    train(TrainConfig(data=str(data), out=str(out), **FOLDER_TINY), log=lambda *_: None)
    return data, out


def _copy(folder_run, tmp_path):
    import shutil
    data, out = (shutil.copytree(p, tmp_path / p.name) for p in folder_run)
    return Path(data), Path(out)


def _refusal(data: Path, out: Path) -> str:
    with pytest.raises(ValueError) as e:
        train(TrainConfig(data=str(data), out=str(out), **dict(FOLDER_TINY, epochs=2)), resume=True,
              log=lambda *_: None)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_changed_classes_on_resume_are_refused_in_one_line(folder_run, tmp_path):
    """Two classes swapped in dataset.yaml (RGB masks: the labels swap), one renamed, one added, another
    colour or ignore id: the resume went on silently on ids that mean other classes (or, with a class added,
    stopped on torch's many-line size mismatch). Now one line names the change before anything is loaded,
    last.pt records the classes, and --init OUT/last.pt in a new --out matches the classifier by name."""
    data, out = _copy(folder_run, tmp_path)
    before = _files(out)
    card = out / "essnet_d_folder.yaml"
    _write_classes(data, [CLASSES[1], CLASSES[0], CLASSES[2]])
    assert _refusal(data, out) == (
        f"classes changed since the checkpoint (sky <-> ground at 0/1): {out / 'last.pt'} learnt the classes as "
        f"they were; resume with those, or start a new --out (with --init {card} to fine-tune these weights, "
        "classes matched by name)")
    assert load_checkpoint(out / "last.pt")["classes"] == {
        "names": ["ground", "sky", "tree"], "colors": [list(GROUND), list(SKY), list(TREE)], "ignore_index": 255}
    _write_classes(data, CLASSES[:2] + [{"name": "bush", "color": list(TREE)}])
    assert "(class 2 tree -> bush)" in _refusal(data, out)
    _write_classes(data, CLASSES + [{"name": "rock", "color": [9, 9, 9]}])
    assert "(3 -> 4 classes, new: rock)" in _refusal(data, out)
    _write_classes(data, CLASSES[:2] + [{"name": "tree", "color": [[1, 1, 1], [140, 70, 20]]}])  # shown 1, 1, 1
    assert "(colour of tree (140, 70, 20) -> (1, 1, 1))" in _refusal(data, out)
    _write_classes(data, CLASSES, ignore_index=254)
    assert "(ignore id 255 -> 254)" in _refusal(data, out)
    assert _files(out) == before
    # fine-tuning the run on the swapped classes: --init last.pt follows the names it records
    _write_classes(data, [CLASSES[1], CLASSES[0], CLASSES[2]])
    lines = []
    train(TrainConfig(data=str(data), out=str(tmp_path / "tuned"), init=str(out / "last.pt"), **FOLDER_TINY),
          log=lines.append)
    assert any("classifier matched by class name (classes from the checkpoint): 3 of 3 classes" in line
               for line in lines), lines
    _write_classes(data, CLASSES)  # as trained: the resume goes on
    train(TrainConfig(data=str(data), out=str(out), **dict(FOLDER_TINY, epochs=2)), resume=True, log=lambda *_: None)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    # the same classes as single-channel masks of class ids: the colours only draw the classes, so a colour
    # changed (with labels: ids, or unset and no mask's levels a class colour) is a note, not a refusal
    import shutil
    import cv2
    import numpy as np
    ids_data, ids_out = Path(shutil.copytree(data, tmp_path / "ids_data")), Path(shutil.copytree(out, tmp_path / "ids"))
    for lab in (ids_data / "train" / "labels").iterdir():
        rgb = cv2.imread(str(lab))[..., ::-1]
        ids = np.full(rgb.shape[:2], 255, np.uint8)
        for i, c in enumerate((GROUND, SKY, TREE)):
            ids[(rgb == c).all(-1)] = i
        assert (ids != 255).all()
        cv2.imwrite(str(lab), ids)
    rounds = ((3, TREE, (200, 200, 0), {"labels": "ids"}), (4, (200, 200, 0), (0, 200, 200), {}))
    for epochs, was, tree, extra in rounds:
        _write_classes(ids_data, CLASSES[:2] + [{"name": "tree", "color": list(tree)}], **extra)
        if not extra:
            _strip_classes(ids_out)  # a checkpoint without the record: compared through its card, the same rule
        lines = []
        train(TrainConfig(data=str(ids_data), out=str(ids_out), **dict(FOLDER_TINY, epochs=epochs)), resume=True,
              log=lines.append)
        assert load_checkpoint(ids_out / "last.pt")["epoch"] == epochs - 1
        assert any(f"note: display colours changed since the checkpoint (colour of tree {was} -> {tree})" in line
                   for line in lines), lines
    # colours that are the masks' grey levels in another order do read them (ground 0 -> sky): refused
    _write_classes(ids_data, [dict(CLASSES[0], color=[1, 1, 1]), dict(CLASSES[1], color=[0, 0, 0]),
                              dict(CLASSES[2], color=[2, 2, 2])])
    with pytest.raises(ValueError, match=r"classes changed since the checkpoint \(colour of ground"):
        train(TrainConfig(data=str(ids_data), out=str(ids_out), **dict(FOLDER_TINY, epochs=5)), resume=True,
              log=lambda *_: None)


def test_a_checkpoint_without_the_class_record_resumes_as_before(folder_run, tmp_path):
    """A last.pt written before the classes were recorded (the long runs in progress) resumes to the same
    weights as one with the record, and gains the record; with other classes it is refused by the run's
    card beside it, and without a card by the classifier's class count (not torch's size mismatch)."""
    import shutil
    import torch
    data, out = _copy(folder_run, tmp_path)
    old = Path(shutil.copytree(out, tmp_path / "old"))
    _strip_classes(old)
    assert "classes" not in load_checkpoint(old / "last.pt")
    for run in (out, old):
        train(TrainConfig(data=str(data), out=str(run), **dict(FOLDER_TINY, epochs=2)), resume=True,
              log=lambda *_: None)
    a, b = load_checkpoint(out / "last.pt"), load_checkpoint(old / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert b["classes"] == a["classes"] and b["changed_on_resume"] == a["changed_on_resume"] == ["epochs 1 -> 2"]
    old = Path(shutil.copytree(folder_run[1], tmp_path / "old2"))
    _strip_classes(old)
    _write_classes(data, [CLASSES[1], CLASSES[0], CLASSES[2]])
    assert "(sky <-> ground at 0/1)" in _refusal(data, old)
    (old / "essnet_d_folder.yaml").unlink()  # no card: the class count alone
    _write_classes(data, CLASSES + [{"name": "rock", "color": [9, 9, 9]}])
    msg = _refusal(data, old)
    assert msg.startswith("classes changed since the checkpoint (3 -> 4 classes): ") and "--init" not in msg, msg


def test_init_pt_with_its_card_beside_matches_classes_by_name(tmp_path):
    """--init X.pt copied the classifier by position even with X.yaml beside it, while --init X.yaml
    matched the classes by name. Now the card beside it (same name, or one listing X.pt as its weights)
    names them; without one the classifier is copied by position where the counts agree, and said."""
    import torch
    from seg_perception.data.classes import CAMVID
    from seg_perception.nets import build_model
    from seg_perception.train.loop import init_from
    card = make_random_model(tmp_path, width=64, height=48, onnx=False)
    pt = card.with_suffix(".pt")
    src = torch.load(pt, weights_only=True)
    names = ["Car", "road", "Animal", "Sky"]  # 8, 3, new, 0 of CamVid's

    def init(classes, seed=5):
        torch.manual_seed(seed)
        student, notes = build_model("essnet_d", len(classes)), []
        fresh = student.state_dict()["classifier.bias"].clone()
        init_from(student, str(pt), "essnet_d", classes, notes)
        return student.state_dict()["classifier.bias"], fresh, notes

    got, fresh, notes = init(names)
    torch.testing.assert_close(got, torch.stack([src["classifier.bias"][8], src["classifier.bias"][3], fresh[2],
                                                 src["classifier.bias"][0]]), rtol=0, atol=0)
    assert notes == ["classifier matched by class name (classes from random_essnet_d.yaml): 3 of 4 classes from "
                     "it, new: Animal"]
    card.rename(tmp_path / "other.yaml")  # a card of another name that lists the .pt as its weights
    got, _, notes = init(list(CAMVID.names)[::-1])
    torch.testing.assert_close(got, src["classifier.bias"].flip(0), rtol=0, atol=0)
    assert notes[0].startswith("classifier matched by class name (classes from other.yaml): 11 of 11")
    (tmp_path / "other.yaml").unlink()  # no card: by position, said where the counts agree
    got, _, notes = init(list(CAMVID.names)[::-1])
    torch.testing.assert_close(got, src["classifier.bias"], rtol=0, atol=0)
    assert notes == ["classifier copied by position (no card beside random_essnet_d.pt names its classes: its "
                     "card there as random_essnet_d.yaml, or --init that card, matches them by name)"]
    assert init(names)[2] == []  # 4 classes against 11: the classifier stays fresh, as the log's list says


def test_a_raised_epochs_on_resume_is_not_the_recipe_and_the_docs_say_release_refuses_it():
    """The docs set a raised --epochs on resume apart from the recipe changes that release refuses; it is
    one: the epochs before the stop ran on the shorter poly schedule, so the learning rates of the run are
    those of neither length, and release (which refuses any changed_on_resume) is right to refuse it."""
    import torch
    from seg_perception.train.loop import make_schedule

    def rates(cfg, epochs, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
        sched, out = make_schedule(cfg, opt, epochs), []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out
    cfg = TrainConfig(model="essnet_d", data="d", out="o", epochs=4)
    assert rates(cfg, 2, 2) != rates(cfg, 4, 2)  # the first 2 epochs of a run of 2 against those of one of 4
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    resume = " ".join(doc[doc.index("## Long runs"):doc.index("### On a GPU machine")].split())
    assert "`--epochs` may be raised on resume;" not in resume
    assert ("so the weights are those of neither length: the change is listed and recorded as below "
            "(`epochs 100 -> 200`), and `release` refuses the run") in resume


def test_other_training_frames_on_resume_are_said_and_recorded(folder_run, tmp_path):
    """--data pointing at other frames on resume (a frame removed, another copy of the dataset) went on
    without a word: the shuffle indexed other files, the class weights changed, and release shipped the
    run as one recipe. Now last.pt records the frames (count and hash of folder/file names, in order): a
    copy of the same data elsewhere resumes as it is; other frames are said and recorded as a change
    (release refuses such a run). A last.pt from before the record resumes as before and gains it. A
    temp file left by a write a SIGKILL cut off is removed once the run holds its folder."""
    import shutil
    data, out = _copy(folder_run, tmp_path)
    frames = load_checkpoint(out / "last.pt")["train_frames"]
    assert frames["count"] == 4 and len(frames["sha256"]) == 64
    moved = Path(shutil.copytree(data, tmp_path / "elsewhere" / "data"))
    (out / "last.pt.tmp999").write_bytes(b"cut off")
    lines = []
    train(TrainConfig(data=str(moved), out=str(out), **dict(FOLDER_TINY, epochs=2)), resume=True, log=lines.append)
    ck = load_checkpoint(out / "last.pt")
    assert ck["changed_on_resume"] == ["epochs 1 -> 2"] and ck["train_frames"] == frames, lines
    assert not list(out.glob("last.pt.tmp*"))
    for sub in ("images", "labels"):
        (moved / "train" / sub / "f3.png").unlink()
    lines = []
    train(TrainConfig(data=str(moved), out=str(out), **dict(FOLDER_TINY, epochs=3)), resume=True, log=lines.append)
    ck = load_checkpoint(out / "last.pt")
    change = f"training data 4 frames ({frames['sha256'][:8]}) -> 3 frames ({ck['train_frames']['sha256'][:8]})"
    assert ck["changed_on_resume"] == ["epochs 1 -> 2", "epochs 2 -> 3", change], ck["changed_on_resume"]
    assert any(line.startswith("[train] settings changed since the checkpoint") and change in line
               for line in lines), lines
    # a checkpoint written before the record: nothing to compare, and the record is written from then on
    old = Path(shutil.copytree(folder_run[1], tmp_path / "old"))
    ck = load_checkpoint(old / "last.pt")
    del ck["train_frames"]
    torch.save(ck, old / "last.pt")
    train(TrainConfig(data=str(moved), out=str(old), **dict(FOLDER_TINY, epochs=2)), resume=True, log=lambda *_: None)
    ck = load_checkpoint(old / "last.pt")
    assert ck["changed_on_resume"] == ["epochs 1 -> 2"] and ck["train_frames"]["count"] == 3


def test_a_card_written_again_records_the_precision_the_run_trained_in(tmp_path, camvid_root):
    """A finished run's card written again from last.pt on another machine recorded that machine's
    precision and layout (a GPU run re-finished on a CPU said fp32), not the ones it trained in."""
    cfg = TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(TINY, epochs=1, val_split="none",
                                                                        keep="last"))
    best = train(cfg, log=lambda *_: None)
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    assert (ck["precision"], ck["memory_format"]) == ("fp32", "channels_last")
    ck.update(precision="amp", memory_format="channels_last", autocast="bf16")  # as trained on a GPU
    atomic_save(ck, tmp_path / "last.pt")
    best.with_suffix(".yaml").unlink()
    train(TrainConfig(**{**asdict(cfg), "memory_format": "contiguous"}), resume=True, log=lambda *_: None)
    training = load_card(best.with_suffix(".yaml")).training
    assert (training["precision"], training["memory_format"], training.get("autocast")) == (
        "amp", "channels_last", "bf16")


def test_runs_says_where_each_run_stands(tmp_path, camvid_root, capsys):
    """`seg-perception runs`: a run stopped at epoch 3 of 4 (and the command that continues it), the
    same run while a process holds its lock (training, with its pid), then finished; a folder of no
    runs and one that does not exist are one line each."""
    import json
    import subprocess
    import sys
    from seg_perception.cli import main
    out = tmp_path / "runs" / "tiny"
    cfg = dict(TINY, epochs=4, eval_every=2, keep="last", command=f"seg-perception train --out {out} --epochs 4")

    def stop(msg):
        if msg.startswith("[train] epoch 3/"):
            raise Stop()
    with pytest.raises(Stop):
        train(TrainConfig(data=str(camvid_root), out=str(out), **cfg), log=stop)
    assert main(["runs", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    row = next(ln for ln in text.splitlines() if ln.startswith(str(out)))
    assert "essnet_d" in row and "train -> val" in row and " 3/4 " in row and " stopped " in row, text
    val2 = next(r for r in csv.DictReader(open(out / "log.csv")) if r["epoch"] == "2")["val_miou"]
    assert f"{float(val2):.2f} @2" in row
    assert f"{out}: continue with: seg-perception train --out {out.resolve()} --epochs 4 --resume" in text
    with open(out / "log.csv", "a") as f:  # epoch 4's row, written just before a checkpoint that never came
        f.write("4,full,0.5,0.001,,,1.0,\n")
    assert main(["runs", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_done"] == 3  # --resume trains epoch 4 again
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(out / ".train.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["runs", str(out), "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["state"] == "training" and s["pid"] == holder.pid and s["epochs_done"] == 3, s
        assert s["epochs_total"] == 4 and s["seconds_per_epoch"] > 0 and s["hours_left"] >= 0
    finally:
        holder.kill()
        holder.wait()
    train(TrainConfig(data=str(camvid_root), out=str(out), **cfg), resume=True, log=lambda m: None)
    assert main(["runs", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["state"] == "finished" and s["epochs_done"] == 4 and s["last_val"][0] == 4 and s["pid"] is None, s
    (out / "essnet_d_camvid.pt").unlink()  # stopped while shipping: the same command writes it again
    assert main(["runs", str(out)]) == 0
    text = capsys.readouterr().out
    assert " finished, not shipped " in text and f"{out}: continue with: seg-perception train" in text, text
    assert main(["runs", str(camvid_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no training run in" in err and "one level down" in err, err
    assert main(["runs", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err, err


def test_the_command_that_continues_a_run_is_the_one_it_ran_with(tmp_path, monkeypatch):
    """A relative --out continued from another folder would start a new run there, and a torchrun run
    continued as one process changes its recipe: the command `runs` gives resolves the one and keeps
    the other."""
    from seg_perception.train.run_status import continue_command
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "mine"
    cfg = {"command": "seg-perception train --model rdsnet --out runs/mine --epochs 8", "processes": 1}
    assert continue_command(cfg, Path("runs/mine")) == \
        f"seg-perception train --model rdsnet --out {run} --epochs 8 --resume"
    cfg = {"command": "seg-perception train --out=runs/mine --resume --threads 2", "processes": 4}
    assert continue_command(cfg, Path("runs/mine")) == \
        f"torchrun --nproc_per_node 4 -m seg_perception.cli train --out={run} --resume --threads 2"
    assert continue_command({"processes": 1}, run) == ""
