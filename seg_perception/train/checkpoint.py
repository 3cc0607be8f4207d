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
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous file intact


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found: nothing to resume")
    # Our own checkpoints hold plain python containers, tensors and numbers.
    return torch.load(path, map_location="cpu", weights_only=True)
