"""The backends that run on any machine (ONNX Runtime, PyTorch), and ``create_backend``,
which picks one of them or TensorRT (tensorrt_backend.py) by name.

Every backend implements the interface in backend.py: one uint8 RGB frame at the
model resolution in, (labels, confidence) out; ``infer_batch`` runs N frames in one call.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..card import ModelCard
from .backend import DYNAMIC_DIMS, Backend, BackendError, backend_precision, need_file, onnx_file

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPU by default, CUDA execution provider when installed."""

    name = "onnxruntime"
    precisions = ("fp32", "int8")

    def __init__(self, card: ModelCard, width: int, height: int, precision: str = "fp32",
                 onnx_path: Optional[str | Path] = None, threads: int = 0, use_cuda: Optional[bool] = None,
                 confidence: bool = True, time_int8_at_start: bool = True):
        """``time_int8_at_start=False``: the caller times CPU INT8 against fp32 more carefully itself
        (release), so the quick start-up check would only print a second, noisier figure."""
        super().__init__(card, width, height, precision)
        import onnxruntime as ort
        if precision not in self.precisions:
            raise BackendError(f"precision '{precision}' is not available on onnxruntime; valid choices: "
                               "fp32, int8 (fp16 runs on the tensorrt backend)")
        available = ort.get_available_providers()
        if use_cuda is None:
            use_cuda = "CUDAExecutionProvider" in available
        target = "tensorrt" if use_cuda else "cpu"  # a GPU runs the Q/DQ graph; the CPU its own
        path = onnx_file(card, precision, onnx_path, target)
        if precision == "int8" and target == "cpu" and not onnx_path and path != card.file("onnx_int8_cpu"):
            log.warning(f"{card.name}: precision int8 on the CPU runs {path.name}, the TensorRT-style Q/DQ "
                        "model, which ONNX Runtime's CPU kernels run slower than fp32; make a CPU INT8 model "
                        "with 'seg-perception quantize --target cpu' or use precision fp32")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        # A dynamic-shape graph pinned to this size plans memory and kernels as a fixed one does
        # (dims of other names, or of a fixed graph, are left alone). Only H and W: the batch dim
        # stays free so that several cameras' frames run in one call (infer_batch).
        for dim, value in zip(DYNAMIC_DIMS[1:], (self.height, self.width)):
            opts.add_free_dimension_override_by_name(dim, value)
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        try:
            # ONNX Runtime runs every node whatever outputs are asked for; without confidence the
            # graph is cut to labels alone (max, exp and sum over the logits: ~10 % of ESSNet-D on a CPU).
            model = str(path) if confidence else labels_only_graph(path)
            self.session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as e:
            raise BackendError(f"ONNX file {path} cannot be loaded ({str(e).splitlines()[0][:200]})") from None
        self.path = path
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if inp.type != "tensor(uint8)" or len(inp.shape) != 4:
            raise BackendError(f"ONNX file {path} does not take uint8 NHWC frames: export it with "
                               "'seg-perception export' (logits graphs are for evaluation only)")
        b, h, w, _ = inp.shape
        # a graph exported with a fixed batch of 1 still serves infer_batch, frame by frame
        self.batches = not isinstance(b, int)
        if isinstance(h, int) and isinstance(w, int) and (h, w) != (self.height, self.width):
            raise BackendError(f"ONNX file {path} is fixed at {w}x{h} but {self.width}x{self.height} was "
                               "asked for: export at that size or with --dynamic (the shipped models are dynamic)")
        self.outputs = [o.name for o in self.session.get_outputs()]
        if "labels" not in self.outputs:  # a --logits export (or its INT8 copy) has logits only
            raise BackendError(f"ONNX file {path} has no 'labels' output ({', '.join(self.outputs)}): run the ONNX "
                               "that 'seg-perception export' writes without --logits")
        self.has_confidence = "confidence" in self.outputs
        self.int8_speed_vs_fp32: Optional[float] = None
        if precision == "int8" and target == "cpu" and path == card.file("onnx_int8_cpu") and time_int8_at_start:
            self._compare_with_fp32(card, opts, providers, confidence)

    def _compare_with_fp32(self, card: ModelCard, opts, providers, confidence: bool) -> None:
        """Whether CPU INT8 pays depends on the CPU (VNNI or not) and the network: time it against
        fp32 here, at start-up, and say so where it is slower (the card's figure is another CPU's)."""
        import onnxruntime as ort
        fp32_path = card.file("onnx")
        if fp32_path is None or not fp32_path.is_file():
            return
        frame = np.zeros((1, self.height, self.width, 3), np.uint8)
        times = {"int8": [], "fp32": []}
        try:
            fp32 = ort.InferenceSession(str(fp32_path) if confidence else labels_only_graph(fp32_path), opts,
                                        providers=providers)
            for i in range(6):  # interleaved, the first round a warm-up
                for name, sess in (("int8", self.session), ("fp32", fp32)):
                    t0 = time.perf_counter()
                    sess.run(None, {sess.get_inputs()[0].name: frame})
                    if i:
                        times[name].append(1000 * (time.perf_counter() - t0))
        except Exception as e:  # e.g. an fp32 file fixed at another size: int8 still serves
            log.info(f"{card.name}: CPU INT8 not timed against fp32 ({str(e).splitlines()[0][:120]})")
            return
        int8_ms, fp32_ms = float(np.median(times["int8"])), float(np.median(times["fp32"]))
        self.int8_speed_vs_fp32 = round(fp32_ms / int8_ms, 2)
        what = (f"its CPU INT8 model runs at {self.int8_speed_vs_fp32:.2f}x the speed of fp32 on this CPU "
                f"({int8_ms:.1f} vs {fp32_ms:.1f} ms at {self.width}x{self.height}, timed at start-up)")
        if self.int8_speed_vs_fp32 < 1.0:
            log.warning(f"{card.name}: {what}: int8 is slower here; use precision fp32")
        else:
            log.info(f"{card.name}: {what}")

    def infer(self, image):
        res = self.session.run(None, {self.input_name: image[None]})
        out = dict(zip(self.outputs, res))
        conf = out.get("confidence")
        return out["labels"][0], (conf[0] if conf is not None else None)

    def infer_batch(self, images):
        if not self.batches or len(images) == 1:
            return super().infer_batch(images)
        res = self.session.run(None, {self.input_name: np.ascontiguousarray(images)})
        out = dict(zip(self.outputs, res))
        return out["labels"], out.get("confidence")

    def describe(self) -> str:
        return f"{super().describe()} ({self.path.name}, {self.providers[0]})"

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] != "CPUExecutionProvider"


