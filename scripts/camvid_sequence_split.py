#!/usr/bin/env python3
"""CamVid splits that hold out whole video sequences: a stand-in for frames never seen.

CamVid's val frames (all from sequence 0016E5) sit between train frames of the same drive a
second or so apart, so val measures how well a network interpolates a drive it has seen.
The test split is mostly sequence Seq05VD, which no train or val frame comes from; that is
why val overstates test by 8-12 mIoU here. Holding out a sequence of train+val (0006R0: 101
frames, none of them in test) measures what test does, without touching test.

Writes a folder in the SegNet CamVid layout (symbolic links to the frames, new list files)
that every `--dataset camvid` command reads:

    python3 scripts/camvid_sequence_split.py --out runs/camvid_seq --hold-out 0006R0
    seg-perception train --data runs/camvid_seq --train-split seen_train --val-split heldout ...
    seg-perception evaluate --data runs/camvid_seq --split seen_val --model runs/x/essnet_d_camvid.yaml

Lists: seen_train (train minus the held-out sequences), seen_val (val minus them: frames of
drives the network trained on), heldout (every train and val frame of the held-out ones).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

SPLITS = ("train", "val")


def sequence_of(frame: Path) -> str:
    """.../0006R0_f02400.png -> '0006R0' (CamVid frame names start with their sequence)."""
    return frame.name.split("_")[0]


def write_split(data: Path, out: Path, hold_out: list) -> dict:
    """Write the folder; returns {list name: {sequence: frames}}."""
    from seg_perception.data.datasets import DatasetError, camvid
    try:  # the loader's own reading of the lists (and its errors)
        pairs = {split: camvid(data, split).pairs for split in SPLITS}
    except DatasetError as e:
        raise SystemExit(f"{e} (--data must be a CamVid folder in the SegNet layout)") from None
    present = {sequence_of(img) for split in SPLITS for img, _ in pairs[split]}
    unknown = sorted(set(hold_out) - present)
    if unknown:
        raise SystemExit(f"sequence(s) {', '.join(unknown)} not in {data}; sequences there: "
                         f"{', '.join(sorted(present))}")
    lists = {
        "seen_train": [p for p in pairs["train"] if sequence_of(p[0]) not in hold_out],
        "seen_val": [p for p in pairs["val"] if sequence_of(p[0]) not in hold_out],
        "heldout": [p for split in SPLITS for p in pairs[split] if sequence_of(p[0]) in hold_out],
    }
    out.mkdir(parents=True, exist_ok=True)
    root = data.resolve()
    rel = lambda p: p.resolve().relative_to(root)  # noqa: E731
    # The lists name folders relative to the dataset root: link those folders, copy nothing.
    for folder in sorted({rel(p).parts[0] for split in SPLITS for pair in pairs[split] for p in pair}):
        link = out / folder
        if not link.exists():
            link.symlink_to(root / folder, target_is_directory=True)
    for name, rows in lists.items():
        (out / f"{name}.txt").write_text("".join(f"{rel(img).as_posix()} {rel(lab).as_posix()}\n"
                                                 for img, lab in rows))
    return {name: dict(sorted(collections.Counter(sequence_of(img) for img, _ in rows).items()))
            for name, rows in lists.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="CamVid folder (default: the one seg-perception uses)")
    ap.add_argument("--out", required=True, help="folder to write (links and list files)")
    ap.add_argument("--hold-out", nargs="+", default=["0006R0"], help="sequences to hold out (default: 0006R0)")
    args = ap.parse_args(argv)
    if args.data is None:
        from seg_perception.data.datasets import default_camvid_root
        args.data = default_camvid_root()
    counts = write_split(Path(args.data), Path(args.out), args.hold_out)
    for name, per_seq in counts.items():
        print(f"{name}: {sum(per_seq.values())} frames ({', '.join(f'{s} {n}' for s, n in per_seq.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
