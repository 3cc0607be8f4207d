"""Files written so that a crash never leaves half of one, and their checksums.

Engines, ONNX exports and model cards are read by other processes (the node, a
second build) while they may be rewritten: each is written to a temporary file
in the same folder and renamed over the old one, which is atomic on POSIX.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterator


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (engines and ONNX files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# A temporary file this old whose writer is gone was left by a killed writer, not one still writing:
# every writer here writes its file in one go and renames it at once (seconds, even for an engine).
STALE_AFTER_S = 600


def temporary_beside(path: Path) -> Path:
    """A name beside ``path`` no other writer uses: two processes exporting the same model into the
    cache at once must not write into, or rename away, each other's temporary file. Those of earlier
    writers of ``path`` that were killed before their rename are removed first."""
    remove_stale_temporaries(path)
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(path: Path) -> list:
    """Removes ``<name>.<pid>.<random>.tmp`` files beside ``path`` whose process has ended (on this
    machine) and which have not changed for STALE_AFTER_S (a folder shared with another machine, whose
    pids mean nothing here, keeps its writer's file that long). Returns what was removed."""
    removed = []
    ours = re.compile(re.escape(path.name) + r"\.([0-9]{1,9})\.[0-9a-f]{8}\.tmp")  # temporary_beside's names only
    try:
        candidates = [(p, int(m.group(1))) for p in path.parent.glob(f"{glob.escape(path.name)}.*.tmp")
                      if (m := ours.fullmatch(p.name))]
    except OSError:
        return removed
    now = time.time()
    for tmp, pid in candidates:
        try:
            if _alive(pid) or now - tmp.stat().st_mtime < STALE_AFTER_S:
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:  # gone meanwhile (another writer swept it), or not ours to remove
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """For a writer that wants a file name (torch.onnx.export, ONNX Runtime's quantizer): yields a
    temporary name beside ``path``, renamed over it when the block succeeds, removed when it fails."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # on disk before the rename, as atomic_write
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` whole or not at all; the folder must exist."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = temporary_beside(path)
    # os.open with 0o666 lets the umask decide the mode, as for any other file the user writes
    # (mkstemp would make it 0600, unreadable to the node when another user runs it).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            # on disk before the rename: a power cut after it must not leave the new name empty
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
