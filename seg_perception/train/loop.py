"""The training loop behind `seg-perception train`.

Recipe defaults follow ERFNet/ESSNet: class-weighted cross-entropy with
w = 1/ln(c + p_class), Adam (lr 5e-4, weight decay 2e-4), poly or
ReduceLROnPlateau schedule, flips / scale / crop / translation / colour
jitter, optional encoder-first stage with labels downsampled x8. On top:
training crops smaller than the model's resolution, other losses (OHEM,
Lovasz-softmax), ClassMix, an EMA of the weights, distillation from a teacher, and
training on several splits at once (``train+val``) with no validation.

The file reads top to bottom like the loop it is: ``build`` makes a ``Run``
(data, model, optimiser, schedule, EMA, resume state), ``train_one_epoch``
does one pass, ``validate`` scores on the val split, ``save_checkpoint`` and
``save_model`` write files, and ``train`` strings them together.

Resume continues at epoch granularity: every epoch reseeds shuffling,
augmentation and dropout from (seed, epoch), and ``last.pt`` (with the EMA and
the optimiser) is written atomically after each epoch, so a killed run loses at
most one epoch. On a CPU with the same --threads a resumed run ends bit for bit
where a straight one does; on a GPU it follows the same schedule and state, but
cuDNN's nondeterministic kernels make the weights differ slightly.
"""
from __future__ import annotations

import csv
import difflib
import errno
import hashlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..card import SETTING_BEFORE_RECORDED, WEIGHTS_HASH, card_for_table, check_model_name, load_card, weights_mismatch
from ..data.datasets import MissingSplit, SegmentationDataset, open_dataset, share_label_reading
from ..data.transforms import LABEL_RESIZE, EvalResize, TrainAugment
from ..files import sha256
from ..metrics import ConfusionMatrix
from ..nets import build_model
from ..nets.deployable import flush_tiny_weights
from ..paths import resolve_model
from . import grouping
from .checkpoint import atomic_save, load_checkpoint, load_weights
from .run_status import RUN_LOCK
from .ema import ModelEMA
from .losses import LOSSES, build_loss, distillation_kl
from .mixing import class_mix
from .precision import (MEMORY_FORMATS, PRECISIONS, StepChoice, StepShape, autocast_ctx, cpu_has_bf16,
                        cuda_amp_dtype, loss_scaler, resolve_step)


@dataclass
class TrainConfig:
    model: str
    data: str
    out: str
    dataset: str = "camvid"
    name: str = ""
    train_split: str = "train"  # several with '+': "train+val"
    val_split: str = "val"  # "" or "none": no validation (e.g. val is in train_split)
    epochs: int = 150
    encoder_epochs: int = 0
    batch_size: int = 8
    width: int = 480  # the model's resolution: validation and the card
    height: int = 360
    crop_width: int = 0  # training crop; 0: width x height
    crop_height: int = 0
    scale_min: float = 0.75  # random scale; 1.0: the frame at the model's resolution
    scale_max: float = 1.75
    jitter: float = 0.25  # colour jitter: brightness, contrast, saturation x (1 +- jitter)
    classmix: float = 0.0  # probability that a crop receives half the classes of another (mixing.py)
    class_crop: float = 0.0  # probability that a crop is placed around a pixel of a class drawn uniformly
    label_resize: str = "nearest"  # nearest | centred (TrainAugment); card.SETTING_BEFORE_RECORDED
    lr: float = 5e-4
    weight_decay: float = 2e-4
    schedule: str = "poly"  # poly | plateau
    class_weight_c: float = 1.10
    loss: str = "ce"  # see losses.LOSSES
    ohem_thresh: float = 0.7
    ohem_min_kept: float = 0.1
    lovasz_weight: float = 0.5
    ema_decay: float = 0.0  # >0: keep, evaluate and ship an EMA of the weights
    init: str = ""  # model card or .pt to start from (fine-tuning); shapes that differ stay fresh
    teacher: str = ""  # model card of a trained teacher for distillation
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    keep: str = "best"  # best: the best-val weights; last: the final weights
    eval_every: int = 5
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 (CPU); CUDA always uses autocast
    memory_format: str = "auto"  # auto | channels_last | contiguous
    workers: int = -1  # loader processes; -1: auto (loader_workers)
    threads: int = 0
    cache_gb: float = -1.0  # decoded frames kept in memory; < 0: auto (decode_cache_bytes)
    gradual_grouping_epochs: int = 0
    clip_grad: float = 0.0  # >0: clip the gradient norm to this
    max_train_images: int = 0  # >0 trains on a subset (tests, smoke runs)
    max_val_images: int = 0
    num_classes: int = 0  # folder datasets only
    ignore_index: int = 255  # folder datasets only
    command: str = field(default="", repr=False)
    # torchrun processes, set by build: --batch-size is per process, so the batch a step takes is
    # batch_size x processes (recorded: a resume under another count changes the recipe)
    processes: int = 1

    @property
    def crop(self) -> tuple:
        return (self.crop_width or self.width, self.crop_height or self.height)

    @property
    def validates(self) -> bool:
        return self.val_split not in ("", "none")


# ------------------------------------------------------------------ helpers
def pixel_counts(ds: SegmentationDataset) -> np.ndarray:
    """Pixels of each label value (0..255) over the dataset's labels."""
    counts = np.zeros(256, np.int64)
    for i in range(len(ds)):
        _, lab = ds.load(i)
        counts += np.bincount(lab.reshape(-1), minlength=256)
    return counts


def class_weights(ds: SegmentationDataset, c: float, counts: Optional[np.ndarray] = None) -> torch.Tensor:
    """ENet weights 1/ln(c + p_k) from the training labels' class frequencies."""
    counts = (pixel_counts(ds) if counts is None else counts)[: ds.table.num_classes]
    p = counts / max(1, counts.sum())
    return torch.tensor(1.0 / np.log(c + p), dtype=torch.float32)


def absent_classes_note(table, counts: np.ndarray) -> str:
    """A warning line when classes have no pixel in the training labels (empty when all have some):
    such a class is never learnt. Labels of 0 and 255 for two classes are the usual cause (255 is
    the default ignore id)."""
    absent = [table.names[k] for k in range(table.num_classes) if counts[k] == 0]
    if not absent:
        return ""
    ignored = counts[table.ignore_index] / max(1, counts.sum())
    why = (f"; {100 * ignored:.0f} % of the pixels carry the ignore id {table.ignore_index}: if that value "
           f"marks a class (a 0/255 mask), re-save the masks with class ids 0..{table.num_classes - 1}"
           if ignored > 0.05 else "")
    return (f"[train] warning: {len(absent)} class(es) have no pixel in the training labels and will not be "
            f"learnt: {', '.join(absent)}{why}")


def to_input(img_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 RGB -> normalised NCHW float (the same math as the exported graph)."""
    x = img_u8.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


class AugmentedSamples(torch.utils.data.Dataset):
    """Training samples keyed by (epoch seed, index): sample i of an epoch draws its randomness
    from that pair alone, so batches are identical with any number of loader workers, and a
    resumed run sees the frames of one that never stopped."""

    def __init__(self, ds, augment: TrainAugment):
        self.ds, self.augment = ds, augment

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key):
        seed, i = key
        img, lab = self.ds.load(i)
        return self.augment(img, lab, np.random.default_rng((seed, i)))


class _EpochBatchSampler:
    """The batch sampler of TrainBatches: the current epoch's batches of (seed, index) keys."""

    def __init__(self):
        self.batches: List[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader_worker_init(_: int) -> None:
    # Loader workers decode and augment: one thread each, the cores are theirs.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _local_ranks() -> int:
    """Training processes on this machine: torchrun's ranks here, else 1."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1


def _machine_memory(limits: Sequence[str] = CGROUP_MEMORY_LIMITS) -> int:
    """Bytes of memory this process may use: the machine's, or a container's (cgroup) limit below it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        total = 16 * 2 ** 30
    for limit in limits:
        try:
            total = min(total, int(Path(limit).read_text().split()[0]))  # "max": no limit
        except (OSError, ValueError, IndexError):
            pass
    return total


def decode_cache_bytes(asked_gb: float) -> int:
    """Bytes of decoded frames one training process keeps in memory (its loader workers' copies
    included): ``asked_gb``, or auto: 40 % of the memory, shared by the ranks on this machine.
    Decoding costs a small net's step in CPU, so CamVid (0.25 GB) is kept whole; a folder of
    thousands of 1080p frames (8 MB each decoded) would otherwise fill the memory and be killed."""
    if asked_gb >= 0:
        return int(asked_gb * 2 ** 30)
    return int(0.4 * _machine_memory()) // _local_ranks()


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 29 else f"{n / 2 ** 20:.0f} MB"


def loader_workers(asked: int, device: torch.device) -> int:
    """``asked`` (>= 0), or auto: none on a CPU, whose cores the network's step wants (augmenting in
    process keeps pace there); on a GPU, which waits for frames otherwise, up to 4 per rank, leaving
    a core per rank on this machine to the training process."""
    if asked >= 0:
        return asked
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores // _local_ranks() - 1))


class TrainBatches:
    """Augmented training batches, made here (workers=0) or in worker processes that live for
    the whole run. Workers are spawned, not forked: OpenCV's and torch's thread pools do not
    survive a fork (a forked worker hung in a test process that had used them)."""

    def __init__(self, ds, augment: TrainAugment, batch_size: int, workers: int, pin_memory: bool):
        self.batch_size = batch_size
        self._sampler = _EpochBatchSampler()
        self.loader = torch.utils.data.DataLoader(
            AugmentedSamples(ds, augment), batch_sampler=self._sampler, collate_fn=collate,
            num_workers=workers, worker_init_fn=_loader_worker_init if workers else None,
            multiprocessing_context="spawn" if workers else None, persistent_workers=workers > 0,
            pin_memory=pin_memory,
            # Its own generator: otherwise each new iterator draws a seed from torch's global one,
            # every epoch without workers, only the first with persistent workers, which shifts
            # the dropout masks of a resumed epoch (and of one run with workers against one without).
            generator=torch.Generator())

    def epoch(self, seed: int, order: List[int], nb: int):
        bs = self.batch_size
        self._sampler.batches = [[(seed, i) for i in order[b * bs:(b + 1) * bs]] for b in range(nb)]
        return iter(self.loader)


def collate(batch):
    imgs = torch.from_numpy(np.stack([b[0] for b in batch]))
    labs = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64))
    return imgs, labs


