"""Bad input on the command line: refused up front, with one line that says what to do, and with
nothing written or overwritten (the project's rule for every command).

The models here carry RANDOM weights; the tests that guard a long run (training, a node, a whole
evaluation) stub the work out, so that a check that is missing fails here at once instead of
starting it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_random_model
from seg_perception import cli
from seg_perception.card import CardError, load_card
from seg_perception.files import sha256

W, H = 64, 48


def _run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line(rc, err, *words):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    for w in words:
        assert w in lines[0], err


def _refused_by_argparse(argv, capsys, flag):
    """The parser itself refuses (before the command's work starts), naming the flag."""
    parser, _ = cli.build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument {flag}" in err, err


def _images(folder: Path, n: int = 3, size=(W, H)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i}.png"), rng.integers(0, 255, (size[1], size[0], 3), np.uint8))
    return folder


def _folder_dataset(root: Path, split: str = "train") -> Path:
    _images(root / split / "images", 2)
    (root / split / "labels").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / split / "labels" / f"f{i}.png"), np.full((H, W), i, np.uint8))
    return root


def _snapshot(folder: Path) -> dict:
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def model(tmp_path):
    """A random ESSNet-D with weights, card and fixed-size ONNX in tmp_path/m."""
    return make_random_model(tmp_path / "m", "essnet_d", W, H)


# ------------------------------------------------------------------ 1: quantize --out
def test_quantize_out_never_writes_over_a_file_of_the_model(model, tmp_path, capsys):
    folder = model.parent
    before = _snapshot(folder)
    calib = _images(tmp_path / "calib", 2)
    for name, words in (("random_essnet_d.onnx", "is the model being quantized"),
                        ("random_essnet_d.yaml", "must end in .onnx"),
                        ("random_essnet_d.pt", "must end in .onnx")):
        rc, _, err = _run(["quantize", "--onnx", folder / "random_essnet_d.onnx", "--calib-data", calib,
                           "--num-images", 2, "--method", "ort", "--out", folder / name], capsys)
        _one_line(rc, err, words)
    # another role's file under a .onnx name (a logits export the card lists): refused as well
    card = load_card(model)
    (folder / "lg.onnx").write_bytes(b"logits")
    card.files["onnx_logits"] = "lg.onnx"
    card.save(model)
    before = _snapshot(folder)
    rc, _, err = _run(["quantize", "--onnx", folder / "random_essnet_d.onnx", "--calib-data", calib,
                       "--num-images", 2, "--method", "ort", "--out", folder / "lg.onnx"], capsys)
    _one_line(rc, err, "is the onnx_logits file of model random_essnet_d")
    assert _snapshot(folder) == before


def test_quantize_writes_over_an_int8_file_or_its_figures_only_with_replace(model, tmp_path, capsys):
    """A second quantize wrote over the INT8 file and rewrote the card, its measured figures erased."""
    folder = model.parent
    calib = _images(tmp_path / "calib", 2)
    argv = ["quantize", "--onnx", folder / "random_essnet_d.onnx", "--calib-data", calib, "--num-images", 2,
            "--method", "ort"]
    rc, _, err = _run(argv, capsys)
    assert rc == 0, err
    card = load_card(model)
    card.metrics["int8"] = {"miou_drop": 0.1}  # measured by an earlier --eval
    card.save(model)
    before = _snapshot(folder)
    rc, _, err = _run(argv, capsys)
    _one_line(rc, err, f"{folder / 'random_essnet_d_int8.onnx'} exists: choose another --out, or pass --replace")
    rc, _, err = _run(argv + ["--out", folder / "other.onnx"], capsys)  # the card's role and figures
    _one_line(rc, err, f"the card {model} lists onnx_int8 random_essnet_d_int8.onnx already", "--replace")
    assert _snapshot(folder) == before
    rc, _, err = _run(argv + ["--replace"], capsys)
    assert rc == 0, err
    assert load_card(model).file("onnx_int8").name == "random_essnet_d_int8.onnx"
    assert "int8" not in load_card(model).metrics


