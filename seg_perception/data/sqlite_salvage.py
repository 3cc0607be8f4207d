"""Read what can be read of a rosbag2 .db3 (sqlite3) file that is cut short or damaged.

sqlite refuses a file that ends early as a whole ("database disk image is malformed"),
even when most of its pages are intact: a bag copied off a robot onto a full disk, or a
transfer that broke off. sqlite3 is the default storage of ROS 2 Humble and older.

This reads the file's pages directly (the sqlite file format is documented and stable):
every table leaf page whose rows have the shape of rosbag2's `topics` and `messages`
tables is parsed, each message's blob is followed through its overflow pages, and a row
whose pages are missing or do not chain is counted as lost. Messages come out in
recorded-time order, as the indexed reader gives them, and as stored (per-message zstd
is undone by BagReader, which recognises it without metadata.yaml).
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .mcap_salvage import SalvagedChannel

MAGIC = b"SQLite format 3\x00"
LEAF_TABLE = 0x0D
PAGE_TYPES = (0x02, 0x05, 0x0A, 0x0D)  # interior/leaf index/table b-tree pages


@dataclass
class SqliteDamage:
    size: int              # file size in bytes
    pages: int             # pages in the file
    pages_expected: int    # pages the file's header says it has
    lost: int              # message rows seen but unreadable, plus gaps in the row ids
    messages_read: int
    first_lost_t_ns: Optional[int] = None  # recorded time of the first lost message, where known
    reason: str = ""
    lost_topics: List[str] = field(default_factory=list)  # of the lost messages whose row was seen

    def where(self) -> str:
        if self.size == 0:
            return "its file is empty (0 bytes)"
        if self.pages < self.pages_expected:
            what = f"its file ({self.size:,} bytes) ends after page {self.pages:,} of {self.pages_expected:,}"
            lost = f"{_n(self.lost, 'message')} before the end cannot be read" if self.lost else ""
        else:
            what = f"its file ({self.size:,} bytes) has damaged pages"
            lost = f"{_n(self.lost, 'message')} cannot be read" if self.lost else ""
        if lost and self.first_lost_t_ns is not None:
            on = f"on {', '.join(self.lost_topics)}, " if self.lost_topics else ""
            lost += f" ({on}the first recorded at {self.first_lost_t_ns / 1e9:.3f} s)"
        parts = [what] + [p for p in (lost, self.reason) if p] + [f"{_n(self.messages_read, 'message')} read"]
        return ", ".join(parts)


@dataclass
class _Row:
    rowid: int
    topic_id: int
    t_ns: int
    page: int
    cell: int  # byte offset of the cell in the file


@dataclass
class SqliteSalvage:
    path: Path
    channels: Dict[int, SalvagedChannel] = field(default_factory=dict)
    damage: Optional[SqliteDamage] = None
    message_count: int = 0
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    _rows: List[_Row] = field(default_factory=list)

    @classmethod
    def scan(cls, path: str | Path) -> "SqliteSalvage":
        """One pass over the pages: topics, the readable messages, what is lost."""
        s = cls(Path(path))
        with _Pages.open(s.path) as pages:
            if pages is None:
                s.damage = SqliteDamage(s.path.stat().st_size, 0, 0, 0, 0, reason="not an sqlite3 file")
                return s
            if not pages.page_size:
                s.damage = SqliteDamage(s.path.stat().st_size, 0, 0, 0, 0,
                                        reason="its sqlite3 header is damaged (no page size fits the file)")
                return s
            s._scan(pages)
        return s

    def _scan(self, pages: "_Pages") -> None:
        rows: Dict[int, _Row] = {}
        seen_ids, broken = set(), {}
        for pgno in range(1, pages.count + 1):
            for cell, rowid, values in pages.leaf_rows(pgno):
                if _is_topic(values):
                    self.channels.setdefault(rowid, SalvagedChannel(rowid, values[1], values[2], encoding=values[3]))
                elif _is_message(values):
                    seen_ids.add(rowid)
                    if rowid not in rows and pages.payload(cell, copy=False) is not None:
                        rows[rowid] = _Row(rowid, values[1], values[2], pgno, cell)
                    elif rowid not in rows:
                        broken[rowid] = (values[2], values[1])
        for rowid in rows:
            broken.pop(rowid, None)
        # Rows of topics whose entry is lost cannot be decoded: counted as lost.
        for r in [r for r in rows.values() if r.topic_id not in self.channels]:
            broken[r.rowid] = (r.t_ns, r.topic_id)
            del rows[r.rowid]
        self._rows = sorted(rows.values(), key=lambda r: (r.t_ns, r.rowid))
        for r in self._rows:
            self.channels[r.topic_id].msgcount += 1
        self.message_count = len(self._rows)
        if self._rows:
            self.start_ns, self.end_ns = self._rows[0].t_ns, self._rows[-1].t_ns
        # Row ids are given in recording order from 1: a gap below the highest seen is a lost message.
        top = max(seen_ids, default=0)
        gaps = top - len(seen_ids)
        cut = pages.count < pages.expected
        lost = len(broken) + gaps
        if cut or lost or pages.bad_pages:
            first = min((t for t, _ in broken.values()), default=None)
            topics = sorted({self.channels[i].topic for _, i in broken.values() if i in self.channels})
            reason = f"unreadable table pages: {pages.bad_pages}" if pages.bad_pages else ""
            self.damage = SqliteDamage(pages.size, pages.count, pages.expected, lost, self.message_count,
                                       first, reason, topics)

    def records(self) -> Iterator[Tuple[SalvagedChannel, int, bytes]]:
        """(channel, recorded time ns, message as stored) of every readable message, in
        recorded-time order; a zstd-compressed message stays compressed (BagReader undoes it)."""
        with _Pages.open(self.path) as pages:
            if pages is None:
                return
            for r in self._rows:
                raw = pages.payload(r.cell)
                if raw is not None:
                    yield self.channels[r.topic_id], r.t_ns, bytes(_record(raw)[3])


def _n(k: int, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _is_topic(v: list) -> bool:
    # topics(id, name, type, serialization_format, ...): the name is a ROS topic; Humble has 5
    # columns, Jazzy 6. message_definitions rows (type first) do not start with "/".
    return (len(v) >= 4 and v[0] is None and all(isinstance(x, str) for x in v[1:4])
            and v[1].startswith("/") and "/" in v[2])


def _is_message(v: list) -> bool:
    # messages(id INTEGER PRIMARY KEY, topic_id, timestamp, data BLOB); the id is the row id (NULL here)
    return (len(v) == 4 and v[0] is None and isinstance(v[1], int) and isinstance(v[2], int)
            and isinstance(v[3], (bytes, _Blob)))


@dataclass
class _Blob:
    """A blob column not read (only its length): the scan needs the row's shape, not its data."""
    length: int


