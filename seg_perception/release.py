"""`seg-perception release`: turn a training run into a shipped model in models/.

Copies the run's best weights, exports the ONNX graph (dynamic shape: the node runs it at any
resolution), makes the INT8 models (Q/DQ for TensorRT, QOperator for ONNX Runtime on the CPU),
then measures what ships and writes it into the card: val mIoU and per-class IoU
through the runtime pipeline (ONNX Runtime fp32 and int8), params, MACs, and CPU
latency on this machine. Every figure in a shipped card comes from this one command.
The val split is CamVid's for the shipped models, or that of the dataset a user's own
model trained on (`--dataset folder --data DIR`): then the release lands in the user's
own models folder (SEG_PERCEPTION_MODELS), where the node finds it by name.

The card is read once from the run, kept in memory while the files are made and
measured, and written once at the end: an interrupted release leaves no card that
claims files or figures it does not have.

It combines deploy (export, quantize) with evaluation (accuracy on a split), so it
sits on the cli floor beside the command that runs it (docs/architecture.md).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from .card import SETTING_BEFORE_RECORDED, check_model_name, load_card, weights_mismatch
from .data.classes import CAMVID
from .data.datasets import DatasetError, MissingSplit, SegmentationDataset, default_camvid_root, open_dataset
from .paths import models_dirs, run_cards
from .deploy.export import exported_card, write_onnx
from .deploy.quantize import (calibration_frames, evaluate_int8, list_calibration_images, not_held_out_note, note_int8,
                              quantize_onnx)
from .evaluation.split_accuracy import evaluate
from .nets.complexity import count_macs, count_params
from .nets.deployable import load_net
from .runtime.backends import OnnxRuntimeBackend
from .runtime.pipeline import Pipeline
from .train.run_status import hours_of_epochs, log_rows
from .timing import cpu_name, time_backend

LATENCY_RUNS = 30


def _epochs_done(run: Path, card=None) -> Optional[int]:
    rows = log_rows(run)
    if not rows:  # a released model's folder: its card says
        return card.training.get("epochs_completed_in_run") if card is not None and not (run / "log.csv").is_file() \
            else None
    return int(rows[-1]["epoch"])


def _hours_of_epochs(run: Path, card=None) -> Optional[float]:
    """Training time of the run's epochs (run_status.hours_of_epochs: pauses not counted); a released
    model's card says it."""
    rows = log_rows(run)
    if not rows:
        return card.training.get("hours_of_epochs") if card is not None else None
    return hours_of_epochs(rows)


def _trained_on(card, split: str) -> bool:
    return split in str(card.training.get("train_split", "train")).split("+")


# What a recipe is, as the training card records it: everything but the data split and the
# run's own progress. A recipe run that differs in one of these scores another recipe (precision too:
# fp32 against bf16 is a recipe change on resume, so it is one between the two runs; on a GPU, precision
# amp's autocast dtype).
RECIPE_KEYS = ("dataset", "epochs_planned", "precision", "autocast", "resolution", "crop", "scale", "jitter", "classmix", "class_crop",
               "label_resize", "batch_size", "processes", "optimizer", "schedule", "loss", "ema_decay", "init", "teacher",
               "distillation", "gradual_grouping_epochs", "encoder_epochs", "clip_grad", "max_train_images")
# A model's own files in a models folder; a prefix match took rdsnet_camvid's along when releasing
# "rdsnet". The _int8*.yaml are the cards `quantize` writes beside an INT8 graph.
OWN_SUFFIXES = (".pt", ".onnx", "_int8.onnx", "_int8_cpu.onnx", "_int8.yaml", "_int8_cpu.yaml")


def run_card(run: Path, name: str):
    """The run's card: NAME.yaml, else the run folder's one card (released under NAME)."""
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} not found")
    if (run / f"{name}.yaml").is_file():
        return load_card(run / f"{name}.yaml")
    cards = run_cards(run)
    if len(cards) == 1:
        return load_card(cards[0])
    if not cards and (run / "last.pt").is_file():
        raise FileNotFoundError(f"{run} has no model yet (only last.pt): its card and weights are written at "
                                "the first validation, or at the end of a --keep last run")
    raise FileNotFoundError(f"{run} has {len(cards)} model cards and none is {name}.yaml: pass the run's "
                            "folder holding one card, or --name of one of them")


