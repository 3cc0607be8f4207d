"""scripts/train_side_by_side.py: runs side by side, stopped at a budget, packed, continued."""
import csv
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from seg_perception.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_side_by_side.py"
TINY = ("--model essnet_d --name essnet_d_camvid --batch-size 2 --width 96 --height 72 --crop 64x48 "
        "--max-train-images 4 --max-val-images 2 --eval-every 1 --precision fp32 "
        "--memory-format channels_last")


def call(tmp: Path, spec: dict, budget: float, data: Path, *extra: str) -> subprocess.CompletedProcess:
    (tmp / "spec.json").write_text(json.dumps(spec))
    return subprocess.run([sys.executable, str(SCRIPT), "--spec", str(tmp / "spec.json"), "--budget", str(budget),
                           "--runs", str(tmp / "runs"), *extra, "--", "--data", str(data), "--threads", "1"],
                          capture_output=True, text=True, timeout=600)


def test_runs_stop_at_the_budget_are_packed_and_continue(tmp_path, camvid_root):
    first = tmp_path / "first"
    (first / "out").mkdir(parents=True)
    spec = {"short": f"{TINY} --epochs 1", "long": f"{TINY} --epochs 400"}
    r = call(first, spec, 25, camvid_root, "--pack-to", str(first / "out"), "--max-file-mb", "2")
    assert r.returncode == 1, r.stdout + r.stderr  # 'long' was stopped by the budget
    assert "short: exit 0" in r.stdout and "long: stopped (resumable)" in r.stdout
    assert "left out of the tar (over 2.0 MB): last.pt" in r.stdout  # ESSNet-D's checkpoint is ~7 MB
    with tarfile.open(first / "out" / "short.tar") as tar:
        names = set(tar.getnames())
    assert {"short/essnet_d_camvid.yaml", "short/essnet_d_camvid.pt", "short/log.csv", "short/train.log"} <= names
    assert "short/last.pt" not in names
    # the two runs share the machine as two torchrun ranks would: half the memory budget each
    from seg_perception.train.loop import _machine_memory, _size
    head = (first / "runs" / "short" / "train.log").read_text()
    assert f"0 loader workers (auto), {_size(int(0.4 * _machine_memory()) // 2)} for decoded frames (auto)" in head

    # The next call continues 'long' from its carried folder (last.pt included this time), from
    # its checkpoint: log.csv may hold one row more when the budget stopped it between the two.
    done = load_checkpoint(first / "runs" / "long" / "last.pt")["epoch"] + 1
    assert done >= 1, "no epoch finished in the budget"
    carried = tmp_path / "carried"
    carried.mkdir()
    subprocess.run(["cp", "-r", str(first / "runs" / "long"), str(carried)], check=True)
    second = tmp_path / "second"
    second.mkdir()
    r = call(second, {"long": f"{TINY} --epochs {done + 1}"}, 300, camvid_root, "--carried", str(carried))
    assert r.returncode == 0, r.stdout + r.stderr
    log = (second / "runs" / "long" / "train.log").read_text()
    assert f"resumed from {second / 'runs' / 'long' / 'last.pt'} at epoch {done}" in log
    rows = list(csv.DictReader(open(second / "runs" / "long" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, done + 2))  # every epoch once


def test_a_failing_run_is_reported(tmp_path, camvid_root):
    r = call(tmp_path, {"bad": "--model no_such_net --epochs 1"}, 60, camvid_root)
    assert r.returncode == 2
    assert "bad: exit" in r.stdout