class EncoderStage(nn.Module):
    """Encoder + 1x1 classifier, for the encoder-first stage (1/8 resolution output)."""

    def __init__(self, encoder: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def encoder_channels(encoder: nn.Module, h: int, w: int) -> int:
    with torch.no_grad():
        was = encoder.training
        encoder.eval()
        c = encoder(torch.zeros(1, 3, h, w)).shape[1]
        encoder.train(was)
    return int(c)


@torch.no_grad()
def evaluate_model(model: nn.Module, ds: SegmentationDataset, width: int, height: int,
                   mean, std, device: torch.device, bf16: bool = False, batch_size: int = 4,
                   channels_last: bool = False) -> ConfusionMatrix:
    """Predict every frame at (width, height), resize labels back (nearest), score at
    the ground truth's own size: the same path the runtime pipeline takes."""
    model.eval()
    cm = ConfusionMatrix(ds.table.num_classes)
    resize = EvalResize((width, height))
    mean_t = torch.tensor(mean, device=device)
    std_t = torch.tensor(std, device=device)
    for start in range(0, len(ds), batch_size):
        items = [ds.load(i) for i in range(start, min(len(ds), start + batch_size))]
        imgs = torch.from_numpy(np.stack([resize(img, lab)[0] for img, lab in items])).to(device)
        x = to_input(imgs, mean_t, std_t)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_ctx(device, bf16):
            logits = model(x)
        pred = logits.float().argmax(1).to(torch.uint8).cpu().numpy()
        for p, (_, lab) in zip(pred, items):
            if p.shape != lab.shape:
                import cv2
                p = cv2.resize(p, lab.shape[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
            cm.update(p, lab)
    return cm


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) under torchrun, else (0, 0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def open_splits(cfg: TrainConfig, splits: str) -> SegmentationDataset:
    """One dataset over one or more '+'-joined splits (e.g. "train+val")."""
    extra = {}
    if cfg.dataset in ("folder", "camvid"):  # classes from <data>/dataset.yaml, or these flags
        extra = {"num_classes": cfg.num_classes, "ignore_index": cfg.ignore_index}
    parts = [open_dataset(cfg.dataset, cfg.data, s, cache=True, **extra) for s in splits.split("+") if s]
    if not parts:
        raise ValueError(f"no split in '{splits}'")
    ds = parts[0]
    for other in parts[1:]:
        ds.pairs = ds.pairs + other.pairs
        ds.notes = ds.notes + other.notes
    return ds


def agreed_step(cfg: TrainConfig, num_classes: int, device: torch.device, rank: int, world: int,
                resume: bool) -> StepChoice:
    """Precision and memory format, decided on rank 0 and the same on every rank. `auto` times the
    network (train/precision.py), except on resume: a run keeps what it began with, so that
    resuming stays exact (bf16 only where this CPU can run it)."""
    answer = [None]
    if rank == 0:
        precision, fmt, kept = cfg.precision, cfg.memory_format, []
        ckpt = Path(cfg.out) / "last.pt"
        if resume and device.type == "cpu" and ckpt.is_file() and "auto" in (precision, fmt):
            ck = load_checkpoint(ckpt)
            if precision == "auto" and ck.get("precision") in ("fp32", "bf16") and (
                    ck["precision"] == "fp32" or cpu_has_bf16()):
                precision = ck["precision"]
                kept.append(precision)
            if fmt == "auto" and ck.get("memory_format") in MEMORY_FORMATS[1:]:
                fmt = ck["memory_format"]
                kept.append(fmt)
        choice = resolve_step(precision, fmt, device, StepShape(cfg.model, cfg.crop, cfg.batch_size, num_classes))
        if kept:
            choice = StepChoice(choice.precision, choice.memory_format,
                                f"auto: {' and '.join(kept)} as this run began (last.pt)"
                                + ("" if choice.why == "asked" else f"; {choice.why}"))
        answer = [choice]
    if world > 1:
        import torch.distributed as dist
        dist.broadcast_object_list(answer, src=0)
    return answer[0]


def _generic(names: Sequence[str]) -> bool:
    """Class names that say nothing (a folder dataset described by --num-classes alone)."""
    return list(names) == [f"class_{i}" for i in range(len(names))]


def class_order(source: Sequence[str], target: Sequence[str]) -> Optional[List[int]]:
    """For each target class, its index among a trained model's ``source`` classes (by name, case
    aside: Road is road), or None where the two orders are the same or cannot be told apart
    (generic names)."""
    source, target = [str(n).strip().lower() for n in source], [str(n).strip().lower() for n in target]
    if source == target or _generic(source) or _generic(target):
        return None
    return [source.index(n) if n in source else -1 for n in target]


def load_teacher(card_path: str, class_names: Sequence[str], device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """A trained network (by its model card, or a shipped model's name) in eval mode, for
    distillation, in the student's memory format (a channels_last batch through contiguous
    weights converts them every call). A teacher of the same classes in another order has its
    outputs reordered to the student's."""
    card = load_card(resolve_model(card_path))
    order = class_order(card.class_names, class_names) if card.num_classes == len(class_names) else None
    if card.num_classes != len(class_names) or (order is not None and -1 in order):
        raise ValueError(f"teacher {card_path} has classes {', '.join(card.class_names)}, the student "
                         f"{', '.join(map(str, class_names))}: a teacher must know the student's classes")
    weights = card.file("weights")
    if weights is None:
        raise ValueError(f"teacher card {card_path} lists no weights file")
    net = load_weights(build_model(card.architecture, card.num_classes), weights)
    for p in net.parameters():
        p.requires_grad_(False)
    if order is not None:
        net = _Reordered(net, order)
    return net.to(device, memory_format=memory_format).eval()


class _Reordered(nn.Module):
    """A network whose output channels are picked in another order (the student's classes)."""

    def __init__(self, net: nn.Module, order: List[int]):
        super().__init__()
        self.net = net
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, x):
        return self.net(x).index_select(1, self.order)


def _class_dims(architecture: str, num_classes: int) -> Dict[str, int]:
    """The tensors of a network that depend on its classes (the classifier), each with the
    dimension that counts them: those whose shape changes with one class more."""
    a = build_model(architecture, num_classes).state_dict()
    b = build_model(architecture, num_classes + 1).state_dict()
    return {k: next(d for d in range(v.dim()) if v.shape[d] != b[k].shape[d])
            for k, v in a.items() if v.shape != b[k].shape}


def card_beside(weights: Path):
    """The model card of a weights file: NAME.yaml beside NAME.pt, else a card in its folder that lists
    it as its weights (None without one)."""
    same = weights.with_suffix(".yaml")
    try:
        others = sorted(p for p in weights.parent.glob("*.yaml") if p != same)
    except OSError:
        others = []
    for p in [same] + others:
        if not p.is_file():
            continue
        try:
            card = load_card(p)
            listed = card.file("weights")
            if p == same or (listed is not None and listed.resolve() == weights.resolve()):
                return card
        except (ValueError, OSError):  # not a card (dataset.yaml, ...), or a broken one
            continue
    return None


def checkpoint_classes(table) -> dict:
    """The class table a checkpoint records (names, colours, ignore id): what its ids mean."""
    return {"names": [str(n) for n in table.names], "colors": [[int(v) for v in c] for c in table.colors],
            "ignore_index": int(table.ignore_index)}


def init_from(model: nn.Module, source: str, architecture: str,
              class_names: Optional[Sequence[str]] = None, notes: Optional[List[str]] = None) -> tuple[int, List[str]]:
    """Copy trained weights into a fresh ``model`` to fine-tune it: a model's name or card
    (its weights file), or a .pt. Tensors whose shape differs -- the classifier of a model
    trained on other classes -- keep their fresh init. With ``class_names`` (the run's classes) and
    the source's class names -- its card, the card beside a .pt, or those a training checkpoint
    records -- the classifier follows the names: a class the source knows starts from its trained
    weights wherever it sits in the new order, a new one from a fresh init. Without names it is
    copied by position (where the counts agree). ``notes`` receives what the log says of the
    classifier. Returns (copied, names kept fresh)."""
    path = Path(source)
    source_names, named_by = None, ""
    if path.suffix != ".pt":
        card = load_card(resolve_model(source))  # a shipped model's name or a card's path
        if card.architecture != architecture:
            raise ValueError(f"--init {source} is a {card.architecture}, not a {architecture}: "
                             f"pass --model {card.architecture} or a card of the same network")
        weights = card.file("weights")
        if weights is None:
            raise ValueError(f"--init card {source} lists no weights file")
        path = Path(weights)
        source_names = list(card.class_names)
    if not path.is_file():
        raise FileNotFoundError(f"--init {path} not found: pass a model card (.yaml) or a weights file (.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"--init {path} cannot be read ({type(e).__name__}): is it a seg_perception .pt file?") \
            from None
    if source_names is None:  # a .pt: its card beside it, or the classes a training checkpoint records
        beside = card_beside(path)
        recorded = state.get("classes") if isinstance(state, dict) else None
        if beside is not None:
            source_names, named_by = list(beside.class_names), f" (classes from {beside.path.name})"
        elif isinstance(recorded, dict) and recorded.get("names"):
            source_names, named_by = list(recorded["names"]), " (classes from the checkpoint)"
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint (last.pt)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    # Batch-norm vectors of equal width match across networks by chance; kernels do not.
    kernels = [k for k, v in own.items() if v.dim() > 1]
    fit_kernels = sum(k in fits for k in kernels)
    if fit_kernels < len(kernels) / 2:  # more than a new classifier differs: another network's file
        raise ValueError(f"--init {path}: only {fit_kernels} of the {len(kernels)} kernels of {architecture} "
                         "fit; is it a weights file of this network?")
    class_dims = _class_dims(architecture, len(class_names)) if class_names else {}
    order = class_order(source_names, class_names) if source_names and class_names else None
    if order is not None:  # classes by name, not by position
        for key, dim in class_dims.items():
            if key not in state or key not in own:
                continue
            fits.pop(key, None)
            src, new = state[key], own[key].clone()
            if src.shape[dim] != len(source_names):
                continue
            for j, i in enumerate(order):
                if i >= 0:
                    new.select(dim, j).copy_(src.select(dim, i))
            fits[key] = new
        if notes is not None and any(k in fits for k in class_dims):
            new = [n for n, i in zip(class_names, order) if i < 0]
            notes.append(f"classifier matched by class name{named_by}: {len(class_names) - len(new)} of "
                         f"{len(class_names)} classes from it" + (f", new: {', '.join(new)}" if new else ""))
    elif notes is not None and source_names is None and class_dims and all(k in fits for k in class_dims):
        notes.append(f"classifier copied by position (no card beside {path.name} names its classes: its card "
                     f"there as {path.with_suffix('.yaml').name}, or --init that card, matches them by name)")
    model.load_state_dict(fits, strict=False)
    # A trained file may hold subnormal weights, which make every CPU step several times slower.
    flush_tiny_weights(model)
    return len(fits), sorted(k for k in own if k not in fits)


# ------------------------------------------------------------------ the run
@dataclass
class Run:
    """Everything one training run holds between epochs."""
    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    name: str
    out: Path
    train_ds: SegmentationDataset
    val_ds: Optional[SegmentationDataset]
    batches: TrainBatches
    model: nn.Module
    enc_stage: Optional[EncoderStage]
    stage: str
    opt: torch.optim.Optimizer
    sched: object
    ema: Optional[ModelEMA]
    teacher: Optional[nn.Module]
    criterion: Callable
    precision: str  # fp32 | bf16 (CPU autocast) | amp (CUDA)
    mem_fmt: torch.memory_format
    mean: torch.Tensor
    std: torch.Tensor
    scaler: object = None  # a GradScaler: live under CUDA fp16 autocast, a pass-through elsewhere
    start_epoch: int = 0
    best: float = -1.0
    # recipe settings changed on a resume, carried in last.pt and the card: "epochs 200 -> 400"
    changed_on_resume: List[str] = field(default_factory=list)
    # resumed with --epochs lowered to the epochs trained: the last one, trained as a middle epoch, is final
    cut_short: bool = False
    # resumed with no epoch left: the checkpoint's config, to write a missing card as the run trained
    finished_config: Optional[dict] = None
    # and the precision, layout and CUDA autocast it trained in (not this device's, which may differ)
    finished_as: Optional[tuple] = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def total_epochs(self) -> int:
        return self.cfg.encoder_epochs + self.cfg.epochs

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.mem_fmt == torch.channels_last else "contiguous"

    @property
    def stage_model(self) -> nn.Module:
        return self.enc_stage if self.stage == "encoder" else self.model

    @property
    def shipped_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def enter_full_stage(self) -> None:
        self.stage = "full"
        self.opt = make_optimizer(self.cfg, self.model.parameters())
        self.sched = make_schedule(self.cfg, self.opt, self.cfg.epochs)
        if self.cfg.ema_decay:
            self.ema = ModelEMA(self.model, self.cfg.ema_decay)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)


def make_schedule(cfg: TrainConfig, opt, epochs: int):
    if cfg.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (1 - e / max(1, epochs)) ** 0.9)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=5)
    raise ValueError(f"unknown schedule '{cfg.schedule}'; valid choices: poly, plateau")


def check_config(cfg: TrainConfig) -> None:
    """Refuse a bad configuration before any data is read."""
    for what, w, h in (("--width/--height", cfg.width, cfg.height), ("--crop", *cfg.crop)):
        if w % 8 or h % 8 or w <= 0 or h <= 0:
            raise ValueError(f"{what} must be positive multiples of 8, got {w}x{h}")
    if cfg.epochs < 1 or cfg.encoder_epochs < 0:
        raise ValueError(f"--epochs must be at least 1 (and --encoder-epochs 0 or more), got {cfg.epochs} and "
                         f"{cfg.encoder_epochs}: a run of no epochs would ship untrained weights")
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if not cfg.lr > 0 or cfg.weight_decay < 0:
        raise ValueError(f"--lr must be above 0 and --weight-decay 0 or more, got {cfg.lr} and {cfg.weight_decay}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss '{cfg.loss}'; valid choices: {', '.join(LOSSES)}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{cfg.precision}'; valid choices: {', '.join(PRECISIONS)}")
    if cfg.memory_format not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory format '{cfg.memory_format}'; valid choices: {', '.join(MEMORY_FORMATS)}")
    if cfg.schedule not in ("poly", "plateau"):
        raise ValueError(f"unknown schedule '{cfg.schedule}'; valid choices: poly, plateau")
    if cfg.keep not in ("best", "last"):
        raise ValueError(f"unknown --keep '{cfg.keep}'; valid choices: best, last")
    if not 0 < cfg.scale_min <= cfg.scale_max:
        raise ValueError(f"--scale needs 0 < min <= max, got {cfg.scale_min} {cfg.scale_max}")
    if not 0 <= cfg.jitter < 1:
        raise ValueError(f"--jitter must be within [0, 1) (a factor 1 +- jitter), got {cfg.jitter}")
    if not 0 <= cfg.classmix <= 1:
        raise ValueError(f"--classmix is a probability within [0, 1], got {cfg.classmix}")
    if cfg.workers < -1:
        raise ValueError(f"--workers must be -1 (auto) or a number of processes >= 0, got {cfg.workers}")
    if not (cfg.cache_gb == -1 or 0 <= cfg.cache_gb <= 2 ** 20):
        raise ValueError(f"--cache-gb must be -1 (auto) or a size in GB >= 0, got {cfg.cache_gb}")
    if not cfg.class_weight_c > 1:  # w = 1 / ln(c + p): at c <= 1 a weight is infinite or negative
        raise ValueError(f"--class-weight-c must be above 1, got {cfg.class_weight_c} (default 1.10)")
    if cfg.eval_every < 1:
        raise ValueError(f"--eval-every is a number of epochs >= 1, got {cfg.eval_every} "
                         "(to train without validation: --val-split none)")
    if cfg.label_resize not in LABEL_RESIZE:
        raise ValueError(f"unknown --label-resize '{cfg.label_resize}'; valid choices: {', '.join(LABEL_RESIZE)}")
    if not 0 <= cfg.class_crop <= 1:
        raise ValueError(f"--class-crop is a probability within [0, 1], got {cfg.class_crop}")
    if not 0 <= cfg.gradual_grouping_epochs < cfg.epochs:
        raise ValueError(f"--gradual-grouping-epochs must be 0 or more and below --epochs ({cfg.epochs}), got "
                         f"{cfg.gradual_grouping_epochs}: the last epochs train the grouped network that ships")
    if not cfg.validates and (cfg.keep == "best" or cfg.schedule == "plateau"):
        raise ValueError("without a validation split there is no best epoch or plateau: "
                         "use --keep last and --schedule poly")
    if cfg.validates and cfg.val_split in cfg.train_split.split("+"):
        raise ValueError(f"the validation split '{cfg.val_split}' is also trained on: "
                         "pass --val-split none (and --keep last)")
    if cfg.name:  # (empty: MODEL_DATASET)
        check_model_name(cfg.name)
    if cfg.threads < 0:
        raise ValueError(f"--threads must be 0 (torch's default) or more, got {cfg.threads}")
    if cfg.seed < 0:  # torch's generators take no negative seed: it would fail at the first batch
        raise ValueError(f"--seed must be 0 or more, got {cfg.seed}")
    if not 0 <= cfg.ema_decay < 1:  # the average of decay 1 never moves from the initial weights
        raise ValueError(f"--ema-decay must be within [0, 1) (0: off), got {cfg.ema_decay}")
    if not cfg.distill_temperature > 0 or cfg.distill_weight < 0:  # softmax(x / 0): NaN losses
        raise ValueError(f"--distill-temperature must be above 0 and --distill-weight 0 or more, got "
                         f"{cfg.distill_temperature} and {cfg.distill_weight}")
    if not 0 < cfg.ohem_thresh <= 1 or not 0 <= cfg.ohem_min_kept <= 1:
        raise ValueError(f"--ohem-thresh is a probability within (0, 1] and --ohem-min-kept a fraction of the "
                         f"pixels within [0, 1], got {cfg.ohem_thresh} and {cfg.ohem_min_kept}")
    if cfg.lovasz_weight < 0 or cfg.clip_grad < 0:
        raise ValueError(f"--lovasz-weight and --clip-grad must be 0 or more, got {cfg.lovasz_weight} and "
                         f"{cfg.clip_grad}")


def build(cfg: TrainConfig, resume: bool = False, log=print) -> Run:
    """Data, model, optimiser, schedule, EMA, teacher; state from OUT/last.pt with ``resume``."""
    check_config(cfg)
    rank, local_rank, world = _distributed()
    cfg.processes = world
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Weights that weight decay drives towards zero become subnormal floats, which x86 CPUs
    # compute in microcode: one step of the trained ESSNet-D took 18-33 s instead of 6 s on
    # this project's Xeon. Flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():  # torchrun --nproc_per_node above the GPUs: a raw CUDA error
            raise ValueError(f"process {local_rank} of torchrun has no GPU of its own ({torch.cuda.device_count()} "
                             "here): --nproc_per_node at most the GPU count (several runs on one GPU: "
                             "scripts/train_side_by_side.py)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        train_ds = open_splits(cfg, cfg.train_split)
    except MissingSplit as e:
        raise e.naming("--train-split") from None
    # the kind read, not the flag: --dataset camvid on a CVAT CamVid export of other classes is a folder's
    name = cfg.name or f"{cfg.model}_{train_ds.kind}"
    if not any((out / f).is_file() for f in ("last.pt", "log.csv")):
        # no run here to continue (--resume would start fresh over it): a shipped or adapted model is not one
        there = [p for p in (out / f"{name}.pt", out / f"{name}.yaml") if p.exists()]
        if there:
            raise FileExistsError(f"{there[0]} exists (a model, and no run in this folder to continue): choose "
                                  f"another --out or --name (left by a run of yours stopped in its first epoch: "
                                  f"delete {name}.pt and {name}.yaml, then start again)")
    try:
        val_ds = open_splits(cfg, cfg.val_split) if cfg.validates else None
    except MissingSplit as e:
        raise e.naming("--val-split (or train without validation: --val-split none)") from None
    share_label_reading(train_ds, val_ds)  # masks read two ways across the splits are caught too
    if cfg.max_train_images:
        train_ds.pairs = train_ds.pairs[: cfg.max_train_images]
    if val_ds is not None and cfg.max_val_images:
        val_ds.pairs = val_ds.pairs[: cfg.max_val_images]
    if val_ds is not None:  # a frame in both splits is scored on what it was trained on
        trained = {p[0].resolve() for p in train_ds.pairs}
        both = [p[0] for p in val_ds.pairs if p[0].resolve() in trained]
        if both:
            raise ValueError(f"{len(both)} of the {len(val_ds)} '{cfg.val_split}' frames are training frames too "
                             f"(e.g. {both[0]}): take them out of the training split, or --val-split none")
    if len(train_ds) // world < cfg.batch_size:  # an epoch of no steps would ship the initial weights
        raise ValueError(f"{len(train_ds)} training frames{f' for {world} ranks' if world > 1 else ''} make no "
                         f"batch of --batch-size {cfg.batch_size}: pass --batch-size {max(1, len(train_ds) // world)} "
                         "or less, or add frames")
    workers = loader_workers(cfg.workers, device)
    budget = decode_cache_bytes(cfg.cache_gb)
    train_ds.cache_limit = budget * 3 // 4 // (1 + workers)  # each loader worker holds a copy of it
    if val_ds is not None:
        val_ds.cache_limit = budget // 4
    frames = len(train_ds) + (len(val_ds) if val_ds is not None else 0)
    if rank == 0 and frames >= 1000:  # minutes of decoding on a large folder: say what the wait is
        log(f"[train] reading the {frames} frames once before training (labels checked, class frequencies "
            "counted)")
    val_counts = None
    if val_ds is not None and rank == 0:
        val_counts = np.zeros(256, np.int64)
        for i in range(len(val_ds)):  # cached anyway: a bad val label stops the run now, not epochs later
            val_counts += np.bincount(val_ds.load(i)[1].reshape(-1), minlength=256)[:256]
    table = train_ds.table
    step = agreed_step(cfg, table.num_classes, device, rank, world, resume)
    augment = TrainAugment(cfg.crop, table.ignore_index, scale=(cfg.scale_min, cfg.scale_max), jitter=cfg.jitter,
                           class_crop=cfg.class_crop, seed=cfg.seed, base=(cfg.width, cfg.height),
                           label_resize=cfg.label_resize)
    train_ds.transform = augment
    counts = pixel_counts(train_ds)  # reads every frame: decoded once here, each loader worker gets a copy
    for ds in (train_ds, val_ds):  # every label read by now (val's just above, where validated)
        if ds is not None and (ds is train_ds or val_counts is not None):
            ds.check_label_reading()
    if rank == 0:
        for ds, what in ((train_ds, "training"), (val_ds, "validation")):
            if ds is not None and ds.cached < len(ds):
                held = f", held by each of {1 + workers} processes" if what == "training" and workers else ""
                log(f"[train] note: {ds.cached} of the {len(ds)} {what} frames are kept decoded in memory (a "
                    f"{_size(ds.cache_limit)} share of the {_size(budget)} of --cache-gb{held}); the rest are "
                    "decoded again every epoch"
                    + (", which --workers N does beside the training" if what == "training" and not workers else ""))
    if counts[: table.num_classes].sum() == 0:
        raise ValueError(f"no pixel of the '{cfg.train_split}' labels is one of the {table.num_classes} classes "
                         f"(all carry the ignore id {table.ignore_index})"
                         + (": --dataset cityscapes reads Cityscapes label ids; labels of your own classes are "
                            "--dataset folder" if cfg.dataset == "cityscapes" else ""))
    weights = class_weights(train_ds, cfg.class_weight_c, counts).to(device)
    absent = absent_classes_note(table, counts)
    if rank == 0 and absent:
        log(absent)
    if val_counts is not None:
        unscored = [table.names[k] for k in range(table.num_classes) if val_counts[k] == 0]
        if unscored:  # mIoU's usual rule, but the figure that picks checkpoints and goes in the card
            log(f"[train] note: {len(unscored)} class(es) have no pixel in the '{cfg.val_split}' labels: "
                f"{', '.join(unscored)}; val mIoU is the mean of the other classes (the card says which were "
                "absent), so it says nothing about these")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, table.num_classes)
    if cfg.init and not (resume and (out / "last.pt").is_file()):
        notes: List[str] = []
        copied, fresh = init_from(model, cfg.init, cfg.model, table.names, notes)
        if rank == 0:
            log(f"[train] initialised {copied} tensors from {cfg.init}"
                + (f"; {len(fresh)} keep a fresh init ({', '.join(fresh[:3])}{', ...' if len(fresh) > 3 else ''})"
                   if fresh else "") + "".join(f"; {n}" for n in notes))
    if cfg.gradual_grouping_epochs:
        n = grouping.make_gradual(model)
        if rank == 0:
            log(f"[train] gradual grouping on {n} pointwise convs over {cfg.gradual_grouping_epochs} epochs")
    enc_stage = None
    if cfg.encoder_epochs:
        if not isinstance(getattr(model, "encoder", None), nn.Module):
            raise ValueError(f"--encoder-epochs: {cfg.model} has no encoder stage to train first (a network with "
                             "an .encoder, as erfnet): drop the flag")
        enc_stage = EncoderStage(model.encoder, encoder_channels(model.encoder, cfg.height, cfg.width),
                                 table.num_classes)
    mem_fmt = step.torch_format
    model.to(device, memory_format=mem_fmt)
    if enc_stage is not None:
        enc_stage.to(device, memory_format=mem_fmt)
    teacher = load_teacher(cfg.teacher, table.names, device, mem_fmt) if cfg.teacher else None

    stage = "encoder" if cfg.encoder_epochs else "full"
    opt = make_optimizer(cfg, (enc_stage if stage == "encoder" else model).parameters())
    sched = make_schedule(cfg, opt, cfg.encoder_epochs if stage == "encoder" else cfg.epochs)
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay and stage == "full" else None
    run = Run(cfg=cfg, device=device, rank=rank, world=world, name=name, out=out, train_ds=train_ds,
              val_ds=val_ds, batches=TrainBatches(train_ds, augment, cfg.batch_size, workers,
                                                  pin_memory=device.type == "cuda"),
              model=model, enc_stage=enc_stage, stage=stage, opt=opt,
              sched=sched, ema=ema, teacher=teacher,
              criterion=build_loss(cfg.loss, weights, table.ignore_index, cfg.ohem_thresh,
                                   cfg.ohem_min_kept, cfg.lovasz_weight),
              precision=step.precision, mem_fmt=mem_fmt, scaler=loss_scaler(device),
              mean=torch.tensor((0.485, 0.456, 0.406), device=device),
              std=torch.tensor((0.229, 0.224, 0.225), device=device))
    if run.main:
        crop = "x".join(map(str, cfg.crop))
        log(f"[train] {name}: {cfg.model} on {cfg.dataset} {cfg.train_split} ({len(train_ds)} frames) / "
            f"{cfg.val_split if val_ds is not None else 'no validation'}"
            f"{f' ({len(val_ds)} frames)' if val_ds is not None else ''}, model {cfg.width}x{cfg.height}, "
            f"crops {crop}, {cfg.epochs} epochs, device {device}, world {world}, "
            f"{workers} loader workers{' (auto)' if cfg.workers < 0 else ''}, "
            f"{_size(budget)} for decoded frames{' (auto)' if cfg.cache_gb < 0 else ''}")
        log(f"[train] precision {step.precision}, {step.memory_format} ({step.why}); loss {cfg.loss}"
            f"{f'; EMA {cfg.ema_decay}' if cfg.ema_decay else ''}"
            f"{f'; teacher {cfg.teacher}' if cfg.teacher else ''}")
        log("[train] class weights: " + " ".join(f"{w:.2f}" for w in weights.tolist()))
        for note in dict.fromkeys(train_ds.notes + (val_ds.notes if val_ds is not None else [])):
            log(f"[train] note: {note}")
        if not train_ds.table.drivable:
            log("[train] note: no class is marked drivable (dataset.yaml: drivable: NAME): the node's drivable "
                "mask will stay empty")
    if resume:
        restore(run, log)
    return run


def _similar_run(out: Path) -> str:
    """A hint when a sibling folder of a similar name holds a run to continue: a mistyped
    --out with --resume would otherwise start hundreds of epochs from scratch unnoticed."""
    if not out.parent.is_dir():
        return ""
    runs = [d.name for d in out.parent.iterdir() if d != out and (d / "last.pt").is_file()]
    near = difflib.get_close_matches(out.name, runs, n=1, cutoff=0.8)
    return (f" (note: {out.parent / near[0]} holds a run to continue; if that is the one meant, stop and "
            "fix --out)") if near else ""


def restore(run: Run, log=print) -> None:
    """Continue from OUT/last.pt, exactly where it stopped."""
    ckpt_path = run.out / "last.pt"
    if not ckpt_path.is_file():
        if run.main:
            log(f"[train] --resume: no {ckpt_path} yet, starting fresh{_similar_run(run.out)}")
            _trim_csv(run.out / "log.csv", 0)  # rows of a start stopped before its first checkpoint
        return
    ck = load_checkpoint(ckpt_path)
    saved = ck["config"]
    if saved["model"] != run.cfg.model:
        raise ValueError(f"{ckpt_path} is a checkpoint of {saved['model']}, not {run.cfg.model}")
    # Another name would leave the run's files behind and ship weights under a label they do not match.
    saved_name = saved.get("name") or f"{saved['model']}_{run.train_ds.kind}"
    if run.name != saved_name:
        raise ValueError(f"{ckpt_path} is the run of --name {saved_name}, not {run.name}: resume with --name "
                         f"{saved_name}, or start a new --out")
    # --init is read once, at the start: the run keeps (and the card says) what it began from.
    saved_init = saved.get("init", "")
    if not run.cfg.init:
        run.cfg = replace(run.cfg, init=saved_init)
    elif _model_source(run.cfg.init) != _model_source(saved_init):
        raise ValueError(f"--init {run.cfg.init}: the run in {run.out} began from {saved_init or 'a random init'} and "
                         "--init applies only at a run's start: resume without --init, or start a new --out")
    _check_classes(run, ck, ckpt_path, log)
    if ck["stage"] == "full" and run.stage != "full":
        run.enter_full_stage()
    run.model.load_state_dict(ck["model"])
    if run.enc_stage is not None and ck.get("enc_head") is not None:
        run.enc_stage.head.load_state_dict(ck["enc_head"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    if run.ema is not None:
        if ck.get("ema") is None:
            raise ValueError(f"{ckpt_path} was trained without --ema-decay; resume it without, "
                             "or start a new run folder")
        run.ema.load_state_dict(ck["ema"])
    if ck.get("scaler"):
        run.scaler.load_state_dict(ck["scaler"])
    if ck.get("autocast") and ck["autocast"] != _autocast_name(run.device) and run.main:
        now = _autocast_name(run.device)
        log(f"[train] note: the checkpoint trained under CUDA {ck['autocast']} autocast; here the run goes on "
            + (f"under {now} (a GPU of another kind)" if now else f"on the CPU in {run.precision}"))
    run.start_epoch, run.best = ck["epoch"] + 1, ck["best_miou"]
    if run.start_epoch > run.total_epochs:
        raise ValueError(f"{ckpt_path} has trained {run.start_epoch} epochs, more than this command's "
                         f"{run.total_epochs}: resume with --epochs {saved.get('epochs', run.start_epoch)} "
                         "(a shorter schedule cannot be resumed; start another --out)")
    planned = saved.get("encoder_epochs", 0) + saved.get("epochs", run.start_epoch)
    run.cut_short = run.start_epoch == run.total_epochs < planned
    lr_at_stop = run.opt.param_groups[0]["lr"]
    # The optimizer's and schedule's saved state carry the checkpoint's --lr and --weight-decay:
    # the flags of this command win (a changed value is said below), as --epochs does.
    old_lr = float(ck["config"].get("lr", run.cfg.lr))
    for g in run.opt.param_groups:
        g["weight_decay"] = run.cfg.weight_decay
        g["initial_lr"] = run.cfg.lr
    if isinstance(run.sched, torch.optim.lr_scheduler.LambdaLR):
        # Recompute from this run's schedule, so extending --epochs on resume works too.
        run.sched.base_lrs = [run.cfg.lr] * len(run.opt.param_groups)
        for g, base, fn in zip(run.opt.param_groups, run.sched.base_lrs, run.sched.lr_lambdas):
            g["lr"] = base * fn(run.sched.last_epoch)
    elif old_lr > 0 and old_lr != run.cfg.lr:  # plateau: keep the reductions made so far, on the new base
        for g in run.opt.param_groups:
            g["lr"] *= run.cfg.lr / old_lr
    if run.main:
        _trim_csv(run.out / "log.csv", run.start_epoch)
        best = f"best val mIoU {run.best:.2f}" if run.best >= 0 else "not validated yet"
        log(f"[train] resumed from {ckpt_path} at epoch {run.start_epoch} ({best})")
        if run.start_epoch == run.total_epochs and not run.cut_short:
            log(f"[train] the run has finished its {run.total_epochs} epochs: nothing to do (a higher --epochs "
                "trains on)")
            run.finished_config = saved
            run.finished_as = (ck.get("precision"), ck.get("memory_format"), ck.get("autocast"))
            run.changed_on_resume = list(ck.get("changed_on_resume") or [])
            return
        # precision and layout as trained (auto keeps the checkpoint's): another one changes the numbers; on
        # a GPU of another kind, amp's dtype (bf16 -> fp16 with loss scaling), which release compares too
        changed = _changed_settings(saved, run.cfg) + [
            (k, ck[k], now) for k, now in (("precision", run.precision), ("memory_format", run.memory_format),
                                           ("autocast", _autocast_name(run.device)))
            if ck.get(k) and now is not None and ck[k] != now]
        # other frames under --data (another copy of the dataset, frames added or removed): the shuffle
        # then indexes other files and the class weights change. (Not known for a checkpoint before 2026-12-07.)
        frames = train_frames(run.train_ds)
        if ck.get("train_frames") and ck["train_frames"] != frames:
            changed.append(("training data", _frames_shown(ck["train_frames"]), _frames_shown(frames)))
        run.changed_on_resume = list(ck.get("changed_on_resume") or []) + [f"{k} {a} -> {b}" for k, a, b in changed]
        if changed:
            # Resume is exact only with the same recipe: a changed one is allowed, and said.
            log("[train] settings changed since the checkpoint (the run is no longer one recipe): "
                + ", ".join(f"{k} {a} -> {b}" for k, a, b in changed))
        if saved.get("threads") is not None and saved["threads"] != run.cfg.threads and run.device.type == "cpu":
            # the same recipe, but CPU kernels sum in another order: not bit for bit a run never stopped
            log(f"[train] note: --threads {saved['threads']} -> {run.cfg.threads} since the checkpoint: the same "
                "recipe, but the float sums run in another order, so the weights are not bit for bit those of a run "
                "that kept its threads")
        if ({"epochs", "lr"} & {k for k, _, _ in changed} and isinstance(run.sched, torch.optim.lr_scheduler.LambdaLR)
                and not run.cut_short):
            log(f"[train] the poly learning rate is recomputed for {run.cfg.epochs} epochs from --lr {run.cfg.lr:g}: "
                f"{run.opt.param_groups[0]['lr']:.2e} now against {lr_at_stop:.2e} at the stop")


def _trained_classes(run: Run, ck: dict) -> dict:
    """The classes the checkpoint trained: recorded in it ({"names", "colors", "ignore_index"}); a
    checkpoint written before they were recorded: its run's card beside it, where that card's class
    count is the classifier's, else only that count ({"count": N})."""
    if isinstance(ck.get("classes"), dict) and ck["classes"].get("names"):
        return ck["classes"]
    count = None
    for key, dim in _class_dims(run.cfg.model, run.train_ds.table.num_classes).items():
        if key in ck["model"] and ck["model"][key].dim() > dim:
            count = int(ck["model"][key].shape[dim])
            break
    card_path = run.out / f"{run.name}.yaml"
    if card_path.is_file():
        try:
            card = load_card(card_path)
        except ValueError:  # unreadable: the count alone
            card = None
        if card is not None and card.architecture == run.cfg.model and card.num_classes == count:
            return {"names": list(card.class_names), "colors": [list(c) for c in card.class_colors],
                    "ignore_index": card.ignore_index}
    return {"count": count}


def _colour_changes(was: dict, table) -> List[str]:
    """The classes whose (display) colour differs from the checkpoint's record, where the names count."""
    now = [str(n) for n in table.names]
    if "names" not in was or "colors" not in was or len(was["names"]) != len(now) or _generic(was["names"]) \
            or _generic(now) or [n.strip().lower() for n in was["names"]] != [n.strip().lower() for n in now]:
        return []
    colours = [(i, tuple(a), tuple(b)) for i, (a, b) in enumerate(zip(was["colors"], table.colors))
               if tuple(a) != tuple(b)]
    return [f"colour of {now[i]} {a} -> {b}" for i, a, b in colours[:4]] + (["..."] if len(colours) > 4 else [])


def _labels_read_by_colour(datasets, recorded_colours) -> bool:
    """Whether the labels are colour-coded, so that a class's colour says which pixels are that class:
    some label is a colour image, or reads otherwise by the data's label colours now (dataset.yaml's,
    none with `labels: ids`) or by the colours the checkpoint recorded than as the ids it holds (a grey
    or palette mask whose levels are class colours). Single-channel and palette masks of class ids
    are ids under both: their colours are for display only. Reads every label: called only when the
    colours changed."""
    from ..data.label_images import ColourLabelError, LabelColors, LabelError, read_label
    owners: dict = {}
    for i, c in enumerate(recorded_colours):
        owners.setdefault(tuple(int(v) for v in c), i)
    recorded = LabelColors(owners)
    for ds in datasets:
        if ds is None:
            continue
        colour_sets = [c for c in (getattr(ds, "label_colors", None), recorded) if c is not None and c.complete]
        for _, lab_path in ds.pairs:
            try:
                ids = read_label(lab_path)
                if any(not np.array_equal(read_label(lab_path, c), ids) for c in colour_sets):
                    return True
            except ColourLabelError:  # a colour image: read by its colours
                return True
            except LabelError:  # unreadable (training says which): the colours are compared, as they were
                return True
    return False


def _classes_change(was: dict, table, labels_by_colour: Optional[Callable[[], bool]] = None) -> str:
    """How ``table`` (the data now) differs from the classes a checkpoint trained (empty if in nothing
    that changes what an id means). Names count as class_order reads them (case aside, and not where
    either side has only generic class_<i> names); colours where the names count and the labels are
    read by their colours (``labels_by_colour()``, asked only when a colour changed; None: always):
    with labels of class ids a colour only draws the class."""
    now = [str(n) for n in table.names]
    if "names" not in was:
        n = was.get("count")
        return "" if n is None or n == len(now) else f"{n} -> {len(now)} classes"
    old = [str(n) for n in was["names"]]
    low = lambda names: [n.strip().lower() for n in names]  # noqa: E731
    parts = []
    named = not (_generic(old) or _generic(now))
    if len(old) != len(now):
        added = [n for n in now if n.strip().lower() not in low(old)] if named else []
        gone = [n for n in old if n.strip().lower() not in low(now)] if named else []
        parts.append(f"{len(old)} -> {len(now)} classes" + (f", new: {', '.join(added)}" if added else "")
                     + (f", gone: {', '.join(gone)}" if gone else ""))
    elif named and low(old) != low(now):
        moved = [i for i in range(len(now)) if low(old)[i] != low(now)[i]]
        if sorted(low(old)) == sorted(low(now)) and len(moved) == 2:
            parts.append(f"{now[moved[0]]} <-> {now[moved[1]]} at {moved[0]}/{moved[1]}")
        elif sorted(low(old)) == sorted(low(now)):
            parts.append("order " + ", ".join(f"{now[i]} {low(old).index(low(now)[i])} -> {i}" for i in moved[:4])
                         + (", ..." if len(moved) > 4 else ""))
        else:
            parts.append(", ".join(f"class {i} {old[i]} -> {now[i]}" for i in moved[:4])
                         + (", ..." if len(moved) > 4 else ""))
    elif named and "colors" in was:
        colours = _colour_changes(was, table)
        if colours and (labels_by_colour is None or labels_by_colour()):
            parts += colours
    if "ignore_index" in was and int(was["ignore_index"]) != table.ignore_index:
        parts.append(f"ignore id {was['ignore_index']} -> {table.ignore_index}")
    return "; ".join(parts)


def _check_classes(run: Run, ck: dict, ckpt_path: Path, log=print) -> None:
    """A resume on data whose classes changed (two swapped in dataset.yaml, one renamed or added, another
    ignore id, a colour of colour-coded labels) would train the weights on ids that mean other classes,
    and ship them under the new names: refused in one line, before the weights are loaded. Display
    colours changed on labels of class ids: a note, and the run goes on."""
    was = _trained_classes(run, ck)
    change = _classes_change(was, run.train_ds.table,
                             lambda: _labels_read_by_colour((run.train_ds, run.val_ds), was["colors"]))
    if not change:
        colours = _colour_changes(was, run.train_ds.table)
        if colours and run.main:
            log(f"[train] note: display colours changed since the checkpoint ({'; '.join(colours)}): the labels "
                "hold class ids (not read by their colours), so the ids mean what they did and the run goes on; "
                "the card takes the new colours")
        return
    card = run.out / f"{run.name}.yaml"
    source = card if card.is_file() else ckpt_path if isinstance(ck.get("classes"), dict) else None
    by_name = "" if _generic(run.train_ds.table.names) else ", classes matched by name"
    raise ValueError(f"classes changed since the checkpoint ({change}): {ckpt_path} learnt the classes as they "
                     "were; resume with those, or start a new --out"
                     + (f" (with --init {source} to fine-tune these weights{by_name})" if source else ""))


# Settings that may differ on resume without changing what is trained: where things are,
# how fast, how often and on what it is scored, which scored weights are kept (release refuses
# --keep best runs on its own), and --init (read once, at the start of a run).
_NOT_RECIPE_SETTINGS = {"data", "out", "workers", "threads", "cache_gb", "command", "eval_every", "max_val_images",
                        "precision", "memory_format", "name", "keep", "val_split", "init"}


def _changed_settings(saved: dict, cfg: TrainConfig) -> List[tuple]:
    """(name, checkpoint's value, this run's value) for each recipe setting that differs."""
    now, unknown = asdict(cfg), object()
    # an older checkpoint lacks the newer keys: what they meant then, where that is known
    was = {k: saved.get(k, SETTING_BEFORE_RECORDED.get(k, unknown)) for k in now}
    now, was = _as_trained(now), _as_trained(was)
    # the plateau schedule cuts the rate by val's score, counted in evaluations: there, what val is and how
    # often it is scored are recipe
    plateau = {"eval_every", "val_split", "max_val_images"} if cfg.schedule == "plateau" else set()
    recipe = lambda k: k not in _NOT_RECIPE_SETTINGS or k in plateau  # noqa: E731
    return [(k, was[k], now[k]) for k in now if recipe(k) and was[k] is not unknown and was[k] != now[k]]


def _as_trained(c: dict) -> dict:
    """Settings as they act, so that spelling a default out is no change: crop 0 is the model size,
    a --teacher the card it names (relative or absolute path)."""
    c = dict(c)
    for crop, size in (("crop_width", "width"), ("crop_height", "height")):
        if c[crop] == 0:
            c[crop] = c[size]
    if isinstance(c["teacher"], str):
        c["teacher"] = _model_source(c["teacher"])
    return c


def _model_source(source: str) -> str:
    """A --init or --teacher value as the absolute file it names (itself where it names none)."""
    if not source:
        return ""
    try:
        path = Path(source).expanduser() if Path(source).suffix == ".pt" else resolve_model(source)
        return str(path.resolve())
    except (ValueError, OSError):  # gone since: the value as typed
        return source


@dataclass
class EpochStats:
    loss: float
    lr: float
    seconds: float
    skipped: int
    images: int
    overflows: int = 0  # of the skipped: a finite loss whose gradient was not


def grouping_alpha(cfg: TrainConfig, epoch: int) -> float:
    """The gradual-grouping ramp at ``epoch`` (counted over both stages): it runs over the first
    epochs of the full network, as check_config's bound on it says; dense through the encoder stage."""
    return grouping.alpha_at(max(0, epoch - cfg.encoder_epochs), cfg.gradual_grouping_epochs)


def train_one_epoch(run: Run, epoch: int, ddp_model: nn.Module) -> EpochStats:
    cfg = run.cfg
    if cfg.gradual_grouping_epochs:
        grouping.set_alpha(run.model, grouping_alpha(cfg, epoch))
    # Everything random in this epoch derives from (seed, epoch): exact resume.
    torch.manual_seed(cfg.seed * 100003 + epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    mix_gen = torch.Generator().manual_seed((cfg.seed * 100003 + epoch) * 2 + 1)
    order = torch.randperm(len(run.train_ds), generator=gen).tolist()
    # Every rank takes the same number of batches, or DDP's all-reduce would wait forever.
    order = order[run.rank::run.world][: len(order) // run.world]
    nb = len(order) // cfg.batch_size
    model = run.stage_model
    model.train()
    t0 = time.time()
    losses: List[float] = []
    skipped = overflows = 0
    bar = _progress(nb, f"epoch {epoch + 1}/{run.total_epochs}", run.main)
    for imgs, labs in run.batches.epoch(cfg.seed * 100003 + epoch, order, nb):
        imgs, labs = class_mix(imgs, labs, cfg.classmix, run.train_ds.table.ignore_index, mix_gen)
        # (pinned batches: the copies overlap the GPU's work instead of waiting for it; a no-op on a CPU)
        x = to_input(imgs.to(run.device, non_blocking=True), run.mean, run.std).contiguous(memory_format=run.mem_fmt)
        y = labs.to(run.device, non_blocking=True)
        if run.stage == "encoder":
            y = encoder_labels(y)
        with autocast_ctx(run.device, run.bf16):
            logits = ddp_model(x)
            teacher_logits = None
            if run.teacher is not None and run.stage == "full":
                with torch.no_grad():
                    teacher_logits = run.teacher(x)
        loss = run.criterion(logits, y)
        if teacher_logits is not None:
            loss = loss + cfg.distill_weight * distillation_kl(logits, teacher_logits, y,
                                                               run.train_ds.table.ignore_index,
                                                               cfg.distill_temperature)
        outcome = optimizer_step(run.opt, run.scaler, loss, model.parameters(), cfg.clip_grad)
        if outcome != "stepped":
            skipped += 1
            overflows += outcome == "gradient"
            continue
        if run.ema is not None and run.stage == "full":
            run.ema.update(run.model)
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{run.opt.param_groups[0]['lr']:.2e}")
    if bar is not None:
        bar.close()
    return EpochStats(loss=float(np.mean(losses)) if losses else float("nan"), lr=run.opt.param_groups[0]["lr"],
                      seconds=time.time() - t0, skipped=skipped, images=nb * cfg.batch_size * cfg.processes,
                      overflows=overflows)


def optimizer_step(opt: torch.optim.Optimizer, scaler, loss: torch.Tensor, params, clip_grad: float) -> str:
    """Backward and one step of ``opt``: "stepped", or the step is skipped where the loss ("loss") or
    the gradient ("gradient") is not finite, since it would poison the weights and Adam's moments for
    good (seen once in bf16 at epoch 41). Under fp16 an overflowing gradient lowers the loss scale
    (or every step would overflow again); a non-finite loss came from the forward pass, which the
    scale does not touch, so it keeps the scale. Under DDP every rank takes the same decision."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # the true gradient, for the clip and the check
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad > 0 else float("inf"))
    loss_ok = torch.isfinite(loss.detach()).float()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # gradients are averaged over the ranks, losses are not: one rank's NaN loss skips everywhere
        torch.distributed.all_reduce(loss_ok, op=torch.distributed.ReduceOp.MIN)
    if not loss_ok:
        opt.zero_grad(set_to_none=True)
        scaler.update(new_scale=scaler.get_scale())  # resets the scaler's step, keeps the scale
        return "loss"
    if not torch.isfinite(grad_norm):
        opt.zero_grad(set_to_none=True)
        scaler.update()
        return "gradient"
    scaler.step(opt)
    scaler.update()
    return "stepped"


def encoder_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels at the encoder's 1/8 resolution: each the label at the centre of its 8x8 block
    ("nearest" took the block's top-left pixel, 3.5 pixels off the encoder cell's centre)."""
    return F.interpolate(labels[:, None].float(), scale_factor=0.125, mode="nearest-exact")[:, 0].long()


def validate(run: Run, model: Optional[nn.Module] = None) -> ConfusionMatrix:
    cfg = run.cfg
    model = model or run.shipped_model
    if cfg.gradual_grouping_epochs:  # the grouped network that is saved, not the dense one mid-ramp
        model = grouping.finalized_copy(model)
    return evaluate_model(model, run.val_ds, cfg.width, cfg.height, run.mean.tolist(),
                          run.std.tolist(), run.device, bf16=run.bf16,
                          channels_last=run.mem_fmt == torch.channels_last)


def _autocast_name(device: torch.device) -> Optional[str]:
    """The CUDA autocast dtype on this device (None on a CPU, whose precision the checkpoint keeps)."""
    if device.type != "cuda":
        return None
    return "bf16" if cuda_amp_dtype(device) == torch.bfloat16 else "fp16"


def train_frames(ds: SegmentationDataset) -> dict:
    """What a run trains on, to compare on resume: the frame count and a hash of the image and label
    files in the order the shuffle indexes them, each named by its folder and file (a copy of the
    dataset elsewhere is the same data)."""
    h = hashlib.sha256()
    for img, lab in ds.pairs:
        h.update(f"{img.parent.name}/{img.name}|{lab.parent.name}/{lab.name}\n".encode())
    return {"count": len(ds), "sha256": h.hexdigest()}


def _frames_shown(frames: dict) -> str:
    return f"{frames['count']} frames ({frames['sha256'][:8]})"


def save_checkpoint(run: Run, epoch: int) -> None:
    atomic_save({"model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
                 "scheduler": run.sched.state_dict(), "epoch": epoch, "stage": run.stage,
                 "best_miou": run.best, "config": asdict(run.cfg), "precision": run.precision,
                 "changed_on_resume": run.changed_on_resume,
                 "classes": checkpoint_classes(run.train_ds.table),  # what the ids mean (restore compares)
                 "train_frames": train_frames(run.train_ds),  # what it trains on (restore compares)
                 "memory_format": run.memory_format,
                 "ema": run.ema.state_dict() if run.ema is not None else None,
                 "scaler": run.scaler.state_dict(),  # empty unless fp16
                 "autocast": _autocast_name(run.device),
                 "enc_head": run.enc_stage.head.state_dict() if run.enc_stage is not None else None},
                run.out / "last.pt")


def train(cfg: TrainConfig, resume: bool = False, log=print) -> Path:
    """Train ``cfg.model``; returns the path of the weights file it ships."""
    check_config(cfg)  # a wrong flag is said first, before anything of the folder
    out = Path(cfg.out)
    made = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # the top folder we create
    lock = _claim_run_folder(cfg, resume)
    finished = False
    try:
        path = _train(cfg, resume, log)
        finished = True
        return path
    except BaseException:
        # refused (its data, say) or stopped before writing anything: take back the folder it made
        if made is not None and out.is_dir() and {f.name for f in out.iterdir()} <= {RUN_LOCK}:
            (out / RUN_LOCK).unlink(missing_ok=True)
            # its own folder, then each parent it made while empty (another run may have started in one)
            for folder in [out, *out.parents]:
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == made:
                    break
        raise
    finally:
        if lock is not None:
            lock.close()
        _end_distributed(finished)


def _end_distributed(finished: bool) -> None:
    """Under torchrun: the process group shut down before the interpreter exits (left to exit, gloo's
    threads aborted a rank now and then: "terminate called without an active exception"). A finished
    rank first waits for the others (rank 0 still saves the last checkpoint while rank 1 is done:
    one rank tearing its connections down while its peer still holds them aborted a rank once more
    in CI); a rank that failed does not wait for peers that may never come."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return
    import torch.distributed as dist
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def _check_finite(run: Run, epoch: int) -> None:
    """Weights, BatchNorm statistics (a forward pass whose loss was skipped as non-finite has
    already moved them) and the EMA copy: all finite, or the run stops before saving any of it."""
    states = [run.model.state_dict()] + ([run.ema.module.state_dict()] if run.ema is not None else [])
    for state in states:
        for k, v in state.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise RuntimeError(f"the weights became non-finite in epoch {epoch + 1} ({k}); {run.out / 'last.pt'} "
                                   "still holds the previous epoch: rerun with --resume (or a lower --lr, "
                                   + ("--clip-grad; CUDA always trains under autocast)" if run.device.type == "cuda"
                                      else "--clip-grad, --precision fp32)"))


def _claim_run_folder(cfg: TrainConfig, resume: bool):
    """The run folder for this run alone (rank 0 of torchrun holds it for all): a second process on
    the same --out interleaved its log rows and checkpoints with the first's, and a command without
    --resume on a run's folder started it again over its last.pt, log and shipped weights."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and os.environ.get("RANK", "0") not in ("", "0"):  # as _distributed() reads it
        return None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    f = _lock(out)
    try:
        if f is not None:  # the lock held: no writer is left of a temp file a SIGKILL cut off
            for stale in out.glob("last.pt.tmp*"):
                stale.unlink(missing_ok=True)
        if not resume and (out / "last.pt").is_file():
            raise ValueError(f"{out} holds a run (last.pt): --resume continues it; to start afresh give another "
                             "--out (or remove the folder)")
        done = _logged_epochs(out / "log.csv")
        if done > 1 and not (out / "last.pt").is_file():  # before its first checkpoint, a run logs one row at most
            raise ValueError(f"{out} holds a run's log of {done} epochs but no last.pt (a finished run carried "
                             "without it?): nothing to continue, and its log and weights are not trained over; "
                             "give another --out")
        if not (out / "last.pt").is_file():  # the row of a start stopped before its first checkpoint, if any
            _trim_csv(out / "log.csv", 0)
    except Exception:
        if f is not None:
            f.close()
        raise
    return f


def _logged_epochs(path: Path) -> int:
    """Complete epoch rows in a run's log.csv (0 without one)."""
    if not path.is_file():
        return 0
    return sum(1 for ln in path.read_text().splitlines(keepends=True)[1:]
               if ln.endswith("\n") and ln.split(",", 1)[0].isdigit())


def _lock(out: Path):
    """OUT/.train.lock held for the run (None where the file system has no locks)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return None
    f = open(out / RUN_LOCK, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.close()
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise ValueError(f"another training is running in {out} ({out / RUN_LOCK} is held): wait for it to "
                             "end, or give another --out") from None
        return None  # a file system without locks (NFS without lockd, some FUSE): train without one
    return f


def _train(cfg: TrainConfig, resume: bool, log) -> Path:
    run = build(cfg, resume, log)
    csv_path = run.out / "log.csv"
    tb = _tensorboard(run.out) if run.main and run.start_epoch < run.total_epochs else None  # no file for no epoch
    ddp_model = _wrap_ddp(run.stage_model, run.device, run.world)
    last_loss = float("nan")
    for epoch in range(run.start_epoch, run.total_epochs):
        if run.stage == "encoder" and epoch >= cfg.encoder_epochs:
            run.enter_full_stage()
            ddp_model = _wrap_ddp(run.model, run.device, run.world)
            if run.main:
                log("[train] encoder stage done; training the full network")
        stats = train_one_epoch(run, epoch, ddp_model)
        last_loss = stats.loss
        _check_finite(run, epoch)  # before anything of this epoch is scored or saved
        local_epoch = epoch - (cfg.encoder_epochs if run.stage == "full" else 0)
        is_last = epoch == run.total_epochs - 1
        val_miou = val_acc = raw_miou = None
        t_val = time.time()
        if (run.main and run.val_ds is not None and run.stage == "full"
                and ((local_epoch + 1) % cfg.eval_every == 0 or is_last)):
            cm = validate(run)
            val_miou, val_acc = 100 * cm.miou(), 100 * cm.pixel_accuracy()
            if run.ema is not None:  # the raw weights too: what the EMA adds, measured in the same run
                raw_miou = 100 * validate(run, run.model).miou()
            if val_miou > run.best:
                run.best = val_miou
            if cfg.keep == "last" or val_miou >= run.best:
                save_model(run, cm, epoch + 1, stats.loss)
        t_val = time.time() - t_val
        if isinstance(run.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if run.world > 1:  # rank 0 alone validates: each rank steps on its figure, or their rates part
                import torch.distributed as dist
                shared = [val_miou]
                dist.broadcast_object_list(shared, src=0)
                val_miou = shared[0]
            if val_miou is not None:
                run.sched.step(val_miou)
        else:
            run.sched.step()
        if not run.main:
            continue
        # The row first, then the checkpoint: a run stopped between the two is resumed from the
        # previous checkpoint, which drops this row and trains the epoch again (_trim_csv).
        _append_csv(csv_path, epoch + 1, run.stage, stats.loss, stats.lr, val_miou, val_acc, stats.seconds, raw_miou)
        save_checkpoint(run, epoch)
        if tb is not None:
            tb.add_scalar("loss/train", stats.loss, epoch + 1)
            tb.add_scalar("lr", stats.lr, epoch + 1)
            if val_miou is not None:
                tb.add_scalar("miou/val", val_miou, epoch + 1)
        eta = (stats.seconds + t_val) * (run.total_epochs - epoch - 1)
        msg = (f"[train] epoch {epoch + 1}/{run.total_epochs} {run.stage} loss {stats.loss:.4f} "
               f"lr {stats.lr:.2e} {stats.seconds:.{0 if stats.seconds >= 10 else 1}f}s/epoch "
               f"({stats.images / max(stats.seconds, 1e-9):.1f} img/s)")
        if stats.skipped:
            lost = stats.skipped - stats.overflows
            msg += (f" ({stats.skipped} steps skipped: non-finite loss {lost}, gradient {stats.overflows}"
                    + ("; fp16 loss scaling overflows a few gradients while its scale settles"
                       if run.scaler.is_enabled() and stats.overflows else "") + ")")
        if val_miou is not None:
            msg += f" val mIoU {val_miou:.2f} acc {val_acc:.2f} (best {run.best:.2f})"
            if raw_miou is not None:
                msg += f" [without EMA {raw_miou:.2f}]"
        log(msg + f" ETA {eta / 3600:.1f}h")
    best_path = run.out / f"{run.name}.pt"
    if run.start_epoch == run.total_epochs:  # resumed with no epoch left to train
        if run.main and run.cut_short:
            _finish_cut_short(run, csv_path, log)
        elif run.main:
            _finish_stopped_while_shipping(run, csv_path, log)
        return best_path  # a finished run: nothing is trained (the shipped pair is repaired above if needed)
    if run.main and (run.val_ds is None or not best_path.is_file()):
        # No validation (final runs on train+val) or a run too short to evaluate: ship the end state.
        cm = validate(run) if run.val_ds is not None else None
        save_model(run, cm, run.total_epochs, last_loss)
    return best_path


def _finish_cut_short(run: Run, csv_path: Path, log) -> None:
    """--epochs lowered on resume to the epochs trained: the last of them ran as a middle epoch (maybe
    not validated, not shipped) and is the final one now. Score and ship it as the loop does a last
    epoch, and save the shorter plan (changed_on_resume) in last.pt."""
    epoch = run.start_epoch - 1
    row = _logged_row(csv_path, epoch + 1)
    loss = float(row["train_loss"]) if row else float("nan")
    cm, miou, msg = None, None, ""
    if run.val_ds is not None:
        cm = validate(run)
        miou = 100 * cm.miou()
        run.best = max(run.best, miou)
        msg = f": val mIoU {miou:.2f} (best {run.best:.2f})"
        if row and not row["val_miou"]:  # its log row, written unscored, gets the scores
            raw = 100 * validate(run, run.model).miou() if run.ema is not None else None
            _trim_csv(csv_path, epoch)
            _append_csv(csv_path, epoch + 1, row["stage"], loss, float(row["lr"]), miou, 100 * cm.pixel_accuracy(),
                        float(row["seconds"]), raw)
    if miou is None or run.cfg.keep == "last" or miou >= run.best:
        save_model(run, cm, epoch + 1, loss)
    save_checkpoint(run, epoch)
    log(f"[train] epoch {epoch + 1} is the last of --epochs {run.cfg.epochs} now{msg}; shipped as the loop's "
        "last epoch is, and last.pt records the shorter plan")


def _finish_stopped_while_shipping(run: Run, csv_path: Path, log) -> None:
    """A finished run stopped after its last checkpoint but before its weights and card were both
    written (a final run without val ships after the loop): where last.pt holds what ships (--keep
    last, no val, or no weights yet, as the loop's end does), both are written again; a --keep best
    run's best weights are not in last.pt."""
    weights, card_path = run.out / f"{run.name}.pt", run.out / f"{run.name}.yaml"
    if not weights.is_file() or not card_path.is_file():
        why = f"{(weights if not weights.is_file() else card_path).name} is missing"
    else:
        why = weights_mismatch(load_card(card_path))
    if why is None:
        return
    if run.cfg.keep != "last" and run.val_ds is not None and weights.is_file():
        log(f"[train] warning: {why}; the best epoch's weights are not in last.pt, so they cannot be written "
            "again: put back the weights file the card was written with, or train the run again")
        return
    saved = run.finished_config or {}
    differ = [f"{k} {a} -> {b}" for k, a, b in _changed_settings(saved, run.cfg)]
    if differ:  # the card records the recipe from this command: it must be the run's
        log(f"[train] warning: {why}; not written again, as this command's settings differ from the run's "
            f"({', '.join(differ)}): resume with the run's own command ({saved.get('command', 'in last.pt')})")
        return
    kept, moved = weights.with_name(weights.name + ".replaced"), weights.is_file()
    if moved:  # weights the card does not vouch for, maybe put there by hand: kept, not overwritten
        os.replace(weights, kept)
    run.cfg = replace(run.cfg, command=saved.get("command") or run.cfg.command)
    row = _logged_row(csv_path, run.total_epochs)
    cm = validate(run) if run.val_ds is not None else None
    save_model(run, cm, run.total_epochs, float(row["train_loss"]) if row else float("nan"))
    log(f"[train] {why}: the last epoch's weights and card written again from last.pt"
        + (f" (the weights found there kept as {kept.name})" if moved else ""))


def _logged_row(path: Path, epoch: int) -> Optional[dict]:
    """The log.csv row of ``epoch`` (None without one)."""
    if not path.is_file():
        return None
    return next((r for r in csv.DictReader(path.read_text().splitlines()) if r["epoch"] == str(epoch)), None)


def save_model(run: Run, cm: Optional[ConfusionMatrix], epoch: int, train_loss: float) -> None:
    """Weights (dense grouping converted to true grouped convs) + the model card."""
    cfg, table = run.cfg, run.train_ds.table
    src = run.shipped_model
    state_model = grouping.finalized_copy(src) if cfg.gradual_grouping_epochs else src
    state = {k: v.detach().cpu().contiguous() for k, v in state_model.state_dict().items()}
    weights = run.out / f"{run.name}.pt"
    atomic_save(state, weights)
    metrics = {"params": int(sum(p.numel() for p in state_model.parameters()))}
    summary = None
    if cm is not None:
        summary = cm.summary(table.names)
        metrics.update({f"{cfg.val_split}_miou": summary["miou"],
                        f"{cfg.val_split}_pixel_accuracy": summary["pixel_accuracy"],
                        f"{cfg.val_split}_per_class_iou": summary["per_class_iou"]})
        if summary.get("classes_absent"):  # no pixel in val: their IoU is null, not a 0 to read
            metrics[f"{cfg.val_split}_classes_absent"] = summary["classes_absent"]
    trained_as = (run.precision, run.memory_format, _autocast_name(run.device))
    if run.finished_as is not None and run.finished_as[0]:  # a finished run's card written again, maybe elsewhere
        precision, fmt, autocast = run.finished_as  # (autocast None: trained on a CPU)
        trained_as = (precision, fmt or run.memory_format, autocast)
    card = card_for_table(run.name, cfg.model, table, cfg.width, cfg.height,
                          files={"weights": f"{run.name}.pt"},
                          training=training_record(cfg, epoch, train_loss, run.changed_on_resume, *trained_as),
                          metrics=metrics)
    card.training[WEIGHTS_HASH] = sha256(weights)  # a stop before the card is written shows as a mismatch
    card.save(run.out / f"{run.name}.yaml")
    if summary is not None:
        (run.out / "best_metrics.json").write_text(json.dumps({"epoch": epoch, **summary}, indent=1))


def training_record(cfg: TrainConfig, epoch: int, train_loss: float, changed_on_resume: Sequence[str] = (),
                    precision: Optional[str] = None, memory_format: Optional[str] = None,
                    autocast: Optional[str] = None) -> dict:
    """The card's ``training`` section: enough to rerun the recipe. ``autocast``: the CUDA dtype
    behind precision ``amp`` (bf16 or fp16, which the GPU decides), None on a CPU."""
    loss = f"cross-entropy, weights 1/ln({cfg.class_weight_c} + p)"
    if cfg.loss == "ohem":
        loss = f"OHEM {loss} (p < {cfg.ohem_thresh}, at least {cfg.ohem_min_kept:.0%} of pixels)"
    elif cfg.loss == "lovasz":
        loss = "Lovasz-softmax"
    elif cfg.loss == "ce+lovasz":
        loss = f"{loss} + {cfg.lovasz_weight} x Lovasz-softmax"
    return {"command": cfg.command, "dataset": cfg.dataset, "data": str(Path(cfg.data).expanduser().resolve()),
            "train_split": cfg.train_split,
            "val_split": cfg.val_split if cfg.validates else None,
            "epochs_planned": cfg.encoder_epochs + cfg.epochs,
            ("best_epoch" if cfg.keep == "best" and cfg.validates else "epoch"): epoch,
            "resolution": f"{cfg.width}x{cfg.height}", "crop": "x".join(map(str, cfg.crop)),
            "scale": [cfg.scale_min, cfg.scale_max], "jitter": cfg.jitter,
            "classmix": cfg.classmix or None, "class_crop": cfg.class_crop or None,
            "label_resize": cfg.label_resize, "batch_size": cfg.batch_size, "processes": cfg.processes,
            "optimizer": f"Adam lr {cfg.lr} wd {cfg.weight_decay}", "schedule": cfg.schedule,
            "loss": loss, "ema_decay": cfg.ema_decay or None,
            "init": cfg.init or None, "teacher": cfg.teacher or None,
            "distillation": (f"KL at T={cfg.distill_temperature} x {cfg.distill_weight}" if cfg.teacher else None),
            "train_loss": None if math.isnan(train_loss) else round(train_loss, 4),
            "gradual_grouping_epochs": cfg.gradual_grouping_epochs,
            "encoder_epochs": cfg.encoder_epochs, "clip_grad": cfg.clip_grad or None,
            "max_train_images": cfg.max_train_images or None, "max_val_images": cfg.max_val_images or None,
            "seed": cfg.seed, "precision": precision, "memory_format": memory_format,
            **({"autocast": autocast} if autocast else {}),
            **({"changed_on_resume": list(changed_on_resume)} if changed_on_resume else {})}


def _append_csv(path: Path, epoch, stage, loss, lr, miou, acc, secs, raw_miou=None) -> None:
    """One row per epoch; val_miou is the shipped (EMA) weights', val_miou_raw the raw weights'."""
    new = not path.is_file()
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["epoch", "stage", "train_loss", "lr", "val_miou", "val_pixel_acc", "seconds",
                        "val_miou_raw"])
        w.writerow([epoch, stage, f"{loss:.5f}", f"{lr:.6g}", fmt(miou), fmt(acc), f"{secs:.1f}", fmt(raw_miou)])
        f.flush()
        os.fsync(f.fileno())  # on disk before the epoch's last.pt: a power cut must not lose the row for good


def _trim_csv(path: Path, last_epoch: int) -> None:
    """Drops the rows after last_epoch, epochs logged whose checkpoint never landed (they are trained
    again), and a row cut off by the stop."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def kept(ln: str) -> bool:
        first = ln.split(",", 1)[0]
        return ln.endswith("\n") and first.isdigit() and int(first) <= last_epoch
    keep = lines[:1] + [ln for ln in lines[1:] if kept(ln)]
    if len(keep) < len(lines):
        tmp = path.with_suffix(".csv.tmp")
        tmp.write_text("".join(keep))
        tmp.replace(path)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: the CSV log is enough
        return None
    return SummaryWriter(str(out / "tb"))


def _wrap_ddp(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    if world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["seg-perception"] + sys.argv[1:])
