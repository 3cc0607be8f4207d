"""Deployment subcommands: export, quantize, build-engine, doctor, bench.

This module is the deploy area's command line and sits on the cli floor
(docs/architecture.md); the rest of deploy/ never imports it.

Values are checked in the run functions (not with argparse ``choices``/``type``)
so a bad value is one line: ``seg-perception CMD: error: ...`` and exit code 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import (add_dataset_args, command, count_or_all, count_or_none, dataset_root, open_from_args,
                   output_file, threads)
from ..paths import is_installed_models_dir


def _choice(value: str, valid, what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} '{value}'; valid choices: {', '.join(valid)}")
    return value


def _positive(value: int, what: str) -> int:
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def _check_not_listed(card, out: Path, role: str) -> None:
    """Refuse writing ``out`` over a file the card lists in another role (its weights, its fp32 ONNX, ...):
    the card would name one file twice and the model would lose that file."""
    for other in card.files:
        f = card.file(other)
        if other != role and f is not None and f.resolve() == out.resolve():
            raise ValueError(f"--out {out} is the {other} file of model {card.name}: writing it as {role} would "
                             "destroy it; choose another --out")


def _card_for(model: str, weights: str | None):
    """--model is a card (name in models/ or a path) or a network name with --weights beside its card."""
    from ..card import load_card
    from ..nets import list_models
    from ..paths import resolve_model
    if model in list_models() and not Path(model).suffix:
        if not weights:
            raise ValueError(f"'{model}' is a network name: pass --weights FILE.pt (its card .yaml beside it), "
                             "or pass a model card as --model")
        if Path(weights).name == "last.pt":
            raise ValueError(f"{weights} is a training checkpoint, not a model: export the NAME.pt beside its "
                             "NAME.yaml that the run writes at its first validation (or at the end of a --keep "
                             "last run), or pass the run's folder as --model")
        card = load_card(weights)
        if card.architecture != model:
            raise ValueError(f"{card.path} describes a '{card.architecture}' network, not '{model}'")
        return card
    return load_card(resolve_model(model))


# ------------------------------------------------------------------ export
@command("export", "export a trained model to ONNX (uint8 frames in, labels + confidence out)")
def _export(p: argparse.ArgumentParser):
    p.add_argument("--model", required=True, help="model card (name in models/ or .yaml path), or a network "
                   "name with --weights")
    p.add_argument("--weights", default=None, help=".pt weights (default: the card's)")
    p.add_argument("--height", type=int, default=0, help="input height (default: the card's)")
    p.add_argument("--width", type=int, default=0, help="input width (default: the card's)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--logits", action="store_true", help="output raw logits (for evaluation) instead of labels")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset" + " (default: %(default)s)")
    p.add_argument("--out", type=output_file, default=None, help="ONNX file (default: beside the weights, "
                   "<card name>.onnx, or <card name>_logits.onnx)")
    p.add_argument("--replace", action="store_true", help="write over an ONNX file or card of another model, or over "
                   "this model's own when the export differs from it (another size, fixed over dynamic, other weights)")

    def run(a):
        from .export import export_onnx, exported_card
        card = _card_for(a.model, a.weights)
        weights = Path(a.weights) if a.weights else card.file("weights")
        if weights is None:
            raise FileNotFoundError(f"the card {card.path} lists no weights: pass --weights FILE.pt")
        if not weights.is_file():
            raise FileNotFoundError(f"weights {weights} not found: pass --weights FILE.pt")
        out = Path(a.out) if a.out else weights.parent / f"{card.name}{'_logits' if a.logits else ''}.onnx"
        if not a.out and is_installed_models_dir(weights.parent):
            # not into the installed package (site-packages' share): a shipped card's INT8 files, speed
            # figures and any TensorRT engine were made from the ONNX file there
            out = Path.cwd() / out.name
            print(f"[export] {card.name} is in the installed package's models folder: writing {out} (--out to "
                  "choose)")
        if out.suffix != ".onnx":
            raise ValueError(f"--out {out} must end in .onnx")
        if not 17 <= a.opset <= _newest_opset():  # torch prints pages of its graph before refusing an opset
            raise ValueError(f"--opset {a.opset} is not one this torch exports: use 17 to {_newest_opset()}")
        role = "onnx_logits" if a.logits else "onnx"
        _check_not_listed(card, out, role)
        new = exported_card(card, out, weights=weights, width=a.width or None, height=a.height or None,
                            dynamic=a.dynamic, logits=a.logits, opset=a.opset)
        if not a.replace:
            _check_export_replaces(new, out, role)
        path = export_onnx(card, out, weights=weights, width=a.width or None, height=a.height or None,
                           dynamic=a.dynamic, logits=a.logits, opset=a.opset)
        _print_io(path)
        print(f"[export] wrote {path} and its card {path.with_suffix('.yaml')}")
    return run


def _newest_opset() -> int:
    """The newest opset torch's TorchScript exporter (the one export uses) writes."""
    try:
        from torch.onnx import _constants
    except ImportError:  # a torch without the table: let the export say
        return 10 ** 6
    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)


