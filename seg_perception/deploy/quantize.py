"""INT8 post-training quantization: `seg-perception quantize`.

Writes an explicitly quantized (Q/DQ) copy of an exported graph that keeps its
uint8 ``image`` input and ``labels``/``confidence`` outputs, so ONNX Runtime
runs it as precision ``int8`` and TensorRT builds it with explicit quantization.

Two quantizers, both calibrated on the CPU with ONNX Runtime:

* ``modelopt``: NVIDIA ModelOpt's ONNX PTQ, which places Q/DQ by TensorRT's
  rules. Used when ``modelopt.onnx`` imports (it is not a requirement: its
  ``[onnx]`` extra pins an older onnx and onnxruntime-gpu with CUDA wheels).
* ``ort``: ``onnxruntime.quantization.quantize_static`` with the settings
  TensorRT's explicit quantization accepts: QDQ format, int8 activations and
  weights, symmetric (zero points all 0), per-channel weights, full range,
  float biases (TensorRT has no int32 DequantizeLinear).

``target="cpu"`` makes a second INT8 model for ONNX Runtime on the CPU instead
(``<name>_int8_cpu.onnx``, card role ``onnx_int8_cpu``): the TensorRT layout runs
*slower* than fp32 on ORT's CPU kernels (float between the Q/DQ pairs, only
dense convolutions quantized). The CPU layout is what those kernels accelerate:
QOperator format (QLinearConv and friends), uint8 activations, int8 per-channel
weights in 7 bits (``reduce_range``), every op type ORT can quantize, min/max calibration.
Why 7 bits: on a CPU without VNNI (AVX2; AVX-512 without VNNI) ONNX Runtime's uint8 x int8
kernels add pairs of products in 16 bits, which full-range weights overflow (clamped): the
full-range essnet_d_camvid file lost 18.3 mIoU on CamVid val on an AVX2 AMD EPYC, and 0.25 on
a CPU with VNNI; with 7-bit weights the sums fit, and it lost 0.35 on the EPYC.

Calibration frames go through the runtime's own resize/colour path
(``Pipeline.preprocess``), as uint8 at the model size, exactly what the graph
sees at run time.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..card import ModelCard, load_card, onnx_role
from ..data.datasets import IMAGE_EXTS, SegmentationDataset, camvid, read_rgb
from ..files import sha256, written_whole
from .export import cast_labels_through_float, forget_int8_figures

METHODS = ("auto", "modelopt", "ort")
TARGETS = ("tensorrt", "cpu")  # card.INT8_TARGETS
# Where a convolution's output has Q/DQ before a non-convolution (Relu, Add, Concat, the ArgMax on the
# logits): ONNX Runtime's default quantizes it ("int8"); TensorRT's Q/DQ placement guidance quantizes
# only the inputs of weighted layers ("float"). Measured with ONNX Runtime on CamVid val (docs/deployment.md):
# "float" agrees with fp32 on 0.2-0.3 % more pixels; which TensorRT runs faster is for the device to say.
CONV_OUTPUTS = ("int8", "float")
FORMATS = {"tensorrt": "QDQ int8 symmetric, per-channel weights",
           "cpu": "QOperator, uint8 activations (asymmetric), int8 per-channel weights in 7 bits (reduce_range: "
                  "no 16-bit overflow on CPUs without VNNI), all op types"}
CALIBRATIONS = ("minmax", "entropy")
# Ops whose inputs get Q/DQ in the ort method: the weighted layers (TensorRT's guidance:
# quantize the inputs of convolutions; everything else stays float between them).
# Grouped/depthwise convolutions stay float, as ModelOpt leaves them: they are cheap,
# gain little from int8 kernels and lose the most accuracy.
ORT_OP_TYPES = ("Conv", "ConvTranspose")


class QuantizeError(RuntimeError):
    """Quantization that cannot run as asked; the message says what to change."""


def modelopt_available() -> bool:
    try:
        importlib.import_module("modelopt.onnx.quantization")
    except Exception:
        return False
    return True


def pick_method(method: str, flag: str = "--method") -> str:
    """The quantizer that runs for ``method``; ``flag`` is the option that chose it (named in errors)."""
    if method not in METHODS:
        raise QuantizeError(f"unknown quantization method '{method}'; valid choices: {', '.join(METHODS)}")
    if method == "auto":
        return "modelopt" if modelopt_available() else "ort"
    if method == "modelopt" and not modelopt_available():
        raise QuantizeError("method 'modelopt' needs nvidia-modelopt (pip install nvidia-modelopt plus "
                            f"onnx-graphsurgeon onnxslim onnxscript lief ml_dtypes); or use {flag} ort")
    return method


# ------------------------------------------------------------------ calibration data
def list_calibration_images(data, num_images: int, seed: int = 0) -> List[Path]:
    """``num_images`` image files from ``data``: an opened dataset, a CamVid root (its train
    split) or any folder of images (searched recursively). A fixed seed picks the same files each run."""
    if isinstance(data, SegmentationDataset):
        files = [img for img, _ in data.pairs]
        random.Random(seed).shuffle(files)
        return files[:num_images]
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration data folder {root} not found: pass --calib-data DIR "
                                "(a CamVid root or a folder of images)")
    if num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {num_images}")
    if (root / "train.txt").is_file():
        files = [img for img, _ in camvid(root, "train").pairs]
    elif (root / "train" / "images").is_dir() or (root / "images" / "train").is_dir():
        # a folder dataset (<root>/train/images, or images/train as mmsegmentation lays it out): its
        # training frames, not val's or labels
        frames = root / "train" / "images" if (root / "train" / "images").is_dir() else root / "images" / "train"
        files = sorted(p for p in frames.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    else:  # any folder of frames; label folders (masks are PNGs too) left out
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS
                       and not {"labels", "SegmentationClass", "SegmentationObject"} & set(p.relative_to(root).parts[:-1]))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) in {root}")
    random.Random(seed).shuffle(files)
    return files[:num_images]


def calibration_frames(files: Sequence[Path], card: ModelCard, onnx_path: str | Path) -> List[np.ndarray]:
    """uint8 RGB frames at the model size, resized by the runtime pipeline's own preprocess()."""
    from ..runtime.backends import OnnxRuntimeBackend
    from ..runtime.pipeline import Pipeline
    pipe = Pipeline(OnnxRuntimeBackend(card, card.input_width, card.input_height, "fp32",
                                       onnx_path=onnx_path), card)
    return [pipe.preprocess(read_rgb(f), "rgb") for f in files]


