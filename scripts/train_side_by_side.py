#!/usr/bin/env python3
"""Several `seg-perception train` runs side by side, for a machine lent for minutes at a time.

A small network leaves a GPU waiting on Python, so one machine trains many runs at once. Each
run is stopped before the time budget ends (runs resume exactly from `last.pt`), and its
folder is packed into one tar per run under --pack-to, leaving out checkpoints larger than
--max-file-mb (a lent machine may return only small files). A later call continues a run
from its unpacked folder under --carried.

    python3 scripts/train_side_by_side.py --spec runs.json --budget 530 --pack-to "$OUT" \\
        --carried carry/runs -- --dataset folder --data carry/camvid --workers 2 --threads 1

runs.json maps a run's name to its own train arguments, e.g.
{"r0": "--model rdsnet --name rdsnet_camvid --epochs 100 --batch-size 16"}; the arguments
after `--` are given to every run. Exit status: 0 when every run finished, 1 when some were
stopped by the budget (continue them with --carried), 2 when one failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path


def start(name: str, args: str, common: list, runs: Path, carried: Path | None, side_by_side: int = 1
          ) -> subprocess.Popen:
    out = runs / name
    if not out.exists() and carried is not None and (carried / name).is_dir():
        shutil.copytree(carried / name, out)  # continue where the last call stopped
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "seg_perception.cli", "train", "--out", str(out), *shlex.split(args),
           *common, "--resume"]
    log = open(out / "train.log", "a")
    log.write("$ " + shlex.join(cmd) + "\n")
    log.flush()
    # The runs share the machine as torchrun's ranks would: train's auto --workers and --cache-gb
    # divide the cores and the memory by this.
    env = dict(os.environ, LOCAL_WORLD_SIZE=str(side_by_side))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop(procs: dict, grace: float = 30.0) -> None:
    """SIGTERM first: a run killed between epochs loses only the epoch in progress."""
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def pack(run: Path, dest: Path, max_bytes: int) -> list:
    """run/ -> dest/<name>.tar; returns the files left out for size."""
    left_out = []
    with tarfile.open(dest / f"{run.name}.tar", "w") as tar:
        for f in sorted(p for p in run.rglob("*") if p.is_file()):
            if f.stat().st_size > max_bytes:
                left_out.append(f.name)
                continue
            tar.add(f, arcname=str(f.relative_to(run.parent)))
    return left_out


def last_line(log: Path, word: str) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if word in ln]
    return lines[-1].strip() if lines else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="JSON file: {run name: train arguments}")
    ap.add_argument("--budget", type=float, required=True, help="seconds of training before the runs are stopped")
    ap.add_argument("--runs", default="runs", help="folder of the run folders (default: runs)")
    ap.add_argument("--carried", default="", help="folder of run folders from an earlier call, to continue")
    ap.add_argument("--pack-to", default="", help="pack each run folder into <this>/<name>.tar")
    ap.add_argument("--max-file-mb", type=float, default=15.0, help="leave bigger files out of the tar")
    ap.add_argument("common", nargs="*", help="after --: train arguments given to every run")
    a = ap.parse_args(argv)
    spec = json.loads(Path(a.spec).read_text())
    runs = Path(a.runs)
    carried = Path(a.carried) if a.carried else None
    t0 = time.monotonic()
    procs = {name: start(name, args, a.common, runs, carried, len(spec)) for name, args in spec.items()}
    while time.monotonic() - t0 < a.budget and any(p.poll() is None for p in procs.values()):
        time.sleep(2)
    stopped = [n for n, p in procs.items() if p.poll() is None]
    stop(procs)
    failed = [n for n, p in procs.items() if n not in stopped and p.returncode != 0]
    for name in spec:
        log = runs / name / "train.log"
        state = "stopped (resumable)" if name in stopped else f"exit {procs[name].returncode}"
        print(f"{name}: {state} after {time.monotonic() - t0:.0f} s")
        print(f"  {last_line(log, 'epoch ')}\n  {last_line(log, 'val mIoU')}")
        if a.pack_to:
            Path(a.pack_to).mkdir(parents=True, exist_ok=True)
            left = pack(runs / name, Path(a.pack_to), int(a.max_file_mb * 2**20))
            if left:
                print(f"  left out of the tar (over {a.max_file_mb} MB): {', '.join(left)}")
    return 2 if failed else (1 if stopped else 0)


if __name__ == "__main__":
    sys.exit(main())