def _check_export_replaces(new, out: Path, role: str) -> None:
    """Without --replace an export writes only new files, or the same model's again as they were: not over
    another model's ONNX or card, nor a fixed size over a dynamic ONNX or a card losing its figures."""
    from ..card import load_card
    if not new.path.is_file():
        if out.exists():
            raise FileExistsError(f"{out} exists and has no card beside it: choose another --out, or pass --replace")
        return
    old = load_card(new.path)
    why = None
    if old.name != new.name:
        why = f"is the card of another model ({old.name})"
    elif old.files.get(role) not in (None, out.name):
        why = f"lists another {role} file ({old.files[role]})"
    elif old.training.get("export", {}).get("dynamic") and not new.training["export"]["dynamic"]:
        why = "is of an ONNX that takes any size; this export takes one (add --dynamic)"
    elif (old.input_width, old.input_height) != (new.input_width, new.input_height):
        why = f"is for {old.input_width}x{old.input_height}, this export {new.input_width}x{new.input_height}"
    elif (old.training.get("export") or {}).get("source_weights_sha256") not in \
            (None, new.training["export"]["source_weights_sha256"]):
        why = "is of an ONNX made from other weights"
    elif set(old.files) - set(new.files):
        why = f"lists {', '.join(sorted(set(old.files) - set(new.files)))}, made from the ONNX this export replaces"
    elif old.metrics != new.metrics:
        why = "holds figures measured for other weights or another size, which this export drops"
    if why:
        raise FileExistsError(f"{new.path} {why}: choose another --out, or pass --replace to write over it")


def _print_io(path: Path) -> None:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    name = {v: k for k, v in onnx.TensorProto.DataType.items()}

    def fmt(v):
        t = v.type.tensor_type
        dims = "x".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
        return f"{v.name} {name.get(t.elem_type, '?').lower()} {dims}"
    print(f"[export] inputs: {', '.join(fmt(v) for v in m.graph.input)}; "
          f"outputs: {', '.join(fmt(v) for v in m.graph.output)}; opset {m.opset_import[0].version}")


