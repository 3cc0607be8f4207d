#!/usr/bin/env python3
"""The measurements behind `seg-perception adapt` (docs/training.md, "Adapting to your camera").

    # a drive the model never saw: statistics from one half of it (in time order), the other half scored
    python3 scripts/adaptation_study.py drive --model RUN/rdsnet_camvid.yaml --data /work/runs/camvid_seq \
        --statistics first --blends 0.25 0.5 0.75 1.0 [--frames 10]
    # another camera: CamVid val frames with a colour cast / dark exposure / low contrast
    python3 scripts/adaptation_study.py camera --model rdsnet_camvid --shift cast dark lowcon

`drive` needs the lists of scripts/camvid_sequence_split.py (`heldout`: a drive the model did not
train on; `seen_val`: the drives it did). Prints mIoU as trained and after adaptation per blend.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from seg_perception.card import load_card
from seg_perception.data.datasets import camvid, default_camvid_root, open_dataset
from seg_perception.data.transforms import EvalResize
from seg_perception.metrics import ConfusionMatrix
from seg_perception.nets.deployable import DeployWrapper, load_net
from seg_perception.paths import resolve_model
from seg_perception.train.batchnorm_adaptation import reestimate_batchnorm

SHIFTS = {  # what another camera's exposure or white balance does to a frame
    "cast": lambda x: x * np.array([1.25, 1.0, 0.7]),
    "dark": lambda x: 255 * (x / 255) ** 2.0 * 0.8,
    "lowcon": lambda x: 0.5 * x + 0.5 * x.mean(),
}


def score(wrapper, pairs, size) -> ConfusionMatrix:
    cm = ConfusionMatrix(wrapper.num_classes)
    resize = EvalResize(size)
    with torch.no_grad():
        for img, lab in pairs:
            small, _ = resize(img, lab)
            labels = wrapper(torch.from_numpy(small)[None])[0][0].numpy()
            if labels.shape != lab.shape:
                import cv2
                labels = cv2.resize(labels, lab.shape[::-1], interpolation=cv2.INTER_NEAREST)
            cm.update(labels, lab)
    return cm


def adapted(wrapper, frames, blend, size, batch=8):
    w = copy.deepcopy(wrapper)
    resize = EvalResize(size)
    small = [resize(img, np.zeros(img.shape[:2], np.uint8))[0] for img in frames]
    reestimate_batchnorm(w, (torch.from_numpy(np.stack(small[s:s + batch])) for s in range(0, len(small), batch)),
                         blend)
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=["drive", "camera"])
    ap.add_argument("--model", required=True, help="model card (a name in models/ or a .yaml path)")
    ap.add_argument("--data", default=None, help="drive: the camvid_sequence_split folder; camera: CamVid root")
    ap.add_argument("--statistics", default="first", choices=["first", "second", "all"],
                    help="drive: which half of the held-out drive gives the statistics (all: score all of it too)")
    ap.add_argument("--frames", type=int, default=0, help="drive: only this many frames, spread over the half")
    ap.add_argument("--shift", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    ap.add_argument("--blends", nargs="+", type=float, default=[0.5, 1.0])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    card = load_card(resolve_model(a.model))
    wrapper = DeployWrapper(load_net(card), card.mean, card.std).eval()
    wrapper.num_classes = card.num_classes
    size = (card.input_width, card.input_height)
    if a.study == "drive":
        ds = open_dataset("camvid", a.data, "heldout")
        pairs = [ds.load(i) for i in np.argsort([str(p[0]) for p in ds.pairs])]  # time order
        half = len(pairs) // 2
        stats, scored = {"first": (pairs[:half], pairs[half:]), "second": (pairs[half:], pairs[:half]),
                         "all": (pairs, pairs)}[a.statistics]
        if a.frames:
            stats = [stats[i] for i in np.linspace(0, len(stats) - 1, a.frames).round().astype(int)]
        seen_ds = open_dataset("camvid", a.data, "seen_val")
        seen = [seen_ds.load(i) for i in range(len(seen_ds))]
        print(f"{card.name}: statistics of {len(stats)} frames ({a.statistics}), {len(scored)} scored")
        for blend in [0.0] + a.blends:
            w = adapted(wrapper, [img for img, _ in stats], blend, size) if blend else wrapper
            cm = score(w, scored, size)
            print(f"blend {blend}: held-out {100 * cm.miou():.2f}, seen_val {100 * score(w, seen, size).miou():.2f}"
                  f" | per class {np.round(100 * cm.iou(), 1).tolist()}", flush=True)
    else:
        ds = camvid(a.data or default_camvid_root(), "val")
        pairs = [ds.load(int(i)) for i in np.linspace(0, len(ds) - 1, 40).round().astype(int)]
        print(f"{card.name}: clean {100 * score(wrapper, pairs[1::2], size).miou():.2f} (20 val frames scored)")
        for name in a.shift:
            shifted = [(np.clip(SHIFTS[name](img.astype(np.float32)), 0, 255).astype(np.uint8), lab)
                       for img, lab in pairs]
            row = [f"shifted {100 * score(wrapper, shifted[1::2], size).miou():.2f}"]
            for blend in a.blends:
                w = adapted(wrapper, [img for img, _ in shifted[::2]], blend, size)
                row.append(f"adapted {blend}: {100 * score(w, shifted[1::2], size).miou():.2f}")
            print(f"{name}: " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
