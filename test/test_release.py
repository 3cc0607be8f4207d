"""`release` on a small training run (RANDOM weights, 96x72, the sample CamVid frames):
what lands in models/ is the weights, the ONNX graphs and one card that lists them and
carries every figure, measured the same way `evaluate` and `bench` measure."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from conftest import label_kappa, make_random_model
from seg_perception.card import load_card
from seg_perception.cli import main
from seg_perception.evaluation.split_accuracy import evaluate
from seg_perception.nets import build_model
from seg_perception.nets.complexity import count_params
from seg_perception.runtime.pipeline import Pipeline

NAME = "random_essnet_d"


@pytest.fixture(scope="module")
def released(tmp_path_factory, camvid_sample):
    run = tmp_path_factory.mktemp("run")
    make_random_model(run, "essnet_d", 96, 72, onnx=False)
    (run / "log.csv").write_text("epoch,stage,train_loss\n1,full,2.0\n2,full,1.5\n")
    to = tmp_path_factory.mktemp("models")
    rc = main(["release", "--run", str(run), "--name", NAME, "--to", str(to), "--data", str(camvid_sample),
               "--calib-images", "2", "--threads", "1", "--note", "test release"])
    assert rc == 0
    return to


def test_release_ships_the_files_and_one_card(released):
    # No INT8 twin card, no temporary files: the card is written once, beside the weights.
    assert sorted(p.name for p in released.iterdir()) == sorted(
        [f"{NAME}.pt", f"{NAME}.yaml", f"{NAME}.onnx", f"{NAME}_int8.onnx", f"{NAME}_int8_cpu.onnx"])
    card = load_card(released / f"{NAME}.yaml")
    assert card.files == {"weights": f"{NAME}.pt", "onnx": f"{NAME}.onnx", "onnx_int8": f"{NAME}_int8.onnx",
                          "onnx_int8_cpu": f"{NAME}_int8_cpu.onnx"}
    assert card.training["export"]["dynamic"] is True  # the node runs it at any size
    assert card.training["epochs_completed_in_run"] == 2 and card.training["note"] == "test release"
    assert card.training["export"]["opset"] == 17 and card.training["quantization"]["calibration_images"] == 2


def test_release_figures_are_measured(released, camvid_sample):
    card = load_card(released / f"{NAME}.yaml")
    m = card.metrics
    assert m["params"] == count_params(build_model("essnet_d", 11)) and m["gmacs"] > 0 and m["gmacs_at"] == "96x72"
    assert "(10 frames)" in m["val_measured_with"]
    again = evaluate(card.path, str(camvid_sample), "camvid", "val", backend="onnxruntime", threads=1)
    assert m["val_miou"] == again["miou"] and m["val_per_class_iou"] == again["per_class_iou"]
    assert m["int8"]["fp32_miou"] == pytest.approx(m["val_miou"], abs=0.01)
    lat = m["cpu_latency"]
    assert "int8_miou" in m["int8_cpu"]
    assert m["int8_cpu"]["speed_vs_fp32"] == pytest.approx(
        lat["onnxruntime_fp32_ms"]["p50"] / lat["onnxruntime_int8_cpu_ms"]["p50"], rel=0.02, abs=0.011)
    for key in ("onnxruntime_fp32_ms", "onnxruntime_int8_ms", "onnxruntime_int8_cpu_ms"):  # one shape of a timing
        assert set(lat[key]) == {"p50", "p95", "max", "mean", "fps"}
        assert 0 < lat[key]["p50"] <= lat[key]["p95"] <= lat[key]["max"]
    assert lat["threads"] == 1 and lat["cpu"] and lat["outputs"] == "labels"


def test_released_model_runs_at_both_precisions(released, val_frames):
    card_path = released / f"{NAME}.yaml"
    fp32 = Pipeline.from_card(card_path, backend="onnxruntime", precision="fp32")
    int8 = Pipeline.from_card(card_path, backend="onnxruntime", precision="int8")
    import onnxruntime as ort
    role = "onnx_int8" if "CUDAExecutionProvider" in ort.get_available_providers() else "onnx_int8_cpu"
    assert int8.backend.path == load_card(card_path).file(role) != fp32.backend.path
    img = val_frames[0][0]
    a, b = fp32(img).labels, int8(img).labels
    # Random weights: int8 moves many labels (measured: 45 % agree, 15 % by chance, kappa 0.35), but a
    # broken int8 model would agree only by chance (kappa about 0).
    assert a.shape == b.shape == img.shape[:2] and label_kappa([(a, b)]) >= 0.2


def _run_on(folder, split: str, seed: int):
    """A RANDOM-weights run folder whose card says it trained on ``split``."""
    card_path = make_random_model(folder, "essnet_d", 96, 72, onnx=False, seed=seed)
    card = load_card(card_path)
    card.training = dict(card.training, train_split=split)
    card.save(card_path)
    (folder / "log.csv").write_text("epoch,stage,train_loss\n1,full,2.0\n")
    return folder


def test_a_run_trained_on_val_takes_its_val_figure_from_the_recipe_run(tmp_path, camvid_sample):
    """Weights trained on train+val are not scored on val: the card's val figure is the same
    recipe's run on train alone (measured the same way), and release refuses without one."""
    final = _run_on(tmp_path / "final", "train+val", seed=1)
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)
    args = ["release", "--run", str(final), "--name", NAME, "--to", str(tmp_path / "models"),
            "--data", str(camvid_sample), "--threads", "1", "--no-int8"]
    assert main(args) != 0  # no recipe run: refused, nothing written
    assert not (tmp_path / "models" / f"{NAME}.yaml").exists()
    assert main(args + ["--recipe-run", str(final)]) != 0  # a recipe run that saw val is no better
    assert main(args + ["--recipe-run", str(recipe)]) == 0
    card = load_card(tmp_path / "models" / f"{NAME}.yaml")
    want = evaluate(load_card(recipe / f"{NAME}.yaml"), str(camvid_sample), "camvid", "val", backend="torch")
    own = evaluate(card, str(camvid_sample), "camvid", "val", backend="onnxruntime", threads=1)
    assert card.metrics["val_miou"] == pytest.approx(want["miou"], abs=0.3)  # torch vs ONNX Runtime
    assert card.metrics["val_miou_not_held_out"] == own["miou"] != card.metrics["val_miou"]
    assert "trained on train alone (recipe, 1 epochs)" in card.metrics["val_measured_with"]
    assert card.training["recipe_run"]["train_split"] == "train"


