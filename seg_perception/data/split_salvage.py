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
        return "; ".join(f"file {name} ({k} of {n}): {where}" for name, k, n, where in self.parts)


class SplitSalvage:
    def __init__(self, parts: Sequence[Tuple[Path, object]], missing: Sequence[str] = ()):
        self.parts = list(parts)  # (file, its salvage reader), in recording order
        self.channels: Dict[Tuple[int, int], SalvagedChannel] = {
            (i, cid): ch for i, (_, s) in enumerate(self.parts) for cid, ch in s.channels.items()}
        self.message_count = sum(s.message_count for _, s in self.parts)
        starts = [s.start_ns for _, s in self.parts if s.start_ns is not None]
        ends = [s.end_ns for _, s in self.parts if s.end_ns is not None]
        self.start_ns = min(starts) if starts else None
        self.end_ns = max(ends) if ends else None
        n = len(self.parts) + len(missing)
        damaged = [(f.name, k + 1, n, s.damage.where()) for k, (f, s) in enumerate(self.parts) if s.damage]
        damaged += [(name, len(self.parts) + k + 1, n, "missing") for k, name in enumerate(missing)]
        self.damage: Optional[SplitDamage] = SplitDamage(damaged) if damaged else None

    def records(self) -> Iterator[Tuple[SalvagedChannel, int, bytes]]:
        for _, s in self.parts:
            yield from s.records()


def recording_order(files: Sequence[Path], listed: Sequence[str] = ()) -> List[Path]:
    """The files in the order they were recorded: as metadata.yaml lists them, else by the
    number rosbag2 puts before the extension (bag_0, bag_1, ..., bag_10)."""
    by_name = {f.name: f for f in files}
    if listed and all(Path(p).name in by_name for p in listed):
        return [by_name[Path(p).name] for p in listed]

    def number(f: Path) -> Tuple[int, str]:
        m = re.search(r"_(\d+)$", f.stem)
        return (int(m.group(1)) if m else -1, f.name)
    return sorted(files, key=number)
