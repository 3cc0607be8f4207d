"""scripts/camvid_sequence_split.py: whole sequences held out, read back by the CamVid loader."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from seg_perception.data.datasets import camvid

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "camvid_sequence_split.py"


def fake_camvid(root: Path) -> Path:
    """A CamVid-layout folder: train has three sequences, val one (as the real split)."""
    names = {"train": ["0001TP_006690", "0001TP_006720", "0006R0_f01800", "0016E5_00390"],
             "val": ["0016E5_07959", "0016E5_07961"]}
    for split, stems in names.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        rows = []
        for i, stem in enumerate(stems):
            cv2.imwrite(str(root / split / f"{stem}.png"), np.full((8, 8, 3), i, np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"{stem}.png"), np.full((8, 8), i, np.uint8))
            rows.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def stems(root: Path, split: str) -> list:
    return [img.stem for img, _ in camvid(root, split).pairs]


def test_held_out_sequences_leave_every_list_and_only_those(tmp_path):
    data = fake_camvid(tmp_path / "camvid")
    out = tmp_path / "seq"
    res = run("--data", data, "--out", out, "--hold-out", "0006R0", "0001TP")
    assert res.returncode == 0, res.stderr
    assert stems(out, "seen_train") == ["0016E5_00390"]
    assert stems(out, "seen_val") == ["0016E5_07959", "0016E5_07961"]
    assert stems(out, "heldout") == ["0001TP_006690", "0001TP_006720", "0006R0_f01800"]
    assert "heldout: 3 frames (0001TP 2, 0006R0 1)" in res.stdout
    # the links lead to the frames themselves: labels read back as written
    img, lab = camvid(out, "heldout").load(2)
    assert lab.max() == 2 and img.shape == (8, 8, 3)


def test_an_unknown_sequence_is_refused_with_the_ones_there(tmp_path):
    data = fake_camvid(tmp_path / "camvid")
    res = run("--data", data, "--out", tmp_path / "seq", "--hold-out", "Seq05VD")
    assert res.returncode != 0
    assert "Seq05VD not in" in res.stderr and "0001TP, 0006R0, 0016E5" in res.stderr
    assert not (tmp_path / "seq").exists()