def test_a_recipe_run_for_a_run_that_did_not_train_on_val_is_refused(tmp_path, camvid_sample, capsys):
    """--recipe-run with weights that never saw val was ignored without a word (--recipe-pending was refused)."""
    run = _run_on(tmp_path / "run", "train", seed=1)
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)
    capsys.readouterr()
    rc = main(["release", "--run", str(run), "--name", NAME, "--to", str(tmp_path / "models"), "--data",
               str(camvid_sample), "--threads", "1", "--no-int8", "--recipe-run", str(recipe)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{run} trained on train: its own val figure is held out, --recipe-run is only for weights trained " \
           "on val" in err, err
    assert not (tmp_path / "models").exists()


def test_an_unfinished_recipe_run_is_refused_and_no_training_figure_ships(tmp_path, camvid_sample, capsys):
    """A recipe run still training (its card written at an early validation) has no figure of
    the recipe yet; and figures the run measured while training (on whatever split it validated
    on) never reach the shipped card: release measures every one."""
    final = _run_on(tmp_path / "final", "train+val", seed=1)
    card = load_card(final / f"{NAME}.yaml")
    card.metrics = {**card.metrics, "test_miou": 99.0, "test_per_class_iou": [99.0] * 11}
    card.training = dict(card.training, epochs_planned=200, epoch=200)
    card.save(card.path)
    (final / "log.csv").write_text("epoch,stage,train_loss\n" + "".join(f"{e},full,1.0\n" for e in range(1, 201)))
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)
    rcard = load_card(recipe / f"{NAME}.yaml")
    rcard.training = dict(rcard.training, epochs_planned=200, epoch=40)
    rcard.save(rcard.path)
    # (its last row half written, as a running run leaves it between two writes)
    (recipe / "log.csv").write_text("epoch,stage,train_loss\n" + "".join(f"{e},full,1.0\n" for e in range(1, 53))
                                    + "53,fu")
    args = ["release", "--run", str(final), "--name", NAME, "--to", str(tmp_path / "models"),
            "--data", str(camvid_sample), "--threads", "1", "--no-int8", "--recipe-run", str(recipe)]
    capsys.readouterr()
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "has trained 52 of its 200 epochs (its weights are from epoch 40)" in err, err
    assert not (tmp_path / "models" / f"{NAME}.yaml").exists()
    rcard.training = dict(rcard.training, epoch=200)
    rcard.save(rcard.path)
    (recipe / "log.csv").write_text("epoch,stage,train_loss\n" + "".join(f"{e},full,1.0\n" for e in range(1, 201)))
    assert main(args) == 0
    shipped = load_card(tmp_path / "models" / f"{NAME}.yaml").metrics
    assert "val_miou" in shipped and not any(k.startswith("test_") for k in shipped), shipped


def test_the_recipe_figure_is_measured_at_the_size_the_card_ships_at(tmp_path, camvid_sample):
    """A card set to run at another size than its recipe run's (e.g. 448x336 for a net trained at
    480x360) gets the recipe's val figure at its own size, and says which."""
    final = _run_on(tmp_path / "final", "train+val", seed=1)
    card = load_card(final / f"{NAME}.yaml")
    card.input_width, card.input_height = 64, 48
    card.save(card.path)
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)  # 96x72
    assert main(["release", "--run", str(final), "--name", NAME, "--to", str(tmp_path / "models"), "--data",
                 str(camvid_sample), "--threads", "1", "--no-int8", "--recipe-run", str(recipe)]) == 0
    card = load_card(tmp_path / "models" / f"{NAME}.yaml")
    rcard = load_card(recipe / f"{NAME}.yaml")
    at_64 = evaluate(rcard, str(camvid_sample), "camvid", "val", backend="torch", width=64, height=48)
    at_96 = evaluate(rcard, str(camvid_sample), "camvid", "val", backend="torch")
    assert at_64["miou"] != at_96["miou"]  # the size matters for this test to mean anything
    assert card.metrics["val_miou"] == pytest.approx(at_64["miou"], abs=0.3)
    assert "ONNX Runtime fp32 at 64x48" in card.metrics["val_measured_with"]
    assert card.metrics["gmacs_at"] == "64x48"