def _stale_fix(card) -> str:
    """What brings weights and card back together: last.pt holds a --keep last run's last epoch, not a
    --keep best run's best one."""
    if card.training.get("best_epoch") is not None:
        return "put back the weights file the card was written with (its best epoch is not in last.pt), or train the run again"
    return "run its training command again with --resume (its folder's last.pt writes both again)"


def _check_one_recipe(card, what: str) -> None:
    """A run resumed with another recipe (say --epochs 200 -> 400) trained under none of them."""
    changed = card.training.get("changed_on_resume")
    if changed:
        raise ValueError(f"{what} changed its recipe on a resume ({'; '.join(map(str, changed))}): its weights are "
                         "not those of one recipe, nor is a figure of them; train it again with one set of flags")


def _recipe_card(recipe_run: Path, name: str, card, val_split: str):
    """The card of the same recipe trained on train alone: its val figure is the honest one."""
    rcard = run_card(recipe_run, name)
    if rcard.architecture != card.architecture:
        raise ValueError(f"--recipe-run {recipe_run} trained a {rcard.architecture}, not a {card.architecture}")
    if _trained_on(rcard, val_split):
        raise ValueError(f"--recipe-run {recipe_run} trained on {rcard.training.get('train_split')}: "
                         f"it must leave {val_split} out, or its {val_split} figure is not held out either")
    if rcard.file("weights") is None or not rcard.file("weights").is_file():
        raise FileNotFoundError(f"--recipe-run card {rcard.path} lists no existing weights file")
    stale = weights_mismatch(rcard)
    if stale:
        raise ValueError(f"--recipe-run {recipe_run}: {stale}: {_stale_fix(rcard)}, then release")

    def of(c, k):
        return c.training.get(k, SETTING_BEFORE_RECORDED.get(k))

    def same(k) -> bool:  # precision, autocast: compared where both cards record it (cards before did not)
        return of(rcard, k) == of(card, k) or (k in ("precision", "autocast") and None in (of(rcard, k), of(card, k)))
    differ = [f"{k} {of(rcard, k)!r} (run: {of(card, k)!r})" for k in RECIPE_KEYS if not same(k)]
    if differ:
        raise ValueError(f"--recipe-run {recipe_run} is another recipe: {'; '.join(differ)}; its val figure "
                         "would not describe these weights: train it with the run's flags on the train split alone")
    _check_one_recipe(rcard, f"--recipe-run {recipe_run}")
    if rcard.training.get("best_epoch") is not None:
        raise ValueError(f"--recipe-run {recipe_run} shipped its best epoch on {val_split} (--keep best, epoch "
                         f"{rcard.training['best_epoch']}): a figure picked on {val_split} is not held out; train the "
                         "recipe run with --keep last, as the shipped weights are its last epoch")
    stopped = _unfinished(recipe_run, rcard)
    if stopped:
        raise ValueError(f"--recipe-run {recipe_run} {stopped}: the recipe's figure is that of the finished run; "
                         "release when it is done (or --recipe-pending WHY now)")
    return rcard


def _unfinished(run: Path, card) -> Optional[str]:
    """How far a run stopped before its planned epochs got (None: it trained them all)."""
    planned, done = card.training.get("epochs_planned"), _epochs_done(run, card)
    at = card.training.get("epoch")  # the weights' epoch in a --keep last run (best_epoch otherwise)
    if planned and ((done is not None and done < planned) or (at is not None and at < planned)):
        of = at if at is not None else card.training.get("best_epoch", "?")
        return (f"has trained {done if done is not None else at} of its {planned} epochs (its weights are from "
                f"epoch {of})")
    if at is not None and done is not None and at < done:  # --epochs raised, stopped before the pair was written
        return f"has trained {done} epochs, but its weights and card are from epoch {at}"
    return None


