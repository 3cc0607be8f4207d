"""Where a training run stands (`seg-perception runs`): epochs done of how many, pace, what is
left, its validation so far, and whether a process is training it now. Long runs are stopped
and continued many times; this reads the folder (log.csv, last.pt's config, the run's lock)
and changes nothing in it.
"""
from __future__ import annotations

import csv
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np

RUN_LOCK = ".train.lock"  # held by the process training the folder (loop._lock)
RECENT = 20  # epochs whose median gives the pace


def log_rows(run: Path) -> list:
    """The epochs done of a run's log.csv ([] without one)."""
    log = Path(run) / "log.csv"
    if not log.is_file():
        return []
    with log.open() as f:
        # a row still being written by a running run lacks its last columns: not an epoch done
        return [r for r in csv.DictReader(f) if None not in r.values() and str(r["epoch"]).isdigit()]


def hours_of_epochs(rows: list) -> Optional[float]:
    """Training time in the log's ``seconds`` column (epochs only: no validation, no epoch trained
    twice after a stop). An epoch logged at more than 10 times the median counts as the median:
    the run was paused under it (`kill -STOP` while a check ran: 13-34 minutes for an epoch of
    45 s), which is no training time."""
    if not rows:
        return None
    try:
        seconds = [float(r["seconds"]) for r in rows]
    except (KeyError, ValueError):
        return None
    median = float(np.median(seconds))
    return round(sum(s if s <= 10 * median else median for s in seconds) / 3600, 2)


def training_pid(run: Path) -> Optional[int]:
    """The process holding the run's lock now (it is training the folder), from /proc/locks,
    which shows a lock without taking it (taking it, even for a moment, could refuse a run
    starting then). None: nobody here holds it, or this system cannot say (not Linux). Only
    holders on this machine and in this PID namespace are listed: a run trained from another
    host (NFS) or container looks stopped."""
    lock = Path(run) / RUN_LOCK
    try:
        st = os.stat(lock)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    exact = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 30144 fe:00:5587037 0 EOF" (flock; NFS shows it as POSIX; a
        # waiter's line has "->" after the id)
        parts = line.split()
        ids = [i for i, w in enumerate(parts) if w.count(":") == 2 and w.rsplit(":", 1)[-1] == str(st.st_ino)]
        if not ids or not parts[ids[0] - 1].isdigit():
            continue
        pid = int(parts[ids[0] - 1])
        # the device may read differently (a btrfs subvolume): then the holder must have the file open
        if parts[ids[0]] == exact or _has_open(pid, lock):
            return pid
    return None


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    want = str(path.resolve())
    for fd in fds:
        try:
            if os.readlink(fd) == want:
                return True
        except OSError:
            continue
    return False


@dataclass
class RunStatus:
    path: Path
    name: str = ""
    model: str = ""
    splits: str = ""             # "train -> val", "train+val (no validation)"
    epochs_done: int = 0
    epochs_total: Optional[int] = None
    state: str = ""              # training | stopped | finished[, not shipped] | not started | unreadable
    pid: Optional[int] = None
    seconds_per_epoch: Optional[float] = None  # median of the last RECENT epochs of its current stage
    hours_left: Optional[float] = None  # epochs only, at that pace (validation not counted)
    hours_so_far: Optional[float] = None
    last_val: Optional[Tuple[int, float]] = None  # (epoch, mIoU) of the latest validation
    best_val: Optional[Tuple[int, float]] = None
    command: str = ""            # the command that continues it (stopped runs)
    note: str = ""

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def is_run(folder: Path) -> bool:
    return any((Path(folder) / f).is_file() for f in ("last.pt", "log.csv"))


def find_runs(paths: Iterable[Path]) -> List[Path]:
    """Each path that is a run, else the runs directly inside it (sorted by name)."""
    found = []
    for p in paths:
        p = Path(p)
        if is_run(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if d.is_dir() and is_run(d))
    return found


def _checkpoint(run: Path) -> Tuple[Optional[dict], str]:
    """last.pt's config and epoch (not its tensors' data: mapped, not read), or why not."""
    ck = Path(run) / "last.pt"
    if not ck.is_file():
        return None, ""
    try:
        import torch
        data = torch.load(ck, map_location="cpu", weights_only=True, mmap=True)
        return {"config": data.get("config") or {}, "epoch": data.get("epoch")}, ""
    except ImportError:
        return None, "torch is not installed (the 'train' extra): epochs planned unknown"
    except Exception as e:  # cut off or being replaced: the log still says what it can
        return None, f"last.pt cannot be read ({type(e).__name__})"