# ------------------------------------------------------------------ quantize
@command("quantize", "INT8 Q/DQ model for TensorRT and ONNX Runtime, calibrated on training images")
def _quantize(p: argparse.ArgumentParser):
    d = " (default: %(default)s)"
    p.add_argument("--onnx", required=True, help="fp32 ONNX made by 'seg-perception export' (its card beside it)")
    add_dataset_args(p)
    p.add_argument("--calib-data", default=None, help="calibrate on this folder of images (searched "
                   "recursively) or CamVid root instead (default: --calib-split of --dataset/--data)")
    p.add_argument("--calib-split", default=None, help="split of --dataset/--data to calibrate on (default: the "
                   "split the model first trained on, as its card says: train of train+val, a CVAT export's default; "
                   "train where it does not say)")
    p.add_argument("--num-images", type=int, default=100, help="calibration images" + d)
    p.add_argument("--out", type=output_file, default=None, help="INT8 ONNX (default: <onnx stem>_int8.onnx "
                   "beside it, <onnx stem>_int8_cpu.onnx with --target cpu)")
    p.add_argument("--target", default="tensorrt", help="tensorrt: Q/DQ model for TensorRT (and ONNX Runtime "
                   "on a GPU) | cpu: QOperator uint8 model that ONNX Runtime's CPU kernels run fast" + d)
    p.add_argument("--method", default="auto", help="auto (modelopt if installed, else ort) | modelopt | ort" + d)
    p.add_argument("--calibration", default="minmax", help="minmax | entropy (modelopt only)" + d)
    p.add_argument("--conv-outputs", default="int8", choices=["int8", "float"],
                   help="--method ort: int8 quantizes a convolution's output where a non-convolution takes it "
                   "(ONNX Runtime's placement); float leaves it float, as TensorRT's Q/DQ guidance places them"
                   + d)
    p.add_argument("--seed", type=int, default=0, help="picks the calibration images" + d)
    p.add_argument("--eval", action="store_true", help="then measure fp32 vs int8 mIoU and label agreement "
                   "on --eval-split with ONNX Runtime (recorded in the card)")
    p.add_argument("--eval-data", default=None, help="dataset folder for --eval (default: --data)")
    p.add_argument("--eval-split", default="val", help="split for --eval" + d)
    p.add_argument("--max-eval-images", type=count_or_all, default=0, help="frames for --eval (0: the whole split)" + d)
    p.add_argument("--threads", type=threads, default=0, help="ONNX Runtime threads (0: its default)" + d)
    p.add_argument("--replace", action="store_true", help="write over an existing INT8 file, or replace the INT8 "
                   "file of this --target that the card lists (and the figures measured of it)")

    def run(a):
        from ..card import load_card
        from ..card import onnx_role
        from ..data.datasets import MissingSplit
        from .quantize import (CALIBRATIONS, METHODS, TARGETS, calibration_frames, check_current_source,
                               check_request, evaluate_int8, list_calibration_images, not_held_out_note,
                               quantize_onnx, record_in_card)
        _choice(a.method, METHODS, "method")
        _choice(a.target, TARGETS, "target")
        _choice(a.calibration, CALIBRATIONS, "calibration")
        _positive(a.num_images, "--num-images")
        src = Path(a.onnx)
        if not src.is_file():
            raise FileNotFoundError(f"ONNX file {src} not found: run 'seg-perception export' first")
        card = load_card(src)
        suffix = "_int8_cpu" if a.target == "cpu" else "_int8"
        out = Path(a.out) if a.out else src.with_name(f"{src.stem}{suffix}.onnx")
        if out.suffix != ".onnx":
            raise ValueError(f"--out {out} must end in .onnx")
        if out.resolve() == src.resolve():
            raise ValueError(f"--out {out} is the model being quantized: choose another --out")
        role = onnx_role("int8", a.target)
        _check_not_listed(card, out, role)
        twin = out.with_suffix(".yaml")  # record_in_card writes a copy of the card there
        if twin.is_file() and load_card(twin).name != card.name:
            raise ValueError(f"--out {out}: {twin} is the card of another model ({load_card(twin).name}); "
                             "choose another --out")
        # refused before any calibration frame is read: the graph, the method and the card's own ONNX
        check_request(src, a.method, a.calibration, a.target, a.conv_outputs)
        check_current_source(card, src)
        if a.calib_data:
            data = a.calib_data
            files = list_calibration_images(data, a.num_images, a.seed)
        else:
            a.calib_split = a.calib_split or card.first_trained_split  # as release calibrates
            data = f"{a.dataset} {dataset_root(a)} {a.calib_split}"
            try:
                calib = open_from_args(a, a.calib_split, card=card)
            except MissingSplit as e:
                raise e.naming("--calib-split") from None
            card.check_classes(list(calib.table.names), f"{a.dataset} {a.calib_split}",
                               "calibrate on the data it was trained on (--dataset folder --data DIR for your "
                               "own), or on frames of its camera with --calib-data DIR")
            files = list_calibration_images(calib, a.num_images, a.seed)
        if a.eval:  # opened before the INT8 file is written: a wrong split refuses with nothing changed
            if a.eval_data:
                a.data = a.eval_data
            try:
                scored = open_from_args(a, a.eval_split, card=card)
            except MissingSplit as e:
                raise e.naming("--eval-split") from None
            card.check_classes(list(scored.table.names), f"{a.dataset} {a.eval_split}",
                               "score it on the data it was trained on (--eval-data DIR with --dataset folder "
                               "for your own), or leave out --eval")
        if not a.replace:  # an INT8 file, or the figures measured for the card's one, are not written over
            if out.exists():
                raise FileExistsError(f"{out} exists: choose another --out, or pass --replace to write over it")
            if card.files.get(role):
                raise FileExistsError(f"the card {card.path} lists {role} {card.files[role]} already (with what was "
                                      f"measured of it): pass --replace to list {out.name} instead")
        print(f"[quantize] calibrating on {len(files)} images from {data}")
        frames = calibration_frames(files, card, src)
        res = quantize_onnx(src, out, frames, method=a.method, calibration=a.calibration, target=a.target,
                            conv_outputs=a.conv_outputs)
        print(f"[quantize] wrote {res.path} ({res.method}, {res.calibration}, {res.qdq_nodes} Q/DQ nodes, "
              f"{res.seconds:.0f} s)")
        metrics = None
        if a.eval:
            metrics = evaluate_int8(card, src, res.path, scored,
                                    a.eval_split, a.max_eval_images, a.threads,
                                    log=lambda s: print(s, flush=True))
            metrics.update(not_held_out_note(card, a.eval_split))
            print(f"[quantize] {metrics['split']} ({metrics['images']} images, ONNX Runtime CPU): fp32 mIoU "
                  f"{metrics['fp32_miou']:.2f}, int8 mIoU {metrics['int8_miou']:.2f} (drop "
                  f"{metrics['miou_drop']:.2f}), label agreement {metrics['label_agreement']:.2f}%")
        card_path = record_in_card(card.path, res.path, res, metrics)
        print(f"[quantize] card {card_path} lists it as {role}")
    return run