def test_quantize_of_a_corrupt_onnx_says_so_in_one_line(model, tmp_path, capsys):
    """A cut-short .onnx ended in protobuf's DecodeError traceback; build-engine said one line."""
    onnx_path = model.with_suffix(".onnx")
    onnx_path.write_bytes(b"\x08garbage")
    rc, _, err = _run(["quantize", "--onnx", onnx_path, "--calib-data", _images(tmp_path / "calib", 2),
                       "--num-images", 2, "--method", "ort"], capsys)
    _one_line(rc, err, f"{onnx_path} is not a readable ONNX file", "export it again")


# ------------------------------------------------------------------ 2: export over existing models
def test_export_refuses_to_replace_another_model_or_a_different_export(tmp_path, capsys):
    card_path = make_random_model(tmp_path / "m", "essnet_d", W, H, onnx=False)
    folder = card_path.parent
    rc, _, err = _run(["export", "--model", card_path, "--dynamic"], capsys)  # beside the weights: new files
    assert rc == 0, err
    rc, _, err = _run(["export", "--model", card_path, "--dynamic"], capsys)  # the same again: allowed
    assert rc == 0, err
    other = load_card(card_path)
    other.name = "other_model"
    other.save(folder / "other_model.yaml")
    before = _snapshot(folder)
    rc, _, err = _run(["export", "--model", card_path, "--width", 32, "--height", 24], capsys)
    _one_line(rc, err, "random_essnet_d.yaml is of an ONNX that takes any size", "--replace")
    rc, _, err = _run(["export", "--model", card_path, "--out", folder / "other_model.onnx"], capsys)
    _one_line(rc, err, "other_model.yaml is the card of another model (other_model)")
    rc, _, err = _run(["export", "--model", card_path, "--out", folder / "random_essnet_d.pt"], capsys)
    _one_line(rc, err, "must end in .onnx")
    rc, _, err = _run(["export", "--model", card_path, "--opset", 99], capsys)
    _one_line(rc, err, "--opset 99 is not one this torch exports")
    assert _snapshot(folder) == before
    rc, _, err = _run(["export", "--model", card_path, "--width", 32, "--height", 24, "--replace"], capsys)
    assert rc == 0, err
    assert load_card(card_path).input_width == 32