def _continue_how(run: Path, card) -> str:
    """The command that continues a stopped run: its COMMAND.txt where it has one, else its own command."""
    if (run / "COMMAND.txt").is_file():
        return f"the command in {run / 'COMMAND.txt'}"
    command = card.training.get("command")
    if not command:
        return "its train command with --resume"
    return f"'{command}{'' if '--resume' in command.split() else ' --resume'}'"


def _val_text(metrics: Dict) -> str:
    if "val_miou" not in metrics:
        return "pending (the recipe run on train alone is not done)"
    return (f"{metrics['val_miou']:.2f}" + (" (the recipe run on train alone)" if "val_miou_not_held_out" in metrics
                                            else "") + (" (epoch picked on val)" if "val_picked_checkpoint" in metrics else ""))


class _ValData:
    """The split every figure of a release is measured on, opened once."""

    def __init__(self, kind: str, root: str, split: str, kw: Dict):
        self.kind, self.root, self.split = kind, root, split
        self.ds: SegmentationDataset = open_dataset(kind, root, split, **kw)
        self.kw = kw
        # the shipped models' cards say "CamVid val"; a user's own data (a CamVid export too) names its folder
        own = kind != "camvid" or tuple(self.ds.table.names) != CAMVID.names
        self.label = f"{kind} dataset {Path(root).name}, split {split}" if own else f"CamVid {split}"

    def evaluate(self, card, threads: int, width: int = 0, height: int = 0) -> Dict:
        return evaluate(card, self.ds, self.kind, self.split, backend="onnxruntime", threads=threads,
                        width=width, height=height)

    def calibration_set(self, card) -> Tuple[SegmentationDataset, str]:
        """INT8 calibration frames come from the split the weights first trained on (CamVid: train),
        else from the val split (a run whose training split is gone)."""
        first = card.first_trained_split
        try:
            return open_dataset(self.kind, self.root, first, **self.kw), first
        except DatasetError:
            return self.ds, self.split


def _val_metrics(card, val: _ValData, threads: int, what: str, width: int = 0, height: int = 0) -> Dict:
    """Val figures of ``card``'s weights at the network input ``width`` x ``height`` (0: the card's)."""
    res = val.evaluate(card, threads, width, height)
    w, h = res["input_size"]
    return {"val_miou": res["miou"], "val_pixel_accuracy": res["pixel_accuracy"],
            "val_per_class_iou": res["per_class_iou"],
            **({"val_classes_absent": res["classes_absent"]} if res.get("classes_absent") else {}),
            "val_measured_with": f"seg-perception evaluate: ONNX Runtime fp32 at {w}x{h}, {val.label} "
                                 f"({res['frames']} frames)" + what}


