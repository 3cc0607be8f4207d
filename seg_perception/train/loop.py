"""The training loop behind `seg-perception train`.

Recipe defaults follow ERFNet/ESSNet: class-weighted cross-entropy with
w = 1/ln(c + p_class), Adam (lr 5e-4, weight decay 2e-4), poly or
ReduceLROnPlateau schedule, flips / scale / crop / translation / colour
jitter, optional encoder-first stage with labels downsampled x8.

Resume is exact at epoch granularity: every epoch reseeds shuffling,
augmentation and dropout from (seed, epoch), and ``last.pt`` is written
atomically after each epoch, so a killed run loses at most one epoch.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..card import card_for_table
from ..data.datasets import SegmentationDataset, open_dataset
from ..data.transforms import EvalResize, TrainAugment
from ..metrics import ConfusionMatrix
from ..nets import build_model
from . import grouping
from .checkpoint import atomic_save, load_checkpoint


@dataclass
class TrainConfig:
    model: str
    data: str
    out: str
    dataset: str = "camvid"
    name: str = ""
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 150
    encoder_epochs: int = 0
    batch_size: int = 8
    width: int = 480
    height: int = 360
    lr: float = 5e-4
    weight_decay: float = 2e-4
    schedule: str = "poly"  # poly | plateau
    class_weight_c: float = 1.10
    eval_every: int = 5
    seed: int = 0
    bf16: bool = True
    channels_last: bool = True
    workers: int = 0
    threads: int = 0
    gradual_grouping_epochs: int = 0
    clip_grad: float = 0.0  # >0: clip the gradient norm to this
    max_train_images: int = 0  # >0 trains on a subset (tests, smoke runs)
    max_val_images: int = 0
    num_classes: int = 0  # folder datasets only
    ignore_index: int = 255  # folder datasets only
    command: str = field(default="", repr=False)


def class_weights(ds: SegmentationDataset, c: float) -> torch.Tensor:
    """ENet weights 1/ln(c + p_k) from the training labels' class frequencies."""
    n = ds.table.num_classes
    counts = np.zeros(n, np.int64)
    for i in range(len(ds)):
        _, lab = ds.load(i)
        counts += np.bincount(lab.reshape(-1), minlength=256)[:n]
    p = counts / max(1, counts.sum())
    return torch.tensor(1.0 / np.log(c + p), dtype=torch.float32)


