"""ONNX export: `seg-perception export`.

The exported graph takes raw frames, uint8 RGB NHWC at the model resolution,
normalises inside, and ends in ArgMax (nets/deployable.py), so runtimes do no
per-pixel work in Python. Outputs: ``labels`` (uint8 N x H x W) and
``confidence`` (float32, the max softmax probability). ``--logits`` exports the
raw logits (N x C x H x W) instead, for evaluation.

``write_onnx`` writes the graph only and ``exported_card`` says what the card of
the export holds, so `release` can keep one card in memory and write it once;
``export_onnx`` does both, for the export command.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Callable, Optional

from ..card import ARCHITECTURE_METRICS, ModelCard, load_card, weights_mismatch
from ..files import sha256, written_whole
from ..paths import cache_dir
from ..runtime.backend import DYNAMIC_DIMS

OPSET = 17
INPUT_NAME = "image"


def _size(card: ModelCard, width: Optional[int], height: Optional[int]) -> tuple[int, int]:
    width = int(width or card.input_width)
    height = int(height or card.input_height)
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise ValueError(f"export resolution {width}x{height} must be positive multiples of 8: pass other "
                         "--width/--height")
    return width, height


def write_onnx(card: ModelCard, out: str | Path, weights: Optional[str | Path] = None,
               width: Optional[int] = None, height: Optional[int] = None, dynamic: bool = False,
               logits: bool = False, opset: int = OPSET) -> Path:
    """Write the ONNX graph of the card's network (with its weights) to ``out``; nothing else."""
    width, height = _size(card, width, height)
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or later")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # torch only here: a model with its ONNX beside it (ensure_onnx) runs without torch installed
    import torch
    from ..nets.deployable import DeployWrapper, load_net
    wrapper = DeployWrapper(load_net(card, weights), card.mean, card.std, logits=logits).eval()
    dummy = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    outputs = ["logits"] if logits else ["labels", "confidence"]
    axes = None
    if dynamic:
        b, hh, ww = DYNAMIC_DIMS
        axes = {INPUT_NAME: {0: b, 1: hh, 2: ww}}
        for o in outputs:
            axes[o] = {0: b, 2: hh, 3: ww} if logits else {0: b, 1: hh, 2: ww}
    with warnings.catch_warnings(), written_whole(out) as tmp:
        # The TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript; its graphs are the ones TensorRT parsers have been tested on longest.
        warnings.simplefilter("ignore")
        # torch < 2.5 (JetPack 6.0's) has no `dynamo` argument and only this exporter
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(wrapper, (dummy,), str(tmp), opset_version=opset, input_names=[INPUT_NAME],
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True, **legacy)
    return out


def cast_labels_through_float(path: str | Path) -> int:
    """TensorRT casts to uint8 only from float or half (8.x's ONNX parser refuses an integer input):
    put a Cast to float before each Cast to UINT8 that reads anything else (the labels' ArgMax, which
    ONNX Runtime's quantization pre-processing folds back into one Cast). Exact for ids below 256.
    Rewrites the file when it changes it; returns how many casts it added."""
    import onnx
    from onnx import TensorProto, helper
    model = onnx.load(str(path))
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    nodes, added = [], 0
    for node in model.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == TensorProto.UINT8 and \
                types.get(node.input[0]) not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            as_float = f"{node.input[0]}_as_float_{added}"  # (unique: two casts may read one tensor)
            nodes.append(helper.make_node("Cast", [node.input[0]], [as_float], to=TensorProto.FLOAT,
                                          name=f"{node.name or node.output[0]}_from_float"))
            node.input[0] = as_float
            added += 1
        nodes.append(node)
    if added:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.save(model, str(path))
    return added


INT8_ROLES = ("onnx_int8", "onnx_int8_cpu")


def forget_int8(card: ModelCard, role: str) -> None:
    """Drop an INT8 file from ``card`` (in memory) with everything said about it: its role, how it was
    made, its accuracy and its timings (all would describe a file the card no longer lists)."""
    cpu = role == "onnx_int8_cpu"
    card.files = {k: v for k, v in card.files.items() if k != role}
    card.training = {k: v for k, v in card.training.items() if k != ("quantization_cpu" if cpu else "quantization")}
    forget_int8_figures(card, role)