def _make(card, stage: Path, name: str, src_weights: Path, epochs_done, hours, note: str, on_val: bool, rcard,
          recipe_run, recipe_pending: str, val: "_ValData", val_split: str, threads: int, int8: bool,
          calib_images: int, log):
    """The release's files in ``stage`` and its card (not written), every figure measured."""
    shutil.copy2(src_weights, stage / f"{name}.pt")
    card.path = stage / f"{name}.yaml"  # where its files are, named relative to it
    card.files = {"weights": f"{name}.pt"}
    card.training = dict(card.training, epochs_completed_in_run=epochs_done, hours_of_epochs=hours)
    if note:
        card.training["note"] = note

    log(f"[release] exporting {name} to ONNX")
    onnx_path = write_onnx(card, stage / f"{name}.onnx", dynamic=True)
    card = exported_card(card, onnx_path, dynamic=True)
    # Every figure of a shipped card is measured here: none of the run's (training-time figures on
    # whatever split it validated on) or of an older release's may survive, even where this
    # release skips one (--no-int8).
    card.metrics = {}
    for key in ("recipe_run", "quantization", "quantization_cpu"):
        card.training.pop(key, None)
    if not on_val:
        metrics = _val_metrics(card, val, threads, "")
        if card.training.get("best_epoch") is not None and card.training.get("val_split") == val_split:
            # --keep best: this split chose the epoch, so the figure is the best of several looks at it
            metrics["val_picked_checkpoint"] = (f"the run kept its best epoch on {val_split} (epoch "
                                                f"{card.training['best_epoch']}): the figure is optimistic; train "
                                                "with --keep last for one that is held out")
            log(f"[release] note: {metrics['val_picked_checkpoint']}")
    elif rcard is None:
        # Shipped before its recipe run is done: no held-out figure, and the card says why.
        own = val.evaluate(card, threads)
        metrics = {"val_miou_not_held_out": own["miou"]}  # for the record only: val was training data
        card.training["recipe_run"] = {"pending": recipe_pending}
    else:
        # Val is in these weights' training data: the card's val figure is the recipe run's
        # (the same recipe on train alone), exported and measured the same way, at the size the
        # shipped card runs at (a card may ship at another size than it trained at).
        with tempfile.TemporaryDirectory(prefix="seg_release_") as tmp:
            r_onnx = write_onnx(rcard, Path(tmp) / f"{name}.onnx", dynamic=True)
            r_exported = exported_card(rcard, r_onnx, dynamic=True)
            metrics = _val_metrics(r_exported, val, threads,
                                   f", weights of the same recipe trained on train alone ({Path(recipe_run).name}, "
                                   f"{_epochs_done(Path(recipe_run), rcard)} epochs); the shipped weights trained on "
                                   f"{card.training.get('train_split')}", card.input_width, card.input_height)
        own = val.evaluate(card, threads)
        metrics["val_miou_not_held_out"] = own["miou"]  # for the record only: val was training data
        card.training["recipe_run"] = {"folder": Path(recipe_run).name, "train_split": rcard.training.get("train_split"),
                                       "epochs": _epochs_done(Path(recipe_run), rcard),
                                       "hours_of_epochs": _hours_of_epochs(Path(recipe_run), rcard),
                                       "command": rcard.training.get("command")}
    log(f"[release] fp32 val mIoU {_val_text(metrics)}")
    absent = metrics.get("val_classes_absent")
    if absent:  # a high mIoU over the few classes val holds reads as a good model of all of them
        log(f"[release] note: {val.label} has no pixel of {', '.join(absent)}: the val mIoU is over the other "
            f"{card.num_classes - len(absent)} of {card.num_classes} classes and says nothing of those")

    net = load_net(card)
    metrics["params"] = count_params(net)
    metrics["gmacs"] = round(count_macs(net, card.input_height, card.input_width) / 1e9, 3)
    metrics["gmacs_at"] = f"{card.input_width}x{card.input_height}"

    # Timed on the CPU (a GPU build of ONNX Runtime would take CUDA), labels only, as the node runs
    # a model when it publishes no confidence.
    cpu = dict(threads=threads, use_cuda=False, confidence=False)
    pipe = Pipeline(OnnxRuntimeBackend(card, card.input_width, card.input_height, "fp32", **cpu), card)
    ds = val.ds
    frames = [pipe.preprocess(ds.load(i)[0]) for i in np.linspace(0, len(ds) - 1, 10).round().astype(int)]
    # The load average says whether other work shared the CPU while timing.
    latency = {"cpu": cpu_name(), "threads": threads, "resolution": metrics["gmacs_at"], "outputs": "labels",
               "load_average_1min": round(os.getloadavg()[0], 2),
               "onnxruntime_fp32_ms": time_backend(pipe.backend, frames, LATENCY_RUNS)}

    if int8:
        calib, calib_split = val.calibration_set(card)
        files = list_calibration_images(calib, calib_images)
        log(f"[release] INT8: calibrating on {len(files)} images of the {calib_split} split")
        q = quantize_onnx(onnx_path, stage / f"{name}_int8.onnx", calibration_frames(files, card, onnx_path))
        acc = evaluate_int8(card, onnx_path, q.path, val.ds, split=val_split, threads=threads)
        note_int8(card, q.path, q, acc)
        be = OnnxRuntimeBackend(card, card.input_width, card.input_height, "int8", onnx_path=q.path, **cpu)
        latency["onnxruntime_int8_ms"] = time_backend(be, frames, LATENCY_RUNS)
        log(f"[release] int8 val mIoU {acc['int8_miou']:.2f} (fp32 {acc['fp32_miou']:.2f}), "
            f"label agreement {acc['label_agreement']:.2f}%")
        frames_c = calibration_frames(files, card, onnx_path)
        qc = quantize_onnx(onnx_path, stage / f"{name}_int8_cpu.onnx", frames_c, target="cpu")
        acc = evaluate_int8(card, onnx_path, qc.path, val.ds, split=val_split, threads=threads)
        note_int8(card, qc.path, qc, acc)
        be = OnnxRuntimeBackend(card, card.input_width, card.input_height, "int8", time_int8_at_start=False, **cpu)
        latency["onnxruntime_int8_cpu_ms"] = time_backend(be, frames, LATENCY_RUNS)
        # what the node's start-up warning reads (int8 slower than fp32 on a CPU)
        card.metrics["int8_cpu"] = {**card.metrics["int8_cpu"], "speed_vs_fp32": round(
            latency["onnxruntime_fp32_ms"]["p50"] / max(latency["onnxruntime_int8_cpu_ms"]["p50"], 1e-6), 2)}
        log(f"[release] CPU int8 runs at {card.metrics['int8_cpu']['speed_vs_fp32']:.2f}x the speed of fp32 here "
            f"(p50 {latency['onnxruntime_int8_cpu_ms']['p50']:.1f} vs {latency['onnxruntime_fp32_ms']['p50']:.1f} "
            f"ms over {LATENCY_RUNS} runs; the card's speed_vs_fp32)")
        log(f"[release] CPU int8 val mIoU {acc['int8_miou']:.2f}, label agreement {acc['label_agreement']:.2f}%")
    for key in ("int8", "int8_cpu"):
        if key in card.metrics:  # measured on val: with weights that trained on it, a note says so
            card.metrics[key] = {**card.metrics[key], **not_held_out_note(card, val_split)}
    card.metrics = {**card.metrics, **metrics, "cpu_latency": latency}
    return card