class _Pages:
    """The file's pages through mmap; a large bag is not read into memory."""

    def __init__(self, data, size: int):
        self.data, self.size = data, size
        self.page_size = _page_size(data, size)  # 0: none fits (nothing can be read)
        self.usable = self.page_size - data[20]
        self.count = size // self.page_size if self.page_size else 0
        # The header's page count holds only while the change counter matches "version valid for"
        (pages, counter, valid_for) = (struct.unpack_from(">I", data, o)[0] for o in (28, 24, 92))
        self.expected = max(pages if counter == valid_for else 0, self.count)
        self.bad_pages = 0

    @classmethod
    def open(cls, path: Path):
        return _Opened(path)

    def leaf_rows(self, pgno: int) -> Iterator[Tuple[int, int, list]]:
        """(cell offset, row id, column values with blobs as _Blob) of a table leaf page; nothing
        for other pages. A leaf page that does not parse is counted in bad_pages."""
        base = (pgno - 1) * self.page_size
        head = base + (100 if pgno == 1 else 0)
        if self.data[head] != LEAF_TABLE:
            return
        try:
            (ncells,) = struct.unpack_from(">H", self.data, head + 3)
            if 8 + 2 * ncells > self.page_size:
                raise ValueError("cell count")
            out = []
            for i in range(ncells):
                (off,) = struct.unpack_from(">H", self.data, head + 8 + 2 * i)
                if not 8 <= off < self.page_size:
                    raise ValueError("cell pointer")
                cell = base + off
                _, rowid, local = self._cell(cell)
                out.append((cell, rowid, _record(local, header_only=True)))
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            self.bad_pages += 1
            return
        yield from out

    def _cell(self, cell: int) -> Tuple[int, int, bytes]:
        """(payload length, row id, local payload bytes) of a table leaf cell."""
        length, at = _varint(self.data, cell)
        rowid, at = _varint(self.data, at)
        local = self._local(length)
        if at + local > len(self.data) or local > self.usable:
            raise ValueError("cell runs past its page")
        return length, rowid, bytes(self.data[at:at + local])

    def _local(self, p: int) -> int:
        # How much of a payload of p bytes stays on the leaf page (sqlite's file format, 1.6)
        u = self.usable
        x = u - 35
        if p <= x:
            return p
        m = ((u - 12) * 32 // 255) - 23
        k = m + (p - m) % (u - 4)
        return k if k <= x else m

    def payload(self, cell: int, copy: bool = True) -> Optional[bytes]:
        """The cell's whole payload, its overflow pages followed; None when a page is missing,
        a link points outside the file, or the chain does not end where the length says.
        copy=False only checks the chain (returns b"")."""
        try:
            length, at = _varint(self.data, cell)
            _, at = _varint(self.data, at)
            local = self._local(length)
            parts = [self.data[at:at + local]]
            got = local
            if local < length:
                (nxt,) = struct.unpack_from(">I", self.data, at + local)
                while got < length:
                    if not 1 < nxt <= self.count:
                        return None
                    base = (nxt - 1) * self.page_size
                    (following,) = struct.unpack_from(">I", self.data, base)
                    take = min(self.usable - 4, length - got)
                    if copy:
                        parts.append(self.data[base + 4:base + 4 + take])
                    got += take
                    nxt = following
                if nxt != 0:  # the last overflow page links nowhere
                    return None
            return b"".join(bytes(p) for p in parts) if copy else b""
        except (ValueError, IndexError, struct.error):
            return None


def _page_size(data, size: int) -> int:
    """The header's page size; in a damaged header (not a power of two from 512 to 65536) the
    size whose second page starts like a b-tree page, SQLite's default 4096 first; 0 if none."""
    (ps,) = struct.unpack_from(">H", data, 16)
    ps = 65536 if ps == 1 else ps
    if 512 <= ps <= 65536 and ps & (ps - 1) == 0:
        return ps
    for cand in (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512):
        if size >= 2 * cand and data[cand] in PAGE_TYPES:
            return cand
    return 0


class _Opened:
    def __init__(self, path: Path):
        self.path = path
        self.f = self.mm = None

    def __enter__(self) -> Optional[_Pages]:
        self.f = open(self.path, "rb")
        size = os.fstat(self.f.fileno()).st_size
        if size < 512:
            return None
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        if self.mm[:16] != MAGIC:
            return None
        return _Pages(self.mm, size)

    def __exit__(self, *exc) -> None:
        if self.mm is not None:
            self.mm.close()
        self.f.close()


def _varint(data, at: int) -> Tuple[int, int]:
    v = 0
    for i in range(8):
        b = data[at + i]
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, at + i + 1
    return (v << 8) | data[at + 8], at + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record(payload: bytes, header_only: bool = False) -> list:
    """A record's column values (sqlite's record format). With header_only, blobs are returned
    as _Blob and the body may be shorter than the record (the rest is on overflow pages)."""
    hlen, at = _varint(payload, 0)
    types = []
    while at < hlen:
        t, at = _varint(payload, at)
        types.append(t)
    values, pos = [], hlen
    for t in types:
        if t == 0:
            values.append(None)
        elif t in _INT_SIZES:
            n = _INT_SIZES[t]
            if pos + n > len(payload):
                raise ValueError("record cut short")
            values.append(int.from_bytes(payload[pos:pos + n], "big", signed=True))
            pos += n
        elif t in (8, 9):
            values.append(t - 8)
        elif t == 7:
            (f,) = struct.unpack_from(">d", payload, pos)
            values.append(f)
            pos += 8
        elif t >= 12:
            n = (t - 12) // 2
            if t % 2 == 0:
                values.append(_Blob(n) if header_only else payload[pos:pos + n])
            else:
                if pos + n > len(payload):
                    if not header_only:
                        raise ValueError("record cut short")
                    values.append(_Blob(n))  # text past the local part: not a row this reads
                else:
                    values.append(payload[pos:pos + n].decode())
            pos += n
        else:
            raise ValueError(f"invalid serial type {t}")
    return values
