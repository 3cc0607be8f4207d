"""Exponential moving average of the weights (``--ema-decay``).

The averaged copy is what gets evaluated and shipped: it is smoother than the
last step's weights, which matters most for a small net trained with a batch
of 8 on noisy augmented crops. Batch-norm running statistics are averaged too.
The decay ramps up from (1 + n) / (10 + n) so that early averages are not
dominated by the random initialisation.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
import torch.nn as nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema-decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # Weights and batch-norm statistics are averaged; every other buffer follows the model.
        self._averaged = {k for k, _ in model.named_parameters()}
        self._averaged |= {k for k, _ in model.named_buffers() if k.endswith(("running_mean", "running_var"))}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            if k in self._averaged:
                v.mul_(d).add_(src[k].detach(), alpha=1.0 - d)
            else:  # schedule state such as BN's batch count or gradual grouping's alpha
                v.copy_(src[k])

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