# ------------------------------------------------------------------ build-engine
@command("build-engine", "build a TensorRT engine (cached, with a JSON sidecar) from an ONNX file")
def _build_engine(p: argparse.ArgumentParser):
    p.add_argument("--onnx", required=True, help="fp32 ONNX for fp32/fp16, the INT8 ONNX for int8")
    p.add_argument("--precision", default="fp16", help="fp32 | fp16 | int8" + " (default: %(default)s)")
    p.add_argument("--workspace", type=int, default=1024, help="builder workspace limit, MiB" + " (default: %(default)s)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, reused across builds "
                   "(default: timing.cache in the cache folder)")
    p.add_argument("--cache-dir", default=None, help="engine cache folder (default: "
                   "$SEG_PERCEPTION_ENGINE_CACHE, else engines/ in $SEG_PERCEPTION_CACHE or "
                   "~/.cache/seg_perception)")
    p.add_argument("--height", type=int, default=0, help="input height (default: the card's)")
    p.add_argument("--width", type=int, default=0, help="input width (default: the card's)")
    p.add_argument("--max-batch", type=int, default=1,
                   help="frames one call can take: the node's number of cameras (image_topics)" + " (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached engine is valid")
    p.add_argument("--confidence", action="store_true", help="also compute the confidence map: the engine a "
                   "node with publish_confidence or ground outputs runs (default: labels only, as the "
                   "default config runs)")

    def run(a):
        from ..card import card_of_file, check_precision
        from ..runtime import engine_cache as eng
        check_precision(a.precision)
        _positive(a.workspace, "--workspace")
        _positive(a.max_batch, "--max-batch")  # every argument before TensorRT is imported
        src = Path(a.onnx)
        if not src.is_file():
            raise FileNotFoundError(f"ONNX file {src} not found: run 'seg-perception export' first")
        card = card_of_file(src)
        if src.name == card.files.get("onnx_int8_cpu"):
            raise ValueError(f"{src} is the INT8 file for ONNX Runtime on a CPU (quantize --target cpu), not one "
                             f"TensorRT builds: pass {card.file('onnx_int8') or 'the Q/DQ file of quantize'}")
        w, h = a.width or card.input_width, a.height or card.input_height
        if w % 8 or h % 8 or w <= 0 or h <= 0:
            raise ValueError(f"input size {w}x{h} must be positive multiples of 8")
        eng.check_onnx_for_precision(src, a.precision)
        eng.import_tensorrt()  # says how to install it before anything else happens
        cache = Path(a.cache_dir) if a.cache_dir else eng.default_cache_dir()
        outputs = eng.ALL_OUTPUTS if a.confidence else ("labels",)
        if a.force:
            path = eng.engine_path(cache, src, a.precision, (a.max_batch, h, w, 3), outputs)
            try:
                eng.sidecar_path(path).unlink(missing_ok=True)
            except OSError as e:
                raise ValueError(f"cannot rebuild {path}: {e.strerror or e} (a read-only cache: --cache-dir "
                                 "a writable folder)") from None
        path, decision = eng.ensure_engine(src, a.precision, (a.max_batch, h, w, 3), cache_dir=cache, rebuild=True,
                                           workspace_mib=a.workspace, outputs=outputs,
                                           timing_cache=a.timing_cache or cache / "timing.cache")
        state = "reused (sidecar matches)" if decision.action == "reuse" else f"built ({decision.reason})"
        print(f"[build-engine] {path}: {state}; sidecar {eng.sidecar_path(path)}")
    return run


