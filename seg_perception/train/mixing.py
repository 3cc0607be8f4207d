"""ClassMix: paste whole classes of one training crop onto another (Olsson et al., WACV 2021).

A pasted pedestrian or tree stands in a scene it never came from, so the network cannot lean
on the usual surroundings of a class; the aim is frames of drives it never saw. Works on a
batch of uint8 NHWC images and class-id labels, before normalisation, on the CPU.
"""
from __future__ import annotations

import torch


def class_mix(imgs: torch.Tensor, labs: torch.Tensor, prob: float, ignore_index: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample, with probability ``prob``, receives half (rounded up) of the classes present
    in the previous sample of the batch (the first from the last): their pixels, image and
    label alike. Ignored pixels are never pasted. Randomness comes from ``gen`` alone, so a
    resumed run mixes as one that never stopped. Returns new tensors; the inputs are kept."""
    b = imgs.shape[0]
    if b < 2 or prob <= 0:
        return imgs, labs
    src_imgs, src_labs = imgs.roll(1, 0), labs.roll(1, 0)
    imgs, labs = imgs.clone(), labs.clone()
    for i in range(b):
        if float(torch.rand((), generator=gen)) >= prob:
            continue
        present = torch.unique(src_labs[i])
        present = present[present != ignore_index]
        if len(present) == 0:
            continue
        chosen = present[torch.randperm(len(present), generator=gen)[: (len(present) + 1) // 2]]
        m = torch.isin(src_labs[i], chosen)
        imgs[i][m] = src_imgs[i][m]
        labs[i][m] = src_labs[i][m]
    return imgs, labs
