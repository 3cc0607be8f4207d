"""The shipped default model, on real CamVid val frames: the figures its card claims are
reproduced by the runtime pipeline on the full val split (skipped without the dataset),
and its INT8 twin agrees with it on the sample frames."""
import numpy as np
import pytest

from seg_perception.card import load_card
from seg_perception.runtime.pipeline import Pipeline
from seg_perception.evaluation.split_accuracy import evaluate


def test_card_is_complete(shipped_model):
    card = load_card(shipped_model)
    assert card.architecture == "rdsnet" and card.num_classes == 11
    assert card.drivable_classes == [3]
    for role in ("weights", "onnx", "onnx_int8"):
        assert card.file(role).is_file(), role
    # weights shipped before their recipe run finished (release --recipe-pending) carry no val
    # figure yet, only their own (not held out) and the reason
    pending = "pending" in card.training.get("recipe_run", {})
    held_out = ("val_miou_not_held_out",) if pending else ("val_miou", "val_per_class_iou")
    for key in held_out + ("params", "gmacs", "cpu_latency"):
        assert key in card.metrics, key
    assert not pending or ("val_miou" not in card.metrics and card.training["recipe_run"]["pending"].strip())
    assert card.training["command"].startswith("seg-perception train")


def test_val_miou_is_what_the_card_says(shipped_model, camvid_full):
    card = load_card(shipped_model)
    res = evaluate(shipped_model, str(camvid_full), "camvid", "val", backend="onnxruntime")
    assert res["frames"] == 101
    # Weights trained on train+val carry the recipe run's val figure (held out) and their own
    # (val was training data) beside it; the one these weights reproduce is their own.
    own = card.metrics["val_miou_not_held_out"] if card.training.get("recipe_run") else card.metrics["val_miou"]
    assert abs(res["miou"] - own) < 0.3
    # and the default meets the project's goal (60 val mIoU at 480x360)
    assert res["miou"] >= 60 and res["per_class_iou"]["Road"] > 90


def test_int8_agrees_with_fp32(shipped_model, val_frames):
    fp32 = Pipeline.from_card(shipped_model, backend="onnxruntime", precision="fp32")
    int8 = Pipeline.from_card(shipped_model, backend="onnxruntime", precision="int8")
    # the int8 file really runs (a pipeline that fell back to fp32 would agree 100 %); on a GPU
    # ONNX Runtime takes the TensorRT-style Q/DQ file, on the CPU the CPU one
    import onnxruntime as ort
    role = "onnx_int8" if "CUDAExecutionProvider" in ort.get_available_providers() else "onnx_int8_cpu"
    assert int8.backend.path == load_card(shipped_model).file(role)
    agree = [np.mean(fp32(img).labels == int8(img).labels) for img, _ in val_frames[:3]]
    assert min(agree) > 0.95 and max(agree) < 1.0


def test_backends_agree_on_trained_weights(shipped_model, val_frames):
    """PyTorch on the card's .pt and ONNX Runtime on its .onnx: two files, two runtimes, one answer."""
    ref = Pipeline.from_card(shipped_model, backend="onnxruntime")
    pipe = Pipeline.from_card(shipped_model, backend="torch")
    for img, _ in val_frames[:2]:
        assert np.mean(pipe(img).labels == ref(img).labels) > 0.999


def test_models_shipped_names_the_default_with_its_figures_and_where_it_was_timed(shipped_model, capsys):
    from seg_perception.cli import main
    main(["models", "--shipped"])
    card = load_card(shipped_model)
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"| {card.name} |"))
    if "pending" in card.training.get("recipe_run", {}):
        assert "| pending (recipe on train alone not done) |" in row
    else:
        assert f"{card.metrics['val_miou']:.2f} (recipe on train alone)" in row
    lat = card.metrics["cpu_latency"]
    assert f"{lat['onnxruntime_fp32_ms']['p50']} / {lat['onnxruntime_int8_cpu_ms']['p50']} ({lat['cpu']}" in row
    # the int8 accuracy beside that speed is the same (CPU int8) model's, not the TensorRT Q/DQ one's
    q = card.metrics["int8_cpu"]
    assert (f"| {-q['miou_drop']:+.2f} vs fp32 (val not held out) |" if card.training.get("recipe_run")
            else f"| {q['int8_miou']} ({-q['miou_drop']:+.2f} vs fp32) |") in row, row


def test_evaluate_sizes_table_matches_single_runs(shipped_model, camvid_sample, tmp_path, capsys):
    """`evaluate --sizes` scores each size as a separate `--width/--height` run would, and its
    table and JSON carry one row per size (the shipped ONNX file is dynamic-shape)."""
    import json
    from seg_perception.cli import main
    common = ["evaluate", "--model", str(shipped_model), "--data", str(camvid_sample), "--limit", "3",
              "--threads", "1"]
    assert main(common + ["--sizes", "320x240", "480x360", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [r["input_size"] for r in rows] == [[320, 240], [480, 360]]
    for r in rows:
        single = evaluate(shipped_model, str(camvid_sample), "camvid", "val", limit=3, threads=1,
                          width=r["input_size"][0], height=r["input_size"][1])
        assert single["miou"] == r["miou"]
        assert f"{r['input_size'][0]}x{r['input_size'][1]} {r['miou']:6.2f}" in out
    assert rows[0]["miou"] != rows[1]["miou"]  # the size reached the network
    # the shipped model trained on train+val: its val figure is said to be not held out
    assert "these frames are not held out" in out and all(r.get("not_held_out") for r in rows)
    held_out = load_card(shipped_model)
    held_out.training = dict(held_out.training, train_split="train")  # as its recipe run trained
    assert "not_held_out" not in evaluate(held_out, str(camvid_sample), "camvid", "val", limit=1, threads=1)
    assert main(common + ["--sizes", "320x240", "--width", "320"]) == 2
    assert "--sizes replaces --width/--height" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: before anything is scored
        main(common + ["--sizes", "480x360", "400x300"])
    assert "input size 400x300 must be positive multiples of 8" in capsys.readouterr().err