def release(run: str | Path, name: str, to: str | Path, data: Optional[str] = None, calib_images: int = 100,
            threads: int = 2, int8: bool = True, note: str = "", recipe_run: Optional[str | Path] = None,
            recipe_pending: str = "", replace: bool = False, log: Callable[[str], None] = print,
            dataset: str = "camvid", val_split: str = "val", dataset_kw: Optional[Dict] = None,
            unfinished: bool = False) -> Path:
    """``dataset``/``data``/``dataset_kw``: the dataset to measure on, as open_dataset() takes it
    (default: the CamVid beside the checkout); ``val_split``: its split held out of training;
    ``unfinished``: ship a run stopped before its planned epochs (refused otherwise)."""
    run, to = Path(run), Path(to)
    check_model_name(name)
    if run.resolve() == to.resolve():
        raise ValueError(f"--run and --to are the same folder ({to}): releasing would delete the weights it reads; "
                         "copy NAME.pt and NAME.yaml to another folder first")
    if not data and dataset != "camvid":
        raise ValueError(f"--data is required for --dataset {dataset}")
    data = data or str(default_camvid_root())
    if name.endswith(("_int8", "_int8_cpu")):  # NAME_int8.yaml is the INT8 card copy of NAME: a clash
        raise ValueError(f"--name {name}: a model name may not end in _int8 or _int8_cpu (the names of the INT8 "
                         "card copies `quantize` writes); choose another")
    card = run_card(run, name)
    _check_one_recipe(card, f"the run {run}")
    # a run stopped half-way (Ctrl-C, a session's end) shipped as if it were the recipe's result
    stopped = _unfinished(run, card)
    if stopped and not unfinished:
        raise ValueError(f"the run {run} {stopped}: continue it with {_continue_how(run, card)}, then release "
                         "(or pass --unfinished to ship it as it is)")
    if stopped:
        log(f"[release] note: the run {stopped}: shipped unfinished (--unfinished), as its card and models "
            "--shipped say")
    card.name = name
    try:  # every check before anything is written to --to
        val = _ValData(dataset, data, val_split, dataset_kw or {})
    except MissingSplit as e:
        raise MissingSplit(f"release measures its figures on a split the model did not train on: "
                           f"{e.naming('--val-split')}") from None
    card.check_classes(list(val.ds.table.names), f"{dataset} {val_split} ({data})",
                       "release it with the dataset it was trained on (--dataset folder --data DIR for your own)")
    if (to / f"{name}.yaml").is_file() and not replace:
        shipped = load_card(to / f"{name}.yaml")
        figure = shipped.metrics.get("val_miou")
        raise FileExistsError(f"{to / name}.yaml exists ({name}{f', val {figure:.2f}' if figure is not None else ''}): "
                              "pass --replace to ship over it, or choose another --name")
    # a name another models folder has: the node takes the first folder's (models --shipped); --to may
    # be a models folder that does not exist yet (a new SEG_PERCEPTION_MODELS)
    if not replace and to.resolve() in [d.resolve() for d in models_dirs(existing=False)]:
        for other in models_dirs():
            if other.resolve() != to.resolve() and (other / f"{name}.yaml").is_file():
                raise FileExistsError(f"{name} is already a model in {other}: one of the same name in {to} would "
                                      "hide it (or be hidden by it) wherever models are found by name; choose another "
                                      "--name (or --replace to ship it there all the same)")
    src_weights = card.file("weights")
    if src_weights is None or not src_weights.is_file():
        raise FileNotFoundError(f"the run's card {card.path} lists no existing weights file")
    stale = weights_mismatch(card)
    if stale:  # the card's epoch, recipe and figures would be shipped with other weights
        raise ValueError(f"{stale}: {_stale_fix(card)}, then release")
    rcard = None
    on_val = _trained_on(card, val_split)
    if recipe_run is not None and recipe_pending:
        raise ValueError("--recipe-run and --recipe-pending exclude each other: the recipe's figure is there or it is not")
    if (recipe_run is not None or recipe_pending) and not on_val:  # neither would be used: say so
        flag = "--recipe-run" if recipe_run is not None else "--recipe-pending"
        raise ValueError(f"{run} trained on {card.training.get('train_split')}: its own {val_split} figure is "
                         f"held out, {flag} is only for weights trained on {val_split}")
    if recipe_run is not None:
        rcard = _recipe_card(Path(recipe_run), name, card, val_split)
    elif on_val and not recipe_pending:
        raise ValueError(f"{run} trained on {card.training.get('train_split')}: a {val_split} figure of these "
                         f"weights is not held out; pass --recipe-run with the same recipe trained without "
                         f"{val_split} (or --recipe-pending WHY to ship without a val figure until that run is done)")
    epochs_done = _epochs_done(run, card)  # before the files in `to` are replaced (run may be a copy of them)
    hours = _hours_of_epochs(run, card)
    to.mkdir(parents=True, exist_ok=True)
    # Made and measured in a folder beside the shipped files, moved into place at the end with the
    # card last: a release that fails or is stopped half-way leaves the model it replaces as it was.
    for left in to.glob(f".{name}.release-*"):  # of a release killed before it could clean up
        shutil.rmtree(left, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.release-", dir=to))
    try:
        card = _make(card, stage, name, src_weights, epochs_done, hours, note, on_val, rcard, recipe_run,
                     recipe_pending, val, val_split, threads, int8, calib_images, log)
        for f in card.files.values():  # new files over old ones, each in one step
            os.replace(stage / f, to / f)
        for suffix in OWN_SUFFIXES:  # the old release's files this one did not make (--no-int8)
            if f"{name}{suffix}" not in card.files.values():
                (to / f"{name}{suffix}").unlink(missing_ok=True)
        card.save(to / f"{name}.yaml")  # the one write of the card
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    metrics, latency = card.metrics, card.metrics["cpu_latency"]
    log(f"[release] {card.path.absolute()}: val mIoU {_val_text(metrics)}, {metrics['params']} params, "
        f"{metrics['gmacs']} GMACs, ONNX Runtime fp32 p50 {latency['onnxruntime_fp32_ms']['p50']} ms")
    if to.resolve() not in [d.resolve() for d in models_dirs()]:  # found by its path only: say how
        log(f"[release] note: {to.absolute()} is not a folder models resolve from by name: pass --model "
            f"{card.path.absolute()}, or set SEG_PERCEPTION_MODELS to it")
    return card.path
