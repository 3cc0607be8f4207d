#!/usr/bin/env python3
"""A small dataset of your own, the way a user brings it: from scratch, or from a CamVid model?

Makes a folder dataset that stands in for a robot's own labelled frames: one CamVid drive the
starting model never trained on (0006R0 by default, with `--init` a model trained on
`seen_train` of scripts/camvid_sequence_split.py), six classes of its own (merged from CamVid's
eleven), saved as RGB-coded masks with the colours in dataset.yaml, as a labelling tool exports
them. The drive's first frames are the training split and its last ones validation, with a gap
between them, as when a user labels the start of a route and checks on the rest.

    python3 scripts/own_data_study.py --out runs/own0006 --train-frames 30
    seg-perception train --model rdsnet --dataset folder --data runs/own0006 --out runs/own_scratch ...
    seg-perception train --model rdsnet --dataset folder --data runs/own0006 --out runs/own_init \
        --init runs/heldout/h22_rdsnet_wd1e-3_seed0/rdsnet_camvid.yaml ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

# Six classes of a ground robot's own, each a group of CamVid's (ids into CAMVID.names).
CLASSES = (
    ("road", (128, 64, 128), ("Road",)),
    ("sidewalk", (244, 35, 232), ("Pavement",)),
    ("sky", (70, 130, 180), ("Sky",)),
    ("structure", (70, 70, 70), ("Building", "Pole", "Tree", "SignSymbol", "Fence")),
    ("vehicle", (0, 0, 142), ("Car",)),
    ("person", (220, 20, 60), ("Pedestrian", "Bicyclist")),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="CamVid folder (default: the one beside the checkout)")
    ap.add_argument("--sequence", default="0006R0", help="the drive that stands in for your own frames")
    ap.add_argument("--train-frames", type=int, default=30, help="its first N frames are the training split")
    ap.add_argument("--gap", type=int, default=10, help="frames left out between train and val")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from seg_perception.data.classes import CAMVID
    from seg_perception.data.datasets import camvid, default_camvid_root
    data = Path(args.data) if args.data else default_camvid_root()
    frames = sorted((p for split in ("train", "val") for p in camvid(data, split).pairs
                     if p[0].name.startswith(args.sequence + "_")), key=lambda p: p[0].name)
    if len(frames) < args.train_frames + args.gap + 10:
        raise SystemExit(f"{args.sequence} has {len(frames)} frames in {data}: too few for "
                         f"--train-frames {args.train_frames} --gap {args.gap} and a val split")
    lut = np.zeros((256, 3), np.uint8)  # CamVid id -> colour; void (11) and the rest stay black
    for name, colour, members in CLASSES:
        for m in members:
            lut[CAMVID.names.index(m)] = colour
    splits = {"train": frames[:args.train_frames], "val": frames[args.train_frames + args.gap:]}
    out = Path(args.out)
    for split, rows in splits.items():
        for sub in ("images", "labels"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)
        for img, lab in rows:
            (out / split / "images" / img.name).write_bytes(img.read_bytes())
            ids = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(out / split / "labels" / lab.name), cv2.cvtColor(lut[ids], cv2.COLOR_RGB2BGR))
    lines = ["name: own_" + args.sequence, "classes:"]
    lines += [f"  - {{name: {n}, color: [{c[0]}, {c[1]}, {c[2]}]}}" for n, c, _ in CLASSES]
    lines += ["ignore_color: [0, 0, 0]", "drivable: [road]"]
    (out / "dataset.yaml").write_text("\n".join(lines) + "\n")
    print(f"{out}: train {len(splits['train'])} frames ({splits['train'][0][0].stem} .. "
          f"{splits['train'][-1][0].stem}), val {len(splits['val'])} ({splits['val'][0][0].stem} .. "
          f"{splits['val'][-1][0].stem}), {len(CLASSES)} classes as RGB masks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
