"""`seg-perception`: one command, one subcommand per job.

Subcommands register themselves with ``@command(name, help)``: a function that
adds its arguments to the given parser and returns the function that runs it.
Areas keep their commands beside their code (``deploy/commands.py``,
``evaluation/commands.py``); ``COMMAND_MODULES`` lists them. Known errors become
one-line messages with exit code 2.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import Callable, Dict, List, Optional

COMMANDS: Dict[str, Callable] = {}


def command(name: str, help: str):
    def wrap(fn):
        COMMANDS[name] = (fn, help)
        return fn
    return wrap


# --------------------------------------------------------------------- dataset arguments
DATASET_KINDS = ("camvid", "cityscapes", "folder")


def add_dataset_args(p: argparse.ArgumentParser, split: Optional[str] = None,
                     kinds: tuple = DATASET_KINDS, card: bool = True) -> None:
    """The one definition of a command's dataset arguments (train, evaluate, quantize, release, pack-dataset,
    make-bag, bench use it); ``split`` adds --split with that default; ``card``: the command reads a model
    card whose classes stand in for a missing dataset.yaml (train, make-bag, pack-dataset read none)."""
    d = " (default: %(default)s)"
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", default="camvid", choices=kinds,
                   help="camvid (SegNet layout), cityscapes (gtFine), or folder: DATA/<split>/images/* with "
                   "DATA/<split>/labels/*.png and the class table in DATA/dataset.yaml" + d)
    g.add_argument("--data", default=None, help="dataset folder (default: $SEG_PERCEPTION_CAMVID or "
                   "../shared/datasets/camvid for camvid; required for the others)")
    if split is not None:
        g.add_argument("--split", default=split, help="dataset split" + d)
    if "folder" in kinds:
        n_from, ignore_from = (", or the model card's", "the model card's, else ") if card else ("", "")
        g.add_argument("--num-classes", type=int, default=0, help="folder dataset without dataset.yaml: "
                       f"number of classes (default: from dataset.yaml{n_from})")
        g.add_argument("--ignore-index", type=int, default=None, help="folder dataset without dataset.yaml: "
                       f"label value of unlabelled pixels (default: {ignore_from}255)")


def dataset_root(args) -> str:
    """--data, or the CamVid default; a one-line error where a folder must be named."""
    from .data.datasets import default_camvid_root
    if args.data:
        return args.data
    if args.dataset == "camvid":
        return str(default_camvid_root())
    raise ValueError(f"--data is required for --dataset {args.dataset}")


def dataset_options(args, card=None) -> dict:
    """open_dataset() keywords of a folder dataset: --num-classes/--ignore-index, else the card's table
    (used only where the folder has no dataset.yaml)."""
    if args.dataset not in ("folder", "camvid"):  # camvid: for a CVAT CamVid export of other classes
        return {}
    typed = getattr(args, "ignore_index", None)  # None: not typed (argparse default), so a typed 255 counts
    given = typed is not None
    if not getattr(args, "num_classes", 0) and card is not None:
        return {"num_classes": card.num_classes, "ignore_index": typed if given else card.ignore_index,
                "class_names": list(card.class_names), "drivable": list(card.drivable_classes), "from_card": True,
                "ignore_given": given, "class_colors": [list(c) for c in card.class_colors]}
    return {"num_classes": getattr(args, "num_classes", 0), "ignore_index": typed if given else 255,
            "ignore_given": given}


def open_from_args(args, split: Optional[str] = None, card=None, **kw):
    """The dataset the arguments of add_dataset_args() name, at ``split`` (default: --split)."""
    from .data.datasets import open_dataset
    return open_dataset(args.dataset, dataset_root(args), split or args.split, **dataset_options(args, card), **kw)


# --------------------------------------------------------------------- train
@command("train", "train a network of the zoo (CamVid, Cityscapes or your own folders)")
def _train(p: argparse.ArgumentParser):
    d = " (default: %(default)s)"
    p.add_argument("--model", required=True, help="network name (see 'seg-perception models')")
    add_dataset_args(p, card=False)
    p.add_argument("--out", type=output_folder, required=True,
                   help="run folder: last.pt, log.csv, <name>.pt + .yaml")
    p.add_argument("--name", default="", help="name of the weights/card files (default MODEL_DATASET)")
    p.add_argument("--epochs", type=int, default=150, help="epochs of the full network" + d)
    p.add_argument("--encoder-epochs", type=int, default=0, help="encoder-only stage first (labels x1/8)" + d)
    p.add_argument("--batch-size", type=int, default=8, help="frames per step (per rank under torchrun)" + d)
    p.add_argument("--width", type=int, default=480, help="model input width: validation and the card" + d)
    p.add_argument("--height", type=int, default=360, help="model input height: validation and the card" + d)
    p.add_argument("--crop", type=_size, default=None, metavar="WxH",
                   help="training crop, e.g. 384x288 (default: the model size)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.75), metavar=("MIN", "MAX"),
                   help="random scale range; 1.0 shows the frame at the model resolution (--width x --height)" + d)
    p.add_argument("--jitter", type=float, default=0.25,
                   help="colour jitter: brightness, contrast and saturation each scaled by 1 +- this (0: off)" + d)
    p.add_argument("--classmix", type=float, default=0.0, metavar="P",
                   help="with probability P a crop receives half the classes of another crop of its batch, "
                   "pixels and labels (ClassMix; 0: off)" + d)
    p.add_argument("--class-crop", type=float, default=0.0, metavar="P",
                   help="with probability P a crop is placed around a pixel of one class of the frame, the class "
                   "drawn uniformly among those present, so thin and rare classes fill more crops (0: off)" + d)
    p.add_argument("--label-resize", default="nearest", choices=["nearest", "centred"],
                   help="how scale augmentation resizes labels: nearest (OpenCV's INTER_NEAREST, up to half a pixel "
                   "off the frame's resize) or centred (pixel centres on the frame's)" + d)
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate" + d)
    p.add_argument("--weight-decay", type=float, default=2e-4, help="Adam weight decay" + d)
    p.add_argument("--schedule", default="poly", choices=["poly", "plateau"], help="learning-rate schedule: poly decays to 0 over --epochs; plateau halves the rate once 6 "
                   "validations in a row (every --eval-every epochs) bring no better val mIoU" + d)
    p.add_argument("--class-weight-c", type=float, default=1.10, help="c in w = 1/ln(c + p_class)" + d)
    p.add_argument("--loss", default="ce", choices=["ce", "ohem", "lovasz", "ce+lovasz"],
                   help="ce: weighted cross-entropy; ohem: the same over hard pixels; lovasz: Lovasz-softmax"
                   + d)
    p.add_argument("--ohem-thresh", type=float, default=0.7, help="ohem: pixels with p(true) below this" + d)
    p.add_argument("--ohem-min-kept", type=float, default=0.1, help="ohem: at least this fraction of pixels" + d)
    p.add_argument("--lovasz-weight", type=float, default=0.5, help="ce+lovasz: weight of the Lovasz term" + d)
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep an exponential moving average of the weights and ship it (e.g. 0.999; 0: off)" + d)
    p.add_argument("--init", default="",
                   help="fine-tune: start from this model: name, card or .pt (tensors of another shape, such as "
                   "the classifier for other classes, start fresh) (default: random init)")
    p.add_argument("--teacher", default="", help="a trained model to distil from: name or card, of the run's classes in "
                   "any order (default: none)")
    p.add_argument("--distill-weight", type=float, default=0.5, help="weight of the distillation term" + d)
    p.add_argument("--distill-temperature", type=float, default=2.0, help="distillation temperature" + d)
    p.add_argument("--keep", default=None, choices=["best", "last"],
                   help="ship the best-val epoch's weights or the last epoch's "
                   "(default: best; last with --val-split none)")
    p.add_argument("--eval-every", type=int, default=5, help="validate every N epochs" + d)
    p.add_argument("--seed", type=int, default=0, help="seed of shuffling, augmentation, init" + d)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="CPU training precision; auto: times a few steps of each and uses bf16 only where it is "
                        ">= 1.15x faster for this network on this CPU, else fp32; a resumed run keeps its own" + d)
    p.add_argument("--no-bf16", action="store_true", help="same as --precision fp32")
    p.add_argument("--memory-format", default="auto", choices=["auto", "channels_last", "contiguous"],
                   help="CPU tensor layout; auto: the faster for this network here, timed with --precision" + d)
    p.add_argument("--no-channels-last", action="store_true", help="same as --memory-format contiguous")
    p.add_argument("--threads", type=threads, default=0, help="torch CPU threads (0: torch's default)" + d)
    p.add_argument("--cache-gb", type=float, default=-1.0,
                   help="GB of decoded frames one training process (with its loader workers) keeps in memory, the "
                        "rest decoded every epoch (default -1: auto, 40 %% of this machine's memory shared by its "
                        "ranks; CamVid takes 0.25)")
    p.add_argument("--workers", type=int, default=-1,
                   help="processes that decode and augment frames; 0: in the training process; the batches are "
                        "the same either way (default -1: auto, 0 on a CPU, up to 4 per GPU)")
    p.add_argument("--gradual-grouping-epochs", type=int, default=0,
                   help="train grouped 1x1 convs dense, alpha 1->0 over this many epochs" + d)
    p.add_argument("--clip-grad", type=float, default=0.0, help="clip the gradient norm to this (0: off)" + d)
    p.add_argument("--train-split", default="train", help="split(s) to train on, '+'-joined: train+val" + d)
    p.add_argument("--val-split", default="val", help="split to validate on; none: no validation" + d)
    p.add_argument("--max-train-images", type=count_or_all, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-val-images", type=count_or_all, default=0, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt with the same flags (bit for bit on a CPU with the same "
                        "--threads); a changed --epochs recomputes the learning-rate schedule, and the log and the "
                        "card list any changed recipe setting (release then refuses the run); fewer --epochs than "
                        "trained, another --name or another --init are refused. Without it a folder that holds a run "
                        "is refused")

    def run(a):
        from .nets import list_models
        from .train.loop import TrainConfig, command_line, train
        if a.model not in list_models():
            raise ValueError(f"unknown model '{a.model}'; valid choices: {', '.join(list_models())}")
        for short, flag, value, meant in (("--no-bf16", "--precision", a.precision, "fp32"),
                                          ("--no-channels-last", "--memory-format", a.memory_format, "contiguous")):
            if getattr(a, short[2:].replace("-", "_")) and value not in ("auto", meant):
                raise ValueError(f"{short} and {flag} {value} exclude each other ({short} is {flag} {meant}): "
                                 "give one")
        data = dataset_root(a)
        if a.ignore_index is not None and a.dataset in ("folder", "camvid"):  # a typed id that dataset.yaml
            from .data.datasets import MissingSplit  # contradicts is an error (the config keeps an int)
            try:
                open_from_args(a, split=a.train_split.split("+")[0])
            except MissingSplit as e:
                raise e.naming("--train-split") from None
        crop_w, crop_h = a.crop or (0, 0)
        keep = a.keep or ("best" if a.val_split not in ("", "none") else "last")
        cfg = TrainConfig(model=a.model, data=data, out=a.out, dataset=a.dataset, name=a.name,
                          train_split=a.train_split, val_split=a.val_split, epochs=a.epochs,
                          encoder_epochs=a.encoder_epochs, batch_size=a.batch_size, width=a.width,
                          height=a.height, crop_width=crop_w, crop_height=crop_h, scale_min=a.scale[0],
                          scale_max=a.scale[1], jitter=a.jitter, classmix=a.classmix, class_crop=a.class_crop,
                          label_resize=a.label_resize, lr=a.lr, weight_decay=a.weight_decay, schedule=a.schedule,
                          class_weight_c=a.class_weight_c, loss=a.loss, ohem_thresh=a.ohem_thresh,
                          ohem_min_kept=a.ohem_min_kept, lovasz_weight=a.lovasz_weight, ema_decay=a.ema_decay,
                          init=a.init, teacher=a.teacher, distill_weight=a.distill_weight,
                          distill_temperature=a.distill_temperature, keep=keep, eval_every=a.eval_every,
                          seed=a.seed, precision="fp32" if a.no_bf16 else a.precision,
                          memory_format="contiguous" if a.no_channels_last else a.memory_format, threads=a.threads,
                          cache_gb=a.cache_gb, workers=a.workers, gradual_grouping_epochs=a.gradual_grouping_epochs,
                          clip_grad=a.clip_grad, max_train_images=a.max_train_images,
                          max_val_images=a.max_val_images, num_classes=a.num_classes,
                          ignore_index=255 if a.ignore_index is None else a.ignore_index, command=command_line())
        best = train(cfg, resume=a.resume)
        print(f"[train] weights: {best} (card {best.with_suffix('.yaml')})")
    return run


def count_or_all(text: str) -> int:
    """A number of frames where 0 means all of them: a negative one is a typo, not 'all'."""
    n = _whole(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (all) or more, got {n}")
    return n


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def _at_least(low: int, zero: str = ""):
    """An argparse type: a whole number of at least ``low`` (``zero``: what 0 means, where allowed)."""
    def parse(text: str) -> int:
        n = _whole(text)
        if n < low:
            raise argparse.ArgumentTypeError(f"must be 0 ({zero}) or more, got {n}" if low == 0
                                             else f"must be at least {low}, got {n}")
        return n
    return parse


count = _at_least(1)  # a number of things to do (frames, runs, steps, images)
threads = _at_least(0, "the runtime's default")  # a negative number of threads is a typo
count_or_none = _at_least(0, "none")  # extra things to do (warm-up runs)


def _number(text: str) -> float:
    import math
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return v


def per_second(text: str) -> float:
    """A rate where 0 means the command's default (the recorded timing, ...)."""
    v = _number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (the default) or more, got {text}")
    return v