# ------------------------------------------------------------------ 3: --name
@pytest.mark.parametrize("name", ["", "../../escaped", "a/b", "a\\b", ".hidden"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(name, model, tmp_path, capsys):
    frames = _images(tmp_path / "frames")
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["train", "--model", "rdsnet", "--out", tmp_path / "run", "--dataset", "folder", "--data", empty,
                  "--num-classes", 2, "--name", name],
                 ["release", "--run", model.parent, "--to", tmp_path / "to", "--name", name, "--dataset", "folder",
                  "--data", empty, "--num-classes", 2],
                 ["adapt", "--model", model, "--frames", frames, "--out", tmp_path / "ad", "--name", name]):
        if argv[0] == "train" and not name:
            continue  # train's default name (MODEL_DATASET)
        rc, _, err = _run(argv, capsys)
        _one_line(rc, err, "is not a model name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "frames", "m"]
    assert not (tmp_path.parent / "escaped").exists()


# ------------------------------------------------------------------ 4: quantize --eval-split
def test_quantize_with_a_missing_eval_split_writes_nothing(model, tmp_path, capsys):
    data = _folder_dataset(tmp_path / "data")
    before = _snapshot(model.parent)
    rc, _, err = _run(["quantize", "--onnx", model.with_suffix(".onnx"), "--dataset", "folder", "--data", data,
                       "--calib-split", "train", "--num-images", 2, "--method", "ort", "--eval",
                       "--eval-split", "nosuch"], capsys)
    _one_line(rc, err, "nosuch", "--eval-split")
    assert _snapshot(model.parent) == before


# ------------------------------------------------------------------ 5: demo
def test_demo_with_a_missing_bag_keeps_the_last_outputs(model, tmp_path, capsys):
    kept = tmp_path / "demo1" / "outputs_bag"
    kept.mkdir(parents=True)
    (kept / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    rc, _, err = _run(["demo", "--mode", "offline", "--out", tmp_path / "demo1", "--bag", tmp_path / "nosuch",
                       "--model", model], capsys)
    _one_line(rc, err, "nosuch", "not found")
    assert (kept / "metadata.yaml").is_file()


# ------------------------------------------------------------------ 6: adapt stopped half-way
def test_adapt_stopped_half_way_leaves_nothing_behind(model, tmp_path, capsys, monkeypatch):
    import seg_perception.adapt as adapt
    frames = _images(tmp_path / "frames")
    real = adapt.write_onnx

    def stopped(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(adapt, "write_onnx", stopped)
    argv = ["adapt", "--model", model, "--frames", frames, "--out", tmp_path / "ad", "--name", "cam",
            "--threads", 1]
    rc, _, err = _run(argv, capsys)
    assert rc == 130, err
    assert list((tmp_path / "ad").iterdir()) == []  # no lone cam.pt, no staging folder
    monkeypatch.setattr(adapt, "write_onnx", real)
    rc, _, err = _run(argv, capsys)  # the rerun needs no --replace
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == ["cam.onnx", "cam.pt", "cam.yaml"]


# ------------------------------------------------------------------ 7: pack-dataset
def test_pack_dataset_opens_every_split_before_writing(tmp_path, capsys):
    data = _folder_dataset(tmp_path / "data", "val")
    rc, _, err = _run(["pack-dataset", "--dataset", "folder", "--data", data, "--num-classes", 2,
                       "--splits", "val", "nosuch", "--out", tmp_path / "pk"], capsys)
    _one_line(rc, err, "nosuch")
    assert not (tmp_path / "pk").exists() or not any((tmp_path / "pk").rglob("*.*"))


# ------------------------------------------------------------------ 8: file names that are not UTF-8
def test_images_whose_names_are_not_utf8_are_read(tmp_path):
    """cv2.imread(str(path)) crashed the process (SIGSEGV) on such a name: a child process, so that the
    crash fails this test instead of ending the test run."""
    folder = os.fsencode(tmp_path)
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 200
    with open(folder + b"/x\xff y.png", "wb") as f:
        f.write(cv2.imencode(".png", img)[1].tobytes())
    with open(folder + b"/l\xff.png", "wb") as f:
        f.write(cv2.imencode(".png", np.full((H, W), 3, np.uint8))[1].tobytes())
    code = ("import sys; from pathlib import Path; "
            "from seg_perception.data.datasets import read_rgb; from seg_perception.data.label_images import read_label; "
            "d = Path(sys.argv[1]); img = read_rgb(next(d.glob('x*'))); lab = read_label(next(d.glob('l*'))); "
            "print(img.shape, int(img[0, 0, 2]), int(lab.max()))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == [f"({H},", f"{W},", "3)", "200", "3"]  # RGB: the blue-channel 200 is last


# ------------------------------------------------------------------ 9, 13, 14, 15: flags refused by the parser
@pytest.mark.parametrize("argv,flag", [
    (["bench-camera", "--rates", "0"], "--rates"),
    (["bench-camera", "--rates", "-5"], "--rates"),
    (["bench-camera", "--seconds", "0"], "--seconds"),
    (["bench-camera", "--seconds", "-1"], "--seconds"),
    (["bench-camera", "--threads", "-1"], "--threads"),
    (["bench-train", "--batch-size", "0"], "--batch-size"),
    (["bench-train", "--steps", "0"], "--steps"),
    (["bench-train", "--crop", "0x0"], "--crop"),
    (["bench-train", "--crop", "63x63"], "--crop"),
    (["evaluate", "--threads", "-1"], "--threads"),
    (["bench", "--threads", "-3"], "--threads"),
    (["bench", "--warmup", "-5"], "--warmup"),
    (["demo", "--threads", "-3"], "--threads"),
    (["demo", "--rate", "-1"], "--rate"),
    (["eval-bag", "bag", "--max-frames", "-1"], "--max-frames"),
    (["adapt", "--frames", "f", "--out", "o", "--threads", "-1"], "--threads"),
    (["train", "--model", "rdsnet", "--out", "o", "--threads", "-1"], "--threads"),
    (["bench-node", "--threads", "-1"], "--threads"),
    (["bench-node", "--frames", "-3"], "--frames"),
    (["release", "--run", "r", "--name", "n", "--calib-images", "0"], "--calib-images"),
    (["quantize", "--onnx", "x.onnx", "--threads", "-2"], "--threads"),
    (["doctor", "--threads", "-2"], "--threads"),
])
def test_counts_threads_and_rates_are_checked_by_the_parser(argv, flag, capsys):
    _refused_by_argparse(argv, capsys, flag)


def test_output_files_are_checked_before_the_work(tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for cmd in (["evaluate"], ["bench"], ["bench-node"], ["bench-camera"]):
        for bad in (tmp_path, a_file / "r.json", "/proc/nosuch/r.json"):
            _refused_by_argparse([*cmd, "--json", bad], capsys, "--json")
    _refused_by_argparse(["bench", "--markdown", tmp_path], capsys, "--markdown")
    parser, _ = cli.build_parser()  # a folder that can be made is fine, and nothing is made yet
    assert parser.parse_args(["evaluate", "--json", str(tmp_path / "new" / "r.json")]).json
    assert not (tmp_path / "new").exists()


def test_model_outputs_and_folders_are_checked_before_the_work(tmp_path, capsys):
    """export/quantize --out, train --out and release --to in the way of a file (or not writable) were
    found after the export, the calibration, the epochs or the measuring, as a raw errno."""
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for cmd, flag in ((["export", "--model", "rdsnet_camvid"], "--out"), (["quantize", "--onnx", "x.onnx"], "--out")):
        for bad in (tmp_path, a_file / "m.onnx", "/proc/nosuch/m.onnx"):
            _refused_by_argparse([*cmd, flag, bad], capsys, flag)
    for cmd, flag in ((["train", "--model", "rdsnet"], "--out"), (["release", "--run", "r", "--name", "n"], "--to")):
        for bad in (a_file, a_file / "sub", "/proc/nosuch"):
            _refused_by_argparse([*cmd, flag, bad], capsys, flag)
    parser, _ = cli.build_parser()  # a folder that can be made is fine, and nothing is made yet
    assert parser.parse_args(["train", "--model", "rdsnet", "--out", str(tmp_path / "new" / "run")]).out
    assert parser.parse_args(["release", "--run", "r", "--name", "n", "--to", str(tmp_path / "new")]).to
    assert not (tmp_path / "new").exists()
    _refused_by_argparse(["train", "--model", "rdsnet", "--out", a_file], capsys, f"--out: {a_file} is a file")


def test_bench_camera_refuses_an_empty_frame_size_before_a_node_starts(capsys, monkeypatch):
    import seg_perception.evaluation.camera_bench as cb

    def started(*a, **k):
        raise AssertionError("a node was started")
    monkeypatch.setattr(cb, "bench_camera", started)
    rc, _, err = _run(["bench-camera", "--sizes", "0x0"], capsys)
    _one_line(rc, err, "--sizes 0x0")


# ------------------------------------------------------------------ 10: train
@pytest.mark.parametrize("flags,words", [
    (["--distill-temperature", "0"], "--distill-temperature"),
    (["--ohem-thresh", "-1", "--ohem-min-kept", "5", "--loss", "ohem"], "--ohem-thresh"),
    (["--ema-decay", "1.5"], "--ema-decay"),
    (["--precision", "bf16", "--no-bf16"], "--no-bf16 and --precision bf16 exclude each other"),  # (it ran fp32)
    (["--memory-format", "channels_last", "--no-channels-last"], "exclude each other"),
    ([], "empty"),  # a dataset folder with no frames: refused when it is read
])
def test_a_refused_training_leaves_no_run_folder(flags, words, tmp_path, capsys):
    if flags:  # train's own checks need its extra (a core install says that first)
        pytest.importorskip("torch")
    empty = tmp_path / "empty"
    (empty / "train" / "images").mkdir(parents=True)
    out = tmp_path / "runs" / "r1"
    rc, _, err = _run(["train", "--model", "rdsnet", "--out", out, "--dataset", "folder", "--data", empty,
                       "--num-classes", 2, "--epochs", 1, "--threads", 1, *flags], capsys)
    assert rc == 2, err
    if words != "empty":
        _one_line(rc, err, words)
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").rglob("*"))


# ------------------------------------------------------------------ 11: the card loader
@pytest.mark.parametrize("edit,words", [
    (lambda d: d["normalization"].update(std=[0, 0, 0]), "std values above 0"),
    (lambda d: d["classes"][0].update(color=[1, 2]), "a colour is 3 values"),
    (lambda d: d["input"].update(width=0, height=0), "input 0x0 must be a positive multiple of 8"),
])
def test_a_card_that_cannot_work_is_refused_naming_its_file(edit, words, model):
    import yaml
    d = yaml.safe_load(model.read_text())
    edit(d)
    model.write_text(yaml.safe_dump(d))
    with pytest.raises(CardError, match=words) as e:
        load_card(model)
    assert str(model) in str(e.value)


def test_a_broken_card_is_named_and_the_others_are_listed(model, tmp_path, capsys, monkeypatch):
    (model.parent / "broken.yaml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(CardError, match="not UTF-8") as e:
        load_card(model.parent / "broken.yaml")
    assert "broken.yaml" in str(e.value)
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(model.parent))
    rc, out, err = _run(["models", "--shipped"], capsys)
    assert rc == 0, err
    assert "| random_essnet_d |" in out and "broken" not in out
    assert "skipped broken" in err and "not UTF-8" in err


# ------------------------------------------------------------------ 12: build-engine
def test_build_engine_on_a_truncated_onnx_is_one_line(model, tmp_path, capsys):
    onnx_path = model.with_suffix(".onnx")
    onnx_path.write_bytes(onnx_path.read_bytes()[:3000])
    rc, _, err = _run(["build-engine", "--onnx", onnx_path, "--precision", "fp32",
                       "--cache-dir", tmp_path / "engines"], capsys)
    _one_line(rc, err, "is not a readable ONNX file")


def test_a_refused_training_leaves_a_run_started_beside_it(tmp_path, monkeypatch):
    """Two runs started together under a new parent folder: the one refused takes back only its own
    folder, not the parent the other run is writing into."""
    pytest.importorskip("torch")
    from seg_perception.train import loop

    def refused(cfg, resume, log):
        (tmp_path / "runs" / "other").mkdir()  # the other run, started meanwhile
        (tmp_path / "runs" / "other" / "log.csv").write_text("epoch\n")
        raise ValueError("no frames")
    monkeypatch.setattr(loop, "_train", refused)
    with pytest.raises(ValueError, match="no frames"):
        loop.train(loop.TrainConfig(model="rdsnet", data=str(tmp_path), out=str(tmp_path / "runs" / "r1"), threads=1))
    assert not (tmp_path / "runs" / "r1").exists() and (tmp_path / "runs" / "other" / "log.csv").is_file()


def test_output_paths_are_given_on_as_they_were_checked(tmp_path, monkeypatch):
    """--out=~/runs/x reaches the command with ~ unexpanded (bash expands no ~ after '='): the check
    looked at $HOME/runs/x, and train then made ./~/runs/x."""
    from seg_perception.cli import output_file, output_folder
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_folder("~/runs/x") == str(tmp_path / "runs" / "x")
    assert output_file("~/m.onnx") == str(tmp_path / "m.onnx")


def test_a_ground_truth_file_for_a_folder_is_named_as_such(tmp_path):
    """eval-bag --gt-dir FILE said 'ground-truth folder FILE not found' of a file that is there."""
    from seg_perception.evaluation.scoring import GroundTruthFolder
    f = tmp_path / "labels.png"
    f.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file: --gt-dir takes the folder of the label PNGs"):
        GroundTruthFolder(f, 3)
    with pytest.raises(ValueError, match="not found"):
        GroundTruthFolder(tmp_path / "none", 3)
