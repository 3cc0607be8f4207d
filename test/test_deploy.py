"""Deployment: export, INT8 quantization, the TensorRT engine cache, doctor, bench, CLI.

Models here carry RANDOM weights (plumbing and agreement, not accuracy). TensorRT
cannot run on CI machines: the cache logic around it is pure Python and tested
here with a stand-in builder; tests that need TensorRT and a GPU skip with the
reason when they are absent, and tests of what happens without TensorRT skip
where it is installed (a Jetson).
"""
from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import REPO, label_kappa, make_random_model, needs_no_tensorrt
from seg_perception import cli
from seg_perception.card import load_card
from seg_perception.deploy.export import export_onnx
from seg_perception.deploy.quantize import (calibration_frames, inspect_qdq, list_calibration_images,
                                            modelopt_available, quantize_onnx)
from seg_perception.files import sha256
from seg_perception.nets import list_models
from seg_perception.nets.deployable import DeployWrapper, load_net
from seg_perception.runtime import engine_cache as eng
from seg_perception.runtime.backends import (BackendError, OnnxRuntimeBackend, create_backend,
                                             tensorrt_installed)

W, H = 128, 96  # small, a multiple of 32 for every network of the zoo

# ORT's fp32 logits must be about as close to exact (PyTorch in float64) as PyTorch's own fp32 ones:
# max|ort - exact| <= LOGITS_FACTOR * max|torch32 - exact| + LOGITS_ATOL. Measured on the zoo's random
# nets (1 thread, 128x96): ratio 0.54 to 1.91, errors 4e-6 to 6e-4. A wrong op in the export (a BN eps,
# a resize mode, a padding) is off by much more than fp32 rounding.
LOGITS_FACTOR, LOGITS_ATOL = 4.0, 1e-6


def _run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _small(frames, n=2):
    return [np.ascontiguousarray(cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)) for img, _ in frames[:n]]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A random ESSNet-D card + weights at W x H, without ONNX (the tests export it)."""
    return make_random_model(tmp_path_factory.mktemp("small"), "essnet_d", W, H, onnx=False)


def _io(path):
    m = onnx.load(str(path))
    ty = lambda v: (v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])  # noqa: E731
    return m, {v.name: ty(v) for v in m.graph.input}, {v.name: ty(v) for v in m.graph.output}


# ------------------------------------------------------------------ export
def test_export_command_writes_onnx_and_card(small_model, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc, stdout, err = _run_cli(["export", "--model", small_model, "--out", out], capsys)
    assert rc == 0, err
    m, inputs, outputs = _io(out)
    assert m.opset_import[0].version >= 17
    assert inputs == {"image": (onnx.TensorProto.UINT8, [1, H, W, 3])}
    assert outputs == {"labels": (onnx.TensorProto.UINT8, [1, H, W]),
                       "confidence": (onnx.TensorProto.FLOAT, [1, H, W])}
    # TensorRT takes uint8 only as network I/O: the input's only consumer is the Cast to float.
    users = [n for n in m.graph.node if "image" in n.input]
    assert [n.op_type for n in users] == ["Cast"]
    card = load_card(out)
    assert card.file("onnx") == out.resolve() and (card.input_width, card.input_height) == (W, H)
    assert "labels uint8 1x96x128" in stdout


def test_export_by_network_name_and_weights(small_model, tmp_path, capsys):
    weights = load_card(small_model).file("weights")
    out = tmp_path / "n.onnx"
    rc, _, err = _run_cli(["export", "--model", "essnet_d", "--weights", weights, "--out", out,
                           "--width", 64, "--height", 48], capsys)
    assert rc == 0, err
    assert _io(out)[1]["image"] == (onnx.TensorProto.UINT8, [1, 48, 64, 3])
    rc, _, err = _run_cli(["export", "--model", "erfnet", "--weights", weights, "--out", out], capsys)
    assert rc == 2 and "describes a 'essnet_d' network, not 'erfnet'" in err


def test_export_keeps_measured_figures_only_for_the_same_weights_and_size(tmp_path, capsys):
    """A card's val mIoU, INT8 and latency figures were measured for its weights at its size:
    an export of other weights, or at another size, keeps only the architecture's figures."""
    card_path = make_random_model(tmp_path / "m", "essnet_d", W, H, onnx=False)
    card = load_card(card_path)
    card.metrics = {**card.metrics, "params": 123, "val_miou": 55.5, "int8_cpu": {"int8_miou": 55.0},
                    "cpu_latency": {"onnxruntime_fp32_ms": {"p50": 9.0}}}  # as release writes it
    card.save(card_path)
    measured = {"val_miou", "int8_cpu", "cpu_latency"}
    same = tmp_path / "same.pt"
    same.write_bytes(card.file("weights").read_bytes())
    other = tmp_path / "other.pt"
    state = torch.load(card.file("weights"))
    next(iter(state.values())).add_(0.5)
    torch.save(state, other)
    for extra, kept in [([], True), (["--weights", same], True), (["--weights", other], False),
                        (["--width", 64, "--height", 48], False)]:
        out = tmp_path / f"e{len(extra)}_{kept}.onnx"
        rc, _, err = _run_cli(["export", "--model", card_path, "--out", out, *extra], capsys)
        assert rc == 0, err
        metrics = load_card(out).metrics
        assert metrics["params"] == 123
        assert (measured <= set(metrics)) == kept and (measured & set(metrics) == set()) != kept, (extra, metrics)


def test_export_logits_variant(small_model, tmp_path, capsys):
    out = tmp_path / "l.onnx"
    rc, _, err = _run_cli(["export", "--model", small_model, "--out", out, "--logits"], capsys)
    assert rc == 0, err
    _, _, outputs = _io(out)
    assert outputs == {"logits": (onnx.TensorProto.FLOAT, [1, 11, H, W])}
    assert load_card(out).file("onnx_logits") == out.resolve()


def test_export_dynamic_runs_at_two_sizes(small_model, tmp_path, capsys, val_frames):
    out = tmp_path / "d.onnx"
    rc, _, err = _run_cli(["export", "--model", small_model, "--out", out, "--dynamic"], capsys)
    assert rc == 0, err
    _, inputs, _ = _io(out)
    assert inputs["image"][1] == ["batch", "height", "width", 3]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    card = load_card(small_model)
    wrap = DeployWrapper(load_net(card), card.mean, card.std).eval()
    for w, h in ((W, H), (160, 120)):
        img = cv2.resize(val_frames[0][0], (w, h))[None]
        labels, conf = sess.run(None, {"image": img})
        assert labels.shape == (1, h, w) and labels.dtype == np.uint8 and conf.shape == (1, h, w)
        assert labels.max() < 11 and 0 < conf.min() <= conf.max() <= 1.0001
        # The same numbers as PyTorch at this size too (a shape frozen at export time would not be).
        with torch.no_grad():
            t_lab, t_conf = wrap(torch.from_numpy(img))
        assert (labels == t_lab.numpy()).mean() >= 0.999
        assert np.abs(conf - t_conf.numpy()).max() < 1e-3


# ------------------------------------------------------------------ parity, every network
@pytest.mark.parametrize("arch", list_models())
def test_onnxruntime_matches_torch(arch, tmp_path, val_frames):
    card = load_card(make_random_model(tmp_path, arch, W, H, onnx=False))
    frames = _small(val_frames)
    net = load_net(card)
    labels_onnx = export_onnx(card, tmp_path / "a.onnx")
    logits_onnx = export_onnx(card, tmp_path / "b.onnx", logits=True)
    s_lab = ort.InferenceSession(str(labels_onnx), providers=["CPUExecutionProvider"])
    s_log = ort.InferenceSession(str(logits_onnx), providers=["CPUExecutionProvider"])
    wrap_lab = DeployWrapper(net, card.mean, card.std).eval()
    wrap_log = DeployWrapper(net, card.mean, card.std, logits=True).eval()
    exact = copy.deepcopy(wrap_log).double()
    same = total = 0
    for img in frames:
        x = img[None]
        with torch.no_grad():
            t_lab, _ = wrap_lab(torch.from_numpy(x))
            t_log = wrap_log(torch.from_numpy(x)).numpy()
            t_exact = exact(torch.from_numpy(x)).numpy()
        o_lab = s_lab.run(None, {"image": x})[0]
        o_log = s_log.run(None, {"image": x})[0]
        same += int((o_lab == t_lab.numpy()).sum())
        total += o_lab.size
        torch_err = np.abs(t_log - t_exact).max()
        assert np.abs(o_log - t_exact).max() <= LOGITS_FACTOR * torch_err + LOGITS_ATOL
        assert np.abs(t_log).max() > 100 * torch_err  # the logits are not near zero: the check means something
    assert same / total >= 0.999


# ------------------------------------------------------------------ INT8
@pytest.fixture(scope="module")
def quantized(small_model, tmp_path_factory, camvid_sample):
    folder = tmp_path_factory.mktemp("q")
    card = load_card(small_model)
    onnx_path = export_onnx(card, folder / "q.onnx")
    card = load_card(onnx_path)
    frames = calibration_frames(list_calibration_images(camvid_sample, 4), card, onnx_path)
    res = quantize_onnx(onnx_path, folder / "q_int8.onnx", frames, method="ort")
    return onnx_path, res


