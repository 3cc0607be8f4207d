#!/usr/bin/env python3
"""Does averaging flipped / rescaled views at inference help on a drive the model never saw?
(docs/training.md, "Test-time averaging on the unseen drive").

    python3 scripts/test_time_averaging_study.py --model RUN/rdsnet_camvid.yaml --data /work/runs/camvid_seq \
        --split heldout [--threads 1]

Each view is scored alone and in the averages below: softmax probabilities of the views, resized to
the card's input size, summed; labels scored at the label image's size (as `evaluate` does).
A view is (scale of the card's input size, mirrored); sizes are rounded to the multiple of 8 the
networks need. `plain` must equal `seg-perception evaluate --backend torch` on the same split.
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from seg_perception.card import load_card
from seg_perception.data.datasets import open_dataset
from seg_perception.metrics import ConfusionMatrix
from seg_perception.nets.deployable import DeployWrapper, load_net
from seg_perception.paths import resolve_model

AVERAGES = {
    "plain": [(1.0, False)],
    "flip": [(1.0, False), (1.0, True)],
    "x1.25 alone": [(1.25, False)],
    "scales 0.75+1+1.25": [(0.75, False), (1.0, False), (1.25, False)],
    "scales and flips (6 views)": [(s, f) for s in (0.75, 1.0, 1.25) for f in (False, True)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model card or a shipped model's name")
    ap.add_argument("--data", required=True, help="a CamVid root (e.g. the lists of scripts/camvid_sequence_split.py)")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    card = load_card(resolve_model(a.model))
    net = DeployWrapper(load_net(card, card.file("weights")), card.mean, card.std, logits=True).eval()
    ds = open_dataset("camvid", a.data, a.split)
    width, height = card.input_width, card.input_height

    def probabilities(img: np.ndarray, scale: float, mirrored: bool) -> torch.Tensor:
        w, h = int(round(width * scale / 8)) * 8, int(round(height * scale / 8)) * 8
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if w < img.shape[1] else cv2.INTER_LINEAR)
        x = torch.from_numpy(np.ascontiguousarray(small))[None]
        out = net(x.flip(2)).flip(3) if mirrored else net(x)
        return F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False).softmax(1)

    cms = {name: ConfusionMatrix(card.num_classes) for name in AVERAGES}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(len(ds)):
            img, lab = ds.load(i)
            views = {}  # each view computed once, shared by the averages that use it
            for name, wanted in AVERAGES.items():
                p = sum(views.setdefault(v, probabilities(img, *v)) for v in wanted)
                labels = p.argmax(1)[0].numpy().astype(np.uint8)
                cms[name].update(cv2.resize(labels, lab.shape[::-1], interpolation=cv2.INTER_NEAREST), lab)
    print(f"{card.name} on camvid {a.split} ({len(ds)} frames, {time.perf_counter() - t0:.0f} s); "
          f"per class: {', '.join(card.class_names)}")
    for name, cm in cms.items():
        s = cm.summary(card.class_names)
        per_class = ", ".join("-" if v is None else f"{v:.1f}" for v in s["per_class_iou"].values())
        print(f"  {name:28s} {len(AVERAGES[name])} view(s)  mIoU {s['miou']:.2f}  ({per_class})")


if __name__ == "__main__":
    main()