def labels_only_graph(path: Path) -> bytes:
    """The serialised ONNX graph at ``path`` with the ``labels`` output alone and the nodes it needs
    (the whole graph where the onnx package is not installed: a ROS install may have only onnxruntime;
    the confidence map is then computed and not used)."""
    try:
        import onnx
    except ImportError:
        log.info("the onnx package is not installed: the model runs whole, confidence computed unused "
                 "(pip install onnx saves that time)")
        return Path(path).read_bytes()
    model = onnx.load(str(path))
    graph = model.graph
    if "labels" not in [o.name for o in graph.output]:
        return model.SerializeToString()  # not an exported frame graph: the caller's checks say so
    needed, kept = {"labels"}, []
    for node in reversed(graph.node):  # nodes are stored in topological order
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    keep_out = [o for o in graph.output if o.name == "labels"]
    del graph.output[:]
    graph.output.extend(keep_out)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    # Constants only the cut nodes read would go too, but with a warning line each from ONNX Runtime.
    used = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)
    return model.SerializeToString()


class TorchBackend(Backend):
    """PyTorch eager: the trained .pt weights, no export needed."""

    name = "torch"
    precisions = ("fp32", "fp16")  # fp16 on a CUDA GPU only

    def __init__(self, card: ModelCard, width: int, height: int, precision: str = "fp32",
                 weights: Optional[str | Path] = None, threads: int = 0, device: Optional[str] = None):
        super().__init__(card, width, height, precision)
        import torch
        from ..nets.deployable import DeployWrapper, load_net
        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "int8":
            raise BackendError("precision 'int8' is not available on torch; valid choices: fp32, fp16 (CUDA)")
        if precision == "fp16" and self.device.type != "cuda":
            raise BackendError("precision 'fp16' on torch needs a CUDA GPU; valid choices here: fp32")
        path = need_file(Path(weights) if weights else card.file("weights"), "weights file",
                          "train one with 'seg-perception train' or set the weights parameter")
        try:
            net = load_net(card, path)
        except (ValueError, FileNotFoundError) as e:
            raise BackendError(str(e)) from None
        self.path = path
        self.model = DeployWrapper(net, card.mean, card.std).to(self.device).eval()
        self.has_confidence = True

    def infer(self, image):
        labels, conf = self.infer_batch(image[None])
        return labels[0], conf[0]

    def infer_batch(self, images):
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
            if self.precision == "fp16":
                with torch.autocast("cuda", dtype=torch.float16):
                    labels, conf = self.model(x)
            else:
                labels, conf = self.model(x)
        return labels.cpu().numpy(), conf.float().cpu().numpy()

    def describe(self) -> str:
        return f"{super().describe()} ({self.path.name}, {self.device})"

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"