def _casts_to_uint8_from(path) -> list:
    """The element type of what each Cast to UINT8 in the graph at ``path`` reads."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return [types.get(n.input[0]) for n in g.node if n.op_type == "Cast"
            and next(a.i for a in n.attribute if a.name == "to") == onnx.TensorProto.UINT8]


def test_labels_are_cast_to_uint8_from_float_for_tensorrt(quantized):
    """TensorRT casts to uint8 only from float or half: the labels (ArgMax, int64) go through
    float, in fresh exports, their INT8 graphs and the shipped files."""
    fp32_path, res = quantized
    shipped = [p for p in sorted((REPO / "models").glob("*.onnx")) if not p.name.endswith("_int8_cpu.onnx")]
    assert len(shipped) >= 6
    for path in [fp32_path, res.path, *shipped]:
        froms = _casts_to_uint8_from(path)
        assert froms and set(froms) <= {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}, (path.name, froms)


def test_labels_only_int8_graph_keeps_only_the_constants_it_reads(quantized):
    # The confidence branch of a quantized graph has constants of its own (scales, zero points):
    # they go with it, or ONNX Runtime prints a warning line for each at start-up.
    from seg_perception.runtime.backends import labels_only_graph
    _, res = quantized
    full = onnx.load(str(res.path)).graph
    cut = onnx.load_from_string(labels_only_graph(res.path)).graph
    read = {i for n in cut.node for i in n.input}
    assert len(cut.initializer) < len(full.initializer)
    assert all(init.name in read for init in cut.initializer)


def test_quantized_model_is_symmetric_per_channel_qdq(quantized):
    _, res = quantized
    info = inspect_qdq(res.path)
    assert info["quantize_linear"] > 0 and info["dequantize_linear"] >= info["quantize_linear"]
    assert info["per_channel"] > 0            # per-channel weight scales
    assert info["nonzero_zero_points"] == 0   # symmetric: every zero point is 0
    assert info["int8_zero_points"]           # signed int8, as TensorRT wants
    assert info["inputs"] == [("image", onnx.TensorProto.UINT8)]
    assert info["outputs"] == ["labels", "confidence"]
    m = onnx.load(str(res.path))
    onnx.checker.check_model(m, full_check=True)
    assert [o.domain for o in m.opset_import] == [""] and m.opset_import[0].version >= 17
    # No int32 (bias) DequantizeLinear: TensorRT cannot run one.
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].data_type == onnx.TensorProto.INT8
    # ConvTranspose weights per tensor (one scale): TensorRT before 10.2 has no per-channel ConvTranspose;
    # the Convs keep per-channel scales (one per output channel)
    made_by = {o: n for n in m.graph.node for o in n.output}
    scales = {}
    for n in m.graph.node:
        if n.op_type in ("Conv", "ConvTranspose") and n.input[1] in made_by:
            dq = made_by[n.input[1]]
            scales.setdefault(n.op_type, []).append(len(onnx.numpy_helper.to_array(inits[dq.input[1]]).reshape(-1)))
    assert scales["ConvTranspose"] and set(scales["ConvTranspose"]) == {1}, scales
    assert max(scales["Conv"]) > 1


def test_quantize_command_runs_int8_in_onnxruntime(small_model, tmp_path, camvid_sample, capsys, val_frames,
                                                   caplog):
    card = load_card(small_model)
    src = export_onnx(card, tmp_path / "c.onnx")
    rc, out, err = _run_cli(["quantize", "--onnx", src, "--calib-data", camvid_sample, "--num-images", 3,
                             "--method", "ort", "--eval", "--eval-data", camvid_sample, "--max-eval-images", 2],
                            capsys)
    assert rc == 0, err
    assert "fp32 mIoU" in out and "int8 mIoU" in out and "label agreement" in out
    card = load_card(src)
    assert card.file("onnx_int8") == (tmp_path / "c_int8.onnx").resolve()
    assert card.training["quantization"]["method"] == "ort"
    assert set(card.metrics["int8"]) >= {"fp32_miou", "int8_miou", "label_agreement"}
    fp32 = create_backend("onnxruntime", card, "fp32")
    with caplog.at_level(logging.WARNING, logger="seg_perception"):
        int8 = create_backend("onnxruntime", card, "int8")
    assert int8.path.name == "c_int8.onnx"
    # Only the TensorRT-style model: the CPU runs it, and says that it is slower than fp32.
    assert any("slower than fp32" in r.message and "--target cpu" in r.message for r in caplog.records)
    frames = _small(val_frames, 3)
    # A random net's logits are close together, so int8 moves many labels (measured: 61 % agree,
    # 15 % by chance, kappa 0.54); a broken int8 model agrees only by chance (kappa about 0).
    # The trained model's int8 agreement is checked in test_shipped_model.py.
    kappa = label_kappa([(fp32.infer(f)[0], int8.infer(f)[0]) for f in frames])
    assert kappa >= 0.2, kappa

    # The CPU INT8 model: its own file and card role; ONNX Runtime on the CPU now picks it,
    # TensorRT keeps the Q/DQ one.
    caplog.clear()
    rc, out, err = _run_cli(["quantize", "--onnx", src, "--calib-data", camvid_sample, "--num-images", 3,
                             "--target", "cpu"], capsys)
    assert rc == 0, err
    assert "onnx_int8_cpu" in out
    card = load_card(src)
    assert card.onnx_for("int8", "cpu") == (tmp_path / "c_int8_cpu.onnx").resolve()
    assert card.onnx_for("int8", "tensorrt") == (tmp_path / "c_int8.onnx").resolve()
    assert "QOperator" in card.training["quantization_cpu"]["format"]
    # the copies beside each INT8 file are the card itself, the first one too (it lacked the cpu file)
    for twin in ("c_int8.yaml", "c_int8_cpu.yaml"):
        assert (tmp_path / twin).read_text() == (tmp_path / "c.yaml").read_text(), twin
    cpu_model = onnx.load(str(tmp_path / "c_int8_cpu.onnx"))
    ops = {n.op_type for n in cpu_model.graph.node}
    assert "QLinearConv" in ops, ops
    # 7-bit weights: ONNX Runtime's u8s8 kernels on a CPU without VNNI (AVX2) add two products in 16
    # bits, which full-range weights saturate (essnet_d_camvid lost 18 mIoU on an AVX2 EPYC); 255 x 64 x 2 fits
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in cpu_model.graph.initializer}
    weights = [inits[n.input[3]] for n in cpu_model.graph.node if n.op_type == "QLinearConv"]
    assert weights and all(w.dtype == np.int8 and -64 <= int(w.min()) and int(w.max()) <= 64 for w in weights)
    assert any(int(w.max()) > 31 or int(w.min()) < -32 for w in weights)  # 7 bits used, not fewer
    with caplog.at_level(logging.INFO, logger="seg_perception"):
        cpu8 = create_backend("onnxruntime", card, "int8")
    assert cpu8.path.name == "c_int8_cpu.onnx"
    assert not any("slower than fp32" in r.message for r in caplog.records)
    # Timed against fp32 at start-up: a warning exactly where int8 is the slower one here.
    speed = cpu8.int8_speed_vs_fp32
    said = [r for r in caplog.records if f"runs at {speed:.2f}x the speed of fp32 on this CPU" in r.message]
    assert len(said) == 1 and (said[0].levelno == logging.WARNING) == (speed < 1.0), caplog.text
    assert fp32.int8_speed_vs_fp32 is None
    kappa = label_kappa([(fp32.infer(f)[0], cpu8.infer(f)[0]) for f in frames])  # measured 64 % agree
    assert kappa >= 0.2, kappa


@pytest.mark.skipif(not modelopt_available(), reason="nvidia-modelopt is not installed (optional)")
def test_modelopt_quantization_when_installed(quantized, tmp_path, camvid_sample):
    src, _ = quantized
    card = load_card(src)
    frames = calibration_frames(list_calibration_images(camvid_sample, 3), card, src)
    res = quantize_onnx(src, tmp_path / "mo_int8.onnx", frames, method="auto")
    info = inspect_qdq(res.path)
    assert res.method == "modelopt" and info["quantize_linear"] > 0 and info["per_channel"] > 0
    assert info["nonzero_zero_points"] == 0 and info["inputs"] == [("image", onnx.TensorProto.UINT8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mo_int8.onnx"]  # no intermediates left


def _conv_outputs_quantized_for(path) -> set:
    """Op types that read a convolution's output through its own Q/DQ pair."""
    g = onnx.load(str(path)).graph
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found = set()
    for conv in (n for n in g.node if n.op_type in ("Conv", "ConvTranspose")):
        for q in (r for r in readers.get(conv.output[0], []) if r.op_type == "QuantizeLinear"):
            for dq in readers.get(q.output[0], []):
                found |= {r.op_type for r in readers.get(dq.output[0], [])}
    return found


def test_conv_outputs_float_quantizes_only_the_inputs_of_convolutions(quantized, tmp_path, camvid_sample):
    """--conv-outputs float (TensorRT's Q/DQ guidance): a convolution's output is quantized only as the
    input of the next convolution; ONNX Runtime's default also quantizes it before Relu, Add, ArgMax."""
    src, default = quantized
    assert _conv_outputs_quantized_for(default.path) - {"Conv", "ConvTranspose"}  # e.g. the logits' ArgMax
    card = load_card(src)
    frames = calibration_frames(list_calibration_images(camvid_sample, 4), card, src)
    res = quantize_onnx(src, tmp_path / "f_int8.onnx", frames, method="ort", conv_outputs="float")
    assert res.conv_outputs == "float" and 0 < res.qdq_nodes < default.qdq_nodes
    assert _conv_outputs_quantized_for(res.path) <= {"Conv", "ConvTranspose"}
    with pytest.raises(RuntimeError, match="--conv-outputs float places the Q/DQ of --method ort"):
        quantize_onnx(src, tmp_path / "c.onnx", frames, target="cpu", conv_outputs="float")
    with pytest.raises(RuntimeError, match="unknown conv outputs 'fp16'"):
        quantize_onnx(src, tmp_path / "c.onnx", frames, conv_outputs="fp16")


def test_quantize_refuses_a_quantized_or_missing_model(quantized, tmp_path):
    _, res = quantized
    frame = [np.zeros((H, W, 3), np.uint8)]
    with pytest.raises(RuntimeError, match="already quantized"):
        quantize_onnx(res.path, tmp_path / "x.onnx", frame, method="ort")
    with pytest.raises(FileNotFoundError, match="run 'seg-perception export' first"):
        quantize_onnx(tmp_path / "none.onnx", tmp_path / "x.onnx", frame, method="ort")