# ------------------------------------------------------------------ doctor
@command("doctor", "check TensorRT/CUDA/GPU, build fp32/fp16/int8 engines, compare with ONNX Runtime, time them")
def _doctor(p: argparse.ArgumentParser):
    p.add_argument("--model", default=None, help="model card (default: the shipped default model)")
    p.add_argument("--frames", default=None, help="folder of images or a rosbag2 (default: the shipped "
                   "sample bag, else CamVid val)")
    p.add_argument("--num-frames", type=int, default=8, help="frames to compare and time" + " (default: %(default)s)")
    p.add_argument("--image-topic", default=None, help="the camera topic when --frames is a bag with several "
                   "(default: /camera/image_raw or its /compressed, else the bag's only image topic)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"], help="engines to build" + " (default: %(default)s)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per engine" + " (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="engine cache folder")
    p.add_argument("--workspace", type=int, default=1024, help="builder workspace limit, MiB" + " (default: %(default)s)")
    p.add_argument("--threads", type=threads, default=0, help="ONNX Runtime threads (0: its default)")
    p.add_argument("--batch", type=int, default=2,
                   help="also build an engine for this many frames per call (several cameras) and check it "
                   "against one call per frame; 1: skip" + " (default: %(default)s)")

    def run(a):
        from ..paths import DEFAULT_MODEL
        from .doctor import run_doctor
        _positive(a.num_frames, "--num-frames")
        _positive(a.runs, "--runs")
        _positive(a.workspace, "--workspace")  # as build-engine: refused before a model loads
        if a.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {a.batch}")
        return run_doctor(a.model or DEFAULT_MODEL, a.frames, a.precisions, a.num_frames, a.runs,
                          cache_dir=a.cache_dir, workspace_mib=a.workspace, threads=a.threads, batch=a.batch,
                          image_topic=a.image_topic)
    return run


# ------------------------------------------------------------------ bench
@command("bench", "speed of every zoo network (params, GMACs, latency, FPS, ratio to ERFNet)")
def _bench(p: argparse.ArgumentParser):
    p.add_argument("--models", nargs="+", default=None, help="networks (default: the whole zoo; ERFNet is "
                   "always added as the reference)")
    p.add_argument("--backend", nargs="+", default=None, help="onnxruntime and/or tensorrt (default: "
                   "onnxruntime, plus tensorrt when installed)")
    p.add_argument("--resolution", default="480x360", help="WIDTHxHEIGHT" + " (default: %(default)s)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model and precision" + " (default: %(default)s)")
    p.add_argument("--warmup", type=count_or_none, default=3, help="untimed runs first" + " (default: %(default)s)")
    p.add_argument("--threads", type=threads, default=None, help="ONNX Runtime threads (default: "
                   "$SEG_PERCEPTION_THREADS, else the runtime's default, as the node's threads: 0)")
    p.add_argument("--quant-method", default="auto", help="how the int8 models are made: auto | modelopt | ort" + " (default: %(default)s)")
    p.add_argument("--json", type=output_file, default=None, help="also write the table as JSON to this file")
    p.add_argument("--markdown", type=output_file, default=None, help="also write the markdown table to this file")
    add_dataset_args(p, card=False)  # whose train frames calibrate the INT8 models (default: CamVid, else synthetic)

    def run(a):
        from ..runtime.backends import default_threads
        from .bench import parse_resolution, run_bench, save_json, to_markdown
        from .quantize import METHODS
        w, h = parse_resolution(a.resolution)
        _positive(a.runs, "--runs")
        _choice(a.quant_method, METHODS, "quantization method")
        threads = default_threads() if a.threads is None else a.threads
        # A dataset named on the command line must open; the CamVid default may be absent.
        ds = open_from_args(a, "train") if (a.data or a.dataset != "camvid") else None
        result = run_bench(a.models, a.backend, w, h, a.runs, a.warmup, threads, a.quant_method,
                           log=lambda s: print(s, flush=True), dataset=ds)
        md = to_markdown(result)
        print()
        print(md)
        if a.json:
            print(f"[bench] JSON: {save_json(result, a.json)}")
        if a.markdown:
            Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(a.markdown).write_text(md + "\n")
            print(f"[bench] markdown: {a.markdown}")
    return run