def to_input(img_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 RGB -> normalised NCHW float (the same math as the exported graph)."""
    x = img_u8.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


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


def autocast_ctx(device: torch.device, bf16: bool):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


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
                p = cv2.resize(p, lab.shape[::-1], interpolation=cv2.INTER_NEAREST)
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


def train(cfg: TrainConfig, resume: bool = False, log=print) -> Path:
    """Train ``cfg.model``; returns the path of the best weights file."""
    rank, local_rank, world = _distributed()
    main = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    name = cfg.name or f"{cfg.model}_{cfg.dataset}"
    if cfg.width % 8 or cfg.height % 8:
        raise ValueError(f"--width/--height must be multiples of 8, got {cfg.width}x{cfg.height}")

    extra = {}
    if cfg.dataset == "folder":
        if cfg.num_classes < 2:
            raise ValueError("a folder dataset needs --num-classes")
        extra = {"num_classes": cfg.num_classes, "ignore_index": cfg.ignore_index}
    train_ds = open_dataset(cfg.dataset, cfg.data, cfg.train_split, cache=True, **extra)
    val_ds = open_dataset(cfg.dataset, cfg.data, cfg.val_split, cache=True, **extra)
    if cfg.max_train_images:
        train_ds.pairs = train_ds.pairs[: cfg.max_train_images]
    if cfg.max_val_images:
        val_ds.pairs = val_ds.pairs[: cfg.max_val_images]
    table = train_ds.table
    augment = TrainAugment((cfg.width, cfg.height), table.ignore_index, seed=cfg.seed)
    train_ds.transform = augment

    weights = class_weights(train_ds, cfg.class_weight_c).to(device)
    if main:
        log(f"[train] {name}: {cfg.model} on {cfg.dataset} ({len(train_ds)} train / {len(val_ds)} val), "
            f"{cfg.width}x{cfg.height}, {cfg.epochs} epochs, device {device}, world {world}")
        log("[train] class weights: " + " ".join(f"{w:.2f}" for w in weights.tolist()))

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, table.num_classes)
    if cfg.gradual_grouping_epochs:
        n = grouping.make_gradual(model)
        if main:
            log(f"[train] gradual grouping on {n} pointwise convs over {cfg.gradual_grouping_epochs} epochs")
    stage_model: nn.Module = model
    enc_stage = None
    if cfg.encoder_epochs:
        enc_stage = EncoderStage(model.encoder, encoder_channels(model.encoder, cfg.height, cfg.width),
                                 table.num_classes)
    total_epochs = cfg.encoder_epochs + cfg.epochs
    mean = torch.tensor((0.485, 0.456, 0.406), device=device)
    std = torch.tensor((0.229, 0.224, 0.225), device=device)
    mem_fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=mem_fmt)
    if enc_stage is not None:
        enc_stage.to(device, memory_format=mem_fmt)

    def make_opt(params):
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=cfg.weight_decay)

    def make_sched(opt, epochs):
        if cfg.schedule == "poly":
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (1 - e / max(1, epochs)) ** 0.9)
        if cfg.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=5)
        raise ValueError(f"unknown schedule '{cfg.schedule}'; valid choices: poly, plateau")

    # The stage runs in sequence: encoder (optional), then the full network.
    stage = "encoder" if cfg.encoder_epochs else "full"
    stage_model = enc_stage if stage == "encoder" else model
    opt = make_opt(stage_model.parameters())
    sched = make_sched(opt, cfg.encoder_epochs if stage == "encoder" else cfg.epochs)
    start_epoch, best = 0, -1.0
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck["config"]["model"] != cfg.model:
            raise ValueError(f"{ckpt_path} is a checkpoint of {ck['config']['model']}, not {cfg.model}")
        stage = ck["stage"]
        if stage == "full":
            stage_model = model
            opt = make_opt(model.parameters())
            sched = make_sched(opt, cfg.epochs)
        model.load_state_dict(ck["model"])
        if enc_stage is not None and ck.get("enc_head") is not None:
            enc_stage.head.load_state_dict(ck["enc_head"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, best = ck["epoch"] + 1, ck["best_miou"]
        if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
            # Recompute from this run's schedule, so extending --epochs on resume works too.
            for g, base, fn in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
                g["lr"] = base * fn(sched.last_epoch)
        if main:
            log(f"[train] resumed from {ckpt_path} at epoch {start_epoch} (best val mIoU {best:.2f})")
    elif resume and main:
        log(f"[train] --resume: no {ckpt_path} yet, starting fresh")

    criterion = nn.CrossEntropyLoss(weight=weights, ignore_index=table.ignore_index)
    csv_path = out / "log.csv"
    tb = _tensorboard(out) if main else None
    ddp_model = _wrap_ddp(stage_model, device, world)

    for epoch in range(start_epoch, total_epochs):
        if stage == "encoder" and epoch >= cfg.encoder_epochs:
            stage = "full"
            stage_model = model
            opt = make_opt(model.parameters())
            sched = make_sched(opt, cfg.epochs)
            ddp_model = _wrap_ddp(stage_model, device, world)
            if main:
                log("[train] encoder stage done; training the full network")
        local_epoch = epoch - (cfg.encoder_epochs if stage == "full" else 0)
        if cfg.gradual_grouping_epochs:
            grouping.set_alpha(model, grouping.alpha_at(epoch, cfg.gradual_grouping_epochs))
        # Everything random in this epoch derives from (seed, epoch): exact resume.
        torch.manual_seed(cfg.seed * 100003 + epoch)
        augment.reseed(cfg.seed * 100003 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        order = torch.randperm(len(train_ds), generator=gen).tolist()
        # Every rank takes the same number of batches, or DDP's all-reduce would wait forever.
        order = order[rank::world][: len(order) // world]
        nb = len(order) // cfg.batch_size
        stage_model.train()
        t0 = time.time()
        losses: List[float] = []
        skipped = 0
        bar = _progress(nb, f"epoch {epoch + 1}/{total_epochs}", main)
        for b in range(nb):
            imgs, labs = collate([train_ds[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]])
            x = to_input(imgs.to(device), mean, std).contiguous(memory_format=mem_fmt)
            y = labs.to(device)
            if stage == "encoder":  # labels at 1/8 resolution, nearest
                y = F.interpolate(y[:, None].float(), scale_factor=0.125, mode="nearest")[:, 0].long()
            with autocast_ctx(device, cfg.bf16):
                logits = ddp_model(x)
            loss = criterion(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # A non-finite loss or gradient (seen once here in bf16 at epoch 41) would poison
            # the weights and Adam's moments for good: skip that step and count it.
            grad_norm = torch.nn.utils.clip_grad_norm_(stage_model.parameters(),
                                                       cfg.clip_grad if cfg.clip_grad > 0 else float("inf"))
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                skipped += 1
                opt.zero_grad(set_to_none=True)
                continue
            opt.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        if bar is not None:
            bar.close()
        lr_now = opt.param_groups[0]["lr"]
        train_loss = float(np.mean(losses)) if losses else float("nan")
        val_miou = val_acc = None
        is_last = epoch == total_epochs - 1
        if main and stage == "full" and ((local_epoch + 1) % cfg.eval_every == 0 or is_last):
            cm = evaluate_model(model, val_ds, cfg.width, cfg.height, mean.tolist(), std.tolist(), device,
                                bf16=cfg.bf16, channels_last=cfg.channels_last)
            val_miou, val_acc = 100 * cm.miou(), 100 * cm.pixel_accuracy()
            if val_miou > best:
                best = val_miou
                _save_best(model, out, name, cfg, table, cm, epoch + 1, train_loss)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if val_miou is not None:
                sched.step(val_miou)
        else:
            sched.step()
        secs = time.time() - t0
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise RuntimeError(f"the weights became non-finite in epoch {epoch + 1}; {ckpt_path} still holds "
                               "the previous epoch: rerun with --resume (or --no-bf16, a lower --lr, --clip-grad)")
        if main:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "epoch": epoch, "stage": stage,
                         "best_miou": best, "config": asdict(cfg),
                         "enc_head": enc_stage.head.state_dict() if enc_stage is not None else None},
                        ckpt_path)
            _append_csv(csv_path, epoch + 1, stage, train_loss, lr_now, val_miou, val_acc, secs)
            if tb is not None:
                tb.add_scalar("loss/train", train_loss, epoch + 1)
                tb.add_scalar("lr", lr_now, epoch + 1)
                if val_miou is not None:
                    tb.add_scalar("miou/val", val_miou, epoch + 1)
            eta = secs * (total_epochs - epoch - 1)
            msg = f"[train] epoch {epoch + 1}/{total_epochs} {stage} loss {train_loss:.4f} lr {lr_now:.2e} {secs:.0f}s"
            if skipped:
                msg += f" ({skipped} steps skipped: non-finite loss or gradient)"
            if val_miou is not None:
                msg += f" val mIoU {val_miou:.2f} acc {val_acc:.2f} (best {best:.2f})"
            log(msg + f" ETA {eta / 3600:.1f}h")
    if cfg.gradual_grouping_epochs:
        grouping.finalize(model)
    best_path = out / f"{name}.pt"
    if main and not best_path.is_file():  # e.g. a run too short to evaluate
        cm = evaluate_model(model, val_ds, cfg.width, cfg.height, mean.tolist(), std.tolist(), device)
        _save_best(model, out, name, cfg, table, cm, total_epochs, float("nan"))
    return best_path


def _save_best(model, out: Path, name: str, cfg: TrainConfig, table, cm: ConfusionMatrix, epoch: int,
               train_loss: float) -> None:
    """Weights (dense grouping converted to true grouped convs) + the model card."""
    state_model = grouping.finalized_copy(model) if cfg.gradual_grouping_epochs else model
    state = {k: v.detach().cpu().contiguous() for k, v in state_model.state_dict().items()}
    atomic_save(state, out / f"{name}.pt")
    params = sum(p.numel() for p in state_model.parameters())
    summary = cm.summary(table.names)
    card = card_for_table(
        name, cfg.model, table, cfg.width, cfg.height,
        files={"weights": f"{name}.pt"},
        training={"command": cfg.command, "dataset": cfg.dataset, "train_split": cfg.train_split,
                  "epochs_planned": cfg.encoder_epochs + cfg.epochs, "best_epoch": epoch,
                  "resolution": f"{cfg.width}x{cfg.height}", "batch_size": cfg.batch_size,
                  "optimizer": f"Adam lr {cfg.lr} wd {cfg.weight_decay}", "schedule": cfg.schedule,
                  "loss": f"cross-entropy, weights 1/ln({cfg.class_weight_c} + p)",
                  "train_loss": None if math.isnan(train_loss) else round(train_loss, 4),
                  "gradual_grouping_epochs": cfg.gradual_grouping_epochs,
                  "encoder_epochs": cfg.encoder_epochs},
        metrics={f"{cfg.val_split}_miou": summary["miou"],
                 f"{cfg.val_split}_pixel_accuracy": summary["pixel_accuracy"],
                 f"{cfg.val_split}_per_class_iou": summary["per_class_iou"],
                 "params": int(params)},
    )
    card.save(out / f"{name}.yaml")
    (out / "best_metrics.json").write_text(json.dumps({"epoch": epoch, **summary}, indent=1))


def _append_csv(path: Path, epoch, stage, loss, lr, miou, acc, secs) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["epoch", "stage", "train_loss", "lr", "val_miou", "val_pixel_acc", "seconds"])
        w.writerow([epoch, stage, f"{loss:.5f}", f"{lr:.6g}", "" if miou is None else f"{miou:.3f}",
                    "" if acc is None else f"{acc:.3f}", f"{secs:.1f}"])


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