def positive(text: str) -> float:
    """A rate, duration or factor that must be above 0."""
    v = _number(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return v


def output_file(text: str) -> str:
    """A file a command writes at the end: checked before the work (minutes of it) that it must not
    be a folder and that its folder exists or can be made and takes a new file."""
    from pathlib import Path
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: name a file in it")
    _takes_new_files(text, path.absolute().parent)
    return str(path)  # expanded: ~ in --out=~/x reaches the command unexpanded, and was checked expanded


def output_folder(text: str) -> str:
    """A folder a command writes into, made where missing: checked before the work that it is not a
    file and that it (or the nearest folder above it that exists) takes a new file."""
    from pathlib import Path
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: name a folder (made where missing)")
    _takes_new_files(text, path.absolute())
    return str(path)


def _takes_new_files(text: str, folder) -> None:
    import tempfile
    folder = next(p for p in [folder, *folder.parents] if p.exists())  # the nearest that exists
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} takes no new file "
                                          f"({e.strerror or e})") from None


def _size(text: str) -> tuple:
    """'384x288' -> (384, 288)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 384x288, got '{text}'") from None
    return w, h


def _net_size(text: str) -> tuple:
    """A network input size: WxH, multiples of 8 (checked before any work starts)."""
    w, h = _size(text)
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise argparse.ArgumentTypeError(f"input size {w}x{h} must be positive multiples of 8")
    return w, h


@command("runs", "where training runs stand: epochs, pace, hours left, val so far, training now or stopped")
def _runs(p: argparse.ArgumentParser):
    p.add_argument("folders", nargs="*", default=["runs"], metavar="FOLDER",
                   help="a run folder (--out of train), or a folder of runs (default: runs)")
    p.add_argument("--json", action="store_true", help="one JSON object a run instead of the table")

    def run(a):
        import json
        from pathlib import Path
        from .train.run_status import find_runs, run_status, table
        missing = [f for f in a.folders if not Path(f).exists()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} does not exist: give a run folder (train's --out) or a folder "
                                    "of them")
        runs = find_runs(Path(f) for f in a.folders)
        if not runs:
            raise ValueError(f"no training run in {', '.join(a.folders)}: a run folder holds last.pt or log.csv, "
                             "and runs are looked for in the folders given and one level down")
        statuses = [run_status(r) for r in runs]
        print("\n".join(json.dumps(s.to_dict()) for s in statuses) if a.json else table(statuses))
    return run


@command("bench-train", "seconds per training step on this machine, per precision (is bf16 faster here?)")
def _bench_train(p: argparse.ArgumentParser):
    d = " (default: %(default)s)"
    p.add_argument("--model", default="essnet_d", help="network name" + d)
    p.add_argument("--crop", type=_net_size, default=(480, 360), metavar="WxH", help="training crop (default: 480x360)")
    p.add_argument("--batch-size", type=count, default=8, help="frames per step" + d)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="precisions to time" + d)
    p.add_argument("--memory-format", nargs="+", default=["channels_last", "contiguous"],
                   choices=["channels_last", "contiguous"], help="memory formats to time" + d)
    p.add_argument("--steps", type=count, default=5, help="timed steps per combination, after 2 warm-up steps" + d)
    p.add_argument("--threads", type=threads, default=0, help="torch CPU threads (0: torch's default)" + d)

    def run(a):
        import numpy as np
        import torch
        from .train.precision import StepShape, choose_step, cpu_has_bf16, format_step_times, time_train_steps
        if a.threads:
            torch.set_num_threads(a.threads)
        precisions = list(dict.fromkeys(a.precision))
        if "bf16" in precisions and not cpu_has_bf16():
            print("bf16: skipped, this CPU has no bf16 support in oneDNN (train --precision auto uses fp32)")
            precisions.remove("bf16")
        combos = [(p, f) for p in precisions for f in dict.fromkeys(a.memory_format)]
        res = time_train_steps(StepShape(a.model, a.crop, a.batch_size), combos, a.steps)
        print(f"{a.model}, batch {a.batch_size} at {a.crop[0]}x{a.crop[1]}, {torch.get_num_threads()} threads, "
              f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
        print(format_step_times(res, a.batch_size))
        if len(res) > 1:
            c = choose_step({k: float(np.median(v)) for k, v in res.items()})
            print(f"train would use {c.precision}, {c.memory_format} with these as auto")
    return run


@command("pack-dataset", "copy a dataset as JPEG frames + PNG labels + dataset.yaml (a compact folder dataset)")
def _pack_dataset(p: argparse.ArgumentParser):
    d = " (default: %(default)s)"
    add_dataset_args(p, card=False)
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to copy" + d)
    p.add_argument("--out", required=True, help="destination folder (train with --dataset folder --data OUT)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the frames" + d)

    def run(a):
        from .data.pack import pack_dataset
        data = dataset_root(a)
        counts = pack_dataset(a.dataset, data, a.splits, a.out, a.quality, **dataset_options(a))
        size = sum(f.stat().st_size for f in __import__("pathlib").Path(a.out).rglob("*") if f.is_file())
        print(f"packed {', '.join(f'{s}: {n}' for s, n in counts.items())} frames into {a.out} "
              f"({size / 1e6:.1f} MB); train with --dataset folder --data {a.out}")
    return run


@command("evaluate", "accuracy of a model on a dataset split, through the runtime pipeline")
def _evaluate(p: argparse.ArgumentParser):
    d = " (default: %(default)s)"
    p.add_argument("--model", default=None, help="model name in models/ or a card .yaml (default: the shipped model)")
    p.add_argument("--weights", default=None, help="PyTorch weights (backend torch; default: the card's)")
    p.add_argument("--onnx", default=None, help="ONNX file (backend onnxruntime; default: the card's)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt"],
                   help="inference backend" + d)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="inference precision" + d)
    add_dataset_args(p, split="val")
    p.add_argument("--threads", type=threads, default=0, help="inference threads (0: the runtime's default)" + d)
    p.add_argument("--limit", type=count_or_all, default=0, help="evaluate the first N frames only (0: all)" + d)
    p.add_argument("--width", type=int, default=0, help="network input width (0: the card's; the shipped "
                   "ONNX files take any multiple of 8)" + d)
    p.add_argument("--height", type=int, default=0, help="network input height (0: the card's)" + d)
    p.add_argument("--sizes", type=_net_size, nargs="+", default=None, metavar="WxH",
                   help="score at each of these input sizes and end with a table of mIoU and inference time "
                   "per size, to choose input_width/input_height (default: one size, --width/--height)")
    p.add_argument("--json", type=output_file, default=None, help="also write the results to this JSON file (default: none; "
                   "with --sizes, a list with one result per size)")

    def run(a):
        from .card import load_card
        from .paths import DEFAULT_MODEL, resolve_model
        from .evaluation.split_accuracy import evaluate, format_sizes, format_summary, write_json
        if a.sizes and (a.width or a.height):
            raise ValueError("--sizes replaces --width/--height: give the sizes in one of the two ways")
        card = load_card(resolve_model(a.model or DEFAULT_MODEL))
        ds = open_from_args(a, card=card)
        for note in ds.notes:
            print(f"[evaluate] note: {note}", flush=True)
        results = []
        for w, h in a.sizes or [(a.width, a.height)]:
            results.append(evaluate(card.path, ds, a.dataset, a.split, a.backend, a.precision, a.weights,
                                    a.onnx, a.threads, a.limit, w, h, root=dataset_root(a)))
            print(format_summary(results[-1]), flush=True)
        if a.sizes:
            print(format_sizes(results))
        if a.json:
            write_json(results if a.sizes else results[0], a.json)
    return run


@command("release", "ship a training run's best model into models/: weights, card, ONNX, INT8, measured figures")
def _release(p: argparse.ArgumentParser):
    p.add_argument("--run", required=True, help="training run folder (NAME.pt and NAME.yaml, or one card of "
                   "another name: released as NAME)")
    p.add_argument("--name", required=True, help="model name, e.g. essnet_d_camvid")
    p.add_argument("--replace", action="store_true", help="ship over a model of that name in --to (default: "
                   "refuse, so that a run is never released over a shipped model by accident)")
    p.add_argument("--to", type=output_folder, default=None, help="destination folder (default: "
                   "$SEG_PERCEPTION_MODELS where set, the folder your own models resolve from; else the checkout's "
                   "models/)")
    add_dataset_args(p)
    p.add_argument("--val-split", default="val", help="the dataset's split the figures are measured on, one the "
                   "model did not train on (default: %(default)s)")
    p.add_argument("--calib-images", type=count, default=100, help="INT8 calibration images" + " (default: %(default)s)")
    p.add_argument("--threads", type=threads, default=2, help="ONNX Runtime threads for the timings" + " (default: %(default)s)")
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 model")
    p.add_argument("--note", default="", help="a note recorded in the card's training section")
    p.add_argument("--recipe-run", default=None,
                   help="for a run trained on train+val: the same recipe's run on train alone, whose val figure "
                   "the card records (default: none; required when --run trained on val)")
    p.add_argument("--recipe-pending", default="", metavar="WHY",
                   help="for a run trained on train+val whose train-alone run is not finished: ship without a val "
                   "figure and record WHY; release again with --recipe-run when it is done")
    p.add_argument("--unfinished", action="store_true", help="ship a run stopped before its planned epochs (default: "
                   "refuse it, and say how to continue it)")

    def run(a):
        from pathlib import Path
        from .paths import release_dir
        from .release import release, run_card
        card = run_card(Path(a.run), a.name)  # a folder without dataset.yaml: its classes are the card's
        # not ./models: a folder names resolve from, whatever the current folder
        to = Path(a.to).expanduser() if a.to else release_dir()
        if to is None:
            raise ValueError("no models folder of your own to release into (this is an install, not a checkout): "
                             "set SEG_PERCEPTION_MODELS=DIR, where names then resolve from, or pass --to DIR")
        release(a.run, a.name, to, dataset_root(a), a.calib_images, a.threads, not a.no_int8, a.note, a.recipe_run,
                a.recipe_pending, a.replace, dataset=a.dataset, val_split=a.val_split,
                dataset_kw=dataset_options(a, card), unfinished=a.unfinished)
    return run


@command("adapt", "a model for your own camera: BatchNorm statistics re-estimated on unlabelled frames of it")
def _adapt(p: argparse.ArgumentParser):
    from .adapt import DEFAULT_BLEND, DEFAULT_FRAMES
    d = " (default: %(default)s)"
    p.add_argument("--model", default=None, help="model to adapt: a name in models/ or a card .yaml "
                   "(default: the shipped default)")
    p.add_argument("--frames", required=True, help="a rosbag2 recorded with your camera, or a folder of its images")
    p.add_argument("--image-topic", nargs="+", default=None, metavar="TOPIC",
                   help="the bag's camera topic (default: /camera/image_raw or its /compressed, else the bag's only "
                   "image topic); several: the cameras one node serves (image_topics), frames shared out evenly")
    p.add_argument("--num-frames", type=int, default=DEFAULT_FRAMES, help="frames taken evenly over the "
                   "whole recording" + d)
    p.add_argument("--blend", type=float, default=DEFAULT_BLEND, help="share of the new frames' statistics; "
                   "the rest keeps the training statistics (1: the new frames' alone)" + d)
    p.add_argument("--out", required=True, help="folder for the new model's weights, card and ONNX")
    p.add_argument("--name", default=None, help="the new model's name (default: <model>_adapted)")
    p.add_argument("--batch", type=int, default=8, help="frames per forward pass" + d)
    p.add_argument("--threads", type=threads, default=0, help="torch threads (0: its default)" + d)
    p.add_argument("--replace", action="store_true", help="write over an existing model of --name in --out")

    def run(a):
        from .adapt import adapt
        from .paths import DEFAULT_MODEL
        adapt(a.model or DEFAULT_MODEL, a.frames, a.out, a.name, a.num_frames, a.blend, a.image_topic,
              a.batch, a.threads, a.replace)
    return run


@command("models", "list the networks of the zoo, or (--shipped) the trained models and their figures")
def _models(p: argparse.ArgumentParser):
    p.add_argument("--shipped", action="store_true", help="a markdown table of the model cards in models/")

    def run(a):
        if not a.shipped:
            from .nets import list_models
            print("\n".join(list_models()))
            return
        from pathlib import Path
        from .card import CardError, load_card
        from .paths import available_models, resolve_model
        print("| model | network | trained on | val mIoU (fp32, its dataset's) | int8 mIoU (the CPU int8 model) "
              "| params | GMACs | CPU p50 fp32 / int8 (ms, where timed) | epochs |")
        print("|---|---|---|---:|---:|---:|---:|---:|---|")
        for name in available_models():
            try:
                c = load_card(resolve_model(name))
            except CardError as e:  # one broken card hides not the others
                print(f"seg-perception models: skipped {name}: {e}", file=sys.stderr)
                continue
            m, t = c.metrics, c.training
            lat = m.get("cpu_latency", {})
            fp32 = lat.get("onnxruntime_fp32_ms", {}).get("p50", "-")
            # int8 on a CPU runs the _int8_cpu model where the card has one (what the node loads):
            # its accuracy and its speed, not the TensorRT Q/DQ model's accuracy beside it
            q = "int8_cpu" if "int8_cpu" in m or "onnxruntime_int8_cpu_ms" in lat else "int8"
            int8 = lat.get(f"onnxruntime_{q}_ms", {}).get("p50", "-")
            # each card is timed on the machine that released it: say which, or rows look comparable
            where = f" ({lat['cpu']}, {lat.get('threads', '?')} thread(s))" if lat.get("cpu") else ""
            epochs = f"{t.get('epochs_completed_in_run', '?')} of {t.get('epochs_planned', '?')}"
            if t.get("init"):
                epochs += f" from {Path(str(t['init'])).stem}"
            if t.get("best_epoch") is not None:  # --keep best: the weights are of the epoch val chose, not the last
                epochs += f"; weights of epoch {t['best_epoch']} (best on {t.get('val_split') or 'val'})"
            elif t.get("epoch") not in (None, t.get("epochs_completed_in_run")):
                # --keep last stopped after the validation that wrote its card: the weights are of that epoch
                epochs += f"; weights of epoch {t['epoch']}"
            split = f"{c.dataset or t.get('dataset', '?')} {t.get('train_split', 'train')}"  # own data: its name
            val = m.get("val_miou", "-")
            if isinstance(val, float):
                val = f"{val:.2f}"  # 65.90, as the README's table reads (the card's YAML says 65.9)
            if m.get("val_picked_checkpoint"):  # the split chose the epoch: not held out
                val = f"{val} (epoch picked on val)"
            int8_miou = m.get(q, {}).get("int8_miou", "-")
            if isinstance(m.get(q, {}).get("miou_drop"), (int, float)):  # the change beside the figure
                int8_miou = f"{int8_miou} ({-m[q]['miou_drop']:+.2f} vs fp32)"
            if t.get("recipe_run"):  # val was training data: the figure is the same recipe on train alone
                val = "pending (recipe on train alone not done)" if "pending" in t["recipe_run"] \
                    else f"{val} (recipe on train alone)"
                drop = m.get(q, {}).get("miou_drop")  # none measured (--no-int8): no figure, not 0
                int8_miou = "-" if drop is None else f"{-drop:+.2f} vs fp32 (val not held out)"
            if m.get("val_classes_absent"):  # the mean is over fewer classes than the model has: say which
                val = f"{val} ({', '.join(map(str, m['val_classes_absent']))} absent from val: not in the mean)"
            params = f"{m['params']:,}" if isinstance(m.get("params"), int) else "-"  # (a hand-written card)
            print(f"| {c.name} | {c.architecture} | {split} | {val} | {int8_miou} "
                  f"| {params} | {m.get('gmacs', '-')} @ {m.get('gmacs_at', '')} | {fp32} / {int8}{where} "
                  f"| {epochs} |")
    return run


# --------------------------------------------------------------------- main
COMMAND_MODULES = ("seg_perception.deploy.commands", "seg_perception.evaluation.commands")


def _load_command_modules() -> None:
    import importlib
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a module that exists but fails to import is a bug: show it
                raise


def build_parser() -> tuple[argparse.ArgumentParser, Dict[str, Callable]]:
    _load_command_modules()
    parser = argparse.ArgumentParser(prog="seg-perception", description="Real-time semantic segmentation "
                                     "for ROS 2: train, export, deploy and evaluate.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"seg-perception {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    runners = {}
    for name, (fn, help) in COMMANDS.items():
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(_subparser=sp)  # main() names the command's own options on a typo
        runners[name] = fn(sp)
    return parser, runners


def _unknown_arguments(sub: argparse.ArgumentParser, unknown: List[str]) -> None:
    """argparse's "unrecognized arguments", in the command's own usage and with the option
    that was probably meant (exits 2, as argparse does)."""
    options = [o for a in sub._actions for o in a.option_strings]
    hints = []
    for arg in unknown:
        if arg.startswith("--"):
            near = difflib.get_close_matches(arg.split("=")[0], options, n=1, cutoff=0.7)
            hints += [f"{arg}: did you mean {near[0]}?"] if near else []
    sub.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else ""))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, systemd, a CI runner): unwinds as Ctrl-C does, so that a node this command
    started is stopped and its files closed (the default action ended the command at once and left
    the node running, orphaned)."""


