"""Read what can be read of an MCAP file that breaks off or is damaged mid-way.

A robot that loses power mid-recording leaves an .mcap without its summary and footer,
which the indexed reader (rosbags) refuses whole. The records before the cut are intact,
though: this reads them in file order (schemas, channels, messages, chunks) and stops at
the first record that is cut short or does not parse, remembering where and why. A chunk
whose own length is intact but whose content is not (checksum, compression, a record in it)
is skipped: its length says where the next record starts, so what follows is read on. A
chunk the file ends in (the usual power loss) is read up to the cut; a message whose channel
was defined in a lost part is skipped alone; and past a record that does not parse, reading
goes on at the next chunk the summary's chunk index lists, where the file still has one.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END, OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02
OP_CHUNK_INDEX = 0x08


@dataclass
class SalvagedChannel:
    id: int
    topic: str
    msgtype: str
    msgcount: int = 0
    encoding: str = "cdr"  # how its messages are serialised (the channel's message encoding)


@dataclass
class Damage:
    offset: Optional[int]  # byte offset of the record where reading stopped (None: read to the end)
    size: int              # file size
    reason: str
    messages_before: int   # messages read (before the stop, if any)
    last_t_ns: Optional[int] = None  # log time of the last message read
    skipped: List[Tuple[int, str]] = field(default_factory=list)  # (offset, why) of chunks read past
    orphans: Dict[int, int] = field(default_factory=dict)  # {channel id: messages skipped}: its definition lost
    cut_chunk: bool = False  # the file ends inside a chunk: its records up to the cut were read

    def where(self) -> str:
        if self.size == 0:
            return "its file is empty (0 bytes)"
        when = f", last one recorded at {self.last_t_ns / 1e9:.3f} s" if self.last_t_ns is not None else ""
        text = f"its file ({self.size:,} bytes)"
        said = []
        if self.skipped:
            off, why = self.skipped[0]
            n = len(self.skipped)
            said.append(f"has {n} damaged chunk{'s' if n > 1 else ''}, skipped (the first at byte {off:,}: {why})")
        if self.orphans:
            n = sum(self.orphans.values())
            said.append(f"has {n} message{'s' if n > 1 else ''} on channel{'s' if len(self.orphans) > 1 else ''} "
                        f"{', '.join(str(c) for c in sorted(self.orphans))} whose definition was lost, skipped")
        if said:
            text += " " + ", and ".join(said) + (" and" if self.offset is not None else "")
        if self.offset is None:
            return f"{text}, {self.messages_before} messages read{when}"
        if self.offset >= self.size:  # every record reads, but the end of the data section never came
            return f"{text} is cut short after {self.messages_before} messages{when}: {self.reason}"
        return f"{text} cannot be read past byte {self.offset:,} ({self.reason}), after {self.messages_before} messages{when}"


@dataclass
class McapSalvage:
    path: Path
    channels: Dict[int, SalvagedChannel] = field(default_factory=dict)
    damage: Optional[Damage] = None
    message_count: int = 0
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    # {topic: messages read before the first damage}: those are all there, as recorded (None: no damage)
    intact_counts: Optional[Dict[str, int]] = None
    chunk_offsets: List[int] = field(default_factory=list)  # of every chunk, from the summary's chunk index

    @classmethod
    def scan(cls, path: str | Path) -> "McapSalvage":
        """One pass over the file: channels, readable messages per channel, where it breaks."""
        s = cls(Path(path))
        for _ in s.records():
            pass
        return s

    def records(self) -> Iterator[Tuple[SalvagedChannel, int, bytes]]:
        """(channel, log time ns, raw CDR) of every readable message, in file order."""
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                self.damage = Damage(0, 0, "empty file", 0)
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:  # bags can be large
                yield from self._records(data)

    def _summary_channels(self, data, schemas: Dict[int, str]) -> None:
        """Schemas and channels from the summary section at the end, when the file has one: a
        writer puts them in the data section only once, inside the first chunk, so without
        these a damaged first chunk would leave every later message on an unknown channel."""
        try:
            for op, body in _summary_records(data):
                if op == OP_CHUNK_INDEX:
                    self.chunk_offsets.append(struct.unpack_from("<Q", body, 16)[0])  # its chunk_start_offset
                else:
                    self._definition(op, body, schemas)
        except (ValueError, struct.error, UnicodeDecodeError):
            pass  # a damaged summary: the data section's own records are what there is

    def _definition(self, op: int, body, schemas: Dict[int, str]) -> bool:
        """Take in a Schema or Channel record; False for any other record."""
        if op == OP_SCHEMA:
            sid, name = _schema(body)
            schemas[sid] = name
        elif op == OP_CHANNEL:
            ch = _channel(body, schemas)
            self.channels.setdefault(ch.id, ch)
        else:
            return False
        return True

    def _records(self, data) -> Iterator[Tuple[SalvagedChannel, int, bytes]]:
        schemas: Dict[int, str] = {}
        count, last_t = 0, None
        skipped: List[Tuple[int, str]] = []
        orphans: Dict[int, int] = {}
        self.channels.clear()
        self.chunk_offsets.clear()
        self.intact_counts = None
        if data[:8] != MAGIC:
            self.damage = Damage(0, len(data), "no MCAP magic at the start", 0)
            return
        self._summary_channels(data, schemas)
        pos = 8
        # A chunk's records are read from its decompressed bytes (buf, pos, end), then reading goes on
        # in the file at `outer`; `cut_at`: the chunk the file ends in, read up to the cut.
        buf, end = data, len(data)
        outer = chunk_at = cut_at = None
        while True:
            if pos >= end:
                if outer is None:
                    # A writer ends the data with DataEnd (then the summary and footer): a file that
                    # stops without one was cut short, here at a record boundary, and later records are lost.
                    why = (f"it ends inside the chunk at byte {cut_at:,}, read up to the cut" if cut_at is not None
                           else "it ends without the end-of-data record of a whole file")
                    self.damage = Damage(len(data), len(data), why, count, last_t, skipped, orphans,
                                         cut_chunk=cut_at is not None)
                    break
                buf, pos, end = data, outer, len(data)
                outer = None
                continue
            record_at = pos if outer is None else chunk_at
            try:
                if end - pos < 9:
                    raise ValueError("record header cut short")
                op = buf[pos]
                (length,) = struct.unpack_from("<Q", buf, pos + 1)
                body_at = pos + 9
                if body_at + length > end:
                    if op == OP_CHUNK and outer is None and self._next_chunk(data, pos) is None:
                        records = _cut_chunk_records(buf[body_at:end])
                        if records is not None:  # the file ends in this chunk: its records up to the cut
                            chunk_at = cut_at = pos
                            outer, buf, pos, end = len(data), records, 0, len(records)
                            continue
                    raise ValueError("record cut short")
                body = buf[body_at:body_at + length]
                pos = body_at + length
                if self._definition(op, body, schemas):
                    continue
                if op == OP_MESSAGE:
                    cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
                    ch = self.channels.get(cid)
                    if ch is None:  # its Channel record was in a lost part: this message alone is lost
                        orphans[cid] = orphans.get(cid, 0) + 1
                        self._damage_met()
                        continue
                    ch.msgcount += 1
                    count += 1
                    last_t = log_time
                    self.start_ns = log_time if self.start_ns is None else min(self.start_ns, log_time)
                    self.end_ns = log_time if self.end_ns is None else max(self.end_ns, log_time)
                    yield ch, log_time, body[22:]
                elif op == OP_CHUNK:
                    if outer is not None:
                        raise ValueError("nested chunk")
                    try:
                        inner = _chunk_records(body)
                    except (ValueError, struct.error) as e:  # pos is already past the chunk: read on there
                        skipped.append((body_at - 9, str(e)))
                        self._damage_met()
                        continue
                    chunk_at, outer, buf, pos, end = body_at - 9, pos, inner, 0, len(inner)
                elif op in (OP_DATA_END, OP_FOOTER):
                    if outer is not None:  # a damaged record inside a chunk, not the end of the data
                        raise ValueError(f"end-of-data record {op:#04x} inside a chunk")
                    break  # the summary section follows: everything has been read
                elif op == 0:
                    raise ValueError("invalid record opcode 0")
            except (ValueError, struct.error, UnicodeDecodeError) as e:
                self._damage_met()
                if outer is not None:  # inside a chunk: the rest of it is lost, the file goes on
                    if cut_at is None:  # (in the chunk the file ends in, the record cut off is the cut)
                        skipped.append((chunk_at, str(e)))
                    buf, pos, end, outer = data, outer, len(data), None
                    continue
                nxt = self._next_chunk(data, record_at)
                if nxt is not None:  # the summary says where the next chunk starts: read on there
                    skipped.append((record_at, str(e)))
                    pos = nxt
                    continue
                self.damage = Damage(record_at, len(data), str(e), count, last_t, skipped, orphans)
                break
        if (skipped or orphans) and self.damage is None:
            self.damage = Damage(None, len(data), "", count, last_t, skipped, orphans)
        if self.damage is not None:
            self._damage_met()  # a file cut short: every message read came before the cut
        self.message_count = count

    def _damage_met(self) -> None:
        """At the first damage, note how many messages per topic were read before it."""
        if self.intact_counts is None:
            self.intact_counts = {}
            for ch in self.channels.values():
                self.intact_counts[ch.topic] = self.intact_counts.get(ch.topic, 0) + ch.msgcount

    def _next_chunk(self, data, after: int) -> Optional[int]:
        """The offset of the first chunk after byte `after` that the summary's chunk index lists and the
        file holds (a chunk record starts there); None without one."""
        return next((o for o in sorted(self.chunk_offsets) if after < o < len(data) and data[o] == OP_CHUNK), None)


def _summary_records(data) -> Iterator[Tuple[int, bytes]]:
    """(opcode, body) of the summary section's records when the file ends whole (footer and
    magic), else nothing."""
    footer = len(data) - 8 - 29  # footer record: opcode, length, summary start, offsets start, crc
    if footer < 8 or data[-8:] != MAGIC or data[footer] != OP_FOOTER:
        return
    start, offsets = struct.unpack_from("<QQ", data, footer + 9)
    end = offsets or footer
    if not 8 <= start <= end <= footer:
        return
    pos = start
    while pos + 9 <= end:
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        if pos + 9 + length > end:
            return
        yield op, data[pos + 9:pos + 9 + length]
        pos += 9 + length


def _string(body, at: int) -> Tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, at)
    if at + 4 + n > len(body):
        raise ValueError("string runs past its record")
    return bytes(body[at + 4:at + 4 + n]).decode(), at + 4 + n


def _schema(body) -> Tuple[int, str]:
    (sid,) = struct.unpack_from("<H", body, 0)
    name, _ = _string(body, 2)
    return sid, name


def _channel(body, schemas: Dict[int, str]) -> SalvagedChannel:
    cid, sid = struct.unpack_from("<HH", body, 0)
    topic, at = _string(body, 4)
    encoding, _ = _string(body, at)
    return SalvagedChannel(cid, topic, schemas.get(sid, "?"), encoding=encoding)


def _chunk_records(body) -> bytes:
    """The decompressed records of a chunk (checksum checked where the writer set one)."""
    _start, _end, size, crc = struct.unpack_from("<QQQI", body, 0)
    compression, at = _string(body, 28)
    (csize,) = struct.unpack_from("<Q", body, at)
    payload = bytes(body[at + 8:at + 8 + csize])
    if len(payload) != csize:
        raise ValueError("chunk cut short")
    if compression:
        from rosbags.rosbag2.storage_mcap import decompress
        try:
            return decompress(payload, compression, size, crc)
        except Exception as e:  # a damaged compressed chunk: zstd/lz4 errors, checksum mismatch
            raise ValueError(f"chunk does not decompress: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if crc:
        import zlib
        if zlib.crc32(payload) != crc:
            raise ValueError("chunk checksum mismatch")
    return payload


def _cut_chunk_records(body) -> Optional[bytes]:
    """The records of a chunk the file ends in, up to the cut (the last one may be cut off; its
    checksum, over the whole chunk, cannot be checked); None when its header is cut too, its
    compression is unknown, or its stored bytes do not run off the file's end (no cut there)."""
    try:
        compression, at = _string(body, 28)
        (csize,) = struct.unpack_from("<Q", body, at)
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
    payload = bytes(body[at + 8:])
    if len(payload) >= csize:
        return None
    try:
        if not compression:  # rosbag2's mcap default
            return payload
        if compression == "zstd":  # a streaming decompressor returns what it can of a cut frame
            try:
                from compression import zstd  # Python >= 3.14
            except ImportError:
                try:
                    from backports import zstd
                except ImportError:
                    import zstandard
                    return zstandard.ZstdDecompressor().decompressobj().decompress(payload)
            return zstd.ZstdDecompressor().decompress(payload)
        if compression == "lz4":
            import lz4.frame
            return lz4.frame.LZ4FrameDecompressor().decompress(payload)
    except Exception:  # damaged as well as cut: nothing of it to read
        return None
    return None


def add_chunk_crcs(path: str | Path) -> int:
    """Write each chunk's checksum (CRC-32 of its uncompressed records) into an .mcap whose
    writer left them 0 ("not computed"), as rosbags' does; `ros2 bag record` writes them, and
    readers then catch a changed byte inside a chunk. In place (sizes do not change); returns
    the number of chunks given one."""
    import zlib
    done = 0
    with open(path, "r+b") as f:
        if f.read(8) != MAGIC:
            raise ValueError(f"{path} is not an MCAP file")
        pos = 8
        while True:
            f.seek(pos)
            head = f.read(9)
            if len(head) < 9 or head[0] in (OP_DATA_END, OP_FOOTER):
                return done
            (length,) = struct.unpack_from("<Q", head, 1)
            if head[0] == OP_CHUNK:
                body = f.read(length)
                (crc,) = struct.unpack_from("<I", body, 24)
                if crc == 0:
                    records = _chunk_records(body)
                    f.seek(pos + 9 + 24)
                    f.write(struct.pack("<I", zlib.crc32(records)))
                    done += 1
            pos += 9 + length