def forget_int8_figures(card: ModelCard, role: str) -> None:
    """Drop the accuracy and timings measured for the INT8 file of ``role`` (a new file replaces it)."""
    cpu = role == "onnx_int8_cpu"
    card.metrics = {k: v for k, v in card.metrics.items() if k != ("int8_cpu" if cpu else "int8")}
    if isinstance(card.metrics.get("cpu_latency"), dict):
        gone = "onnxruntime_int8_cpu_ms" if cpu else "onnxruntime_int8_ms"
        card.metrics["cpu_latency"] = {k: v for k, v in card.metrics["cpu_latency"].items() if k != gone}


def exported_card(card: ModelCard, out: str | Path, weights: Optional[str | Path] = None,
                  width: Optional[int] = None, height: Optional[int] = None, dynamic: bool = False,
                  logits: bool = False, opset: int = OPSET) -> ModelCard:
    """The card that belongs beside the ONNX file ``out`` (not written; its ``path`` is set to
    where it belongs): it lists every file of this model found in that folder."""
    out = Path(out)
    width, height = _size(card, width, height)
    new = ModelCard(**{k: v for k, v in card.__dict__.items() if k != "path"})
    new.input_width, new.input_height = width, height
    new.files = {}
    for role in card.files:
        p = card.file(role)
        if p is not None and p.is_file() and p.parent.resolve() == out.parent.resolve():
            new.files[role] = p.name
    src_weights = Path(weights) if weights else card.file("weights")
    if src_weights is not None:  # the weights actually exported, by name beside the card, else by path
        new.files["weights"] = (src_weights.name if src_weights.parent.resolve() == out.parent.resolve()
                                else str(src_weights.resolve()))
    new.files["onnx_logits" if logits else "onnx"] = out.name
    new.training = dict(card.training)
    src_sha = sha256(src_weights) if src_weights else None
    own = card.file("weights")
    # (a card written before its weights were replaced describes other weights too; its recorded
    # hash stays, so that the copy still shows the mismatch)
    same_weights = (src_sha is None or (own is not None and own.is_file() and sha256(own) == src_sha)) \
        and not weights_mismatch(card)
    same_size = (width, height) == (card.input_width, card.input_height)
    # Accuracy and speed were measured for the card's weights at its size: other weights or another
    # size keep only what the architecture alone decides.
    new.metrics = (dict(card.metrics) if same_weights and same_size
                   else {k: card.metrics[k] for k in ARCHITECTURE_METRICS if k in card.metrics})
    # The INT8 files were quantized from the previous export: they stay only when it was of these
    # weights, at this size and as dynamic, and they are still listed (a card moved to another folder
    # leaves them behind).
    made = card.training.get("export") or {}
    current = (same_weights and same_size and made.get("source_weights_sha256") == src_sha
               and bool(made.get("dynamic")) == dynamic)
    for role in INT8_ROLES:
        if role in card.files and not (current and role in new.files):
            forget_int8(new, role)
    new.training["export"] = {"opset": opset, "dynamic": dynamic, "source_weights_sha256": src_sha}
    new.path = out.with_suffix(".yaml")
    return new


def export_onnx(card: ModelCard, out: str | Path, weights: Optional[str | Path] = None,
                width: Optional[int] = None, height: Optional[int] = None, dynamic: bool = False,
                logits: bool = False, opset: int = OPSET) -> Path:
    """Write ``out`` (.onnx) and its card (same stem, .yaml); returns the ONNX path."""
    args = (weights, width, height, dynamic, logits, opset)
    out = write_onnx(card, out, *args)
    new = exported_card(card, out, *args)
    new.save(new.path)
    return out


def ensure_onnx(card_path: Path, log: Callable[[str], None] = print) -> Path:
    """The card of a model that has an ONNX file: its own when the file exists, else the card
    of an export made once into the cache (onnx/<name>-<weights checksum>/ in paths.cache_dir)."""
    card = load_card(card_path)
    onnx = card.file("onnx")
    if onnx is not None and onnx.is_file():
        return Path(card_path)
    weights = card.file("weights")
    if weights is None or not weights.is_file():
        raise FileNotFoundError(f"model {card.name} has neither an ONNX file nor weights ({card_path}); "
                                "run 'seg-perception export' or pass another --model")
    folder = cache_dir() / "onnx" / f"{card.name}-{sha256(weights)[:12]}"
    out = folder / f"{card.name}.onnx"
    if not (out.is_file() and out.with_suffix(".yaml").is_file()):
        log(f"{card.name} has no ONNX file: exporting it once to {out}")
        export_onnx(card, out, dynamic=True)
    return out.with_suffix(".yaml")
