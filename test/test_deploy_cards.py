"""Deployment commands keep a model's card true to its files: quantize takes only the card's current
ONNX, export drops what described files it replaced or left behind, and the listings and timings the
commands print describe what the node runs. Small random models (plumbing, not accuracy)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, make_random_model, needs_no_tensorrt
from seg_perception import cli
from seg_perception.card import load_card
from seg_perception.deploy.quantize import QuantizeResult, note_int8

W, H = 64, 48


def _cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_line_error(rc, err, command):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"seg-perception {command}: error: "), err
    return lines[0]


@pytest.fixture
def model(tmp_path, capsys):
    """A random ESSNet-D card + weights + its ONNX (exported by the command) in tmp_path/m."""
    card = make_random_model(tmp_path / "m", "essnet_d", W, H, onnx=False)
    rc, _, err = _cli(["export", "--model", card], capsys)
    assert rc == 0, err
    return card


@pytest.fixture
def calib(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return folder


def _other_weights(card_path, dest):
    state = torch.load(load_card(card_path).file("weights"))
    next(iter(state.values())).add_(0.5)
    torch.save(state, dest)
    return dest


def _with_fake_int8(card_path):
    """List a (stand-in) CPU INT8 file in the card, with how it was made and its figures."""
    card = load_card(card_path)
    (card.path.parent / f"{card.name}_int8_cpu.onnx").write_bytes(b"int8")
    card.files = {**card.files, "onnx_int8_cpu": f"{card.name}_int8_cpu.onnx"}
    card.training = {**card.training, "quantization_cpu": {"method": "ort"}}
    card.metrics = {**card.metrics, "params": 1, "int8_cpu": {"int8_miou": 1.0, "speed_vs_fp32": 1.2},
                    "cpu_latency": {"onnxruntime_fp32_ms": {"p50": 2.0}, "onnxruntime_int8_cpu_ms": {"p50": 1.0}}}
    card.save(card.path)


def _has_no_int8(card):
    assert "onnx_int8_cpu" not in card.files and "quantization_cpu" not in card.training, card.files
    assert "int8_cpu" not in card.metrics and "onnxruntime_int8_cpu_ms" not in card.metrics.get("cpu_latency", {})


# ------------------------------------------------------------------ quantize takes the card's current ONNX
def test_quantize_refuses_an_onnx_the_card_no_longer_lists_or_of_other_weights(model, calib, capsys):
    onnx = model.with_suffix(".onnx")
    card = load_card(model)
    card.files = {k: v for k, v in card.files.items() if k != "onnx"}  # what train --resume writes
    card.save(model)
    rc, _, err = _cli(["quantize", "--onnx", onnx, "--calib-data", calib, "--num-images", 1], capsys)
    line = _one_line_error(rc, err, "quantize")
    assert "is not the ONNX file its card" in line and f"seg-perception export --model {model}" in line

    (model.parent / "newer.onnx").write_bytes(onnx.read_bytes())  # the card lists another export
    card.files["onnx"] = "newer.onnx"
    card.save(model)
    rc, _, err = _cli(["quantize", "--onnx", onnx, "--calib-data", calib, "--num-images", 1], capsys)
    assert "is not the ONNX file its card" in _one_line_error(rc, err, "quantize")

    card.files["onnx"] = onnx.name
    card.save(model)
    _other_weights(model, card.file("weights"))  # retrained in place: the ONNX is of the old weights
    rc, _, err = _cli(["quantize", "--onnx", onnx, "--calib-data", calib, "--num-images", 1], capsys)
    assert "was exported from other weights" in _one_line_error(rc, err, "quantize")
    assert not onnx.with_name(f"{onnx.stem}_int8.onnx").exists()


def test_quantize_checks_its_arguments_before_reading_calibration_frames(model, calib, capsys, monkeypatch):
    from seg_perception.deploy import quantize

    def no_frames(*a, **k):
        raise AssertionError("calibration frames prepared before the arguments were checked")
    monkeypatch.setattr(quantize, "calibration_frames", no_frames)
    rc, _, err = _cli(["quantize", "--onnx", model.with_suffix(".onnx"), "--calib-data", calib,
                       "--method", "ort", "--calibration", "entropy"], capsys)
    assert "only available with --method modelopt" in _one_line_error(rc, err, "quantize")


def test_logits_export_is_not_quantized_run_or_counted_as_a_model(model, calib, capsys):
    from seg_perception.runtime.backends import BackendError, OnnxRuntimeBackend
    rc, _, err = _cli(["export", "--model", model, "--logits"], capsys)
    assert rc == 0, err
    logits = model.with_name(f"{model.stem}_logits.onnx")
    rc, _, err = _cli(["quantize", "--onnx", logits, "--calib-data", calib, "--num-images", 1], capsys)
    assert "has no 'labels' output" in _one_line_error(rc, err, "quantize")
    with pytest.raises(BackendError, match="has no 'labels' output"):
        OnnxRuntimeBackend(load_card(model), W, H, "fp32", onnx_path=logits)
    # the folder still holds one model: the logits card is not a second one
    rc, _, err = _cli(["export", "--model", model.parent, "--out", model.parent / "again.onnx"], capsys)
    assert rc == 0, err


def test_requantizing_drops_the_timings_of_the_file_it_replaces(model):
    _with_fake_int8(model)
    card = load_card(model)
    res = QuantizeResult(card.file("onnx_int8_cpu"), "ort", "minmax", 2, 1.0, 10, "cpu")
    card = note_int8(card, res.path, res)
    assert "int8_cpu" not in card.metrics
    assert card.metrics["cpu_latency"] == {"onnxruntime_fp32_ms": {"p50": 2.0}}


# ------------------------------------------------------------------ export
@pytest.mark.parametrize("change", [["--dynamic"], ["--dynamic", "--width", 128, "--height", 96]])
def test_reexport_that_changes_the_graph_drops_the_int8_files_of_the_old_export(model, change, capsys):
    _with_fake_int8(model)
    rc, _, err = _cli(["export", "--model", model], capsys)  # the same export again keeps them
    assert rc == 0, err
    assert load_card(model).files.get("onnx_int8_cpu") == f"{model.stem}_int8_cpu.onnx"
    rc, _, err = _cli(["export", "--model", model, *change], capsys)
    assert rc == 2 and "pass --replace" in err
    rc, _, err = _cli(["export", "--model", model, *change, "--replace"], capsys)
    assert rc == 0, err
    _has_no_int8(load_card(model))


def test_export_of_other_weights_records_them_and_needs_replace(model, tmp_path, capsys):
    from seg_perception.files import sha256
    other = _other_weights(model, tmp_path / "other.pt")
    onnx = model.with_suffix(".onnx")
    rc, _, err = _cli(["export", "--model", model, "--weights", other, "--out", onnx], capsys)
    assert "is of an ONNX made from other weights" in _one_line_error(rc, err, "export")
    rc, _, err = _cli(["export", "--model", model, "--weights", other, "--out", onnx, "--replace"], capsys)
    assert rc == 0, err
    card = load_card(model)
    assert card.file("weights") == other.resolve()
    assert card.training["export"]["source_weights_sha256"] == sha256(other)


def test_export_into_another_folder_keeps_the_weights_and_drops_files_left_behind(model, tmp_path, capsys):
    _with_fake_int8(model)
    out = tmp_path / "x" / "moved.onnx"
    rc, _, err = _cli(["export", "--model", model, "--dynamic", "--out", out], capsys)
    assert rc == 0, err
    card = load_card(out)
    assert card.file("weights") == load_card(model).file("weights")
    _has_no_int8(card)
    rc, _, err = _cli(["export", "--model", out.with_suffix(".yaml"), "--out", tmp_path / "y" / "again.onnx"],
                      capsys)
    assert rc == 0, err

    card.files = {"onnx": out.name}
    card.save(card.path)
    rc, _, err = _cli(["export", "--model", card.path, "--out", tmp_path / "z.onnx"], capsys)
    assert "lists no weights: pass --weights FILE.pt" in _one_line_error(rc, err, "export")


@pytest.mark.parametrize("size", [["--height", -8], ["--width", -16, "--height", -16]])
def test_export_refuses_a_size_that_is_not_positive(model, size, capsys):
    rc, _, err = _cli(["export", "--model", model, "--out", model.parent / "s.onnx", *size], capsys)
    assert "must be positive multiples of 8" in _one_line_error(rc, err, "export")


# ------------------------------------------------------------------ models
def test_models_lists_no_card_copies(tmp_path, monkeypatch):
    from seg_perception.paths import available_models
    for stem in ("mine", "mine_int8", "mine_int8_cpu", "mine_logits", "other_int8"):
        (tmp_path / f"{stem}.yaml").write_text("name: x\n")
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(tmp_path))
    names = available_models()
    assert "mine" in names and "other_int8" in names  # a model may end in _int8 when nothing else is its base
    assert not {"mine_int8", "mine_int8_cpu", "mine_logits", "rdsnet_camvid_int8"} & set(names), names


# ------------------------------------------------------------------ build-engine, bench, doctor
def test_build_engine_checks_max_batch_before_tensorrt(model, capsys):
    rc, _, err = _cli(["build-engine", "--onnx", model.with_suffix(".onnx"), "--precision", "fp32",
                       "--max-batch", 0], capsys)
    assert "--max-batch must be at least 1" in _one_line_error(rc, err, "build-engine")


def test_bench_checks_the_quantization_method_first_and_names_its_flag(capsys, monkeypatch):
    from seg_perception.deploy import bench, quantize
    monkeypatch.setattr(quantize, "modelopt_available", lambda: False)
    monkeypatch.setattr(bench, "_export_random", lambda *a, **k: pytest.fail("a network was exported first"))
    rc, _, err = _cli(["bench", "--models", "essnet_d", "--backend", "onnxruntime", "--resolution", f"{W}x{H}",
                       "--runs", 1, "--quant-method", "modelopt"], capsys)
    line = _one_line_error(rc, err, "bench")
    assert "use --quant-method ort" in line and "--method" not in line.replace("--quant-method", "")


def test_bench_times_the_qdq_file_without_warning_and_names_where_its_script_is(tmp_path, caplog):
    import logging
    from seg_perception.deploy import bench
    frames, _ = bench.sample_frames(W, H, n=2)
    with caplog.at_level(logging.WARNING, logger="seg_perception"):
        rows = bench.bench_model("essnet_d", W, H, frames, ["onnxruntime"], 1, 0, 1, tmp_path, "ort",
                                 log=lambda s: None)
    assert {r.precision for r in rows if r.p50_ms} == {"fp32", "int8"}, rows
    assert not [r.message for r in caplog.records if "precision int8 on the CPU" in r.message]
    env = {"resolution": "64x48", "cpu": "c", "threads": 1, "onnxruntime": "1", "runs": 1, "warmup": 0,
           "frames": "f", "weights": "random", "date": "d"}
    assert "scripts/speed_shipped.py of the source repository" in bench.to_markdown({"environment": env, "rows": []})


def test_doctor_batch_row_fps_is_one_over_the_mean(monkeypatch):
    from seg_perception import timing
    from seg_perception.deploy import doctor

    class Engine:
        max_batch = 2

        def infer_batch(self, stack):
            return [np.zeros(stack.shape[:3], np.uint8)], None

        def infer(self, frame):
            return np.zeros(frame.shape[:2], np.uint8), None

        def close(self):
            pass
    monkeypatch.setattr(doctor, "_open_engine", lambda *a, **k: (Engine(), "cached"))
    monkeypatch.setattr(timing, "time_calls", lambda *a, **k: [10.0, 10.0, 40.0])  # ms per call of 2 frames
    frames = [np.zeros((H, W, 3), np.uint8)]
    row = doctor._batch_row(None, W, H, frames, 2, True, ["fp32"], None, 0, 5, 0)
    assert row.status == "ok" and row.p50_ms == 5.0 and row.fps == 100.0, row


@needs_no_tensorrt
def test_doctor_times_the_int8_file_the_cpu_node_runs(capsys, tmp_path):
    rc, out, err = _cli(["doctor", "--model", REPO / "models" / "rdsnet_camvid.yaml", "--precisions", "int8",
                         "--num-frames", 1, "--runs", 5, "--batch", 1, "--threads", 1, "--cache-dir", tmp_path],
                        capsys)
    assert rc == 1, err  # no TensorRT here
    assert "| onnxruntime labels only | int8 | ok |" in out and "what the CPU node runs: rdsnet_camvid_int8_cpu.onnx" \
        in out, out
    assert "rdsnet_camvid_int8.onnx, the TensorRT file, timed on the CPU" in out
