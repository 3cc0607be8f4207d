"""Atomic checkpoint and weights files.

A checkpoint (``last.pt``) holds everything needed to continue exactly:
model, optimizer, scheduler, epoch, best score and the run's config. Weights
files (``<name>.pt``) hold only the model's state_dict and load with
``weights_only=True``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch


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


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a weights file (or a full checkpoint) into ``model``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found: train one with 'seg-perception train' "
                                "or pass the path of an existing .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise ValueError(f"weights file {path} cannot be read ({type(e).__name__}): is it a "
                         "seg_perception .pt file?") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"weights file {path} does not fit this network ({first}); check the "
                         "model card's architecture and number of classes") from None
    return model
