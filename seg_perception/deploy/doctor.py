"""`seg-perception doctor`: one command that checks a device end to end.

Prints what is installed (TensorRT, CUDA, GPU, ONNX Runtime), builds the fp32,
fp16 and int8 TensorRT engines of a model (cached, so the second run is quick),
runs each on sample frames, compares its labels with ONNX Runtime running the
same ONNX file on the CPU, and prints latency and FPS per precision next to the
ONNX Runtime CPU figures. Exit code 0 when every engine built and agreed,
1 otherwise (TensorRT missing included), 2 for bad arguments.
"""
from __future__ import annotations

import importlib
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..card import PRECISIONS, check_precision, load_card, onnx_role
from ..runtime.frame_sources import read_frames

# Minimum label agreement (percent of pixels) with ONNX Runtime running the same ONNX file.
# fp16 and int8 kernels round differently from the CPU's, so they get some slack.
MIN_AGREEMENT = {"fp32": 99.5, "fp16": 99.0, "int8": 97.0}
# mean absolute difference of the top-class probability against ONNX Runtime on the same graph
MAX_CONFIDENCE_DIFF = {"fp32": 0.005, "fp16": 0.01, "int8": 0.05}


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return "not installed"
    return str(getattr(mod, "__version__", "installed"))


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def environment() -> List[Tuple[str, str]]:
    """(what, value) lines about this machine's inference stack; never raises."""
    from .. import __version__
    rows = [("seg_perception", __version__), ("python", sys.version.split()[0]),
            ("platform", f"{platform.system()} {platform.machine()}")]
    jetson = _read("/proc/device-tree/model")
    if jetson:
        rows.append(("device", jetson))
    l4t = _read("/etc/nv_tegra_release")
    if l4t:
        rows.append(("L4T", l4t.splitlines()[0]))
    rows.append(("tensorrt", _version("tensorrt")))
    cuda_py = _version("cuda.bindings")
    rows.append(("cuda-python", cuda_py if cuda_py != "not installed" else _version("cuda")))
    try:
        from ..runtime.cuda import gpu_properties
        g = gpu_properties()
        rows.append(("gpu", f"{g['name']} (compute {g['compute_capability']}, {g['multiprocessors']} SMs, "
                            f"{g['memory_mib']} MiB)"))
        rows.append(("cuda", f"runtime {_cuda_version(g['cuda_runtime'])}, driver {_cuda_version(g['cuda_driver'])}"))
    except Exception as e:
        rows.append(("gpu", f"not available ({str(e).splitlines()[0][:240]})"))
    try:
        import onnxruntime as ort
        rows.append(("onnxruntime", f"{ort.__version__} ({', '.join(ort.get_available_providers())})"))
    except Exception:
        rows.append(("onnxruntime", "not installed"))
    rows.append(("torch", _version("torch")))
    return rows


def _cuda_version(v) -> str:
    v = int(v)
    return f"{v // 1000}.{(v % 1000) // 10}"


# ------------------------------------------------------------------ frames
def default_frames_source() -> Optional[Path]:
    """The shipped sample bag, else CamVid val; None when neither is here."""
    from ..paths import sample_bag
    try:
        return sample_bag()
    except FileNotFoundError:
        pass
    from ..data.datasets import default_camvid_root
    root = default_camvid_root()
    return root / "val" if (root / "val").is_dir() else None


def load_frames(source: Optional[str | Path], n: int,
                image_topic: Optional[str] = None) -> Tuple[List[Tuple[np.ndarray, str]], str]:
    """Up to ``n`` (frame, colour layout) from a folder of images or a rosbag2; synthetic
    frames when no source is given and no sample is installed."""
    src = Path(source) if source else default_frames_source()
    if src is None:
        rng = np.random.default_rng(0)
        frames = [(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8), "rgb") for _ in range(n)]
        return frames, f"{n} synthetic frames (no sample bag or CamVid found; pass --frames)"
    got = read_frames(src, n, image_topic=image_topic)
    return got.frames, got.note


# ------------------------------------------------------------------ checks
BATCH_FIXED = "skipped: the ONNX file has a fixed batch"


@dataclass
class DoctorRow:
    backend: str
    precision: str
    status: str = "skipped"           # ok | FAIL | skipped
    build: str = ""                   # "built 81.2 s" | "cached" | ""
    agreement: Optional[float] = None  # % labels equal to ONNX Runtime on the same ONNX file
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    fps: Optional[float] = None
    note: str = ""


