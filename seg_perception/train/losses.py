"""Training losses for `seg-perception train --loss ...` and distillation.

All take logits (N, C, H, W) and integer targets (N, H, W) with an ignore id,
and return a scalar. The class weights are the ENet/ESSNet 1/ln(c + p) weights.

- ``ce``: class-weighted cross-entropy (the ERFNet/ESSNet recipe).
- ``ohem``: online hard example mining: weighted cross-entropy averaged over
  the pixels the net still gets wrong (true-class probability below a
  threshold), never fewer than a fraction of the valid pixels. Thin classes
  (Pole, SignSymbol) are mostly hard pixels, so they get a larger share.
- ``lovasz``: the Lovasz-softmax surrogate of the per-class Jaccard index
  (Berman et al., CVPR 2018): it optimises IoU itself, which the metric rewards.
- ``ce+lovasz``: weighted cross-entropy + ``lovasz_weight`` x Lovasz-softmax.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("ce", "ohem", "lovasz", "ce+lovasz")


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                       ignore_index: int, thresh: float = 0.7, min_kept: float = 0.1) -> torch.Tensor:
    """Weighted CE over the hard pixels: p(true class) < ``thresh``, at least ``min_kept``
    (a fraction of the valid pixels) of the highest-loss ones."""
    pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0
    pixel = pixel[valid]
    with torch.no_grad():
        # The unweighted CE of a pixel is -log p(true class): p < thresh <=> CE > -log thresh.
        plain = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")[valid]
        hard = plain > -torch.log(torch.tensor(thresh, device=logits.device))
        k = max(1, int(min_kept * n_valid))
        if int(hard.sum()) < k:
            hard = torch.zeros_like(hard)
            hard[plain.topk(k).indices] = True
    return pixel[hard].mean()


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean over the classes present in the batch of the Lovasz hinge of 1 - IoU."""
    c = logits.shape[1]
    probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    losses = []
    for k in range(c):
        fg = (labels == k).float()
        if fg.sum() == 0:  # an absent class contributes nothing (the "present" variant)
            continue
        errors = (fg - probs[:, k]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                    ignore_index: int, temperature: float = 1.0) -> torch.Tensor:
    """Pixel-wise KL(teacher || student) at temperature T, times T^2 (Hinton et al.),
    averaged over the labelled pixels. The teacher's logits are resized to the student's."""
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    t = temperature
    log_s = F.log_softmax(student.float() / t, 1)
    log_t = F.log_softmax(teacher.float() / t, 1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    valid = target != ignore_index
    if not bool(valid.any()):
        return student.sum() * 0.0
    return kl[valid].mean() * (t * t)


def build_loss(name: str, weight: Optional[torch.Tensor], ignore_index: int, ohem_thresh: float = 0.7,
               ohem_min_kept: float = 0.1, lovasz_weight: float = 0.5
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training criterion ``loss(logits, target)`` for ``--loss NAME``."""
    ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
    if name == "ce":
        return lambda x, y: ce(x.float(), y)
    if name == "ohem":
        return lambda x, y: ohem_cross_entropy(x.float(), y, weight, ignore_index, ohem_thresh, ohem_min_kept)
    if name == "lovasz":
        return lambda x, y: lovasz_softmax(x, y, ignore_index)
    if name == "ce+lovasz":
        return lambda x, y: ce(x.float(), y) + lovasz_weight * lovasz_softmax(x, y, ignore_index)
    raise ValueError(f"unknown loss '{name}'; valid choices: {', '.join(LOSSES)}")
