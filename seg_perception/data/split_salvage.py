"""A bag split over several files (`ros2 bag record --max-bag-size / --max-bag-duration`)
of which one is damaged: typically the last, being written when the power went.

The indexed reader opens every file of a bag up front, so one cut file makes it refuse the
whole recording. Here each file is read by its own salvage reader (McapSalvage or
SqliteSalvage; an intact file reads whole through them), in recording order, and the damage
of each damaged file is named with the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .mcap_salvage import SalvagedChannel


@dataclass
class SplitDamage:
    parts: List[Tuple[str, int, int, str]]  # (file name, its number from 1, files, where it is damaged)

    def where(self) -> str:
        # a run of missing files is one entry: a recording that lost its first 8 files says so once
        runs: list = []  # [first name, first number, last name, last number, files, where]
        for name, k, n, where in self.parts:
            if runs and where == "missing" == runs[-1][5] and k == runs[-1][3] + 1:
                runs[-1][2:4] = [name, k]
            else:
                runs.append([name, k, name, k, n, where])
        return "; ".join(f"file {a} ({i} of {n}): {where}" if i == j else
                         f"files {a} to {b} ({i} to {j} of {n}): {where}" for a, i, b, j, n, where in runs)


class SplitSalvage:
    def __init__(self, files: Sequence[Tuple[str, Optional[object]]]):
        """files: (file name, its salvage reader, None for a missing file), in recording order."""
        n = len(files)
        self.parts = [(name, s) for name, s in files if s is not None]
        self.channels: Dict[Tuple[int, int], SalvagedChannel] = {
            (i, cid): ch for i, (_, s) in enumerate(self.parts) for cid, ch in s.channels.items()}
        self.message_count = sum(s.message_count for _, s in self.parts)
        starts = [s.start_ns for _, s in self.parts if s.start_ns is not None]
        ends = [s.end_ns for _, s in self.parts if s.end_ns is not None]
        self.start_ns = min(starts) if starts else None
        self.end_ns = max(ends) if ends else None
        damaged = [(name, k + 1, n, "missing" if s is None else s.damage.where())
                   for k, (name, s) in enumerate(files) if s is None or s.damage]
        self.damage: Optional[SplitDamage] = SplitDamage(damaged) if damaged else None
        # {topic: messages read before the first damage}: those of the whole files before the first damaged
        # or missing one, and what that one read before its damage (None: no damage, or it does not say)
        self.intact_counts: Optional[Dict[str, int]] = None
        if self.damage is not None:
            counts: Dict[str, int] = {}
            for _, s in files:
                if s is None:
                    break
                if s.damage and getattr(s, "intact_counts", None) is None:
                    counts = None  # a salvage reader that does not say where in its file the damage lies
                    break
                part = s.intact_counts.items() if s.damage else [(c.topic, c.msgcount) for c in s.channels.values()]
                for topic, k in part:
                    counts[topic] = counts.get(topic, 0) + k
                if s.damage:
                    break
            self.intact_counts = counts

    def records(self) -> Iterator[Tuple[SalvagedChannel, int, bytes]]:
        for _, s in self.parts:
            yield from s.records()


def split_files(files: Sequence[Path], listed: Sequence[str] = ()) -> List[Tuple[str, Optional[Path]]]:
    """(name, path or None when missing) of a split bag's files in the order they were
    recorded: as metadata.yaml lists them (and only those), else by the number rosbag2 puts before the
    extension (bag_0, bag_1, ..., bag_10), a gap in the numbers being a missing file (and,
    as rosbag2 counts from 0, so is any number below the first one there)."""
    by_name = {f.name: f for f in files}
    if listed:
        names = [Path(p).name for p in listed]
        return [(m, by_name.get(m)) for m in names]  # a file it does not list is no part of the recording
    numbered = {}
    for f in files:
        m = re.fullmatch(r"(.*)_(\d+)", f.stem)
        if m is None:
            return [(f.name, f) for f in sorted(files)]  # not rosbag2's naming: name order
        numbered[(m.group(1), int(m.group(2)))] = f
    prefixes = {p for p, _ in numbered}
    if len(prefixes) != 1:
        return [(f.name, f) for f in sorted(files)]
    (prefix,) = prefixes
    suffix = files[0].suffix
    nums = sorted(k for _, k in numbered)
    if nums[-1] > 100_000:  # not a file counter (a time stamp in the name?): in number order, none inferred
        return [(numbered[(prefix, k)].name, numbered[(prefix, k)]) for k in nums]
    return [(f"{prefix}_{k}{suffix}", numbered.get((prefix, k))) for k in range(nums[-1] + 1)]