def _confidence_diff(a: Sequence[Optional[np.ndarray]], b: Sequence[Optional[np.ndarray]]) -> Optional[float]:
    """Mean absolute difference of two runs' confidence maps (probabilities); None where either
    run has none (a labels-only engine)."""
    if not a or any(x is None for x in a) or any(y is None for y in b):
        return None
    return float(np.mean([np.abs(x.astype(np.float64) - y).mean() for x, y in zip(a, b)]))


def _agreement(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    same = sum(int((x == y).sum()) for x, y in zip(a, b))
    return 100.0 * same / max(1, sum(x.size for x in a))


def run_doctor(model: str, frames_source: Optional[str] = None, precisions: Sequence[str] = PRECISIONS,
               num_frames: int = 8, runs: int = 50, warmup: int = 5, cache_dir: Optional[str] = None,
               workspace_mib: int = 1024, threads: int = 0, batch: int = 2, image_topic: Optional[str] = None,
               out: Callable[[str], None] = print) -> int:
    from ..paths import resolve_model
    from ..runtime.backends import OnnxRuntimeBackend, tensorrt_missing
    from ..runtime.engine_cache import default_cache_dir
    from ..runtime.pipeline import Pipeline
    from ..timing import time_backend
    for p in precisions:
        check_precision(p)
    out("== seg-perception doctor ==")
    for k, v in environment():
        out(f"{k:>12}: {v}")
    card = load_card(resolve_model(model))
    w, h = card.input_width, card.input_height
    onnx = {p: card.onnx_for(p) for p in ("fp32", "int8")}  # the float and the Q/DQ graph
    if onnx["fp32"] is None or not onnx["fp32"].is_file():
        dynamic = " --dynamic" if (card.training.get("export") or {}).get("dynamic") else ""
        raise FileNotFoundError(f"model {card.name} has no ONNX file: run 'seg-perception export --model "
                                f"{model}{dynamic}' first")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out(f"{'model':>12}: {card.name} ({card.architecture}, {w}x{h}), card {card.path}")
    out(f"{'engines':>12}: {cache}")
    raw, frames_note = load_frames(frames_source, num_frames, image_topic)
    ort_fp32 = Pipeline(OnnxRuntimeBackend(card, w, h, "fp32", onnx_path=onnx["fp32"], threads=threads), card)
    frames = [ort_fp32.preprocess(f, layout) for f, layout in raw]
    out(f"{'frames':>12}: {frames_note}")

    # ONNX Runtime on the CPU: the reference labels and the figures to compare with.
    reference: Dict[str, List[tuple]] = {}  # graph -> each frame's (labels, confidence)
    rows: List[DoctorRow] = []
    for p in ("fp32", "int8") if "int8" in precisions else ("fp32",):  # int8: the INT8 engine's reference
        row = DoctorRow("onnxruntime", p)
        rows.append(row)
        if onnx[p] is None or not onnx[p].is_file():
            row.note = "no INT8 ONNX: run 'seg-perception quantize'" if p == "int8" else "no ONNX"
            continue
        be = ort_fp32.backend if p == "fp32" else OnnxRuntimeBackend(card, w, h, p, onnx_path=onnx[p],
                                                                     threads=threads)
        reference[onnx_role(p)] = [be.infer(f) for f in frames]
        t = time_backend(be, frames, max(5, runs // 5), 2)
        row.status = "ok"
        row.p50_ms, row.p95_ms, row.fps = t["p50"], t["p95"], t["fps"]
        row.note = ("reference (CPU)" if p == "fp32" else
                    f"reference (CPU) for TensorRT int8: {onnx[p].name}, the TensorRT file, timed on the CPU")
    if "int8" in precisions:
        rows.append(_cpu_int8_row(card, w, h, frames, threads, runs))

    trt_missing = tensorrt_missing()
    trt_ok = trt_missing is None
    for p in precisions:
        rows.append(_check_engine(DoctorRow("tensorrt", p), card, w, h, frames, trt_ok, reference, cache,
                                  workspace_mib, runs, warmup))
    rows.append(_labels_only_row(card, w, h, frames, trt_ok, precisions, rows, reference, cache, workspace_mib,
                                 runs, warmup))
    if batch > 1:
        rows.append(_batch_row(card, w, h, frames, batch, trt_ok, precisions, cache, workspace_mib, runs, warmup))
    out("")
    out(format_table(rows))
    trt_rows = [r for r in rows if r.backend.startswith("tensorrt")]
    failed = [r for r in trt_rows if r.status != "ok" and not r.note.startswith(BATCH_FIXED)]
    # a CPU row that ran and failed (the CPU INT8 file the node runs without TensorRT) fails the check too
    failed += [r for r in rows if not r.backend.startswith("tensorrt") and r.status == "FAIL"]
    out("")
    if not trt_ok:
        cpu = [r for r in failed if not r.backend.startswith("tensorrt")]
        out(f"RESULT: no engine was built: {trt_missing.rstrip('.')}. The onnxruntime rows above are what "
            "runs without it" + (": FAIL: " + "; ".join(f"{r.backend} {r.precision}: {r.note}" for r in cpu)
                                  if cpu else "") + ".")
        return 1
    if failed:
        out("RESULT: FAIL: " + "; ".join(f"{r.backend} {r.precision}: {r.note or r.status}" for r in failed))
        return 1
    built = [r for r in trt_rows if r.status == "ok"]  # not the batch row skipped for a fixed-batch ONNX
    out(f"RESULT: OK: {len(built)} TensorRT engines built, agree with ONNX Runtime, and run"
        + (f" ({len(trt_rows) - len(built)} row(s) skipped, see the table)" if len(built) < len(trt_rows) else "")
        + ".")
    return 0


def _cpu_int8_row(card, w: int, h: int, frames: List[np.ndarray], threads: int, runs: int) -> DoctorRow:
    """What the node runs for precision int8 on the CPU: the card's CPU INT8 file (else the Q/DQ one),
    labels only as the default config runs it."""
    from ..runtime.backends import OnnxRuntimeBackend
    from ..timing import time_backend
    row = DoctorRow("onnxruntime labels only", "int8")
    path = card.onnx_for("int8", "cpu")
    if path is None or not path.is_file():
        row.note = "no INT8 ONNX: run 'seg-perception quantize --target cpu'"
        return row
    try:
        be = OnnxRuntimeBackend(card, w, h, "int8", onnx_path=path, threads=threads, use_cuda=False,
                                confidence=False, time_int8_at_start=False)
        try:
            t = time_backend(be, frames, max(5, runs // 5), 2)
        finally:
            be.close()
    except Exception as e:
        row.status, row.note = "FAIL", str(e).splitlines()[0][:160]
        return row
    row.status = "ok"
    row.p50_ms, row.p95_ms, row.fps = t["p50"], t["p95"], t["fps"]
    row.note = f"what the CPU node runs: {path.name}" + (
        "" if path == card.file("onnx_int8_cpu") else
        " (no CPU INT8 file: slower than fp32 here; make one with 'seg-perception quantize --target cpu')")
    return row


def _open_engine(card, w: int, h: int, precision: str, cache: Path, workspace_mib: int, **options):
    """A TensorRT backend from the cache (built when missing or stale), and the table's
    engine column: "cached" or the build time."""
    from ..runtime.tensorrt_backend import TensorRTBackend
    t0 = time.perf_counter()
    be = TensorRTBackend(card, w, h, precision, cache_dir=cache, rebuild=True, workspace_mib=workspace_mib,
                         timing_cache=cache / "timing.cache", **options)
    return be, "cached" if be.cache_decision.action == "reuse" else f"built {time.perf_counter() - t0:.0f} s"


def _check_engine(row: DoctorRow, card, w: int, h: int, frames: List[np.ndarray], trt_ok: bool, reference,
                  cache: Path, workspace_mib: int, runs: int, warmup: int, **options) -> DoctorRow:
    """Build or load one engine (``row.precision``), compare its labels with ONNX Runtime running the
    same graph, and time it; ``confidence=False`` must give an engine without that output."""
    from ..timing import time_backend
    p = row.precision
    graph = onnx_role(p)  # the engine is compared with ONNX Runtime running the same graph
    if not trt_ok:
        row.note = "no usable TensorRT (see RESULT)"
        return row
    if graph not in reference:
        row.note = "no INT8 ONNX: run 'seg-perception quantize'" if p == "int8" else "no ONNX"
        return row
    try:
        be, row.build = _open_engine(card, w, h, p, cache, workspace_mib, **options)
        try:
            if options.get("confidence") is False and be.has_confidence:
                row.status, row.note = "FAIL", f"{be.engine_path.name} still computes confidence"
                return row
            got = [be.infer(f) for f in frames]
            row.agreement = _agreement([g[0] for g in got], [r[0] for r in reference[graph]])
            conf_diff = _confidence_diff([g[1] for g in got], [r[1] for r in reference[graph]])
            t = time_backend(be, frames, runs, warmup)
        finally:
            be.close()
        row.p50_ms, row.p95_ms, row.fps = t["p50"], t["p95"], t["fps"]
        row.status = "ok"
        if row.agreement < MIN_AGREEMENT[p]:
            row.status, row.note = "FAIL", f"labels agree {row.agreement:.2f}% < {MIN_AGREEMENT[p]}% with onnxruntime"
        elif conf_diff is not None and conf_diff > MAX_CONFIDENCE_DIFF[p]:  # the node publishes it, ground uses it
            row.status, row.note = "FAIL", (f"confidence differs from onnxruntime's by {conf_diff:.4f} on average "
                                            f"(> {MAX_CONFIDENCE_DIFF[p]})")
    except Exception as e:
        row.status, row.note = "FAIL", str(e).splitlines()[0][:160]
    return row


def _labels_only_row(card, w: int, h: int, frames: List[np.ndarray], trt_ok: bool, precisions, rows, reference,
                     cache: Path, workspace_mib: int, runs: int, warmup: int) -> DoctorRow:
    """The engine the default node runs: ``confidence`` unmarked, so TensorRT leaves out the
    softmax max over every logit. Same checks as the full engine; the note says the time saved."""
    p = next((q for q in ("fp16", "fp32", "int8") if q in precisions), precisions[0])
    row = _check_engine(DoctorRow("tensorrt labels only", p), card, w, h, frames, trt_ok, reference, cache,
                        workspace_mib, runs, warmup, confidence=False)
    full = next((r for r in rows if r.backend == "tensorrt" and r.precision == p), None)
    if row.status == "ok" and full is not None and full.p50_ms:
        saved = full.p50_ms - row.p50_ms
        row.note = f"{abs(saved):.1f} ms {'faster' if saved >= 0 else 'slower'} than with confidence"
    return row


def _batch_row(card, w: int, h: int, frames: List[np.ndarray], batch: int, trt_ok: bool, precisions, cache: Path,
               workspace_mib: int, runs: int, warmup: int) -> DoctorRow:
    """Several cameras on one engine: an engine built for ``batch`` frames must run them in one
    call with the labels of one call per frame. p50 is per frame of a full batch."""
    p = next((q for q in ("fp16", "fp32", "int8") if q in precisions), precisions[0])
    row = DoctorRow(f"tensorrt x{batch}", p)
    if not trt_ok:
        row.note = "no usable TensorRT (see RESULT)"
        return row
    try:
        from ..timing import latency_stats, time_calls
        be, row.build = _open_engine(card, w, h, p, cache, workspace_mib, max_batch=batch)
        stack = np.stack([frames[i % len(frames)] for i in range(batch)])
        if be.max_batch < batch:
            # the model's ONNX has a fixed batch (a plain export): nothing is broken, several cameras
            # run frame by frame; a dynamic export batches them
            row.note = (f"{BATCH_FIXED} of {be.max_batch} (exported without --dynamic): several cameras run frame "
                        "by frame; re-export with 'seg-perception export --dynamic' to batch them")
            be.close()
            return row
        together = list(be.infer_batch(stack)[0])
        one_by_one = [be.infer(f)[0] for f in stack]
        row.agreement = _agreement(together, one_by_one)
        ms = time_calls(be.infer_batch, [stack], runs=max(5, runs // 5), warmup=warmup)
        be.close()
        t = latency_stats(np.asarray(ms) / batch)  # FPS 1/mean, as every other row
        row.p50_ms, row.p95_ms, row.fps = t["p50"], t["p95"], t["fps"]
        row.status = "ok" if row.agreement >= 99.9 else "FAIL"
        row.note = f"{batch} frames per call vs one call each" + ("" if row.status == "ok" else
                                                                   f": labels agree only {row.agreement:.2f}%")
    except Exception as e:
        row.status, row.note = "FAIL", str(e).splitlines()[0][:160]
    return row


def format_table(rows: Sequence[DoctorRow]) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    lines = ["| backend | precision | status | engine | labels agree (%) | p50 (ms) | p95 (ms) | FPS | note |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.backend} | {r.precision} | {r.status} | {r.build or '-'} | {f(r.agreement, '.2f')} | "
                     f"{f(r.p50_ms, '.1f')} | {f(r.p95_ms, '.1f')} | {f(r.fps, '.1f')} | {r.note} |")
    return "\n".join(lines)
