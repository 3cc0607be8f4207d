"""Atomic checkpoint and weights files.

A checkpoint (``last.pt``) holds everything needed to continue exactly:
model, optimizer, scheduler, epoch, best score and the run's config. Weights
files (``<name>.pt``) hold only the model's state_dict and load with
``weights_only=True``; ``load_weights`` lives beside the networks
(nets/deployable.py), since export and the runtime load weights too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from ..nets.deployable import load_weights  # noqa: F401  (its old home; still importable here)


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: a power cut must not leave an empty last.pt
        os.replace(tmp, path)  # a crash mid-write leaves the previous file intact
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a stop mid-write leaves no stray temp file
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """The rename itself on disk too (not possible on every OS or file system: skipped there)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: nothing to resume")
    # Our own checkpoints hold plain python containers, tensors and numbers.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty or cut off (a crash or a full disk mid-write, a partial copy)
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}): it is empty, cut off or not a "
                         "checkpoint; restore a copy of it, or start again in another --out") from None