# pip names of the core dependencies whose module is named otherwise
PIP_NAMES = {"cv2": "opencv-python-headless", "yaml": "PyYAML", "PIL": "Pillow"}


def _terminated(signum, frame):
    raise Terminated()


def _stopped_how_on(args) -> str:
    """What a stopped command leaves to do: a training run continues from its last.pt (and --resume
    without one starts afresh, so the advice holds at any moment)."""
    if args.cmd != "train":
        return ""
    return ": the same command with --resume continues the run from its last finished epoch"


def main(argv: Optional[List[str]] = None) -> int:
    import signal
    import threading
    parser, runners = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_arguments(args._subparser, unknown)
    before = signal.signal(signal.SIGTERM, _terminated) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        rc = runners[args.cmd](args)
        return int(rc or 0)
    except KeyboardInterrupt as e:
        print(("terminated" if isinstance(e, Terminated) else "interrupted") + _stopped_how_on(args), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except ModuleNotFoundError as e:
        # An optional dependency this command needs (torch from the 'train' extra, rclpy from 'ros').
        if __import__("os").environ.get("SEG_PERCEPTION_DEBUG") or not e.name or e.name.startswith("seg_perception"):
            raise
        from .ros.entry_points import ROS_MODULES
        top = e.name.split(".")[0]
        if top == "torch":  # the README's line: without the index pip takes the CUDA build, several GB
            how = ("pip install 'seg_perception[train]' --extra-index-url https://download.pytorch.org/whl/cpu "
                   "(a CPU build; on a Jetson, NVIDIA's torch for its JetPack)")
        elif top in ROS_MODULES:
            how = "pip install 'seg_perception[ros]', or on a ROS 2 system: source /opt/ros/<distro>/setup.bash"
        else:  # a core dependency (by its pip name where that differs from the module's)
            how = f"pip install {PIP_NAMES.get(top, top)}"
        print(f"seg-perception {args.cmd}: error: this needs the Python module '{e.name}', which is not "
              f"installed here: {how}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        if __import__("os").environ.get("SEG_PERCEPTION_DEBUG"):
            raise
        print(f"seg-perception {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    # Under `python -m` this file runs as __main__, a second copy of the module: the area
    # modules register their commands on the importable seg_perception.cli, so use that.
    from seg_perception.cli import main as _main
    sys.exit(_main())