def test_a_quantization_that_quantizes_nothing_leaves_the_old_int8_model(tmp_path):
    """A graph with nothing to quantize is an error, and the INT8 file already there (a good
    one from before) is not replaced by the unquantized result."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMax", ["f"], ["m"], keepdims=0, axes=[3]),
         helper.make_node("Cast", ["m"], ["labels"], to=TensorProto.UINT8)], "no_conv",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, H, W, 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, H, W])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    out = tmp_path / "m_int8.onnx"
    out.write_bytes(b"the good INT8 model")
    with pytest.raises(RuntimeError, match="gave no QuantizeLinear nodes: nothing was quantized"):
        quantize_onnx(tmp_path / "m.onnx", out, [np.zeros((H, W, 3), np.uint8)], method="ort")
    assert out.read_bytes() == b"the good INT8 model" and not list(tmp_path.glob("*.tmp"))


def test_calibration_images_of_a_folder_dataset_are_its_training_frames(tmp_path):
    """--calib-data pointed at a folder dataset's root calibrates on train/images, not on val's
    frames (the split INT8 is scored on) or on the label PNGs; a plain folder skips label folders."""
    def dataset(root, folder):  # folder(split, sub): where a split's images or labels go
        for split in ("train", "val"):
            for sub in ("images", "labels"):
                (root / folder(split, sub)).mkdir(parents=True)
                for i in range(3):
                    cv2.imwrite(str(root / folder(split, sub) / f"{split}{i}.png"), np.zeros((8, 8), np.uint8))
        return sorted(f.relative_to(root).as_posix() for f in list_calibration_images(root, 10))
    assert dataset(tmp_path / "ds", lambda split, sub: f"{split}/{sub}") == [f"train/images/train{i}.png"
                                                                             for i in range(3)]
    files = list_calibration_images(tmp_path / "ds" / "val", 10)  # a plain folder: its frames, not its labels
    assert sorted(f.parent.name for f in files) == ["images"] * 3
    # images/<split>/ + labels/<split>/ (mmsegmentation's layout): images/train alone (val was taken too)
    assert dataset(tmp_path / "mm", lambda split, sub: f"{sub}/{split}") == [f"images/train/train{i}.png"
                                                                             for i in range(3)]


# ------------------------------------------------------------------ engine cache (pure Python)
ENV = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "gpu_multiprocessors": 16}
SHAPE = (1, H, W, 3)


class StandInBuilder:
    """Stands in for TensorRT's builder (absent here): records calls, returns bytes."""

    def __init__(self):
        self.calls = []

    def __call__(self, onnx_path, precision, input_shape, workspace_mib, timing_cache, outputs):
        self.calls.append((Path(onnx_path).name, precision, tuple(input_shape), workspace_mib, timing_cache))
        self.outputs = tuple(outputs)
        return f"engine {precision} {len(self.calls)}".encode()


@pytest.fixture
def fp32_onnx(quantized, tmp_path):
    src, _ = quantized
    dst = tmp_path / "model.onnx"
    dst.write_bytes(Path(src).read_bytes())
    return dst


def _name(onnx_path, rest):
    """A cached engine's file name: the ONNX stem, its sha256's first 12 hex digits, then ``rest``."""
    return f"{Path(onnx_path).stem}.{sha256(onnx_path)[:12]}.{rest}"


def _ensure(onnx_path, cache, builder, rebuild=True, env=ENV, precision="fp32", shape=SHAPE,
            outputs=eng.ALL_OUTPUTS):
    return eng.ensure_engine(onnx_path, precision, shape, cache_dir=cache, rebuild=rebuild, env=dict(env),
                             builder=builder, workspace_mib=256, timing_cache="tc.cache", outputs=outputs)


def test_engine_is_built_once_with_a_sidecar(fp32_onnx, tmp_path):
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, decision = _ensure(fp32_onnx, cache, builder)
    assert decision.action == "build" and path == cache / _name(fp32_onnx, f"fp32.{W}x{H}.b1.engine")
    assert builder.calls == [("model.onnx", "fp32", SHAPE, 256, "tc.cache")]
    side = json.loads(eng.sidecar_path(path).read_text())
    assert {k: side[k] for k in eng.SIDECAR_FIELDS} == {
        "onnx_sha256": sha256(fp32_onnx), "tensorrt_version": "10.3.0", "gpu_name": "Orin",
        "compute_capability": "8.7", "gpu_multiprocessors": 16, "precision": "fp32", "input_shape": list(SHAPE),
        "outputs": ["labels", "confidence"], "tf32": False}
    assert builder.outputs == ("labels", "confidence")
    path2, decision2 = _ensure(fp32_onnx, cache, builder)
    assert decision2.action == "reuse" and path2 == path and len(builder.calls) == 1


@pytest.mark.parametrize("version,ok", [("8.4.1.5", False), ("7.1.3", False), ("8.5.2.2", True), ("8.6.2.3", True),
                                        ("10.3.0", True)])
def test_tensorrt_older_than_the_named_tensor_api_is_refused_up_front(monkeypatch, version, ok):
    # JetPack 5.0's TensorRT 8.4 has no execute_async_v3 / set_input_shape: one line at start-up,
    # not an AttributeError after a long engine build.
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__=version))
    if ok:
        assert eng.import_tensorrt().__version__ == version
    else:
        with pytest.raises(eng.EngineCacheError, match=rf"TensorRT {version} is too old: .* 8\.5 or newer"):
            eng.import_tensorrt()


def test_network_flags_ask_for_explicit_batch_before_tensorrt_10():
    """TensorRT 8.x (JetPack 5) builds an implicit-batch network from flag 0, which its ONNX
    parser refuses: explicit batch is asked for there; TensorRT 10 has only that mode (0)."""
    flags = SimpleNamespace(EXPLICIT_BATCH=0)
    assert eng.network_flags(SimpleNamespace(__version__="8.6.2.3", NetworkDefinitionCreationFlag=flags)) == 1
    assert eng.network_flags(SimpleNamespace(__version__="10.3.0", NetworkDefinitionCreationFlag=flags)) == 0
    assert eng.network_flags(SimpleNamespace(__version__="11.0.0", NetworkDefinitionCreationFlag=SimpleNamespace())) == 0


