"""TensorRT engines: the engine cache and the build (the node's start-up and
`seg-perception build-engine` both come here).

An engine only runs on the TensorRT version and GPU that built it, from the ONNX
file, precision, input shape and outputs it was built for. Each cached engine
``<cache>/<onnx stem>.<sha>.<precision>.<W>x<H>.b<N>[.labels].engine`` (``engine_path``; ``<sha>``: the
ONNX file's sha256, 12 hex) has a JSON sidecar ``<engine>.json`` recording exactly those facts
(``SIDECAR_FIELDS``) and the engine file's own sha256 and size.
Loading compares the sidecar with the present facts (``decide``, pure Python):
all equal -> reuse, nothing is written, so the cache may be read-only; any
difference, or an engine file that is not the one the sidecar records -> rebuild, or with
``rebuild=False`` refuse with the field that differs. A missing engine is built.

Building uses the TensorRT Python API only (8.5 and later; 8.6 and 10.x on JetPack 6): Builder,
create_network, OnnxParser, create_builder_config, set_memory_pool_limit,
a reusable timing cache, BuilderFlag.FP16 for fp16. INT8 is explicit
quantization from the Q/DQ ONNX made by `seg-perception quantize`: on 10.x the
INT8 (+FP16, for layers left in float) flags enable it; TensorRT 11 removed
those flags because every network is strongly typed and Q/DQ alone decides.
TensorRT 11 has no fp16 flag either; fp16 there needs an fp16 ONNX, which this
package does not make (JetPack 6.1/6.2 ship TensorRT 10.3, JetPack 6.0 8.6; JetPack 5.1's 8.5 runs
the API, but the package needs JetPack 6's Python 3.10).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

from ..card import check_precision
from ..files import atomic_write, sha256
from ..paths import cache_dir

log = logging.getLogger(__name__)

SIDECAR_FIELDS = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "gpu_multiprocessors",
                  "precision", "input_shape", "outputs", "tf32")
ALL_OUTPUTS = ("labels", "confidence")
# Sidecars written before a field existed: what the engines of that time were built with
# (TensorRT allows TF32 unless told not to).
SIDECAR_DEFAULTS = {"outputs": list(ALL_OUTPUTS), "tf32": True}
DEFAULT_WORKSPACE_MIB = 1024
ONNX_SHA_CHARS = 12  # hex of the ONNX sha256 in an engine's file name: 48 bits, short, and no collision in practice


class EngineCacheError(RuntimeError):
    """An engine that cannot be used or built as configured; the message says what to change."""


# ------------------------------------------------------------------ cache (pure Python)
@dataclass(frozen=True)
class EngineKey:
    """What an engine was built from and for: the sidecar's content."""
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shape: Tuple[int, ...]
    outputs: Tuple[str, ...] = ALL_OUTPUTS
    tf32: bool = True  # float layers may round their inputs to TF32 (False for fp32: see uses_tf32)
    # Jetson Orin modules all say "Orin", compute 8.7: AGX Orin has 16 or 14 SMs, Orin NX and Nano
    # 8 or 4. An engine tuned on one is not the other's.
    gpu_multiprocessors: int = 0

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["input_shape"] = [int(v) for v in self.input_shape]
        d["outputs"] = list(self.outputs)
        return d


@dataclass(frozen=True)
class CacheDecision:
    action: str                  # "reuse" | "build" | "refuse"
    reason: str
    field: Optional[str] = None  # the sidecar field that differs, "sidecar" when unreadable
    # The engine file's sha256 and size as its sidecar records them (set by ensure_engine): the
    # bytes the backend reads must be these, or another writer replaced the file meanwhile.
    engine_sha256: Optional[str] = None
    engine_size: Optional[int] = None


def uses_tf32(precision: str) -> bool:
    """TensorRT lets float convolutions round their inputs to TF32 (10-bit mantissa) on Ampere and
    later GPUs, Jetson Orin included, unless the builder is told not to. An engine asked for as
    fp32 is the full-precision reference (fp16 is the fast choice), so it is built without."""
    return precision != "fp32"