def tensorrt_missing(gpu: bool = True) -> Optional[str]:
    """Why the tensorrt backend cannot run here (no TensorRT, one too old, no cuda-python, and with
    ``gpu`` no CUDA GPU it can reach), or None."""
    from .engine_cache import EngineCacheError, import_tensorrt
    try:
        import_tensorrt()
    except EngineCacheError as e:
        return str(e)
    except Exception as e:  # a broken install: the import itself fails
        return f"TensorRT does not import: {e}"
    try:
        from .cuda import cuda_unusable, import_cudart
        if not gpu:
            import_cudart()
            return None
        return cuda_unusable()
    except Exception as e:
        return str(e)


def tensorrt_installed() -> bool:
    """TensorRT (new enough) and cuda-python import, whether or not a GPU is reachable."""
    return tensorrt_missing(gpu=False) is None


def create_backend(kind: str, card: ModelCard, precision: str = "fp32", width: Optional[int] = None,
                   height: Optional[int] = None, onnx_path: Optional[str] = None,
                   weights: Optional[str] = None, threads: int = 0, confidence: bool = True,
                   **trt_options) -> Backend:
    """Build the backend ``kind`` (auto|tensorrt|onnxruntime|torch) for ``card``; ``confidence=False``
    lets a backend skip computing the confidence map (ONNX Runtime and TensorRT do)."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend '{kind}'; valid choices: {', '.join(BACKENDS)}")
    # a file the chosen backend would not read: the figures would be the card's model's, not its
    if weights and kind != "torch":
        raise BackendError(f"weights {weights} are run by backend 'torch' only (backend '{kind}' runs an ONNX "
                           "file): choose backend torch, or export them ('seg-perception export --weights') and "
                           "pass the ONNX file")
    if onnx_path and kind == "torch":
        raise BackendError(f"ONNX file {onnx_path} is run by backend onnxruntime or tensorrt, not torch "
                           "(which runs the .pt weights)")
    backend_precision(precision)
    width = int(width or card.input_width)
    height = int(height or card.input_height)
    if width % 8 or height % 8 or width <= 0 or height <= 0:
        raise BackendError(f"input size {width}x{height} must be positive multiples of 8")
    if kind == "auto":
        missing = tensorrt_missing()
        if missing is None:
            kind = "tensorrt"
        elif precision == "fp16":
            log.warning(f"backend 'auto' falls back to onnxruntime at fp32 (fp16 needs TensorRT): {missing}")
            kind, precision = "onnxruntime", "fp32"
        else:
            log.warning(f"backend 'auto' falls back to onnxruntime: {missing}")
            kind = "onnxruntime"
    if kind == "tensorrt":
        missing = tensorrt_missing()
        if missing is not None:
            raise BackendError(f"backend 'tensorrt' cannot run here: {missing}")
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(card, width, height, precision, onnx_path=onnx_path, confidence=confidence,
                               **trt_options)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(card, width, height, precision, onnx_path=onnx_path, threads=threads,
                                  confidence=confidence)
    return TorchBackend(card, width, height, precision, weights=weights, threads=threads)


def default_threads() -> int:
    """Threads for CPU inference: SEG_PERCEPTION_THREADS or 0 (the runtime's own default)."""
    return int(os.environ.get("SEG_PERCEPTION_THREADS", "0") or 0)