class _FrameReader:
    """onnxruntime CalibrationDataReader over in-memory frames (one frame per batch)."""

    def __init__(self, input_name: str, frames: Sequence[np.ndarray]):
        self.input_name = input_name
        self.frames = list(frames)
        self._it: Iterator = iter(())
        self.rewind()

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        frame = next(self._it, None)
        return None if frame is None else {self.input_name: frame[None]}

    def rewind(self) -> None:
        self._it = iter(self.frames)


# ------------------------------------------------------------------ quantization
@dataclass
class QuantizeResult:
    path: Path
    method: str
    calibration: str
    num_images: int
    seconds: float
    qdq_nodes: int
    target: str = "tensorrt"
    conv_outputs: str = "int8"


def _graph_io(path: Path):
    from ..runtime.engine_cache import load_onnx_graph
    m = load_onnx_graph(path)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    return m, inputs, [o.name for o in m.graph.output]


def _check_source(path: Path) -> str:
    import onnx
    m, inputs, outputs = _graph_io(path)
    if "labels" not in outputs:  # a --logits export is for evaluation: nothing runs its INT8 model
        raise QuantizeError(f"{path} has no 'labels' output ({', '.join(outputs)}): quantize the ONNX that "
                            "'seg-perception export' writes without --logits")
    if len(inputs) != 1:
        raise QuantizeError(f"{path} has {len(inputs)} inputs; expected one image input "
                            "(export it with 'seg-perception export')")
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        raise QuantizeError(f"{path} does not take uint8 frames: export it with 'seg-perception export'")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node):
        raise QuantizeError(f"{path} is already quantized; pass the fp32 ONNX file")
    return inputs[0].name


def check_current_source(card: ModelCard, src: Path) -> None:
    """The ONNX to quantize must be the card's own, exported from the card's weights: an older export
    left beside a retrained card would be quantized and recorded in the card as this model."""
    made = card.training.get("export") or {}
    again = (f"export it again: seg-perception export --model {card.path}"
             f"{' --dynamic' if made.get('dynamic') else ''} --replace")
    listed = card.file("onnx")  # (a card copied beside a renamed copy of its file lists the absent original)
    if listed is None or (listed.is_file() and listed.resolve() != Path(src).resolve()):
        raise QuantizeError(f"{src} is not the ONNX file its card {card.path.name} lists "
                            f"({listed.name if listed else 'none'}): {again}")
    weights = card.file("weights")
    if made.get("source_weights_sha256") and weights is not None and weights.is_file() \
            and sha256(weights) != made["source_weights_sha256"]:
        raise QuantizeError(f"{src} was exported from other weights than its card's {weights.name}: {again}")