def default_cache_dir() -> Path:
    """$SEG_PERCEPTION_ENGINE_CACHE, else engines/ in the package's cache folder (paths.cache_dir)."""
    env = os.environ.get("SEG_PERCEPTION_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "engines"


def engine_path(cache_dir: str | Path, onnx_path: str | Path, precision: str, input_shape: Sequence[int],
                outputs: Sequence[str] = ALL_OUTPUTS, onnx_sha256: Optional[str] = None) -> Path:
    """``<stem>.<sha>.<precision>.<W>x<H>.b<batch>.engine``; an engine without the confidence output is
    ``...labels.engine``: each configuration that needs its own engine (a size, a number of cameras,
    confidence or not) keeps its own file, so two nodes (or doctor's batch row) never rebuild
    each other's. ``<sha>`` (the ONNX file's sha256, hashed when not given) does the same for two
    ONNX files of one name (a run's export and the shipped model, cached exports)."""
    n, h, w = (int(v) for v in tuple(input_shape)[:3])
    part = "" if "confidence" in outputs else ".labels"
    sha = (onnx_sha256 or sha256(onnx_path))[:ONNX_SHA_CHARS]
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{sha}.{precision}.{w}x{h}.b{n}{part}.engine"


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | Path) -> Optional[Dict]:
    """The sidecar's content, or None when missing or unreadable."""
    try:
        data = json.loads(sidecar_path(engine).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def decide(engine_exists: bool, sidecar: Optional[Dict], key: EngineKey, rebuild: bool = True) -> CacheDecision:
    """Reuse, build or refuse a cached engine; pure, so every branch is unit-tested."""
    if not engine_exists:
        return CacheDecision("build", "no cached engine")
    stale = None
    if sidecar is None:
        stale = ("sidecar", "its sidecar JSON is missing or unreadable")
    else:
        want = key.to_dict()
        for f in SIDECAR_FIELDS:
            if f == "gpu_multiprocessors" and f not in sidecar:
                continue  # written before it was recorded: on its own GPU, as engines are built (docs)
            have = sidecar.get(f, SIDECAR_DEFAULTS.get(f))
            if have != want[f]:
                stale = (f, f"it was built for {f} {have!r}, now {want[f]!r}")
                break
    if stale is None:
        return CacheDecision("reuse", "sidecar matches")
    field, why = stale
    return CacheDecision("build" if rebuild else "refuse", f"the cached engine is stale: {why}", field)


def _check_cached(path: Path, key: EngineKey, rebuild: bool) -> CacheDecision:
    """``decide`` on the cached engine, then whether the engine file is the one its sidecar records:
    a write cut by a power loss, or a file another writer replaced, is stale like any other."""
    sidecar = read_sidecar(path)
    decision = decide(path.is_file(), sidecar, key, rebuild)
    if decision.action != "reuse":
        return decision
    recorded = (sidecar.get("engine_sha256"), sidecar.get("engine_size"))
    try:
        found = (sha256(path), path.stat().st_size)
    except OSError:  # removed meanwhile
        found = None
    if found != recorded:
        return CacheDecision("build" if rebuild else "refuse", "the cached engine is stale: the engine file is "
                             "not the one its sidecar records (cut short, or replaced by another build)",
                             "engine_sha256")
    return replace(decision, engine_sha256=recorded[0], engine_size=recorded[1])


def engine_matches(blob: bytes, decision: CacheDecision) -> bool:
    """Whether ``blob``, read from the engine's file, is the engine ``decision`` was made for."""
    return len(blob) == decision.engine_size and hashlib.sha256(blob).hexdigest() == decision.engine_sha256


def _require_writable(folder: Path, why: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EngineCacheError(f"cannot create engine cache folder {folder} ({e.strerror}) to {why}: set "
                               "engine_cache_dir (--cache-dir) to a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EngineCacheError(f"engine cache folder {folder} is not writable, and {why}: set "
                               "engine_cache_dir (--cache-dir) to a writable folder, or build the engine "
                               "there once as a user who can write it")


Builder = Callable[..., bytes]


def ensure_engine(onnx_path: str | Path, precision: str, input_shape: Sequence[int],
                  cache_dir: Optional[str | Path] = None, rebuild: bool = True,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB, timing_cache: Optional[str | Path] = None,
                  env: Optional[Dict[str, str]] = None, builder: Optional[Builder] = None,
                  outputs: Sequence[str] = ALL_OUTPUTS) -> Tuple[Path, CacheDecision]:
    """Path of a valid engine for ``onnx_path`` in the cache, built when needed.

    ``outputs``: the graph outputs the engine computes; ("labels",) leaves the confidence map
    (softmax max over every logit) out of the engine. ``env`` (tensorrt_version, gpu_name,
    compute_capability) and ``builder`` default to the installed TensorRT and the current GPU;
    tests pass their own."""
    onnx_path = Path(onnx_path)
    check_precision(precision)
    if "labels" not in outputs or not set(outputs) <= set(ALL_OUTPUTS):
        raise ValueError(f"engine outputs {list(outputs)}: must hold 'labels', from {list(ALL_OUTPUTS)}")
    outputs = tuple(o for o in ALL_OUTPUTS if o in outputs)  # one order, one sidecar value
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} not found: run 'seg-perception export' "
                                "(and 'quantize' for int8) first")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    env = env if env is not None else build_environment()
    key = EngineKey(onnx_sha256=sha256(onnx_path), tensorrt_version=env["tensorrt_version"],
                    gpu_name=env["gpu_name"], compute_capability=env["compute_capability"],
                    gpu_multiprocessors=int(env.get("gpu_multiprocessors", 0)),
                    precision=precision, input_shape=tuple(int(v) for v in input_shape), outputs=outputs,
                    tf32=uses_tf32(precision))
    path = engine_path(cache, onnx_path, precision, key.input_shape, outputs, key.onnx_sha256)
    decision = _check_cached(path, key, rebuild)
    if decision.action == "reuse":
        return path, decision
    if outputs != ALL_OUTPUTS and not rebuild:
        # Engines built before labels-only ones existed (or by 'build-engine --confidence') serve a
        # node that must not build at start-up: the extra output costs time, not correctness.
        full = engine_path(cache, onnx_path, precision, key.input_shape, onnx_sha256=key.onnx_sha256)
        found = _check_cached(full, replace(key, outputs=ALL_OUTPUTS), False)
        if found.action == "reuse":
            return full, replace(found, reason="no valid labels-only engine and rebuild_engine is false: "
                                               "the engine that also computes confidence serves")
    if decision.action == "refuse":
        raise EngineCacheError(f"{path}: {decision.reason}; rebuild_engine is false, so it is not rebuilt: "
                               "run 'seg-perception build-engine' (with --confidence for a node that publishes "
                               "confidence or ground outputs) or set rebuild_engine true")
    check_onnx_for_precision(onnx_path, precision)
    _require_writable(cache, f"the engine must be built ({decision.reason})")
    with _lock(path):
        # Two nodes started together (one launch file, two cameras) build one engine, not two at once
        # (minutes each, and both in GPU memory on a Jetson): the second finds the first's.
        found = _check_cached(path, key, rebuild)
        if found.action == "reuse":
            return path, replace(found, reason="built by another process while this one waited")
        log.warning("building TensorRT %s engine for %s (%s); this takes minutes once", precision, onnx_path.name,
                    decision.reason)
        blob = bytes((builder or build_serialized_engine)(onnx_path, precision, key.input_shape,
                                                          workspace_mib=workspace_mib, timing_cache=timing_cache,
                                                          outputs=outputs))
        # The engine's checksum in the sidecar: a reader can tell the bytes it got are these (not a
        # file cut short, or one another writer put there since).
        meta = dict(key.to_dict(), engine_sha256=hashlib.sha256(blob).hexdigest(), engine_size=len(blob),
                    onnx_file=str(onnx_path.resolve()), built_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    workspace_mib=int(workspace_mib))
        try:
            atomic_write(path, blob)
            atomic_write(sidecar_path(path), (json.dumps(meta, indent=1) + "\n").encode())
        except OSError as e:
            raise EngineCacheError(f"cannot write engine {path} ({e.strerror or e}): free space there or set "
                                   "engine_cache_dir (--cache-dir) to a writable folder") from None
    return path, replace(decision, engine_sha256=meta["engine_sha256"], engine_size=len(blob))


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` while ``path`` is built or rewritten (POSIX flock:
    between processes, and between threads that open it separately)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    try:
        f = open(path.with_name(path.name + ".lock"), "a")
    except OSError as e:
        raise EngineCacheError(f"cannot create lock file {path}.lock ({e.strerror or e}): its folder must be "
                               "writable") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_onnx_graph(onnx_path: str | Path):
    """The ONNX model (without external data), or one line saying the file is not one."""
    import onnx
    from google.protobuf.message import DecodeError  # (installed with onnx)
    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except DecodeError:
        raise ValueError(f"{onnx_path} is not a readable ONNX file (cut short or another format): export it "
                         "again with 'seg-perception export'") from None


def check_onnx_for_precision(onnx_path: str | Path, precision: str) -> None:
    """A Q/DQ graph builds INT8 whatever flag is set, a float graph never does: refuse a mix-up."""
    try:
        m = load_onnx_graph(onnx_path)
    except ImportError:
        raise EngineCacheError("building a TensorRT engine checks the ONNX file with the onnx package, which is "
                               "not installed: pip install onnx") from None
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
    if precision == "int8" and not qdq:
        raise ValueError(f"{onnx_path} has no Q/DQ nodes: int8 engines are built from the INT8 ONNX made by "
                         "'seg-perception quantize' (card file role onnx_int8)")
    if precision != "int8" and qdq:
        raise ValueError(f"{onnx_path} is an INT8 Q/DQ model: build it with --precision int8, or pass the "
                         "fp32 ONNX for fp32/fp16")


# ------------------------------------------------------------------ TensorRT (thin)
# The named-tensor API the backend runs on (set_input_shape, set_tensor_address, execute_async_v3)
# came with TensorRT 8.5 (JetPack 5.1; the package itself needs JetPack 6's Python 3.10).
MIN_TENSORRT = (8, 5)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineCacheError("TensorRT is not installed: on a Jetson it comes with JetPack "
                               "(python3-libnvinfer); elsewhere pip install tensorrt. Use the onnxruntime "
                               "backend without it") from None
    version = str(getattr(trt, "__version__", ""))
    try:
        found = tuple(int(v) for v in version.split(".")[:2])
    except ValueError:
        found = MIN_TENSORRT  # no version, or a development build's odd one: let it try
    if found < MIN_TENSORRT:
        raise EngineCacheError(f"TensorRT {version} is too old: the tensorrt backend needs "
                               f"{'.'.join(map(str, MIN_TENSORRT))} or newer (on a Jetson: JetPack 6, whose "
                               "Python 3.10 this package needs too); upgrade, or use backend:=onnxruntime") from None
    return trt


_LOGGER: list = []  # [(tensorrt module, its Logger)]: one logger for the process


def trt_logger(trt):
    """The process's one TensorRT logger: a Builder given another logger than the Runtime's
    makes TensorRT warn on every build (node start-up, each worker)."""
    if not _LOGGER or _LOGGER[0][0] is not trt:
        _LOGGER[:] = [(trt, trt.Logger(trt.Logger.WARNING))]
    return _LOGGER[0][1]


GPU_UNUSABLE = ("TensorRT could not create its {what}: its messages above say why; most often CUDA did not "
                "start (in a container, run it with --runtime nvidia or --gpus all; the user needs the GPU's "
                "devices, group 'video' on a Jetson; nvidia-smi or tegrastats shows whether the driver works) "
                "or TensorRT's libraries do not match (reinstall them from one JetPack or CUDA release); or use "
                "backend onnxruntime")


def trt_object(factory, logger, what: str):
    """trt.Runtime / trt.Builder: when CUDA cannot start, the bindings raise pybind11's
    "factory function returned nullptr" TypeError (or return None), which says nothing of why."""
    try:
        obj = factory(logger)
    except TypeError as e:
        if "nullptr" not in str(e):
            raise
        obj = None
    if obj is None:
        raise EngineCacheError(GPU_UNUSABLE.format(what=what))
    return obj


def build_environment() -> Dict[str, str]:
    """The facts an engine is bound to: TensorRT version and the current GPU."""
    trt = import_tensorrt()
    from .cuda import gpu_properties
    gpu = gpu_properties()
    return {"tensorrt_version": str(trt.__version__), "gpu_name": gpu["name"],
            "compute_capability": gpu["compute_capability"], "gpu_multiprocessors": gpu["multiprocessors"]}


def network_flags(trt) -> int:
    """create_network's flags: explicit batch, the only mode of TensorRT 10 (flag 0) and one the
    ONNX parser needs asked for in TensorRT 8.x (JetPack 5.1, 6.0), where 0 means implicit batch."""
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return 1 << int(flag) if major < 10 and flag is not None else 0


def _attach_timing_cache(config, path: Path):
    """The timing cache from ``path`` on the builder config. A cache written by another TensorRT
    version is refused by TensorRT (combine/set return false, or the blob does not parse), and one
    from another GPU must not be used (its timings are that GPU's): both are replaced by an empty
    cache, which this build fills and writes back."""
    blob = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(blob)
        ok = cache is not None and config.set_timing_cache(cache, False)  # False: no foreign device's cache
    except Exception:  # the Python bindings raise on a blob they cannot parse
        ok = False
    if not ok:
        log.warning("timing cache %s is from another TensorRT version or GPU: this build starts an empty one "
                    "and replaces it", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _check_platform(builder, precision: str) -> None:
    """A GPU without fast int8 kernels (before Pascal's DP4A, some GeForce Pascal) fails an int8
    build with TensorRT's internal error; without fast fp16 an fp16 engine runs mostly in fp32.
    The builder says which (TensorRT 8.5-10.x; 11 dropped both attributes with the flags)."""
    if precision == "int8" and getattr(builder, "platform_has_fast_int8", True) is False:
        raise EngineCacheError("this GPU has no fast INT8 kernels (TensorRT: platform_has_fast_int8 is false): "
                               "use precision fp16 or fp32")
    if precision == "fp16" and getattr(builder, "platform_has_fast_fp16", True) is False:
        log.warning("this GPU has no fast FP16 kernels (TensorRT: platform_has_fast_fp16 is false): the fp16 "
                    "engine runs mostly in fp32, no faster; precision fp32 says what it is")


def build_serialized_engine(onnx_path: str | Path, precision: str, input_shape: Sequence[int],
                            workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                            timing_cache: Optional[str | Path] = None,
                            outputs: Sequence[str] = ALL_OUTPUTS) -> bytes:
    """Parse the ONNX file and build a serialized engine with the TensorRT Python API, computing
    the graph ``outputs`` only."""
    trt = import_tensorrt()
    logger = trt_logger(trt)
    builder = trt_object(trt.Builder, logger, "trt.Builder")
    _check_platform(builder, precision)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise EngineCacheError(f"TensorRT cannot parse {onnx_path}: {errors[:500]}")
    # An output left marked is computed on every call; unmarked, the builder drops the layers
    # that only it needed (the confidence map's max, exp and sum over all logits).
    unwanted = [network.get_output(i) for i in range(network.num_outputs)
                if network.get_output(i).name not in outputs]
    for tensor in unwanted:
        network.unmark_output(tensor)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    flags = trt.BuilderFlag
    if not uses_tf32(precision) and hasattr(flags, "TF32"):
        config.clear_flag(flags.TF32)
    if precision == "fp16":
        if not hasattr(flags, "FP16"):
            raise EngineCacheError(f"TensorRT {trt.__version__} has no FP16 builder flag (strong typing "
                                   "only): build fp32 or int8, or use TensorRT 10")
        config.set_flag(flags.FP16)
    elif precision == "int8" and hasattr(flags, "INT8"):
        config.set_flag(flags.INT8)   # TensorRT 10: enables the Q/DQ (explicit) int8 kernels
        config.set_flag(flags.FP16)   # layers between Q/DQ pairs may run in fp16
    # Dynamic dims (export --dynamic): one profile with H/W pinned at the runtime's shape and the
    # batch from 1 to input_shape[0] (several cameras batched into one call), tuned for the full
    # batch. input_shape[0] is 1 for one camera: the profile is then fixed, as before.
    # One profile covers every dynamic input (a profile per input would leave the others unset).
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        fixed = tuple(int(d) for d in tensor.shape)
        if all(d >= 0 for d in fixed) and fixed[1:] != tuple(int(v) for v in input_shape)[1:]:
            # before minutes of building: the engine would take only the ONNX's own size
            raise EngineCacheError(f"{onnx_path} takes {tensor.name} of fixed shape {fixed}, not the "
                                   f"{tuple(input_shape)} asked for: export it with 'seg-perception export --dynamic', or run it at "
                                   f"{fixed[2]}x{fixed[1]}")
        if any(d < 0 for d in fixed):
            if profile is None:
                profile = builder.create_optimization_profile()
            shape = tuple(int(v) for v in input_shape)
            smallest = (1,) + shape[1:] if int(tensor.shape[0]) < 0 else shape
            profile.set_shape(tensor.name, smallest, shape, shape)
    if profile is not None:
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache:
        cache = _attach_timing_cache(config, Path(timing_cache))
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise EngineCacheError(f"TensorRT failed to build a {precision} engine from {onnx_path}; its messages "
                               "above say why")
    if cache is not None:
        _save_timing_cache(config, Path(timing_cache))
    return bytes(blob)


def _save_timing_cache(config, path: Path) -> None:
    """Write the build's timing cache back to ``path``, merged with what other builds saved since
    it was read: every engine's build shares the file (their locks are per engine), so it is read,
    combined and replaced under its own lock, or two builds at once each keep only their own entries.
    (Reading it at the start needs no lock: atomic_write replaces it whole.)"""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(path):
            cache = config.get_timing_cache()
            saved = path.read_bytes() if path.is_file() else b""
            if saved:
                # another TensorRT version's or GPU's (warned of when read) is not merged: replaced
                try:
                    other = config.create_timing_cache(saved)
                    if other is not None:
                        cache.combine(other, False)  # False: this GPU's entries only
                except Exception:  # the bindings raise on a blob they cannot parse
                    pass
            atomic_write(path, bytes(cache.serialize()))
    except (OSError, EngineCacheError) as e:  # a read-only timing cache still sped this build up
        log.warning("timing cache %s not saved: %s", path, e)
