"""CUDA through cuda-python's runtime bindings: device and pinned host buffers, and what
the GPU is. The TensorRT backend runs on these; the engine cache and the doctor ask
``gpu_properties`` which GPU an engine is for.

cuda-python (``cuda.bindings.runtime``, ``cuda.cudart`` in releases before 12.6) is
what TensorRT's own Python samples use, a small wheel for x86-64 and aarch64 (Jetson),
and it needs no CUDA build of PyTorch, which on a Jetson means NVIDIA's
JetPack-specific wheel. It is imported only when a function here is called.
"""
from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .backend import BackendError


def import_cudart():
    """cuda-python's CUDA runtime module, or a BackendError that says how to install it."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise BackendError("the tensorrt backend needs cuda-python for GPU buffers: pip install "
                               "'cuda-python==<your CUDA major>.*' (12.* on JetPack 6)") from None
    return cudart


def check(cudart, result):
    """cuda-python calls return (error, value...): raise on error, return the value(s)."""
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorString(err)[1]
        raise BackendError(f"CUDA error: {name.decode() if isinstance(name, bytes) else name}"
                           + driver_advice(cudart, err))
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def driver_advice(cudart, err) -> str:
    """A cuda-python newer than the driver (a plain `pip install cuda-python` is 13.x; JetPack 6's
    driver runs CUDA 12) fails with 'driver version is insufficient': name the wheel that fits."""
    if err != getattr(cudart.cudaError_t, "cudaErrorInsufficientDriver", None):
        return ""
    try:
        driver = int(cudart.cudaDriverGetVersion()[1])  # e.g. 12020 = CUDA 12.2; 0: no driver loaded
        runtime = int(cudart.cudaRuntimeGetVersion()[1])
    except Exception:
        return ": pip install 'cuda-python==<the CUDA major version of your driver>.*'"
    if driver <= 0:
        return (": no NVIDIA driver is visible to this process (in a container: --runtime nvidia or --gpus "
                "all)")
    runs = f"this driver runs CUDA {driver // 1000}.{driver % 1000 // 10}"
    if driver // 1000 < runtime // 1000:
        return f": {runs}; pip install 'cuda-python=={driver // 1000}.*'"
    return f": {runs}, cuda-python needs CUDA {runtime // 1000}.{runtime % 1000 // 10}: update the NVIDIA driver"


def cuda_unusable() -> Optional[str]:
    """Why no CUDA GPU can be used here (no device, no rights, a driver older than cuda-python), or
    None: TensorRT imports without one, and `auto` must then take ONNX Runtime."""
    cudart = import_cudart()
    try:
        count = check(cudart, cudart.cudaGetDeviceCount())
    except BackendError as e:
        return f"no usable CUDA GPU ({e})"
    return None if count else "no CUDA GPU found (cudaGetDeviceCount: 0)"


def gpu_properties(device: int = 0) -> Dict[str, Any]:
    """Name, compute capability, memory and CUDA versions of a GPU (cuda-python)."""
    cudart = import_cudart()
    props = check(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": int(props.multiProcessorCount), "memory_mib": int(props.totalGlobalMem) >> 20,
            "cuda_runtime": check(cudart, cudart.cudaRuntimeGetVersion()),
            "cuda_driver": check(cudart, cudart.cudaDriverGetVersion())}


class IOBuffer:
    """A pinned host array and its device twin, allocated once."""

    def __init__(self, cudart, shape: Tuple[int, ...], dtype: np.dtype):
        self.cudart = cudart
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.host_ptr = check(cudart, cudart.cudaMallocHost(self.nbytes))
        raw = ctypes.cast(int(self.host_ptr), ctypes.POINTER(ctypes.c_uint8))
        self.host = np.ctypeslib.as_array(raw, (self.nbytes,)).view(self.dtype).reshape(self.shape)
        self.device = check(cudart, cudart.cudaMalloc(self.nbytes))

    def _bytes(self, frames: Optional[int]) -> int:
        """The first ``frames`` along the batch axis (all without): one camera's frame in a buffer
        sized for several is copied alone."""
        if frames is None or not self.shape:
            return self.nbytes
        if not 0 < int(frames) <= self.shape[0]:  # past the allocations
            raise ValueError(f"{frames} frames do not fit a buffer of {self.shape[0]}")
        return int(frames) * (self.nbytes // self.shape[0])

    def to_device(self, stream, frames: Optional[int] = None) -> None:
        c = self.cudart
        check(c, c.cudaMemcpyAsync(self.device, self.host_ptr, self._bytes(frames),
                                    c.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def to_host(self, stream, frames: Optional[int] = None) -> None:
        c = self.cudart
        check(c, c.cudaMemcpyAsync(self.host_ptr, self.device, self._bytes(frames),
                                    c.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def free(self) -> None:
        if self.device is not None:
            self.cudart.cudaFree(self.device)
            self.cudart.cudaFreeHost(self.host_ptr)
            self.device = None