def check_request(src: Path, method: str = "auto", calibration: str = "minmax", target: str = "tensorrt",
                  conv_outputs: str = "int8") -> str:
    """Every refusal of a quantization, before any calibration frame is read; returns the method
    that will run."""
    if not src.is_file():
        raise FileNotFoundError(f"ONNX file {src} not found: run 'seg-perception export' first")
    if calibration not in CALIBRATIONS:
        raise QuantizeError(f"unknown calibration '{calibration}'; valid choices: {', '.join(CALIBRATIONS)}")
    if target not in TARGETS:
        raise QuantizeError(f"unknown target '{target}'; valid choices: {', '.join(TARGETS)}")
    if conv_outputs not in CONV_OUTPUTS:
        raise QuantizeError(f"unknown conv outputs '{conv_outputs}'; valid choices: {', '.join(CONV_OUTPUTS)}")
    if conv_outputs != "int8" and (target == "cpu" or method == "modelopt"):
        raise QuantizeError("--conv-outputs float places the Q/DQ of --method ort for TensorRT; ModelOpt places "
                            "them by TensorRT's rules itself, and --target cpu quantizes every op")
    if target == "cpu":
        if method not in ("auto", "ort"):
            raise QuantizeError(f"--target cpu is made with ONNX Runtime's quantizer; method '{method}' "
                                "makes TensorRT models: use --method auto or ort")
        method = "ort"
    method = "ort" if conv_outputs != "int8" else pick_method(method)
    if calibration != "minmax" and method != "modelopt":
        # ORT's histogram calibrators keep every activation of every frame in memory
        raise QuantizeError(f"calibration '{calibration}' is only available with --method modelopt (not with "
                            "--method ort or --target cpu); use --calibration minmax")
    _check_source(src)
    return method


def _quantize_ort(src: Path, out: Path, input_name: str, frames, calibration: str, conv_outputs: str = "int8"
                  ) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if calibration != "minmax":
        # ORT's histogram calibrators keep every activation of every frame in memory
        # (tens of GB at 480x360): only min/max is offered here.
        raise QuantizeError(f"calibration '{calibration}' is only available with modelopt; the ort "
                            "method calibrates with minmax")
    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference + ORT's basic (ONNX-standard) fusions, e.g. BatchNorm into Conv,
        # so Q/DQ land on the fused convolutions as TensorRT will see them.
        pre = Path(tmp) / "pre.onnx"
        with _quiet_root_logger():  # ORT logs a warning per tensor it leaves in float
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), _FrameReader(input_name, frames),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(ORT_OP_TYPES),
                nodes_to_exclude=_grouped_convs(pre),
                per_channel=True, reduce_range=False,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "ActivationSymmetric": True, "WeightSymmetric": True,
                    "QuantizeBias": False,  # TensorRT cannot dequantize int32 biases
                    "CalibTensorRangeSymmetric": True,
                    **({"OpTypesToExcludeOutputQuantization": list(ORT_OP_TYPES)} if conv_outputs == "float" else {}),
                    # per-tensor: TensorRT before 10.2 (JetPack 6.0's 8.6) has no per-channel ConvTranspose
                    # weights (ONNX Runtime would quantize them along axis 1)
                    "TensorQuantOverrides": {w: [{"symmetric": True}] for w in _conv_transpose_weights(pre)},
                })


class _PerTensorNoise(logging.Filter):
    """ONNX Runtime's quantizer logs, on the root logger, one warning for every tensor it leaves
    in float (dozens a model, none actionable); its other warnings (a bias overflowing int32, an
    opset upgrade) still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Inference failed or unsupported type to quantize")


@contextlib.contextmanager
def _quiet_root_logger():
    noise = _PerTensorNoise()
    root = logging.getLogger()
    root.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)


def _quantize_ort_cpu(src: Path, out: Path, input_name: str, frames, calibration: str) -> None:
    """ONNX Runtime CPU layout: QOperator, activations QUInt8, weights QInt8 per channel, all ops."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if calibration != "minmax":
        raise QuantizeError(f"calibration '{calibration}' is not available for --target cpu; use minmax")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        with _quiet_root_logger():  # ORT logs a warning per tensor it leaves in float
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), _FrameReader(input_name, frames),
                quant_format=QuantFormat.QOperator, per_channel=True, reduce_range=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)