def test_a_run_trained_on_val_ships_pending_and_is_released_again_when_its_recipe_run_is_done(
        tmp_path, camvid_sample, capsys, monkeypatch):
    """--recipe-pending ships train+val weights with no val figure and says why; releasing a
    copy of the shipped files with --recipe-run later fills the figure in, and no stale figure stays."""
    import shutil
    final = _run_on(tmp_path / "final", "train+val", seed=1)
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)
    models = tmp_path / "models"
    args = ["release", "--name", NAME, "--to", str(models), "--data", str(camvid_sample), "--threads", "1", "--no-int8"]
    assert main(args + ["--run", str(recipe), "--recipe-pending", "x"]) != 0  # its own val figure is held out
    assert main(args + ["--run", str(final), "--recipe-pending", "x", "--recipe-run", str(recipe)]) != 0
    assert main(args[:-1] + ["--calib-images", "2", "--run", str(final),
                             "--recipe-pending", "train-alone run at epoch 96 of 200"]) == 0  # with INT8
    card = load_card(models / f"{NAME}.yaml")
    assert card.training["recipe_run"] == {"pending": "train-alone run at epoch 96 of 200"}
    assert "int8" in card.metrics and "quantization" in card.training
    assert not any(k.startswith("val_") and k != "val_miou_not_held_out" for k in card.metrics)
    own = evaluate(card, str(camvid_sample), "camvid", "val", backend="onnxruntime", threads=1)
    assert card.metrics["val_miou_not_held_out"] == own["miou"]
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(models))
    capsys.readouterr()
    main(["models", "--shipped"])  # the listing says so instead of a figure
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"| {NAME} |"))
    assert "| pending (recipe on train alone not done) |" in row
    capsys.readouterr()
    # releasing the shipped folder onto itself would delete what it reads: refused, nothing touched
    assert main(args + ["--run", str(models), "--recipe-pending", "x"]) == 2
    assert "are the same folder" in capsys.readouterr().err
    assert (models / f"{NAME}.pt").is_file() and (models / f"{NAME}.yaml").is_file()

    again = tmp_path / "shipped_copy"  # the recipe run finished: release the shipped weights again
    again.mkdir()
    for suffix in (".pt", ".yaml"):
        shutil.copy2(models / f"{NAME}{suffix}", again / f"{NAME}{suffix}")
    capsys.readouterr()
    assert main(args + ["--run", str(again), "--recipe-run", str(recipe)]) == 2  # never over a model by accident
    assert f"{NAME}.yaml exists ({NAME}" in capsys.readouterr().err and (models / f"{NAME}.pt").is_file()
    assert main(args + ["--run", str(again), "--recipe-run", str(recipe), "--replace"]) == 0
    card = load_card(models / f"{NAME}.yaml")
    want = evaluate(load_card(recipe / f"{NAME}.yaml"), str(camvid_sample), "camvid", "val", backend="torch")
    assert card.metrics["val_miou"] == pytest.approx(want["miou"], abs=0.3)
    assert card.training["recipe_run"]["train_split"] == "train" and "pending" not in card.training["recipe_run"]
    assert card.training["epochs_completed_in_run"] == 1  # carried by the shipped card (the copy has no log.csv)
    assert card.metrics["val_miou_not_held_out"] == own["miou"]  # the same weights
    assert "int8" not in card.metrics and "quantization" not in card.training  # --no-int8: none measured, none kept
    capsys.readouterr()
    main(["models", "--shipped"])  # and the listing shows no INT8 figure for it (not a made-up 0.00)
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"| {NAME} |"))
    assert "(recipe on train alone) | - |" in row, row