def test_two_processes_asking_for_one_engine_build_it_once(fp32_onnx, tmp_path):
    """Two nodes starting together need the same engine: the second waits for the first's build
    and reuses it, rather than building it too (minutes each, both in GPU memory)."""
    import threading
    import time
    cache = tmp_path / "cache"

    class Slow(StandInBuilder):
        def __call__(self, *a, **k):
            time.sleep(1.0)
            return super().__call__(*a, **k)
    builder, results = Slow(), []
    threads = [threading.Thread(target=lambda: results.append(_ensure(fp32_onnx, cache, builder))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builder.calls) == 1
    assert sorted(d.action for _, d in results) == ["build", "reuse"] and results[0][0] == results[1][0]
    assert any(d.reason == "built by another process while this one waited" for _, d in results)


def test_valid_engine_in_an_unwritable_cache_is_reused_without_writing(fp32_onnx, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path, _ = _ensure(fp32_onnx, cache, StandInBuilder())
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    os.chmod(cache, 0o555)
    try:
        # root ignores the mode bits, so make any write attempt fail loudly as well.
        def no_write(*a, **k):
            raise AssertionError("the cache was written although the engine is valid")
        monkeypatch.setattr(eng, "atomic_write", no_write)
        monkeypatch.setattr(eng, "_require_writable", no_write)
        p, decision = _ensure(fp32_onnx, cache, StandInBuilder())
        assert decision.action == "reuse" and p == path
        assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before
    finally:
        os.chmod(cache, 0o755)


STALE = {"onnx_sha256": "0" * 64, "tensorrt_version": "8.6.1", "gpu_name": "Xavier",
         "compute_capability": "7.2", "gpu_multiprocessors": 8, "precision": "fp16", "input_shape": [1, 360, 480, 3], "outputs": ["labels"],
         "tf32": True}


@pytest.mark.parametrize("field", eng.SIDECAR_FIELDS)
def test_each_stale_field_rebuilds_or_refuses(fp32_onnx, tmp_path, field):
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    side = json.loads(eng.sidecar_path(path).read_text())
    side[field] = STALE[field]
    eng.sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(eng.EngineCacheError) as e:
        _ensure(fp32_onnx, cache, builder, rebuild=False)
    assert f"built for {field} " in str(e.value) and "rebuild_engine is false" in str(e.value)
    assert len(builder.calls) == 1
    _, decision = _ensure(fp32_onnx, cache, builder)
    assert decision.action == "build" and decision.field == field and len(builder.calls) == 2
    assert path.read_bytes() == b"engine fp32 2"
    assert json.loads(eng.sidecar_path(path).read_text())[field] != STALE[field]
    assert _ensure(fp32_onnx, cache, builder)[1].action == "reuse"


def test_a_sidecar_written_before_the_multiprocessor_count_is_reused(fp32_onnx, tmp_path):
    """Every cached engine would otherwise be rebuilt (or refused with rebuild_engine false) on the
    first start after the field was added."""
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    side = json.loads(eng.sidecar_path(path).read_text())
    del side["gpu_multiprocessors"]
    eng.sidecar_path(path).write_text(json.dumps(side))
    assert _ensure(fp32_onnx, cache, builder, rebuild=False)[1].action == "reuse" and len(builder.calls) == 1


@pytest.mark.parametrize("sidecar", [None, "{not json", "[]"])
def test_missing_or_broken_sidecar_is_stale(fp32_onnx, tmp_path, sidecar):
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    if sidecar is None:
        eng.sidecar_path(path).unlink()
    else:
        eng.sidecar_path(path).write_text(sidecar)
    with pytest.raises(eng.EngineCacheError, match="sidecar JSON is missing or unreadable"):
        _ensure(fp32_onnx, cache, builder, rebuild=False)
    assert _ensure(fp32_onnx, cache, builder)[1].field == "sidecar"


def test_changed_onnx_or_environment_rebuilds(fp32_onnx, tmp_path, quantized):
    cache, builder = tmp_path / "cache", StandInBuilder()
    _ensure(fp32_onnx, cache, builder)
    thor = dict(ENV, gpu_name="Thor")
    assert _ensure(fp32_onnx, cache, builder, env=thor)[1].field == "gpu_name"
    # another size (or batch) is another engine, beside the first: neither rebuilds the other
    other, decision = _ensure(fp32_onnx, cache, builder, env=thor, shape=(2, 64, 64, 3))
    assert decision.action == "build" and other.name == _name(fp32_onnx, "fp32.64x64.b2.engine")
    assert _ensure(fp32_onnx, cache, builder, env=thor)[1].action == "reuse"
    assert _ensure(fp32_onnx, cache, builder, env=thor, shape=(2, 64, 64, 3))[1].action == "reuse"
    m = onnx.load(str(fp32_onnx))
    m.doc_string = "re-exported"  # any change of the file's bytes: another engine
    onnx.save(m, str(fp32_onnx))
    path, decision = _ensure(fp32_onnx, cache, builder, env=thor, shape=(2, 64, 64, 3))
    assert decision.action == "build" and path != other and len(builder.calls) == 4


def test_labels_only_engine_is_its_own_cache_entry(fp32_onnx, tmp_path):
    """The default node (no confidence published, no ground outputs) asks for an engine without
    the confidence output; it lives beside the full one, and the builder is told to leave it out."""
    cache, builder = tmp_path / "cache", StandInBuilder()
    full, _ = _ensure(fp32_onnx, cache, builder)
    path, decision = _ensure(fp32_onnx, cache, builder, outputs=("labels",))
    assert decision.action == "build" and path == cache / _name(fp32_onnx, f"fp32.{W}x{H}.b1.labels.engine")
    assert path != full
    assert builder.outputs == ("labels",)
    assert json.loads(eng.sidecar_path(path).read_text())["outputs"] == ["labels"]
    assert _ensure(fp32_onnx, cache, builder, outputs=("labels",))[1].action == "reuse"
    assert _ensure(fp32_onnx, cache, builder)[0] == full  # the full one is still there, still valid
    assert len(builder.calls) == 2
    with pytest.raises(ValueError, match="must hold 'labels'"):
        _ensure(fp32_onnx, cache, builder, outputs=("confidence",))


def test_labels_only_node_that_may_not_build_runs_the_full_engine(fp32_onnx, tmp_path):
    cache, builder = tmp_path / "cache", StandInBuilder()
    full, _ = _ensure(fp32_onnx, cache, builder)
    path, decision = _ensure(fp32_onnx, cache, builder, rebuild=False, outputs=("labels",))
    assert path == full and decision.action == "reuse" and "also computes confidence" in decision.reason
    assert len(builder.calls) == 1
    # with rebuild on, the labels-only engine is built
    path, decision = _ensure(fp32_onnx, cache, builder, outputs=("labels",))
    assert decision.action == "build" and path.name == _name(fp32_onnx, f"fp32.{W}x{H}.b1.labels.engine")


def test_sidecar_from_before_outputs_existed_stands_for_both(fp32_onnx, tmp_path):
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    side = json.loads(eng.sidecar_path(path).read_text())
    del side["outputs"]
    eng.sidecar_path(path).write_text(json.dumps(side))
    assert _ensure(fp32_onnx, cache, builder, rebuild=False)[1].action == "reuse"


def test_missing_engine_is_built_even_when_rebuild_is_false(fp32_onnx, tmp_path):
    builder = StandInBuilder()
    assert _ensure(fp32_onnx, tmp_path / "c", builder, rebuild=False)[1].action == "build"


def test_engine_that_must_be_built_in_an_unusable_folder(fp32_onnx, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(eng.EngineCacheError, match="cannot create engine cache folder .* engine_cache_dir"):
        _ensure(fp32_onnx, blocker / "engines", StandInBuilder())


def test_precision_must_match_the_onnx(fp32_onnx, quantized, tmp_path):
    _, res = quantized
    with pytest.raises(ValueError, match="no Q/DQ nodes"):
        _ensure(fp32_onnx, tmp_path, StandInBuilder(), precision="int8")
    with pytest.raises(ValueError, match="build it with --precision int8"):
        _ensure(res.path, tmp_path, StandInBuilder(), precision="fp16")
    path, _ = _ensure(res.path, tmp_path, StandInBuilder(), precision="int8")
    assert path.name == _name(res.path, f"int8.{W}x{H}.b1.engine")


def test_decide_is_pure():
    key = eng.EngineKey("ab", "10.3", "Orin", "8.7", "fp16", (1, 8, 8, 3))
    good = key.to_dict()
    assert eng.decide(False, good, key).action == "build"
    assert eng.decide(True, good, key, rebuild=False).action == "reuse"
    assert eng.decide(True, dict(good, precision="fp32"), key, rebuild=False) == eng.CacheDecision(
        "refuse", "the cached engine is stale: it was built for precision 'fp32', now 'fp16'", "precision")


def test_fp32_engines_are_built_without_tf32_and_older_ones_rebuilt(fp32_onnx, tmp_path):
    """An fp32 engine is full fp32 (TensorRT would allow TF32 by default); the sidecar says so, and
    an fp32 engine cached before the field existed (built with TF32 allowed) is rebuilt, while
    fp16 and int8 engines of that time are still good."""
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    meta = json.loads(eng.sidecar_path(path).read_text())
    assert meta["tf32"] is False and meta["precision"] == "fp32"
    del meta["tf32"]
    eng.sidecar_path(path).write_text(json.dumps(meta))
    path, decision = _ensure(fp32_onnx, cache, builder)
    assert decision.action == "build" and decision.field == "tf32", decision
    key = eng.EngineKey("ab", "10.3", "Orin", "8.7", "fp16", (1, 8, 8, 3), tf32=eng.uses_tf32("fp16"))
    old = {k: v for k, v in key.to_dict().items() if k != "tf32"}
    assert eng.decide(True, old, key).action == "reuse"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SEG_PERCEPTION_ENGINE_CACHE", raising=False)
    monkeypatch.delenv("SEG_PERCEPTION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert eng.default_cache_dir() == tmp_path / "seg_perception" / "engines"
    monkeypatch.setenv("SEG_PERCEPTION_CACHE", str(tmp_path / "c"))  # the one cache folder of the package
    assert eng.default_cache_dir() == tmp_path / "c" / "engines"
    monkeypatch.setenv("SEG_PERCEPTION_ENGINE_CACHE", str(tmp_path / "e"))
    assert eng.default_cache_dir() == tmp_path / "e"


def test_two_onnx_files_of_one_name_keep_their_own_engines(fp32_onnx, tmp_path):
    """A run's export named like the shipped model (runs/e/rdsnet_camvid.onnx) had the same engine
    file: each alternation rebuilt it (minutes on a Jetson), and rebuild_engine false refused."""
    other = tmp_path / "export" / fp32_onnx.name
    other.parent.mkdir()
    m = onnx.load(str(fp32_onnx))
    m.doc_string = "another export"
    onnx.save(m, str(other))
    cache, builder = tmp_path / "cache", StandInBuilder()
    first, _ = _ensure(fp32_onnx, cache, builder)
    second, _ = _ensure(other, cache, builder)
    assert first != second and second.name == _name(other, f"fp32.{W}x{H}.b1.engine")
    for onnx_path, path in ((fp32_onnx, first), (other, second), (fp32_onnx, first)):
        assert _ensure(onnx_path, cache, builder, rebuild=False) == (path, _ensure(onnx_path, cache, builder)[1])
    assert len(builder.calls) == 2
    # build-engine --force names the engine from the ONNX file alone
    assert eng.engine_path(cache, other, "fp32", SHAPE) == second


@pytest.mark.parametrize("damage", [b"", b"engine fp32 X"])  # a write cut by a power loss; another build's file
def test_an_engine_file_other_than_its_sidecar_records_is_stale(fp32_onnx, tmp_path, damage):
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    path.write_bytes(damage)
    with pytest.raises(eng.EngineCacheError, match="not the one its sidecar records .*rebuild_engine is false"):
        _ensure(fp32_onnx, cache, builder, rebuild=False)
    _, decision = _ensure(fp32_onnx, cache, builder)
    assert decision.action == "build" and decision.field == "engine_sha256" and path.read_bytes() == b"engine fp32 2"
    side = json.loads(eng.sidecar_path(path).read_text())
    assert (side["engine_sha256"], side["engine_size"]) == (sha256(path), len(b"engine fp32 2"))
    decision = _ensure(fp32_onnx, cache, builder, rebuild=False)[1]
    assert (decision.action, decision.engine_sha256, decision.engine_size) == ("reuse", sha256(path), 13)


def test_an_engine_cache_that_cannot_be_written_says_so_in_one_line(fp32_onnx, tmp_path, monkeypatch):
    import errno

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(eng, "atomic_write", full)
    with pytest.raises(eng.EngineCacheError, match=r"cannot write engine .* \(No space left on device\): .*"
                                                   r"engine_cache_dir"):
        _ensure(fp32_onnx, tmp_path / "cache", StandInBuilder())


def test_builds_at_once_keep_each_others_timing_cache_entries(monkeypatch, tmp_path):
    """Engine locks are per engine, the timing cache is shared: a build that read it before another
    build saved must merge, not replace it with its own entries (under the file's own lock)."""
    import fcntl
    fake = FakeTensorRT((-1, -1, -1, 3))
    monkeypatch.setattr(eng, "import_tensorrt", lambda: fake)
    tc = tmp_path / "timing.cache"
    tc.write_bytes(b"old")
    real_write, held = eng.atomic_write, []

    def write(path, data):
        if Path(path) == tc:  # the lock is held while the cache is replaced
            with open(str(tc) + ".lock", "a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append(False)
                    fcntl.flock(f, fcntl.LOCK_UN)
                except BlockingIOError:
                    held.append(True)
        return real_write(path, data)
    monkeypatch.setattr(eng, "atomic_write", write)
    # the fp16 build runs whole while the fp32 build (which read the cache first) is building
    fake.during_build = [lambda: eng.build_serialized_engine(tmp_path / "m.onnx", "fp16", SHAPE, timing_cache=tc)]
    eng.build_serialized_engine(tmp_path / "m.onnx", "fp32", SHAPE, timing_cache=tc)
    assert tc.read_bytes().split(b"\n") == [b"old", b"timings 1", b"timings 2"]
    assert held == [True, True]


# ------------------------------------------------------------------ TensorRT and CUDA that do not start
class StandInCudart:
    """Stands in for cuda-python's runtime (absent here): a driver, devices and buffers that
    record the bytes each copy moves."""

    class cudaError_t:
        cudaSuccess, cudaErrorInsufficientDriver, cudaErrorNoDevice = 0, 35, 100

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    TEXT = {35: b"CUDA driver version is insufficient for CUDA runtime version",
            100: b"no CUDA-capable device is detected"}

    def __init__(self, device_error=0, devices=1, driver=12020, runtime=13000):
        self.device_error, self.devices, self.driver, self.runtime = device_error, devices, driver, runtime
        self.copies, self._host = [], []

    def cudaGetDeviceCount(self):
        return (self.device_error, self.devices if not self.device_error else 0)

    def cudaGetErrorString(self, err):
        return (0, self.TEXT[err])

    def cudaDriverGetVersion(self):
        return (0, self.driver)

    def cudaRuntimeGetVersion(self):
        return (0, self.runtime)

    def cudaStreamCreate(self):
        return (0, 1)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    cudaStreamDestroy = cudaStreamSynchronize

    def cudaMallocHost(self, nbytes):
        buf = (ctypes.c_uint8 * nbytes)()
        self._host.append(buf)
        return (0, ctypes.addressof(buf))

    def cudaMalloc(self, nbytes):
        return (0, 4096)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.copies.append((kind, count))
        return (0,)

    def cudaFree(self, ptr):
        return (0,)

    cudaFreeHost = cudaFree


def test_tensorrt_that_cannot_reach_the_gpu_is_named_and_auto_takes_onnxruntime(quantized, monkeypatch, caplog):
    """TensorRT imports on a machine whose GPU CUDA cannot use (a container without --runtime
    nvidia, no rights to the devices, cuda-python 13 on JetPack 6's CUDA 12 driver): `auto` took
    TensorRT, and trt.Runtime raised pybind11's "factory function returned nullptr" TypeError,
    which the node did not catch. Now `auto` takes ONNX Runtime, and the reason says what to do."""
    from seg_perception.runtime import cuda
    from seg_perception.runtime.backends import tensorrt_missing
    src, _ = quantized
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="10.3.0"))
    for cudart, reason in [
            (StandInCudart(device_error=35, driver=12020), "no usable CUDA GPU (CUDA error: CUDA driver version is "
             "insufficient for CUDA runtime version: this driver runs CUDA 12.2; pip install 'cuda-python==12.*')"),
            (StandInCudart(device_error=35, driver=12020, runtime=12060), "no usable CUDA GPU (CUDA error: CUDA "
             "driver version is insufficient for CUDA runtime version: this driver runs CUDA 12.2, cuda-python needs "
             "CUDA 12.6: update the NVIDIA driver)"),
            (StandInCudart(device_error=35, driver=0), "no usable CUDA GPU (CUDA error: CUDA driver version is "
             "insufficient for CUDA runtime version: no NVIDIA driver is visible to this process (in a container: "
             "--runtime nvidia or --gpus all))"),
            (StandInCudart(device_error=100), "no usable CUDA GPU (CUDA error: no CUDA-capable device is detected)"),
            (StandInCudart(devices=0), "no CUDA GPU found (cudaGetDeviceCount: 0)")]:
        monkeypatch.setattr(cuda, "import_cudart", lambda c=cudart: c)
        assert tensorrt_missing() == reason
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            be = create_backend("auto", load_card(src), precision="fp32")
        assert isinstance(be, OnnxRuntimeBackend)
        assert [r.getMessage() for r in caplog.records] == [f"backend 'auto' falls back to onnxruntime: {reason}"]
    monkeypatch.setattr(cuda, "import_cudart", lambda: StandInCudart())
    assert tensorrt_missing() is None  # a GPU that CUDA reaches: TensorRT's

    def nullptr(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")
    with pytest.raises(eng.EngineCacheError, match=r"^TensorRT could not create its trt.Runtime: its messages above "
                                                  r"say why; most often CUDA did not start \(in a container, run it "
                                                  r"with --runtime nvidia"):
        eng.trt_object(nullptr, None, "trt.Runtime")
    with pytest.raises(eng.EngineCacheError, match=r"could not create its trt.Builder"):
        eng.trt_object(lambda logger: None, None, "trt.Builder")

    def mistake(logger):
        raise TypeError("__init__(): incompatible constructor arguments")
    with pytest.raises(TypeError, match="incompatible"):  # a TypeError of another kind is no GPU problem
        eng.trt_object(mistake, None, "trt.Runtime")


class StandInEngine:
    """An export-made engine's interface (uint8 'image' in, 'labels' and float 'confidence' out,
    the batch dynamic up to ``max_batch``); ``context=False``: TensorRT could not make one."""

    NAMES = ("image", "labels", "confidence")

    def __init__(self, context=True, max_batch=2):
        self.num_io_tensors, self.max_batch, self.make_context = 3, max_batch, context

    def create_execution_context(self):
        return StandInContext() if self.make_context else None

    def get_tensor_name(self, i):
        return self.NAMES[i]

    def get_tensor_mode(self, name):
        return "input" if name == "image" else "output"

    def get_tensor_shape(self, name):
        return (-1, H, W, 3) if name == "image" else (-1, H, W)

    def get_tensor_dtype(self, name):
        return "float" if name == "confidence" else "uint8"

    def get_tensor_profile_shape(self, name, profile):
        return [(1, H, W, 3), (self.max_batch, H, W, 3), (self.max_batch, H, W, 3)]


class StandInContext:
    def __init__(self):
        self.batch = 1

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name):
        return (self.batch, H, W, 3) if name == "image" else (self.batch, H, W)

    def set_tensor_address(self, name, address):
        return True

    def execute_async_v3(self, stream):
        return True


def _standin_tensorrt(monkeypatch, engine, decision: str):
    """The backend's start on a stand-in TensorRT whose runtime loads ``engine`` from a cache that
    decided ``decision`` (build / reuse): (the backend class, its cudart, the Runtime's logger)."""
    from seg_perception.runtime import tensorrt_backend
    logger_cls = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    loggers = []

    def runtime(logger):
        loggers.append(logger)
        return SimpleNamespace(deserialize_cuda_engine=lambda blob: trt.loaded.append(blob) or engine)
    trt = SimpleNamespace(__version__="10.3.0", Logger=logger_cls, Runtime=runtime, loaded=[],
                          TensorIOMode=SimpleNamespace(INPUT="input"),
                          DataType=SimpleNamespace(UINT8="uint8", FLOAT="float"))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cudart = StandInCudart()
    monkeypatch.setattr(tensorrt_backend, "import_cudart", lambda: cudart)

    def ensure(onnx_path, precision, shape, cache_dir=None, **kw):
        path = Path(cache_dir) / "m.fp16.engine"
        path.write_bytes(b"engine")
        return path, eng.CacheDecision(decision, "", engine_sha256=hashlib.sha256(b"engine").hexdigest(), engine_size=6)
    monkeypatch.setattr(eng, "ensure_engine", ensure)
    return tensorrt_backend.TensorRTBackend, cudart, loggers


def test_tensorrt_that_cannot_load_or_run_an_engine_says_why(quantized, monkeypatch, tmp_path):
    """An engine just built that does not load was answered "delete it to rebuild it" (the build
    would fail the same way); an execution context TensorRT could not allocate (GPU memory: an
    Orin Nano with two workers) came back None and failed later as an AttributeError."""
    src, _ = quantized
    backend, _, _ = _standin_tensorrt(monkeypatch, None, "build")
    with pytest.raises(BackendError, match=r"TensorRT built .*m.fp16.engine but cannot load it: its messages above "
                                           r"say why \(most often too little free GPU memory\)"):
        backend(load_card(src), W, H, "fp16", cache_dir=tmp_path)
    backend, _, _ = _standin_tensorrt(monkeypatch, None, "reuse")
    with pytest.raises(BackendError, match=r"TensorRT cannot load engine .*m.fp16.engine, though the file is intact"):
        backend(load_card(src), W, H, "fp16", cache_dir=tmp_path)
    backend, _, _ = _standin_tensorrt(monkeypatch, StandInEngine(context=False), "build")
    with pytest.raises(BackendError, match=r"TensorRT cannot create an execution context for m.fp16.engine: too "
                                           r"little free GPU memory"):
        backend(load_card(src), W, H, "fp16", cache_dir=tmp_path)


def _standin_tensorrt_on_the_cache(monkeypatch, engine, builder, after=None):
    """_standin_tensorrt's backend on the real engine cache (stand-in builder, ENV); ``after(path)``
    runs after each ensure_engine, before the backend reads the engine."""
    ensure = eng.ensure_engine
    backend, _, _ = _standin_tensorrt(monkeypatch, engine, "reuse")

    def on_cache(*a, **k):
        path, decision = ensure(*a, **dict(k, env=dict(ENV), builder=builder))
        if after:
            after(path)
        return path, decision
    monkeypatch.setattr(eng, "ensure_engine", on_cache)
    return backend


@pytest.mark.parametrize("rebuild", [True, False])
def test_an_intact_engine_tensorrt_cannot_load_is_kept(quantized, fp32_onnx, monkeypatch, tmp_path, rebuild):
    """A valid engine that TensorRT did not load (short GPU memory) was taken for a damaged file: its
    sidecar deleted (PermissionError in a read-only cache) and a rebuild tried, which needs more memory."""
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    backend = _standin_tensorrt_on_the_cache(monkeypatch, None, builder)
    with pytest.raises(BackendError, match=r"cannot load engine .*, though the file is intact .*GPU memory") as e:
        backend(load_card(quantized[0]), W, H, "fp32", onnx_path=fp32_onnx, cache_dir=cache, rebuild=rebuild)
    assert "\n" not in str(e.value)
    assert len(builder.calls) == 1 and eng.sidecar_path(path).is_file()
    assert sys.modules["tensorrt"].loaded == [b"engine fp32 1"]


def test_an_engine_replaced_after_the_cache_checked_it_is_not_loaded(quantized, fp32_onnx, monkeypatch, tmp_path):
    """Between the cache's check and the backend's read another writer (a second node, build-engine
    --force) may replace the file: those bytes were loaded unchecked."""
    cache, builder = tmp_path / "cache", StandInBuilder()
    path, _ = _ensure(fp32_onnx, cache, builder)
    replaced = []

    def another_writer(path):
        if not replaced:
            replaced.append(path.read_bytes())
            path.write_bytes(b"another model's engine")
    backend = _standin_tensorrt_on_the_cache(monkeypatch, StandInEngine(), builder, another_writer)
    be = backend(load_card(quantized[0]), W, H, "fp32", onnx_path=fp32_onnx, cache_dir=cache, warmup_runs=0)
    # decided again: the file no longer matched its sidecar, so it was rebuilt and that one loaded
    assert be.cache_decision.field == "engine_sha256" and len(builder.calls) == 2
    assert sys.modules["tensorrt"].loaded == [b"engine fp32 2"] == [path.read_bytes()]
    be.close()


def test_two_exports_of_one_model_at_once_each_finish(tmp_path, monkeypatch):
    """Two processes exporting the same model into the cache at once (two nodes started on a model
    without its ONNX file): both wrote `<name>.onnx.tmp`, the second renamed it away, and the first
    failed with FileNotFoundError on its own rename."""
    import torch
    card = load_card(make_random_model(tmp_path, "essnet_d", W, H, onnx=False))
    out, real, others = tmp_path / "cache" / "m.onnx", torch.onnx.export, []
    out.parent.mkdir()

    def export_then_another_finishes(*args, dynamo=False, **kw):
        real(*args, dynamo=dynamo, **kw)
        if not others:  # the other process's whole export, between this one's write and its rename
            others.append("started")
            others.append(export_onnx(card, out))
    monkeypatch.setattr(torch.onnx, "export", export_then_another_finishes)
    assert export_onnx(card, out) == out and others == ["started", out]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.yaml"]  # no temporary file left
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_atomic_write_syncs_the_data_before_the_rename(tmp_path, monkeypatch):
    """Without fsync a power cut just after a first build could leave an empty engine under its name."""
    from seg_perception import files
    events, fsync, rename = [], os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_size)), fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), rename(a, b))[1])
    files.atomic_write(tmp_path / "e.engine", b"12345")
    assert events == [("fsync", 5), ("replace", "e.engine")] and (tmp_path / "e.engine").read_bytes() == b"12345"


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """A writer killed between its write and its rename (SIGKILL mid-export) left its uniquely named
    `<name>.<pid>.<random>.tmp` in the cache for good. The next write of that name removes it; a
    live writer's file, a fresh one (maybe another machine's, on a shared folder) and those of other
    names stay."""
    import subprocess
    from seg_perception import files
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid whose process has ended
    old = time.time() - files.STALE_AFTER_S - 60
    stale = tmp_path / f"m.onnx.{gone.pid}.0a1b2c3d.tmp"
    fresh = tmp_path / f"m.onnx.{gone.pid}.11111111.tmp"
    live = tmp_path / f"m.onnx.{os.getpid()}.22222222.tmp"
    other = tmp_path / f"n.onnx.{gone.pid}.33333333.tmp"
    # names of another kind (not temporary_beside's) stay, and do not stop the write
    odd = [tmp_path / n for n in (f"m.onnx.{gone.pid}.notours.tmp", "m.onnx.\u00b2.0a1b2c3d.tmp",
                                  f"m.onnx.1.{gone.pid}.0a1b2c3d.tmp", "m.onnx.99999999999999999999.0a1b2c3d.tmp")]
    for p in (stale, fresh, live, other, *odd):
        p.write_bytes(b"half")
    for p in (stale, live, other, *odd):
        os.utime(p, (old, old))
    files.atomic_write(tmp_path / "m.onnx", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.onnx", fresh.name, live.name, other.name] + [p.name for p in odd])
    with files.written_whole(tmp_path / "n.onnx") as tmp:
        tmp.write_bytes(b"whole")
    assert not other.exists() and (tmp_path / "n.onnx").read_bytes() == b"whole"


def test_one_camera_frame_copies_one_frame_of_a_batch_buffer(quantized, monkeypatch, tmp_path):
    """Buffers are sized for max_batch frames (several cameras); a single frame's call copied the
    whole buffer both ways, N times the bytes. And the backend's Runtime has the process's one
    TensorRT logger, the one the engine build gives its Builder."""
    from seg_perception.runtime.cuda import IOBuffer
    src, _ = quantized
    backend, cudart, loggers = _standin_tensorrt(monkeypatch, StandInEngine(max_batch=2), "reuse")
    be = backend(load_card(src), W, H, "fp16", cache_dir=tmp_path, max_batch=2, warmup_runs=0)
    assert be.max_batch == 2 and be._buffers["image"].shape == (2, H, W, 3)
    assert loggers == [eng.trt_logger(sys.modules["tensorrt"])]
    frame = np.zeros((H, W, 3), np.uint8)
    del cudart.copies[:]
    labels, conf = be.infer(frame)
    assert labels.shape == (H, W) and conf.shape == (H, W)
    assert cudart.copies == [(1, H * W * 3), (2, H * W), (2, H * W * 4)]  # one frame of two, each way
    del cudart.copies[:]
    labels, conf = be.infer_batch(np.stack([frame, frame]))
    assert labels.shape == (2, H, W)
    assert cudart.copies == [(1, 2 * H * W * 3), (2, 2 * H * W), (2, 2 * H * W * 4)]
    buf = IOBuffer(cudart, (4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="5 frames do not fit a buffer of 4"):
        buf.to_device(None, frames=5)  # never past the allocations


def test_int8_on_a_gpu_without_int8_kernels_is_refused(monkeypatch, caplog):
    """An int8 build on a GPU without fast int8 (some Pascal GeForce) failed with TensorRT's
    internal error; the builder says so first (8.5-10.x)."""
    logger_cls = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    builder = SimpleNamespace(platform_has_fast_int8=False, platform_has_fast_fp16=False)
    trt = SimpleNamespace(__version__="10.3.0", Logger=logger_cls, Builder=lambda logger: builder)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(eng.EngineCacheError, match=r"^this GPU has no fast INT8 kernels .*: use precision fp16 or "
                                                  r"fp32"):
        eng.build_serialized_engine("m.onnx", "int8", SHAPE)
    with caplog.at_level(logging.WARNING):
        eng._check_platform(builder, "fp16")
    assert "no fast FP16 kernels" in caplog.text
    eng._check_platform(SimpleNamespace(), "int8")  # TensorRT 11: no such attribute, no refusal


# ------------------------------------------------------------------ without TensorRT
@needs_no_tensorrt
def test_tensorrt_backend_without_tensorrt_says_how_to_get_it(quantized):
    from seg_perception.runtime.tensorrt_backend import TensorRTBackend
    src, _ = quantized
    with pytest.raises(BackendError, match="TensorRT is not installed: on a Jetson it comes with JetPack"):
        TensorRTBackend(load_card(src), W, H, "fp16")


@needs_no_tensorrt
def test_auto_backend_falls_back_with_exactly_one_warning(quantized, caplog, val_frames):
    src, _ = quantized
    with caplog.at_level(logging.WARNING):
        be = create_backend("auto", load_card(src), precision="fp32")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "falls back to onnxruntime" in warnings[0].getMessage()
    assert isinstance(be, OnnxRuntimeBackend)
    labels, _ = be.infer(_small(val_frames, 1)[0])
    assert labels.shape == (H, W)
    with pytest.raises(BackendError, match="backend .tensorrt. cannot run here: TensorRT is not installed"):
        create_backend("tensorrt", load_card(src))


# ------------------------------------------------------------------ CLI errors are one line
@pytest.mark.parametrize("argv,message", [
    (["bench", "--resolution", "480x36"], "must be positive multiples of 8"),
    (["bench", "--resolution", "wide"], "is not WIDTHxHEIGHT"),
    (["bench", "--models", "segnet9000"], "unknown model 'segnet9000'; valid choices: "),
    (["bench", "--backend", "tflite"], "unknown backend 'tflite'"),
    (["build-engine", "--onnx", "ONNX", "--precision", "fp64"], "unknown precision 'fp64'; valid choices"),
    (["build-engine", "--onnx", "missing.onnx"], "not found: run 'seg-perception export' first"),
    (["quantize", "--onnx", "ONNX", "--method", "magic"], "unknown method 'magic'"),
    (["quantize", "--onnx", "ONNX", "--num-images", "0"], "--num-images must be at least 1"),
    (["quantize", "--onnx", "ONNX", "--calib-data", "/nonexistent"], "calibration data folder"),
    (["export", "--model", "essnet_d"], "pass --weights"),
    (["export", "--model", "no_such_model"], "unknown model 'no_such_model'"),
    (["doctor", "--runs", "0"], "--runs must be at least 1"),
    (["doctor", "--batch", "0"], "--batch must be at least 1"),
    (["doctor", "--workspace", "-5"], "--workspace must be at least 1"),  # as build-engine says
    (["build-engine", "--onnx", "ONNX", "--workspace", "-5"], "--workspace must be at least 1"),
    (["doctor", "--model", "ONNX", "--precisions", "fp8"], "unknown precision 'fp8'"),
])
def test_cli_errors_are_one_line(argv, message, capsys, quantized):
    src, _ = quantized
    argv = [str(src) if a == "ONNX" else a for a in argv]
    rc, _, err = _run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"seg-perception {argv[0]}: error: ") and message in lines[0]


@needs_no_tensorrt
def test_build_engine_without_tensorrt_is_one_line(quantized, capsys):
    src, _ = quantized
    rc, _, err = _run_cli(["build-engine", "--onnx", src, "--precision", "fp32"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "TensorRT is not installed" in err


@needs_no_tensorrt
def test_build_engine_finds_the_card_of_a_shipped_int8_file(capsys):
    """models/ ships NAME_int8.onnx without a NAME_int8.yaml (NAME.yaml lists it): the documented
    build-engine line must get past the card to TensorRT; the CPU INT8 file is not TensorRT's."""
    from conftest import REPO
    models = REPO / "models"
    rc, _, err = _run_cli(["build-engine", "--onnx", models / "rdsnet_camvid_int8.onnx", "--precision", "int8"],
                          capsys)
    assert rc == 2 and "TensorRT is not installed" in err, err
    rc, _, err = _run_cli(["build-engine", "--onnx", models / "rdsnet_camvid_int8_cpu.onnx", "--precision", "int8"],
                          capsys)
    assert rc == 2 and "for ONNX Runtime on a CPU (quantize --target cpu)" in err and \
        f"pass {models / 'rdsnet_camvid_int8.onnx'}" in err, err


# ------------------------------------------------------------------ doctor and bench
@needs_no_tensorrt
def test_doctor_without_tensorrt_reports_and_fails(quantized, capsys, camvid_sample, tmp_path):
    src, _ = quantized
    rc, out, err = _run_cli(["doctor", "--model", src, "--frames", camvid_sample / "val", "--num-frames", 2,
                             "--runs", 5, "--cache-dir", tmp_path], capsys)
    assert rc == 1, err
    assert "tensorrt: not installed" in out and "onnxruntime:" in out
    assert "| onnxruntime | fp32 | ok |" in out
    assert "| tensorrt | fp16 | skipped |" in out and "no usable TensorRT (see RESULT)" in out
    assert "| tensorrt x2 | fp16 | skipped |" in out  # the several-camera engine check has its row
    assert "| tensorrt labels only | fp16 | skipped |" in out  # the engine the default node runs
    assert "RESULT: no engine was built: TensorRT is not installed: on a Jetson it comes with JetPack" in out
    assert "| onnxruntime | int8 |" in out  # the INT8 engine's reference (this model has none: said so)
    rc, out, err = _run_cli(["doctor", "--model", src, "--frames", camvid_sample / "val", "--num-frames", 2,
                             "--runs", 5, "--cache-dir", tmp_path, "--precisions", "fp32", "--batch", 1], capsys)
    assert "| onnxruntime | fp32 | ok |" in out and "| onnxruntime | int8 |" not in out  # no INT8 engine asked


def test_jetson_doctor_script_runs_the_doctor():
    import subprocess
    script = Path(__file__).resolve().parents[1] / "scripts" / "jetson_doctor.sh"
    res = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 0, res.stderr
    assert "usage: seg-perception doctor" in res.stdout and "--frames" in res.stdout
    if not tensorrt_installed():
        assert "cannot import tensorrt" in res.stderr and "python3-libnvinfer" in res.stderr


def test_doctor_frames_from_a_folder_or_synthetic(camvid_sample, monkeypatch):
    from seg_perception.deploy import doctor
    frames, note = doctor.load_frames(camvid_sample / "val", 2)
    assert len(frames) == 2 and frames[0][1] == "rgb" and frames[0][0].shape == (360, 480, 3)
    assert "2 frames from" in note
    bag = doctor.default_frames_source()  # the sample bag ships with the package
    assert bag is not None and (bag / "metadata.yaml").is_file(), bag
    frames, note = doctor.load_frames(None, 2)
    assert len(frames) == 2 and frames[0][0].dtype == np.uint8 and frames[0][0].ndim == 3
    assert str(bag) in note
    monkeypatch.setattr(doctor, "default_frames_source", lambda: None)
    frames, note = doctor.load_frames(None, 3)
    assert len(frames) == 3 and "synthetic" in note
    with pytest.raises(FileNotFoundError, match="frames source .* not found"):
        doctor.load_frames(camvid_sample / "nope", 2)


def test_bench_two_networks(tmp_path, capsys):
    js = tmp_path / "bench.json"
    rc, out, err = _run_cli(["bench", "--models", "essnet_d", "--backend", "onnxruntime", "--resolution",
                             f"{W}x{H}", "--runs", 2, "--warmup", 1, "--threads", 1, "--quant-method", "ort",
                             "--json", js], capsys)
    assert rc == 0, err
    res = json.loads(js.read_text())
    rows = {(r["model"], r["precision"]): r for r in res["rows"]}
    assert set(rows) == {("essnet_d", "fp32"), ("essnet_d", "int8"), ("erfnet", "fp32"), ("erfnet", "int8")}
    assert rows[("erfnet", "fp32")]["vs_erfnet"] == 1.0
    assert rows[("essnet_d", "fp32")]["params_m"] < rows[("erfnet", "fp32")]["params_m"]
    for r in rows.values():
        assert r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] and r["fps"] > 0 and r["gmacs"] > 0
        base = rows[("erfnet", r["precision"])]["p50_ms"]
        assert r["vs_erfnet"] == pytest.approx(base / r["p50_ms"], rel=0.02, abs=0.006)
    assert res["environment"]["weights"].startswith("random")
    assert "| model | backend | precision | params (M) | GMACs |" in out and "| essnet_d | onnxruntime | int8 |" in out


# ------------------------------------------------------------------ TensorRT on a GPU
def _trt_gpu_reason():
    if not tensorrt_installed():
        return "TensorRT is not installed"
    try:
        from seg_perception.runtime.cuda import gpu_properties
        gpu_properties()
    except Exception as e:
        return f"no usable GPU through cuda-python ({str(e).splitlines()[0]})"
    return ""


@pytest.mark.skipif(bool(_trt_gpu_reason()), reason=_trt_gpu_reason() or "TensorRT and a GPU are here")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_agrees_with_onnxruntime(shipped_model, tmp_path, val_frames, precision):
    """The shipped trained model (a random one's logits lie too close together for fp16 and int8 to
    keep its labels), its own files for each precision, at its card's size."""
    from seg_perception.runtime.tensorrt_backend import TensorRTBackend
    card = load_card(shipped_model)
    w, h = card.input_width, card.input_height
    onnx_path = card.file("onnx_int8" if precision == "int8" else "onnx")
    trt_be = TensorRTBackend(card, w, h, precision, onnx_path=onnx_path, cache_dir=tmp_path)
    ref = OnnxRuntimeBackend(card, w, h, "int8" if precision == "int8" else "fp32", onnx_path=onnx_path)
    frames = [np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)) for img, _ in val_frames[:3]]
    agree = np.mean([(trt_be.infer(f)[0] == ref.infer(f)[0]).mean() for f in frames])
    assert agree >= {"fp32": 0.995, "fp16": 0.99, "int8": 0.97}[precision]
    again = TensorRTBackend(card, w, h, precision, onnx_path=onnx_path, cache_dir=tmp_path, rebuild=False)
    assert again.cache_decision.action == "reuse"
    trt_be.close()
    again.close()


