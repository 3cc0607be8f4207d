"""TensorRT backend: a cached engine (engine_cache.py) run with CUDA streams.

Device memory, pinned host memory and the stream come from cuda-python's runtime
bindings (cuda.py), not from PyTorch. Both ``tensorrt`` and cuda-python are
imported only when this backend starts. The node builds a missing or stale
engine at start-up, which is why the engine cache is runtime code too.

Per frame: copy the uint8 frame into a pinned host buffer, one async copy to the
device, ``execute_async_v3`` on the stream, async copies of ``labels`` (and
``confidence``, when the engine computes it: ``confidence=False`` asks the cache
for an engine without it) back, one stream synchronise. Buffers are allocated once.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..card import PRECISIONS, ModelCard
from . import engine_cache as eng
from .backend import Backend, BackendError, backend_precision, onnx_file
from .cuda import IOBuffer, check, import_cudart

log = logging.getLogger(__name__)


_NP_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
             "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def _np_dtype(trt, dt) -> np.dtype:
    for name, np_type in _NP_TYPES.items():
        if getattr(trt.DataType, name, None) == dt:
            return np.dtype(np_type)
    raise BackendError(f"engine tensor type {dt} is not supported by this backend")


class TensorRTBackend(Backend):
    """A serialized TensorRT engine from the engine cache, built from the card's ONNX when needed."""

    name = "tensorrt"
    precisions = PRECISIONS

    def __init__(self, card: ModelCard, width: int, height: int, precision: str = "fp16",
                 onnx_path: Optional[str | Path] = None, cache_dir: Optional[str | Path] = None,
                 rebuild: bool = True, workspace_mib: int = 1024, timing_cache: Optional[str | Path] = None,
                 warmup_runs: int = 3, max_batch: int = 1, confidence: bool = True):
        super().__init__(card, width, height, precision)
        backend_precision(precision)
        try:
            trt = eng.import_tensorrt()
        except eng.EngineCacheError as e:
            raise BackendError(str(e)) from None
        cudart = import_cudart()
        self.trt, self.cudart = trt, cudart
        self.onnx_path = onnx_file(card, precision, onnx_path)
        if int(max_batch) < 1:
            raise BackendError(f"max_batch must be at least 1, got {max_batch}")
        shape = (1, self.height, self.width, 3)
        # The engine's input shape carries the batch it must take (the sidecar records it, so a
        # node with more cameras rebuilds instead of looping frame by frame).
        outputs = eng.ALL_OUTPUTS if confidence else ("labels",)
        self._buffers: Dict[str, IOBuffer] = {}
        self.stream = None
        logger = eng.trt_logger(trt)
        # An engine with plugin layers (TensorRT 8.6's parser makes InstanceNormalization one) loads only
        # once the plugins are registered; the parser registers them while building, not in a new process.
        if hasattr(trt, "init_libnvinfer_plugins"):
            trt.init_libnvinfer_plugins(logger, "")
        try:
            runtime = eng.trt_object(trt.Runtime, logger, "trt.Runtime")
        except eng.EngineCacheError as e:
            raise BackendError(str(e)) from None
        self.engine = None
        for attempt in range(2):
            try:
                self.engine_path, self.cache_decision = eng.ensure_engine(
                    self.onnx_path, precision, (int(max_batch),) + shape[1:], cache_dir=cache_dir, rebuild=rebuild,
                    workspace_mib=workspace_mib, timing_cache=timing_cache, outputs=outputs)
                blob = self.engine_path.read_bytes()
            except (eng.EngineCacheError, ValueError, FileNotFoundError) as e:
                raise BackendError(str(e)) from None
            except OSError as e:
                raise BackendError(f"cannot read engine {self.engine_path}: {e.strerror or e}") from None
            # The cache checked the file against its sidecar; another writer (a node of another
            # TensorRT sharing the cache, build-engine --force) may have replaced it since: decide again.
            if eng.engine_matches(blob, self.cache_decision):
                break
            if attempt:
                raise BackendError(f"engine {self.engine_path} changed while it was read, twice: another process "
                                   "is rebuilding it; start again when it is done")
        self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None and self.cache_decision.action == "build":
            raise BackendError(f"TensorRT built {self.engine_path} but cannot load it: its messages above say why "
                               "(most often too little free GPU memory)")
        if self.engine is None:
            # The bytes are the ones its sidecar records: rebuilding would need more GPU memory than
            # loading, and throw away an engine that loads once memory is free.
            raise BackendError(f"TensorRT cannot load engine {self.engine_path}, though the file is intact (it "
                               "matches its sidecar): its messages above say why; most often too little free GPU "
                               "memory (close other GPU programs, run fewer workers or cameras), else TensorRT "
                               "libraries other than those that built it (reinstall them from one JetPack or CUDA "
                               "release); 'seg-perception build-engine --force' rebuilds it")
        self.context = self.engine.create_execution_context()
        if self.context is None:  # the bindings give None where TensorRT could not allocate one
            raise BackendError(f"TensorRT cannot create an execution context for {self.engine_path.name}: too "
                               "little free GPU memory (on a Jetson, the memory it shares with the CPU); run fewer "
                               "workers or cameras, a smaller input, or close other GPU programs")
        self.stream = check(cudart, cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        # Several cameras (infer_batch): the optimization profile's max batch is how many frames one
        # call can take. The cache builds the profile for max_batch (1..max_batch); an engine whose
        # profile allows one frame (a static-batch ONNX) makes infer_batch run frame by frame.
        self.max_batch = 1
        dynamic = [n for n in self.inputs if any(int(d) < 0 for d in self.engine.get_tensor_shape(n))]
        if len(dynamic) == 1 and int(self.engine.get_tensor_shape(dynamic[0])[0]) < 0:
            self.max_batch = max(1, int(self.engine.get_tensor_profile_shape(dynamic[0], 0)[2][0]))
        for name in dynamic:  # dynamic engines: fix the shape before sizing any buffer
            self._set_shape(name, (self.max_batch,) + shape[1:])
        for name in names:
            dims = tuple(int(d) for d in self.context.get_tensor_shape(name))
            buf = IOBuffer(cudart, dims, _np_dtype(trt, self.engine.get_tensor_dtype(name)))
            self._buffers[name] = buf
            if self.context.set_tensor_address(name, int(buf.device)) is False:  # the bindings return a bool
                raise BackendError(f"TensorRT refused the device buffer of {name} ({dims}) for engine "
                                   f"{self.engine_path}: delete it (and its .json) to rebuild it")
        for name in dynamic:  # infer() runs one frame
            self._set_shape(name, shape)
        if len(self.inputs) != 1 or self._buffers[self.inputs[0]].dtype != np.uint8 or "labels" not in self.outputs:
            raise BackendError(f"engine {self.engine_path} does not take a uint8 frame and give 'labels': "
                               "build it from an ONNX made by 'seg-perception export'")
        self.has_confidence = "confidence" in self.outputs
        self.warmup(warmup_runs)

    def _set_shape(self, name: str, shape: tuple) -> None:
        if not self.context.set_input_shape(name, shape):  # outside the optimization profile
            raise BackendError(f"engine {self.engine_path} does not take input {name} of shape {shape}: delete it "
                               "(and its .json) to rebuild it for this size")

    def _execute(self, frames: int) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            shape = (frames,) + self._buffers[self.inputs[0]].shape[1:]
            raise BackendError(f"TensorRT could not run {self.engine_path.name} on input {shape}: its messages "
                               "above say why")

    def infer(self, image: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        inp = self._buffers[self.inputs[0]]
        if image.shape != inp.shape[1:] or image.dtype != np.uint8:
            raise ValueError(f"tensorrt backend expects a uint8 frame of shape {inp.shape[1:]}, got "
                             f"{image.dtype} {image.shape}")
        np.copyto(inp.host[0], image)
        inp.to_device(self.stream, frames=1)  # the buffers hold max_batch frames; this call runs one
        self._execute(1)
        for name in self.outputs:
            self._buffers[name].to_host(self.stream, frames=1)
        check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream))
        labels = self._buffers["labels"].host[0].astype(np.uint8)  # a copy: host buffers are reused
        conf = self._buffers["confidence"].host[0].astype(np.float32) if self.has_confidence else None
        return labels, conf

    def infer_batch(self, images: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        n = len(images)
        if n == 1 or n > self.max_batch:
            return super().infer_batch(images)  # batch-1 profile (the cache's engines): frame by frame
        name = self.inputs[0]
        inp = self._buffers[name]
        if images.shape[1:] != inp.shape[1:] or images.dtype != np.uint8:
            raise ValueError(f"tensorrt backend expects uint8 frames of shape {inp.shape[1:]}, got "
                             f"{images.dtype} {images.shape[1:]}")
        self._set_shape(name, (n,) + inp.shape[1:])
        try:
            np.copyto(inp.host[:n], images)
            inp.to_device(self.stream, frames=n)
            self._execute(n)
            for out in self.outputs:
                self._buffers[out].to_host(self.stream, frames=n)
            check(self.cudart, self.cudart.cudaStreamSynchronize(self.stream))
        finally:
            self._set_shape(name, (1,) + inp.shape[1:])
        labels = self._buffers["labels"].host[:n].astype(np.uint8)
        conf = self._buffers["confidence"].host[:n].astype(np.float32) if self.has_confidence else None
        return labels, conf

    def describe(self) -> str:
        return f"{super().describe()} ({self.engine_path.name}, TensorRT {self.trt.__version__})"

    @property
    def on_gpu(self) -> bool:
        return True

    def close(self) -> None:
        # the execution context before its engine, both before their device buffers: on a Jetson the
        # engine's memory is the CPU's too, so it goes now, not at garbage collection
        self.context = None
        self.engine = None
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