def test_release_renames_and_refuses_another_recipe(tmp_path, camvid_sample, capsys):
    """--name other than the run's file name ships the run's one card under that name; a recipe run
    whose recipe differs (here: the number of epochs) is refused with the difference named."""
    final = _run_on(tmp_path / "final", "train+val", seed=1)
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)
    other = load_card(recipe / f"{NAME}.yaml")
    other.training = dict(other.training, epochs_planned=99)
    other.save(other.path)
    args = ["release", "--run", str(final), "--name", "my_model", "--to", str(tmp_path / "models"),
            "--data", str(camvid_sample), "--threads", "1", "--no-int8", "--recipe-run", str(recipe)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    planned = load_card(final / f"{NAME}.yaml").training.get("epochs_planned")
    assert f"is another recipe: epochs_planned 99 (run: {planned!r})" in err and len(err.strip().splitlines()) == 1, err
    other.training = dict(other.training, epochs_planned=planned, label_resize="centred")
    other.save(other.path)
    assert main(args) == 2 and "another recipe: label_resize 'centred' (run: 'nearest')" in capsys.readouterr().err
    other.training = {k: v for k, v in other.training.items() if k != "label_resize"}  # a card from before the flag
    kept = dict(other.training)
    other.training = {**{k: v for k, v in kept.items() if k != "epoch"}, "best_epoch": 1}  # --keep best
    other.save(other.path)
    assert main(args) == 2 and "shipped its best epoch on val (--keep best, epoch 1)" in capsys.readouterr().err
    other.training = kept
    other.save(other.path)
    # another model whose name starts with this one's stays (a prefix match deleted it)
    (tmp_path / "models").mkdir()
    others = [tmp_path / "models" / f"my_model_v2{s}" for s in (".pt", ".yaml", ".onnx", "_int8.onnx")]
    for f in others:
        f.write_text("another model")
    assert main(args) == 0
    card = load_card(tmp_path / "models" / "my_model.yaml")
    assert card.name == "my_model" and card.files["weights"] == "my_model.pt" and card.file("onnx").is_file()
    assert all(f.read_text() == "another model" for f in others)


def test_run_folder_after_quantize_is_still_one_model(tmp_path):
    """`quantize` writes NAME_int8.yaml beside NAME.yaml (so the INT8 file finds its card); the run
    folder still names one model for --model and for `release --name ANOTHER`."""
    import shutil
    from conftest import REPO
    from seg_perception.paths import resolve_model
    from seg_perception.release import run_card
    for name in ("rdsnet_folder", "rdsnet_folder_int8", "rdsnet_folder_int8_cpu"):
        shutil.copy(REPO / "models" / "rdsnet_camvid.yaml", tmp_path / f"{name}.yaml")
    assert resolve_model(str(tmp_path)) == tmp_path / "rdsnet_folder.yaml"
    assert run_card(tmp_path, "mine").name == "rdsnet_camvid"  # the card's own name, released as 'mine'
    shutil.copy(REPO / "models" / "rdsnet_camvid.yaml", tmp_path / "other.yaml")
    with pytest.raises(FileNotFoundError, match="2 model cards"):
        resolve_model(str(tmp_path))


def test_release_on_data_it_cannot_measure_writes_nothing(tmp_path, camvid_sample, capsys):
    """A dataset of other classes, or one without the split to measure on: one line each, and
    --to gets no file."""
    run = tmp_path / "run"
    make_random_model(run, "essnet_d", 96, 72, onnx=False)  # CamVid's classes
    for split in ("train", "val"):
        (tmp_path / "mine" / split / "images").mkdir(parents=True)
        (tmp_path / "mine" / split / "labels").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "mine" / split / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "mine" / split / "labels" / "a.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "mine" / "dataset.yaml").write_text("classes: [a, b]\n")
    to = tmp_path / "models"
    args = ["release", "--run", str(run), "--name", "x", "--to", str(to)]
    assert main(args + ["--dataset", "folder", "--data", str(tmp_path / "mine")]) == 2
    assert "folder val" in capsys.readouterr().err and not to.exists()
    assert main(args + ["--data", str(camvid_sample), "--val-split", "test"]) == 2
    err = capsys.readouterr().err
    assert "release measures its figures on a split the model did not train on" in err and "--val-split" in err
    assert main(args + ["--dataset", "folder"]) == 2 and "--data is required" in capsys.readouterr().err
    assert not to.exists()


def test_weights_replaced_after_their_card_are_not_released_nor_exported_with_its_figures(
        tmp_path, camvid_sample, capsys):
    """A run stopped between writing its weights and its card (or weights replaced by hand) paired
    new weights with the previous epoch's card: release shipped the card's epoch and recipe with
    them, export kept the card's accuracy figures. The card's weights hash tells them apart."""
    from seg_perception.card import WEIGHTS_HASH, weights_mismatch
    from seg_perception.deploy.export import exported_card
    from seg_perception.files import sha256
    run = tmp_path / "run"
    card = load_card(make_random_model(run, "essnet_d", 96, 72, onnx=False))
    card.training[WEIGHTS_HASH] = sha256(card.file("weights"))
    card.metrics["val_miou"] = 50.0
    card.save(card.path)
    assert weights_mismatch(load_card(card.path)) is None
    assert exported_card(load_card(card.path), run / "x.onnx").metrics["val_miou"] == 50.0
    make_random_model(tmp_path / "other", "essnet_d", 96, 72, onnx=False, seed=1)
    (tmp_path / "other" / card.file("weights").name).replace(card.file("weights"))  # newer weights, same card
    stale = load_card(card.path)
    assert "is not the weights file its card" in weights_mismatch(stale)
    exported = exported_card(stale, run / "x.onnx")  # beside the weights, as export writes: still stale
    assert "val_miou" not in exported.metrics and "is not the weights file its card" in weights_mismatch(exported)
    to = tmp_path / "models"
    args = ["release", "--run", str(run), "--name", NAME, "--to", str(to), "--data", str(camvid_sample),
            "--threads", "1", "--no-int8"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not the weights file its card" in err and "--resume" in err and not to.exists()
    stale.training["best_epoch"] = 7  # --keep best: last.pt does not hold the best epoch's weights
    stale.save(stale.path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "put back the weights file the card was written with" in err and "--resume" not in err


def _robot_dataset(camvid_sample, root):
    """The CamVid sample relabelled into three classes of a robot's own, as id PNGs with dataset.yaml."""
    from seg_perception.data.datasets import camvid
    for split in ("train", "val"):
        src = camvid(camvid_sample, split)
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for i in range(len(src)):
            img, ids = src.load(i)
            own = np.where(ids == 3, 0, np.where(ids == 8, 1, 2)).astype(np.uint8)  # road, car, other
            own[ids == 11] = 255
            cv2.imwrite(str(root / split / "images" / f"f{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / split / "labels" / f"f{i}.png"), own)
    (root / "dataset.yaml").write_text("classes: [road, car, other]\nignore_index: 255\ndrivable: [road]\n")
    return root


def test_own_data_model_released_into_own_models_folder(tmp_path, camvid_sample, capsys, monkeypatch):
    """A user's own dataset end to end: train, release measured on its val split into their own
    models folder, found there by name (SEG_PERCEPTION_MODELS) with its classes."""
    from seg_perception.paths import resolve_model
    data = _robot_dataset(camvid_sample, tmp_path / "robot")
    assert main(["train", "--model", "rdsnet", "--dataset", "folder", "--data", str(data), "--out",
                 str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2", "--width", "96", "--height", "72",
                 "--threads", "1"]) == 0
    mine = tmp_path / "my_models"
    # the folder of one's own models, written as a shell would not expand it (quoted, a launch file):
    # release puts the model there by default, and names resolve from it
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", "~/my_models")
    with pytest.raises(ValueError, match="SEG_PERCEPTION_MODELS=~/my_models is not a folder"):
        resolve_model("robot_v1")
    capsys.readouterr()
    assert main(["release", "--run", str(tmp_path / "run"), "--name", "robot_v1",
                 "--dataset", "folder", "--data", str(data), "--calib-images", "3", "--threads", "1"]) == 0
    assert "calibrating on 3 images of the train split" in capsys.readouterr().out
    card = load_card(mine / "robot_v1.yaml")
    assert list(card.class_names) == ["road", "car", "other"] and list(card.drivable_classes) == [0]
    m = card.metrics
    assert m["val_measured_with"].startswith("seg-perception evaluate: ONNX Runtime fp32 at 96x72, folder dataset "
                                             "robot, split val (10 frames)")
    again = evaluate(card.path, str(data), "folder", "val", backend="onnxruntime", threads=1)
    assert m["val_miou"] == again["miou"] and list(m["val_per_class_iou"]) == ["road", "car", "other"]
    assert m["int8"]["images"] == m["int8_cpu"]["images"] == 10 and card.training["quantization"]["calibration_images"] == 3
    assert resolve_model("robot_v1") == mine / "robot_v1.yaml"
    capsys.readouterr()
    assert main(["models", "--shipped"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("| robot_v1 |"))
    # as the listing prints it; the run kept its best epoch on val (train's default): said beside it
    assert f"| {m['val_miou']:.2f} (epoch picked on val) |" in row
    assert "kept its best epoch on val" in m["val_picked_checkpoint"]


def test_a_release_that_fails_leaves_the_shipped_model_as_it_was(tmp_path, camvid_sample, capsys):
    """--replace builds the new files beside the old ones and swaps them in at the end: weights that
    cannot be read stop the release with the old model whole (it deleted the old files first, and a
    failure left models/ without a card). A successful --replace --no-int8 takes the old INT8 files
    and the INT8 card copies `quantize` writes along, and the card records the hours of epochs."""
    to = tmp_path / "models"
    good = tmp_path / "good"
    make_random_model(good, "essnet_d", 96, 72, onnx=False)
    (good / "log.csv").write_text("epoch,stage,train_loss,lr,val_miou,val_pixel_acc,seconds\n"
                                  "1,full,2.0,0.001,,,1800.0\n2,full,1.5,0.001,,,1800.0\n")
    args = ["--name", NAME, "--to", str(to), "--data", str(camvid_sample), "--threads", "1", "--calib-images", "2"]
    assert main(["release", "--run", str(good)] + args) == 0
    (to / f"{NAME}_int8.yaml").write_text("a stale INT8 card copy")
    before = {p.name: p.read_bytes() for p in to.iterdir()}
    bad = tmp_path / "bad"
    make_random_model(bad, "essnet_d", 96, 72, onnx=False)
    (bad / f"{NAME}.pt").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(["release", "--run", str(bad), "--replace"] + args) != 0
    assert {p.name: p.read_bytes() for p in to.iterdir()} == before  # nothing moved, no staging folder left
    (to / f".{NAME}.release-killed").mkdir()  # what a killed release leaves: the next one removes it
    (to / f".{NAME}.release-killed" / f"{NAME}.pt").write_bytes(b"half")
    assert main(["release", "--run", str(good), "--replace", "--no-int8"] + args) == 0
    assert sorted(p.name for p in to.iterdir()) == sorted([f"{NAME}.pt", f"{NAME}.yaml", f"{NAME}.onnx"])
    card = load_card(to / f"{NAME}.yaml")
    assert card.training["hours_of_epochs"] == 1.0 and card.training["epochs_completed_in_run"] == 2


def test_a_recipe_run_with_other_clipping_or_a_recipe_changed_on_resume_is_refused(tmp_path, camvid_sample, capsys):
    final = _run_on(tmp_path / "final", "train+val", seed=1)
    recipe = _run_on(tmp_path / "recipe", "train", seed=2)
    args = ["release", "--run", str(final), "--name", NAME, "--to", str(tmp_path / "models"),
            "--data", str(camvid_sample), "--threads", "1", "--no-int8", "--recipe-run", str(recipe)]
    rcard = load_card(recipe / f"{NAME}.yaml")
    kept = dict(rcard.training)
    rcard.training = dict(kept, clip_grad=1.0)
    rcard.save(rcard.path)
    capsys.readouterr()
    assert main(args) == 2 and "another recipe: clip_grad 1.0 (run: None)" in capsys.readouterr().err
    # fp32 against bf16 is a recipe change on resume, so it is one between the two runs (release passed it)
    fcard = load_card(final / f"{NAME}.yaml")
    fcard.training = dict(fcard.training, precision="fp32")
    fcard.save(fcard.path)
    rcard.training = dict(kept, precision="bf16")
    rcard.save(rcard.path)
    assert main(args) == 2 and "another recipe: precision 'bf16' (run: 'fp32')" in capsys.readouterr().err
    # on a GPU precision is amp for both: its autocast dtype (bf16, or fp16 with loss scaling) is the recipe's
    fcard.training = dict(fcard.training, precision="amp", autocast="bf16")
    fcard.save(fcard.path)
    rcard.training = dict(kept, precision="amp", autocast="fp16")
    rcard.save(rcard.path)
    assert main(args) == 2 and "another recipe: autocast 'fp16' (run: 'bf16')" in capsys.readouterr().err
    rcard.training = {k: v for k, v in kept.items() if k != "precision"}  # a card from before it was recorded
    rcard.save(rcard.path)
    assert main(args) == 0
    shutil.rmtree(tmp_path / "models")
    rcard.training = dict(kept, changed_on_resume=["epochs 200 -> 400"])
    rcard.save(rcard.path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "changed its recipe on a resume (epochs 200 -> 400)" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    rcard.training = kept
    rcard.save(rcard.path)
    fcard = load_card(final / f"{NAME}.yaml")  # the shipped run is checked too, and so is every release
    fcard.training = dict(fcard.training, changed_on_resume=["lr 0.0005 -> 0.001"])
    fcard.save(fcard.path)
    assert main(args) == 2 and f"the run {final} changed its recipe on a resume (lr 0.0005 -> 0.001)" in capsys.readouterr().err
    recipe_pending = [a for a in args if a not in ("--recipe-run", str(recipe))] + ["--recipe-pending", "later"]
    assert main(recipe_pending) == 2 and "changed its recipe on a resume" in capsys.readouterr().err
    fcard.training = {k: v for k, v in fcard.training.items() if k != "changed_on_resume"}
    fcard.save(fcard.path)
    assert main(args[:4] + ["my_model_int8"] + args[5:]) == 2 and "may not end in _int8" in capsys.readouterr().err
    assert main(args) == 0


def test_a_name_another_models_folder_has_is_refused(tmp_path, camvid_sample, capsys, monkeypatch):
    """Released into the user's models folder (SEG_PERCEPTION_MODELS, searched first) under a
    shipped model's name, a model hid the shipped one from the node, `--init NAME` and every
    command: refused unless --replace."""
    from seg_perception.paths import DEFAULT_MODEL
    run = _run_on(tmp_path / "run", "train", seed=1)
    mine = tmp_path / "my_models"  # not there yet: a first release makes it
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(mine))
    capsys.readouterr()
    assert main(["release", "--run", str(run), "--name", DEFAULT_MODEL, "--to", str(mine), "--data",
                 str(camvid_sample), "--threads", "1", "--no-int8"]) == 2
    err = capsys.readouterr().err
    assert f"{DEFAULT_MODEL} is already a model in" in err and "--replace" in err and len(err.strip().splitlines()) == 1
    assert not mine.exists()


def test_release_without_to_ships_where_names_resolve_from(tmp_path, camvid_sample, capsys, monkeypatch):
    """Without --to (and no SEG_PERCEPTION_MODELS) release wrote ./models of the current folder, where
    no command finds a model by name: it ships into the checkout's models/ and says where; an
    install (no checkout's models/) is told to name a folder."""
    from seg_perception import paths
    run = _run_on(tmp_path / "run", "train", seed=1)
    checkout = tmp_path / "checkout"  # (a stand-in for this checkout, whose models/ the test must not touch)
    (checkout / "models").mkdir(parents=True)
    monkeypatch.setattr(paths, "_CHECKOUT", checkout)
    monkeypatch.delenv("SEG_PERCEPTION_MODELS", raising=False)
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()
    monkeypatch.chdir(anywhere)
    args = ["release", "--run", str(run), "--name", "scratchrel", "--data", str(camvid_sample), "--threads", "1",
            "--no-int8"]
    capsys.readouterr()
    assert main(args) == 0
    shipped = checkout / "models" / "scratchrel.yaml"
    assert shipped.is_file() and not (anywhere / "models").exists()
    assert paths.resolve_model("scratchrel") == shipped  # eval-bag --model scratchrel finds it
    out = capsys.readouterr().out
    assert f"[release] {shipped}: val mIoU" in out and "is not a folder models resolve from" not in out, out
    assert main(args[:4] + ["elsewhere", "--to", "mine"] + args[5:]) == 0  # a folder of its own: how to use it
    assert f"{anywhere / 'mine'} is not a folder models resolve from by name" in capsys.readouterr().out
    (checkout / "models" / "scratchrel.yaml").unlink()
    (checkout / "models" / "scratchrel.pt").unlink()
    (checkout / "models" / "scratchrel.onnx").unlink()
    (checkout / "models").rmdir()  # an install: no folder of the user's to ship into
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "SEG_PERCEPTION_MODELS=DIR" in err and "--to DIR" in err and len(err.strip().splitlines()) == 1, err
    assert not (anywhere / "models").exists()


def test_a_run_stopped_before_its_planned_epochs_is_refused_and_says_how_to_continue(
        tmp_path, camvid_sample, capsys, monkeypatch):
    """A --keep last --epochs 10 run stopped in epoch 6 (its card from the validation of epoch 3) was
    released without a word, and models --shipped read "5 of 10" as if the weights were epoch 5's:
    refused with the command that continues it; --unfinished ships it, and the listing names the
    weights' epoch."""
    run = _run_on(tmp_path / "run", "train", seed=1)
    card = load_card(run / f"{NAME}.yaml")
    command = f"seg-perception train --model essnet_d --epochs 10 --keep last --out {run}"
    card.training = dict(card.training, epochs_planned=10, epoch=3, command=command)
    card.save(card.path)
    (run / "log.csv").write_text("epoch,stage,train_loss\n" + "".join(f"{e},full,1.0\n" for e in range(1, 6)))
    to = tmp_path / "models"
    args = ["release", "--run", str(run), "--name", NAME, "--to", str(to), "--data", str(camvid_sample),
            "--threads", "1", "--no-int8"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has trained 5 of its 10 epochs (its weights are from epoch 3)" in err, err
    assert f"continue it with '{command} --resume'" in err and "--unfinished" in err, err
    assert len(err.strip().splitlines()) == 1 and not to.exists()
    (run / "COMMAND.txt").write_text(command + " --resume\n")  # a carried run: the command that continues it
    assert main(args) == 2 and f"continue it with the command in {run / 'COMMAND.txt'}" in capsys.readouterr().err
    assert main(args + ["--unfinished"]) == 0
    assert "has trained 5 of its 10 epochs" in capsys.readouterr().out
    shipped = load_card(to / f"{NAME}.yaml").training
    assert (shipped["epochs_completed_in_run"], shipped["epoch"]) == (5, 3)
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(to))
    assert main(["models", "--shipped"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {NAME} |"))
    assert row.endswith("| 5 of 10; weights of epoch 3 |"), row
    # finished at 5, then resumed with --epochs 7 and stopped before its weights and card were written
    # again: the card (planned 5, epoch 5) looked finished, and the epoch-5 weights shipped as the run's
    card.training = dict(card.training, epochs_planned=5, epoch=5)
    card.save(card.path)
    (run / "log.csv").write_text("epoch,stage,train_loss\n" + "".join(f"{e},full,1.0\n" for e in range(1, 8)))
    assert main(args + ["--replace"]) == 2
    err = capsys.readouterr().err
    assert "has trained 7 epochs, but its weights and card are from epoch 5" in err, err


def test_classes_absent_from_val_are_said_by_release_and_the_listing(tmp_path, camvid_sample, capsys, monkeypatch):
    """A val split without a class scores the mean over the others (a 99.94 over one class read as a
    great model): the card recorded the absent classes, but neither release nor models --shipped said so."""
    import shutil
    data = tmp_path / "camvid_no_road"
    shutil.copytree(camvid_sample, data)
    for f in (data / "valannot").glob("*.png"):  # every Road pixel of val unlabelled
        ids = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(str(f), np.where(ids == 3, 11, ids).astype(np.uint8))
    run = _run_on(tmp_path / "run", "train", seed=1)
    to = tmp_path / "models"
    capsys.readouterr()
    assert main(["release", "--run", str(run), "--name", NAME, "--to", str(to), "--data", str(data), "--threads", "1",
                 "--no-int8"]) == 0
    out = capsys.readouterr().out
    assert load_card(to / f"{NAME}.yaml").metrics["val_classes_absent"] == ["Road"]
    assert ("[release] note: CamVid val has no pixel of Road: the val mIoU is over the other 10 of 11 classes"
            in out), out
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(to))
    assert main(["models", "--shipped"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {NAME} |"))
    assert " (Road absent from val: not in the mean) |" in row, row


def test_a_run_that_kept_its_best_epoch_on_val_is_released_with_a_note(tmp_path, camvid_sample, capsys):
    """--keep best chose the epoch on val: the val figure the release measures is the best of several
    looks at that split, and the card and `models --shipped` say so."""
    run = tmp_path / "run"
    run.mkdir()
    card = load_card(make_random_model(run, "essnet_d", 96, 72, onnx=False))
    card.training = {**card.training, "best_epoch": 2, "val_split": "val", "train_split": "train"}
    card.save(card.path)
    to = tmp_path / "models"
    assert main(["release", "--run", str(run), "--name", "picked", "--to", str(to), "--data", str(camvid_sample),
                 "--no-int8", "--threads", "1"]) == 0
    note = load_card(to / "picked.yaml").metrics["val_picked_checkpoint"]
    assert "kept its best epoch on val (epoch 2)" in note and "--keep last" in note
    assert "(epoch picked on val)" in capsys.readouterr().out


def test_models_listing_names_the_epoch_of_weights_kept_as_the_best(tmp_path, capsys, monkeypatch):
    """A --keep best run ships the weights of its best epoch on val, not its last: `models --shipped`
    said "2 of 2" alone, as if they were epoch 2's; it names the shipped weights' epoch (the card's
    best_epoch). A --keep last card (training.epoch) reads as before."""
    mine = tmp_path / "my_models"
    for name, kept in (("kept_best", {"best_epoch": 1, "val_split": "val"}), ("kept_last", {"epoch": 2})):
        card = load_card(make_random_model(mine, "essnet_d", 96, 72, onnx=False, seed=1))
        card.name = name
        card.training = {**card.training, "train_split": "train", "epochs_planned": 2, "epochs_completed_in_run": 2,
                         **kept}
        card.save(mine / f"{name}.yaml")  # (beside random_essnet_d.pt, which it names)
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(mine))
    capsys.readouterr()
    assert main(["models", "--shipped"]) == 0
    rows = {r.split("|")[1].strip(): r for r in capsys.readouterr().out.splitlines() if r.startswith("| kept_")}
    assert rows["kept_best"].endswith("| 2 of 2; weights of epoch 1 (best on val) |"), rows["kept_best"]
    assert rows["kept_last"].endswith("| 2 of 2 |"), rows["kept_last"]


def test_hours_of_epochs_leave_out_the_time_a_run_was_paused(tmp_path):
    """An epoch logged at 13-34 minutes against 45 s was a run paused under a check (kill -STOP), not
    training: r800_train's card would have said 15.5 h, 4.1 h of it paused. Such an epoch counts as
    the median."""
    from seg_perception.release import _hours_of_epochs
    rows = [45.0] * 19 + [2058.0]
    (tmp_path / "log.csv").write_text("epoch,stage,train_loss,lr,val_miou,val_pixel_acc,seconds\n" + "".join(
        f"{i + 1},full,0.3,0.0001,,,{s}\n" for i, s in enumerate(rows)))
    assert _hours_of_epochs(tmp_path) == round(20 * 45 / 3600, 2)