def continue_command(cfg: dict, run: Path) -> str:
    """The run's own command (as last.pt records it) with --resume and its --out as an absolute
    path (a relative one from another folder would start a new run); under torchrun as it ran."""
    command = cfg.get("command", "")
    if not command:
        return ""
    words = shlex.split(command)
    for i, w in enumerate(words):
        if w == "--out" and i + 1 < len(words):
            words[i + 1] = str(Path(run).resolve())
        elif w.startswith("--out="):
            words[i] = f"--out={Path(run).resolve()}"
    if "--resume" not in words:
        words.append("--resume")
    n = int(cfg.get("processes", 1) or 1)
    if n > 1 and words and words[0] == "seg-perception":  # (command_line records the CLI's own words)
        words = ["torchrun", "--nproc_per_node", str(n), "-m", "seg_perception.cli"] + words[1:]
    return " ".join(shlex.quote(w) for w in words)


def run_status(run: Path) -> RunStatus:
    run = Path(run)
    s = RunStatus(path=run)
    rows = log_rows(run)
    ck, s.note = _checkpoint(run)
    cfg = ck["config"] if ck else None
    if cfg:
        s.model = cfg.get("model", "")
        # no --name: MODEL_<dataset kind>, the kind as the data read (a card of that shape beside it)
        s.name = cfg.get("name") or next((c.stem for c in sorted(run.glob(f"{s.model}_*.yaml"))), "")
        s.epochs_total = int(cfg.get("epochs", 0)) + int(cfg.get("encoder_epochs", 0) or 0)
        val = cfg.get("val_split") or "none"
        s.splits = f"{cfg.get('train_split', '')} -> {val}" if val != "none" else \
            f"{cfg.get('train_split', '')} (no validation)"
        s.command = continue_command(cfg, run)
    logged = int(rows[-1]["epoch"]) if rows else 0
    # the log row goes out just before its checkpoint: a stop between the two trains that epoch again
    saved = ck["epoch"] + 1 if ck and isinstance(ck.get("epoch"), int) else None
    s.epochs_done = logged if saved is None else (saved if not rows else min(logged, saved))
    s.hours_so_far = hours_of_epochs(rows)
    if rows:
        stage = rows[-1].get("stage")  # the pace of the stage it is in (an encoder stage runs a smaller net)
        recent = [float(r["seconds"]) for r in rows if r.get("stage") == stage and r.get("seconds")][-RECENT:]
        if recent:
            median = float(np.median(recent))
            s.seconds_per_epoch = round(median, 1)
            if s.epochs_total is not None:
                s.hours_left = round(max(0, s.epochs_total - s.epochs_done) * median / 3600, 2)
    scored = [(int(r["epoch"]), float(r["val_miou"])) for r in rows if r.get("val_miou")]
    if scored:
        s.last_val = scored[-1]
        s.best_val = max(scored, key=lambda e: e[1])
    s.pid = training_pid(run)
    shipped = not s.name or all((run / f"{s.name}{ext}").is_file() for ext in (".pt", ".yaml"))  # (unknown: no word)
    if s.pid is not None:
        s.state = "training"
    elif cfg is None and s.note.startswith("last.pt"):
        s.state = "unreadable"
    elif s.epochs_total is not None and s.epochs_done >= s.epochs_total:
        s.state = "finished" if shipped else "finished, not shipped"
        if not shipped:
            s.note = f"its {s.name}.pt and .yaml are not both there: the continue command writes them"
    elif not rows and cfg is None:
        s.state = "not started"
    else:
        s.state = "stopped"
    return s


def _fmt_val(v: Optional[Tuple[int, float]]) -> str:
    return f"{v[1]:.2f} @{v[0]}" if v else "-"


def table(statuses: List[RunStatus]) -> str:
    """A plain-text table, one run a line, then how to continue each stopped run."""
    head = ("run", "model", "splits", "epoch", "state", "s/epoch", "h left", "h so far", "val (last)", "val (best)")
    lines = [head]
    for s in statuses:
        total = s.epochs_total if s.epochs_total is not None else "?"
        state = f"training (pid {s.pid})" if s.state == "training" else s.state
        lines.append((str(s.path), s.model or "?", s.splits or "?", f"{s.epochs_done}/{total}", state,
                      f"{s.seconds_per_epoch:.1f}" if s.seconds_per_epoch is not None else "-",
                      f"{s.hours_left:.1f}" if s.hours_left is not None else "-",
                      f"{s.hours_so_far:.1f}" if s.hours_so_far is not None else "-",
                      _fmt_val(s.last_val), _fmt_val(s.best_val)))
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines]
    for s in statuses:
        if s.note:
            out.append(f"{s.path}: {s.note}")
        if s.state in ("stopped", "finished, not shipped") and s.command:
            out.append(f"{s.path}: continue with: {s.command}")
    return "\n".join(out)