def _grouped_convs(path: Path) -> List[str]:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    return [n.name for n in m.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def _conv_transpose_weights(path: Path) -> List[str]:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in m.graph.initializer}
    return [n.input[1] for n in m.graph.node if n.op_type == "ConvTranspose" and n.input[1] in weights]


def _quantize_modelopt(src: Path, out: Path, input_name: str, frames, calibration: str) -> None:
    import shutil
    from modelopt.onnx.quantization import quantize
    if calibration not in ("minmax", "entropy"):
        raise QuantizeError(f"calibration '{calibration}' is not available with modelopt; valid "
                            "choices: minmax, entropy")
    with tempfile.TemporaryDirectory() as tmp:
        # ModelOpt writes intermediate models beside its input: keep them out of models/.
        local = Path(tmp) / src.name
        shutil.copyfile(src, local)
        quantize(onnx_path=str(local), quantize_mode="int8",
                 calibration_data={input_name: np.stack(frames)},
                 calibration_method="max" if calibration == "minmax" else "entropy",
                 calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=str(out),
                 log_level="WARNING")


def quantize_onnx(src: str | Path, out: str | Path, frames: Sequence[np.ndarray], method: str = "auto",
                  calibration: str = "minmax", target: str = "tensorrt", conv_outputs: str = "int8"
                  ) -> QuantizeResult:
    """Write the INT8 model of ``src`` for ``target`` to ``out``, calibrated on ``frames``:
    the Q/DQ model for TensorRT, or the QOperator model for ONNX Runtime on the CPU."""
    src, out = Path(src), Path(out)
    method = check_request(src, method, calibration, target, conv_outputs)
    if not frames:
        raise QuantizeError("no calibration frames")
    input_name = _check_source(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with written_whole(out) as tmp:
        if target == "cpu":
            _quantize_ort_cpu(src, tmp, input_name, frames, calibration)
        elif method == "modelopt":
            _quantize_modelopt(src, tmp, input_name, frames, calibration)
        else:
            _quantize_ort(src, tmp, input_name, frames, calibration, conv_outputs)
        _drop_unused_opsets(tmp)
        cast_labels_through_float(tmp)
        info = inspect_qdq(tmp)
        if info["quantize_linear"] == 0:  # checked before it replaces a good INT8 model of the same name
            raise QuantizeError(f"quantizing {src.name} gave no QuantizeLinear nodes: nothing was quantized "
                                f"({out} is left as it was)")
    return QuantizeResult(out, method, calibration, len(frames), time.perf_counter() - t0,
                          info["quantize_linear"] + info["dequantize_linear"], target, conv_outputs)


def _drop_unused_opsets(path: Path) -> None:
    """ORT's pre-processing declares every ORT domain; keep the ones nodes use, so parsers
    that know only the standard domain (TensorRT's) see nothing unexpected."""
    import onnx
    m = onnx.load(str(path))
    used = {n.domain for n in m.graph.node} | {""}
    keep = [o for o in m.opset_import if o.domain in used]
    if len(keep) != len(m.opset_import):
        del m.opset_import[:]
        m.opset_import.extend(keep)
        onnx.save(m, str(path))


def inspect_qdq(path: str | Path) -> Dict:
    """Counts of Q/DQ nodes, per-channel weight scales and non-zero zero points."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    per_channel = 0
    nonzero_zp = 0
    int8 = True
    for n in q + dq:
        scale = consts.get(n.input[1])
        if scale is not None and scale.size > 1:
            per_channel += 1
        if len(n.input) > 2 and n.input[2] in consts:
            zp = consts[n.input[2]]
            nonzero_zp += int(np.any(zp != 0))
            int8 &= zp.dtype == np.int8
    inits = {i.name for i in m.graph.initializer}
    graph_inputs = [i for i in m.graph.input if i.name not in inits]
    return {"quantize_linear": len(q), "dequantize_linear": len(dq), "per_channel": per_channel,
            "nonzero_zero_points": nonzero_zp, "int8_zero_points": bool(int8),
            "inputs": [(i.name, i.type.tensor_type.elem_type) for i in graph_inputs],
            "outputs": [o.name for o in m.graph.output]}


def not_held_out_note(card: ModelCard, split: str) -> dict:
    """The note an INT8 figure measured on a split the weights trained on carries (else none)."""
    if split in str(card.training.get("train_split") or "train").split("+"):
        return {"note": f"{split} is in these weights' training data: read miou_drop and label_agreement, not "
                        "the absolute mIoU"}
    return {}


def note_int8(card: ModelCard, int8_path: Path, res: QuantizeResult, metrics: Optional[Dict] = None) -> ModelCard:
    """List the INT8 file in ``card`` (role ``onnx_int8``, by name when it sits beside the card)
    with how it was made and, when measured, its accuracy (unmeasured: the previous INT8 file's
    figures are dropped, not left to describe this one); in memory only."""
    role = onnx_role("int8", res.target)
    same_dir = card.path is not None and Path(int8_path).parent.resolve() == card.path.parent.resolve()
    card.files = {**card.files, role: Path(int8_path).name if same_dir else str(Path(int8_path).resolve())}
    card.training = dict(card.training)
    key = "quantization" if res.target == "tensorrt" else "quantization_cpu"
    card.training[key] = {"method": res.method, "calibration": res.calibration,
                          "calibration_images": res.num_images, "format": FORMATS[res.target]
                          # the ort method's override (ModelOpt places its own)
                          + (" (per-tensor for ConvTranspose)" if res.target == "tensorrt" and res.method == "ort"
                             else "")
                          + (", convolution outputs float" if res.conv_outputs == "float" else "")}
    # figures and timings of the file this one replaces would now describe the wrong model
    forget_int8_figures(card, role)
    if metrics:
        card.metrics["int8" if res.target == "tensorrt" else "int8_cpu"] = metrics
    return card


def record_in_card(card_path: str | Path, int8_path: Path, res: QuantizeResult, metrics: Optional[Dict] = None) -> Path:
    """`quantize`: note the INT8 file in the card beside the fp32 ONNX and write the same card
    beside each INT8 file it lists too, so either file finds it (the copy of an earlier INT8 file
    is written again: it would lack this one)."""
    card = note_int8(load_card(card_path), int8_path, res, metrics)
    card.save(card.path)
    for role in ("onnx_int8", "onnx_int8_cpu"):
        listed = card.file(role)
        if listed is not None and listed.is_file() and listed.parent.resolve() == card.path.parent.resolve() \
                and listed.stem != card.path.stem:
            twin = ModelCard(**{k: v for k, v in card.__dict__.items() if k != "path"})
            twin.save(listed.with_suffix(".yaml"))
    return card.path


# ------------------------------------------------------------------ accuracy
def evaluate_int8(card: ModelCard, fp32_onnx: str | Path, int8_onnx: str | Path, data,
                  split: str = "val", max_images: int = 0, threads: int = 0, log=None) -> Dict:
    """fp32 vs int8 on a dataset split (an opened dataset, or a CamVid root) with ONNX Runtime
    (CPU), through the runtime pipeline: mIoU of each (percent, at the label resolution) and their label agreement (percent of
    pixels with the same class)."""
    from ..metrics import ConfusionMatrix
    from ..runtime.backends import OnnxRuntimeBackend
    from ..runtime.pipeline import Pipeline
    ds = data if isinstance(data, SegmentationDataset) else camvid(data, split)  # opened, or a CamVid root
    n = len(ds) if not max_images else min(len(ds), max_images)
    w, h = card.input_width, card.input_height
    pipes = {p: Pipeline(OnnxRuntimeBackend(card, w, h, p, onnx_path=f, threads=threads, use_cuda=False), card)
             for p, f in (("fp32", fp32_onnx), ("int8", int8_onnx))}
    cms = {p: ConfusionMatrix(card.num_classes) for p in pipes}
    same = total = 0
    for i in range(n):
        img, lab = ds.load(i)
        out = {p: pipe(img).labels for p, pipe in pipes.items()}
        for p in pipes:
            cms[p].update(out[p], lab)
        same += int((out["fp32"] == out["int8"]).sum())
        total += out["fp32"].size
        if log and (i + 1) % 25 == 0:
            log(f"[quantize] evaluated {i + 1}/{n} frames")
    ds.check_label_reading()  # not scored against labels read two ways
    fp32, int8 = 100 * cms["fp32"].miou(), 100 * cms["int8"].miou()
    return {"split": split, "images": n, "fp32_miou": round(fp32, 2), "int8_miou": round(int8, 2),
            "miou_drop": round(fp32 - int8, 2), "label_agreement": round(100 * same / max(total, 1), 3)}