def test_more_cameras_rebuild_the_engine_for_their_batch(fp32_onnx, tmp_path):
    """A node with two cameras asks for a batch-2 engine (tensorrt_backend passes (cameras, H, W, 3)):
    built beside the batch-1 engine (which one camera still reuses), the builder given the batch
    to profile."""
    cache, builder = tmp_path / "cache", StandInBuilder()
    one, _ = _ensure(fp32_onnx, cache, builder)
    path, decision = _ensure(fp32_onnx, cache, builder, shape=(2, H, W, 3))
    assert decision.action == "build" and path != one, decision
    assert builder.calls[-1][2] == (2, H, W, 3)
    assert json.loads(eng.sidecar_path(path).read_text())["input_shape"] == [2, H, W, 3]
    assert _ensure(fp32_onnx, cache, builder, shape=(2, H, W, 3))[1].action == "reuse"
    assert _ensure(fp32_onnx, cache, builder)[1].action == "reuse" and len(builder.calls) == 2


def test_a_timing_cache_from_another_tensorrt_or_gpu_is_replaced(tmp_path, caplog):
    """TensorRT refuses a timing cache written by another version (the blob does not parse) or
    another GPU (set_timing_cache returns false without ignore_mismatch): the build starts an
    empty cache rather than running with none and never saving a usable one."""
    import logging

    class StandInConfig:  # TensorRT's IBuilderConfig (absent here): what the docs say it returns
        def __init__(self, refuse):
            self.refuse, self.attached = refuse, None

        def create_timing_cache(self, blob):
            if blob == b"other version":
                raise RuntimeError("cannot deserialize the timing cache")
            return ("cache", blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            if cache[1] == self.refuse:
                return False
            self.attached = cache
            return True

    tc = tmp_path / "timing.cache"
    tc.write_bytes(b"this gpu")
    with caplog.at_level(logging.WARNING):
        assert eng._attach_timing_cache(StandInConfig(refuse=None), tc) == ("cache", b"this gpu")
        assert not caplog.records
        for blob, config in ((b"other version", StandInConfig(refuse=None)),
                             (b"other gpu", StandInConfig(refuse=b"other gpu"))):
            tc.write_bytes(blob)
            assert eng._attach_timing_cache(config, tc) == ("cache", b"") == config.attached
        assert [r.getMessage().endswith("starts an empty one and replaces it") for r in caplog.records] == [True] * 2
    assert eng._attach_timing_cache(StandInConfig(refuse=None), tmp_path / "new.cache") == ("cache", b"")


def test_quantizer_per_tensor_warnings_are_dropped_and_others_kept(caplog):
    """ONNX Runtime logs a root warning per tensor it leaves in float (dozens a release); its other
    warnings (a bias overflowing int32) must still show."""
    import logging
    from seg_perception.deploy.quantize import _quiet_root_logger
    with caplog.at_level(logging.WARNING), _quiet_root_logger():
        logging.warning("Inference failed or unsupported type to quantize for tensor 'x', type is int64.")
        logging.warning("bias of conv1 overflows int32")
    assert [r.getMessage() for r in caplog.records] == ["bias of conv1 overflows int32"]
    logging.getLogger().warning("Inference failed or unsupported type to quantize for tensor 'y'")  # only inside
    assert len(caplog.records) == 2


class FakeTensorRT:
    """TensorRT's Python API as far as build_serialized_engine uses it (absent here), written from
    its documentation: records what the build asked for. ``input_shape``: the parsed network's
    input (-1 for a dynamic dim). Its timing cache holds one line per build (``timings <n>``);
    ``during_build``: calls made while the next build runs (another build at the same time)."""

    def __init__(self, input_shape, version="10.3.0"):
        self.__version__, self.calls, self.during_build = version, [], []
        fake, net_input = self, SimpleNamespace(name="image", shape=tuple(input_shape))
        outputs = [SimpleNamespace(name="labels"), SimpleNamespace(name="confidence")]
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")

        class Network:
            num_inputs = 1
            num_outputs = 2

            def get_input(self, i):
                return net_input

            def get_output(self, i):
                return outputs[i]

            def unmark_output(self, t):
                fake.calls.append(("unmark", t.name))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def clear_flag(self, flag):
                fake.calls.append(("clear", flag))

            def add_optimization_profile(self, profile):
                fake.calls.append(("profile", profile.shapes))

            def create_timing_cache(self, blob):
                return TimingCache(blob)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.timing = cache
                return True

            def get_timing_cache(self):
                return self.timing

        class TimingCache:
            def __init__(self, blob):
                self.entries = set(blob.split(b"\n")) - {b""}

            def combine(self, other, ignore_mismatch):
                self.entries |= other.entries
                return True

            def serialize(self):
                return b"\n".join(sorted(self.entries))

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                n = fake.calls.count(("build",))
                hooks, fake.during_build = fake.during_build, []
                for hook in hooks:
                    hook()
                if getattr(config, "timing", None) is not None:
                    config.timing.entries.add(b"timings %d" % n)
                return b"engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_engine_build_asks_tensorrt_for_what_the_model_needs(monkeypatch, tmp_path):
    """The build's calls on TensorRT's API (stand-in): int8 sets INT8 and FP16 (the Q/DQ kernels and
    the float layers between), a labels-only engine unmarks confidence, a dynamic input gets one
    profile from 1 to the cameras' batch, and an ONNX fixed at another size is refused before the
    minutes of building."""
    fake = FakeTensorRT((-1, -1, -1, 3))
    monkeypatch.setattr(eng, "import_tensorrt", lambda: fake)
    assert eng.build_serialized_engine(tmp_path / "m.onnx", "int8", (4, H, W, 3), 256, outputs=("labels",)) \
        == b"engine"
    assert ("flag", "INT8") in fake.calls and ("flag", "FP16") in fake.calls and ("unmark", "confidence") in fake.calls
    assert ("pool", "workspace", 256 << 20) in fake.calls and fake.calls[-1] == ("build",)
    assert ("profile", {"image": ((1, H, W, 3), (4, H, W, 3), (4, H, W, 3))}) in fake.calls
    fixed = FakeTensorRT((1, 240, 320, 3))
    monkeypatch.setattr(eng, "import_tensorrt", lambda: fixed)
    with pytest.raises(eng.EngineCacheError, match=r"fixed shape \(1, 240, 320, 3\).*export --dynamic.*320x240"):
        eng.build_serialized_engine(tmp_path / "m.onnx", "fp32", (1, H, W, 3))
    assert ("build",) not in fixed.calls
    assert eng.build_serialized_engine(tmp_path / "m.onnx", "fp32", (1, 240, 320, 3)) == b"engine"


@pytest.mark.parametrize("shift,status", [(0.0, "ok"), (0.002, "ok"), (0.1, "FAIL")])
def test_doctor_compares_the_engine_confidence_too(monkeypatch, tmp_path, shift, status):
    """An engine whose labels agree with ONNX Runtime but whose confidence map is off (the node
    publishes it, the ground outputs use it) fails its row; within tolerance it passes."""
    from seg_perception.deploy import doctor
    rng = np.random.default_rng(0)
    frames = [np.zeros((H, W, 3), np.uint8)] * 2
    ref = [(rng.integers(0, 11, (H, W)).astype(np.uint8), rng.uniform(0.2, 0.9, (H, W)).astype(np.float32))
           for _ in frames]
    calls = iter(range(len(frames) * 100))

    class Engine:  # a TensorRT backend as the doctor uses it
        has_confidence = True

        def infer(self, frame):
            labels, conf = ref[next(calls) % len(ref)]
            return labels, conf + shift

        def close(self):
            pass

    monkeypatch.setattr(doctor, "_open_engine", lambda *a, **k: (Engine(), "cached"))
    monkeypatch.setattr("seg_perception.timing.time_backend", lambda *a, **k: {"p50": 1.0, "p95": 1.0, "fps": 1.0})
    row = doctor._check_engine(doctor.DoctorRow("tensorrt", "fp32"), None, W, H, frames, True, {"onnx": ref},
                               tmp_path, 256, 1, 0)
    assert row.agreement == 100.0 and row.status == status, row
    assert ("confidence differs" in row.note) == (status == "FAIL")


def test_doctor_fails_on_a_failing_cpu_row_too(quantized, monkeypatch, camvid_sample, tmp_path):
    """With every TensorRT row ok, a CPU row that ran and failed (the CPU INT8 file the node runs
    without TensorRT) still printed "RESULT: OK" and exited 0."""
    from seg_perception.deploy import doctor
    from seg_perception.runtime import backends
    src, _ = quantized

    def ok(row, *a, **k):
        row.status = "ok"
        return row

    def broken_int8(*a, **k):
        return doctor.DoctorRow("onnxruntime labels only", "int8", status="FAIL", note="INVALID_GRAPH: broken")
    monkeypatch.setattr(backends, "tensorrt_missing", lambda: None)  # as on a Jetson
    monkeypatch.setattr(doctor, "_check_engine", ok)
    monkeypatch.setattr(doctor, "_labels_only_row", lambda *a, **k: doctor.DoctorRow("tensorrt labels only", "fp16",
                                                                                     status="ok"))
    monkeypatch.setattr(doctor, "_batch_row", lambda *a, **k: doctor.DoctorRow("tensorrt x2", "fp16", status="ok"))
    printed = []
    for cpu_row, rc_expected in ((broken_int8, 1), (lambda *a, **k: doctor.DoctorRow("onnxruntime labels only",
                                                                                      "int8", status="ok"), 0)):
        monkeypatch.setattr(doctor, "_cpu_int8_row", cpu_row)
        printed.clear()
        rc = doctor.run_doctor(str(src), frames_source=str(camvid_sample / "val"), num_frames=2, runs=5,
                               cache_dir=str(tmp_path), out=printed.append)
        result = [ln for ln in printed if ln.startswith("RESULT")]
        assert rc == rc_expected, printed
        assert result[0].startswith("RESULT: FAIL: onnxruntime labels only int8: INVALID_GRAPH" if rc else
                                    "RESULT: OK"), result


def test_export_of_an_installed_model_writes_into_the_working_folder(tmp_path, capsys, monkeypatch):
    """`export --model rdsnet_camvid --dynamic` from a pip install wrote over the ONNX in
    site-packages' share, whose INT8 files, speed figures and TensorRT engines were made from it
    (and --logits added a new card there). Without --out it now writes into the working folder
    and says so; the installed files are untouched. A checkout's models/ is not an install."""
    from seg_perception import paths
    share = tmp_path / "share" / "seg_perception"
    (share / "models").mkdir(parents=True)
    src = paths.resolve_model("rdsnet_camvid")
    for suffix in (".yaml", ".pt", ".onnx"):
        shutil.copy(src.with_suffix(suffix), share / "models" / f"rdsnet_camvid{suffix}")
    monkeypatch.setattr(paths, "_install_shares", lambda: [share])
    installed = {p: p.read_bytes() for p in (share / "models").iterdir()}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for extra, made in (([], "rdsnet_camvid.onnx"), (["--logits"], "rdsnet_camvid_logits.onnx")):
        rc, out, err = _run_cli(["export", "--model", share / "models" / "rdsnet_camvid.yaml", "--dynamic", *extra],
                                capsys)
        assert rc == 0, err
        assert f"is in the installed package's models folder: writing {work / made}" in out
        assert (work / made).is_file()
    assert {p: p.read_bytes() for p in (share / "models").iterdir()} == installed
    assert not paths.is_installed_models_dir(src.parent)  # the checkout's models/: release ships there
