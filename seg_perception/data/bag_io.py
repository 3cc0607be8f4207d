"""rosbag2 in and out, in pure Python with `rosbags` (no ROS install needed).

Reads what `ros2 bag record` writes (a bag folder with metadata.yaml, or a bare
.mcap / .db3 file; sqlite3 or mcap; zstd file, message or chunk compression)
and writes rosbag2 version 8 bags, which `ros2 bag info` and `ros2 bag play` read
on ROS 2 Humble and Jazzy alike. Messages are (de)serialised with the Jazzy typestore;
decoded messages have the same fields as rclpy's, so runtime/image_conversion
works on them unchanged. A file the indexed reader refuses or breaks off in is read by
its salvage reader (mcap_salvage, sqlite_salvage): what can be read, and where it broke.

Every problem with a bag becomes a BagError with a one-line message.
"""
from __future__ import annotations

import errno
import sqlite3
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import numpy as np

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED)
FORMATS = ("mcap", "sqlite3")

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_COMPRESSED_TOPIC = "/camera/image_raw/compressed"
DEFAULT_INFO_TOPIC = "/camera/camera_info"
DEFAULT_GT_TOPIC = "/camera/labels_gt"
# metadata.yaml custom_data key: the class names (JSON list) the ground-truth topic's ids mean
GT_CLASSES_KEY = "seg_perception.ground_truth_classes"
# ... and where that ground truth comes from (JSON: dataset, split, resolved data folder), so that a
# report can say when it scores a model on frames it trained on
GT_SOURCE_KEY = "seg_perception.ground_truth_source"


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_decompress(data: bytes) -> bytes:
    """One zstd frame, with whichever zstd module rosbags brought: Python 3.14's own, the
    backport (rosbags >= 0.11.7 before 3.14) or zstandard (older rosbags)."""
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd
        except ImportError:
            import zstandard  # a frame may not record its size: the streaming reader needs none
            d = zstandard.ZstdDecompressor().decompressobj()
            out = d.decompress(data)
            if not d.eof:  # the streaming reader returns what it has of a cut frame without a word
                raise ValueError("zstd frame is cut short")
            return out
    return zstd.decompress(data)


class BagError(ValueError):
    """A bag that cannot be used as given; the message names the bag and what to do."""


@lru_cache(maxsize=1)
def typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_JAZZY)


def _rosbags_convert() -> str:
    """rosbags' converter as the user can run it: by name when on PATH, else where pip put it."""
    import shutil
    import sys
    beside = Path(sys.executable).parent / "rosbags-convert"
    return "rosbags-convert" if shutil.which("rosbags-convert") or not beside.is_file() else str(beside)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def raw_stamp_ns(raw: bytes) -> Optional[int]:
    """The header stamp of a serialised Image or CompressedImage without deserialising its pixels:
    both start with std_msgs/Header, whose stamp (int32 sec, uint32 nanosec) follows the 4-byte CDR
    encapsulation header (its second byte: 1 little-endian, 0 big-endian). None if too short."""
    if len(raw) < 12:
        return None
    sec, nsec = struct.unpack_from("<iI" if raw[1] & 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def format_stamp(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: Optional[int]  # None when the bag's index does not say (e.g. an interrupted recording)


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    t_ns: int                 # the time the message was recorded (bag log time)
    msg: object = None        # decoded message; None when `error` is set
    raw: bytes = b""          # serialised CDR, as stored in the bag
    error: str = ""           # why the message could not be decoded (a corrupt message)


class BagReader:
    """An open rosbag2 for reading; use as a context manager."""

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import Reader
        path = Path(path).expanduser()
        if path.name == "metadata.yaml" and path.is_file():
            path = path.parent  # the bag is the folder it describes
        self.path = path
        if not path.exists():
            raise BagError(f"bag {path} not found: give a rosbag2 folder (with metadata.yaml) or an .mcap/.db3 file")
        ros1 = [path] if path.suffix == ".bag" else sorted(path.glob("*.bag")) if path.is_dir() else []
        if ros1 and not (path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap"))
                                            or any(path.glob("*.db3")))):
            src = " ".join(str(f) for f in ros1)
            raise BagError(f"{ros1[0]} is a ROS 1 bag; convert it to rosbag2 with '{_rosbags_convert()} --src {src} "
                           f"--dst {ros1[0].with_suffix('')}_ros2' (installed with this package) and pass that "
                           "folder (a ROS 1 bag cut short needs ROS 1's 'rosbag reindex' first)")
        self._tmp = None
        self.notes: list = []  # what the reader did that a user should know, e.g. a write-ahead log merged
        bare = _bare_compressed(path)
        if bare:  # storage files compressed whole, without the metadata.yaml that says so: read a copy
            self._tmp, path, cut, twins = _decompress_copy(self.path, bare)
            packed = [f.name for f in bare if f.name.endswith(ZSTD_STORAGE) and f.name not in twins]
            self.notes.append(f"bag {self.path}: " + (f"{', '.join(packed)} compressed whole (zstd), read from a "
                                                      "decompressed copy" if packed else "")
                              + (f" ({', '.join(cut)} cut short: what it holds up to the cut)" if cut else "")
                              + (f"{'; ' if packed else ''}{', '.join(twins)} not read: the same file beside it "
                                 "uncompressed is" if twins else ""))
        target = path
        if path.is_dir() and not (path / "metadata.yaml").is_file():
            # An interrupted recording can lack metadata.yaml: a single storage file still reads,
            # and the files of a split one are read one by one (the salvage readers, below).
            files = sorted(list(path.glob("*.mcap")) + list(path.glob("*.db3")))
            if len({f.suffix for f in files}) > 1:
                raise BagError(f"{self.path} holds both .mcap and .db3 files and no metadata.yaml: that is not one "
                               "recording; pass one bag folder, or one of the files")
            if not files:
                raise BagError(f"{path} is not a rosbag2 folder: no metadata.yaml and no .mcap/.db3 files "
                               "(expected a bag made by 'ros2 bag record' or 'seg-perception make-bag')")
            target = files[0] if len(files) == 1 else path
        merged, failed, cut_logs = _merge_wal(path, target)
        if merged is not None:  # read a copy with the log merged in; messages keep naming the bag itself
            if self._tmp is not None:
                self._tmp.cleanup()  # the decompressed copy, copied again with its log merged
            self._tmp, path, target, added = merged
            # a merge is claimed only where the log added messages (a cut log may add none)
            gained = {name: k for name, k in added.items() if k is None or k > 0}
            if gained:
                self.notes.append(f"bag {self.path}: " + ", ".join(
                    f"{name} had {'rows' if k is None else f'{k} message' + ('' if k == 1 else 's')} in a "
                    "write-ahead log" for name, k in gained.items())
                    + " (-wal, left by an interrupted recording); read from a copy with the log merged in")
        if failed:
            self.notes.append(f"bag {self.path}: {failed}")
        self.wal_unread = failed  # said again where the bag then holds nothing that can be read
        # a -wal cut short (a copy that broke off): sqlite drops every frame after its last whole commit
        self.cut_logs = list(cut_logs)  # a sentence per cut log
        self.log_damage = (f"bag {self.path} is damaged: its write-ahead log " + "; ".join(cut_logs)
                           + ": the messages after its last complete commit are lost") if cut_logs else ""
        self.read_path = path
        self.target = target
        self.salvage = None   # Mcap/Sqlite/SplitSalvage: what of a damaged bag can be read
        self.damage = ""      # where and why reading stopped early ("" while the bag reads whole)
        info = _bag_information(path)
        self.expected = _recorded_counts(info)  # per topic, from metadata.yaml where it says
        # metadata.yaml's own counts ({} without one), kept where `expected` becomes the reader's: written when
        # the recording ended, so they count what a -wal cut since lost; the file's own count cannot
        self.metadata_counts = dict(self.expected)
        # one file of a split recording handed in alone: metadata.yaml's counts are the whole recording's (its
        # per-file entries count no topic), so they say nothing of what this file lost
        split = [Path(str(p)).name for p in info.get("relative_file_paths") or []] if self.path.is_file() else []
        self.split_part = ""
        if len(split) > 1:
            self.split_part = (f"{self.path.name} is one of the {len(split)} files of a split recording, and its "
                               f"metadata.yaml counts only the whole recording; pass the bag folder {self.path.parent} "
                               "to count them")
            self.expected, self.metadata_counts = {}, {}
        self.custom_data: Dict[str, str] = dict(info.get("custom_data") or {})  # {} in older bags
        listed = [Path(str(p)).name for p in info.get("relative_file_paths") or []]
        held = sorted(f.name for f in path.iterdir()
                      if f.suffix in (".mcap", ".db3") or f.name.endswith(ZSTD_STORAGE)) if path.is_dir() else []
        if path.is_dir() and listed and not any((path / name).is_file() for name in listed):
            raise BagError(f"bag {self.path}: its metadata.yaml lists {', '.join(listed)}, not in the folder" + (
                f", which holds {held[0]}: if that is the bag's file renamed, pass it directly ({self.path / held[0]}) "
                "or rename it back" if len(held) == 1 else
                f", which holds {', '.join(held)}: if those are the bag's files renamed, rename them back or move "
                "metadata.yaml aside (the files are then read in the order of the numbers in their names)" if held else
                " (copy the whole bag folder, storage files and metadata.yaml together)"))
        # storage files beside a metadata.yaml that does not list them (a stale one) are not read; a file
        # beside its own listed twin, compressed whole or not (compression interrupted), is that file again
        self.unlisted = [n for n in held if n not in listed and n + ".zstd" not in listed
                         and not (n.endswith(".zstd") and n[:-len(".zstd")] in listed)] if listed else []
        if self.unlisted:
            self.notes.append(f"bag {self.path}: {', '.join(self.unlisted)} in its folder "
                              f"{'is' if len(self.unlisted) == 1 else 'are'} not listed in its metadata.yaml, so not "
                              "read (a stale metadata.yaml? move it aside and every file is read, in the order of the "
                              "numbers in their names)")
        try:
            self.reader = Reader(target)
            self.reader.open()
        except BagError:
            raise
        except Exception as e:  # ReaderError, sqlite3/struct errors of a damaged file, ...
            self.reader = None
            foreign = _not_storage(target)
            if foreign:
                raise BagError(f"cannot open bag {self.path}: {foreign}") from None
            file_mode = str(info.get("compression_mode") or "").lower() == "file"
            packed = [path / n for n in listed if n.endswith(ZSTD_STORAGE) and (path / n).is_file()] \
                if file_mode and path.is_dir() and self._tmp is None else []
            if packed:
                # compressed whole, as metadata.yaml says, and rosbags cannot decompress it (a file cut short):
                # read a decompressed copy up to the damage, as for such a file handed in without metadata.yaml
                # with each one's plain twin where it is beside it (compression interrupted: the complete
                # original is still there), which _decompress_copy reads instead of the cut .zstd
                plain = [f.with_name(f.name[:-len(".zstd")]) for f in packed]
                files = packed + [f for f in plain if f.is_file()] + [
                    path / n for n in listed if not n.endswith(ZSTD_STORAGE) and (path / n).is_file()]
                self._tmp, path, cut, twins = _decompress_copy(self.path, sorted(set(files)))
                copies = sorted(list(path.glob("*.mcap")) + list(path.glob("*.db3")))
                target = copies[0] if len(copies) == 1 else path
                self.read_path, self.target = path, target
                unpacked = [f.name for f in packed if f.name not in twins]
                self.notes.append(f"bag {self.path}: " + "; ".join(
                    ([f"{', '.join(unpacked)} compressed whole (zstd), "
                      + ("read from a decompressed copy" if cut else
                         f"does not open as it is ({_one_line(e)}): read from a decompressed copy")
                      + (f" ({', '.join(cut)} cut short: what it holds up to the cut)" if cut else "")]
                     if unpacked else [])
                    + ([f"{', '.join(twins)} not read: the same file beside it uncompressed is (compression "
                        "interrupted, or 'zstd -d' kept both)"] if twins else [])))
            self.salvage = _salvage(path, target)
            if self.salvage is not None and file_mode and not packed:
                self.notes.append(f"bag {self.path}: its metadata.yaml says its files are compressed whole "
                                  "(compression_mode: file), but they are plain: read as they are")
            log = f"; {self.log_damage}" if self.log_damage else ""
            if self.salvage is None:
                raise BagError(f"cannot open bag {self.path}: {_one_line(e)}" + (log or "; the file is truncated or "
                               "damaged (for an interrupted recording try 'ros2 bag reindex')")) from None
            if not self.salvage.message_count:
                d = self.salvage.damage
                raise BagError(f"cannot open bag {self.path}: nothing in it can be read"
                               + (f" ({d.where()}{log})" if d else f" ({_one_line(e)}{log})")
                               + (f"; {self.wal_unread}" if self.wal_unread else "")) from None
            d = self.salvage.damage  # None: the data ends whole and only the index after it is missing
            self.damage = f"bag {self.path} is damaged: {d.where()}" if d else ""
        if self.reader is not None:
            self.expected = {t: i.count for t, i in self.topics().items() if i.count is not None} or self.expected
        self.ts = typestore()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "reader", None) is not None and self.reader.is_open:
            try:
                self.reader.close()
            except Exception:
                pass
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ----------------------------------------------------------------- topics
    def topics(self) -> Dict[str, TopicInfo]:
        out: Dict[str, TopicInfo] = {}
        if self.salvage is not None:  # the messages that can be read, not what was recorded
            for ch in self.salvage.channels.values():
                info = out.setdefault(ch.topic, TopicInfo(ch.topic, ch.msgtype, 0))
                info.count += ch.msgcount
            return out
        for name, info in self.reader.topics.items():
            counts = [c.msgcount for c in info.connections]
            count = sum(counts) if all(isinstance(c, int) for c in counts) else None
            out[name] = TopicInfo(name, info.msgtype or "?", count)
        return out

    def disagreement(self, topic: str) -> str:
        """Why the indexed reader finds none of the messages metadata.yaml lists on `topic`: what the
        storage file itself holds there, and what to do ("" when they agree or it cannot be scanned)."""
        if self.reader is None:
            return ""
        meta = next((t.get("topic_metadata") or {} for t in _bag_information(self.read_path).get(
            "topics_with_message_count") or [] if (t.get("topic_metadata") or {}).get("name") == topic), None)
        scan = _salvage(self.read_path, self.target) if meta is not None else None  # the file's own channels
        if scan is None:
            return ""
        said = f"its metadata.yaml lists {topic} as {meta.get('type')} ({meta.get('serialization_format')})"
        fix = "correct metadata.yaml, or move it aside and pass the storage file itself"
        same = [c for c in scan.channels.values() if c.topic == topic]
        if not same:
            held = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in scan.channels.values()})) or "no topics"
            return f"{said}, but its storage file has no such topic (it holds {held}): {fix}"
        c = same[0]
        if c.msgtype != meta.get("type"):
            return f"{said}, but its storage file holds {c.msgtype} there: {fix}"
        if c.encoding != "cdr":
            return (f"its storage file stores {topic} serialised as '{c.encoding}', not ROS 2's 'cdr': its messages "
                    "cannot be read here; re-record the topic")
        if meta.get("serialization_format") != c.encoding:
            return f"{said}, but its storage file says {c.encoding}: {fix}"
        return ""

    def listing(self) -> str:
        """One line: every topic with its type and message count."""
        parts = [f"{t.name} ({t.msgtype}, {t.count if t.count is not None else '?'} msgs)"
                 for t in self.topics().values()]
        return "; ".join(parts) or "no topics"

    def image_topic(self, requested: Optional[str] = None) -> TopicInfo:
        """The camera topic: the requested one, else the default raw/compressed topic, else the
        only image topic in the bag. A missing topic is an error that lists what the bag holds."""
        topics = self.topics()
        if not topics:  # rosbags opens an empty bag (no topics, no messages) without a word
            raise BagError(f"bag {self.path} holds no messages and no topics: its recording never started, or what it "
                           "recorded was lost; there is nothing to evaluate")
        if requested:
            t = topics.get(requested)
            if t is None:
                raise BagError(f"topic {requested} is not in bag {self.path}; the bag has: {self.listing()}")
            if t.msgtype not in IMAGE_TYPES:
                raise BagError(f"topic {requested} holds {t.msgtype}, not an image "
                               f"({' or '.join(IMAGE_TYPES)}); the bag has: {self.listing()}")
            return t
        for name in (DEFAULT_IMAGE_TOPIC, DEFAULT_COMPRESSED_TOPIC):
            if name in topics and topics[name].msgtype in IMAGE_TYPES:
                return topics[name]
        images = [t for t in topics.values() if t.msgtype in IMAGE_TYPES and "label" not in t.name
                  and not t.name.startswith("/segmentation/")]
        if len(images) == 1:
            return images[0]
        what = "no image topic" if not images else f"{len(images)} image topics"
        # a default camera topic of another type is the likelier mistake: name what it holds
        other = [f"{n} holds {topics[n].msgtype}, not an image" for n in (DEFAULT_IMAGE_TOPIC, DEFAULT_COMPRESSED_TOPIC)
                 if n in topics]
        raise BagError(f"bag {self.path} has {what} to choose from{' (' + '; '.join(other) + ')' if other else ''}; "
                       f"pass --image-topic. The bag has: {self.listing()}")

    def gt_topic(self, requested: Optional[str]) -> Optional[TopicInfo]:
        """The ground-truth topic: the requested one (must exist), else the default if present."""
        topics = self.topics()
        name = requested or DEFAULT_GT_TOPIC
        t = topics.get(name)
        if t is None:
            if requested:
                raise BagError(f"ground-truth topic {requested} is not in bag {self.path}; "
                               f"the bag has: {self.listing()}")
            return None
        if t.msgtype != IMAGE:
            raise BagError(f"ground-truth topic {name} holds {t.msgtype}; expected {IMAGE} (mono8 class ids): pass "
                           "--gt-dir with the labels as PNG files, " + ("" if requested else "--gt-topic another topic, ")
                           + "or --no-gt to measure speed only")
        return t

    # ----------------------------------------------------------------- messages
    def messages(self, topics: Sequence[str], decode: bool = True) -> Iterator[BagMessage]:
        """Messages of `topics` in recorded-time order. A message that does not deserialise is
        yielded with `error` set (a counted skip); a file that breaks off mid-way ends the
        iteration with a BagError naming how far it got (and sets ``self.damage``)."""
        if self.salvage is not None:
            yield from self._salvaged(topics, decode)
            return
        conns = [c for c in self.reader.connections if c.topic in topics]
        if not conns:
            return
        n, last = 0, None
        at_last: Dict[str, int] = {}  # messages per topic yielded at the last time stamp
        it = self.reader.messages(connections=conns)
        while True:
            try:
                conn, t_ns, raw = next(it)
            except StopIteration:
                return
            except (sqlite3.Error, OSError, ValueError, KeyError, EOFError, Exception) as e:
                if self._switch_to_salvage():  # sqlite: the pages after the damaged one still read
                    yield from self._salvaged(topics, decode, after=(last, at_last))
                    return
                when = f", the last recorded at {last / 1e9:.3f} s" if last is not None else ""
                # a garbage length field makes the reader ask for an impossible size
                why = "a record's length is garbage" if isinstance(e, (OverflowError, MemoryError)) else _one_line(e)
                self.damage = f"bag {self.path} is damaged after {n} messages of {', '.join(topics)}{when} ({why})"
                raise BagError(f"{self.damage}; re-record or repair it (e.g. 'ros2 bag reindex')") from None
            if t_ns != last:
                at_last = {}
            at_last[conn.topic] = at_last.get(conn.topic, 0) + 1
            n, last = n + 1, int(t_ns)
            yield self._message(conn.topic, conn.msgtype, int(t_ns), bytes(raw), decode)

    def _switch_to_salvage(self) -> bool:
        """After the indexed reader broke off mid-way: read the rest through the salvage reader
        (the pages of an sqlite3 file, the chunks of an .mcap, the files of a split bag after
        the damage are usually intact). False when it cannot help."""
        s = _salvage(self.read_path, self.target)
        if s is None or not s.message_count:
            return False
        self.salvage = s  # no damage found (e.g. only sqlite's time index was hit): nothing is lost
        self.damage = f"bag {self.path} is damaged: {s.damage.where()}" if s.damage else ""
        return True

    def _salvaged(self, topics: Sequence[str], decode: bool, after=(None, None)) -> Iterator[BagMessage]:
        """The salvage reader's messages; `after` = (time stamp, {topic: count}) of what the
        indexed reader already gave before it broke off, so that nothing comes twice."""
        last, at_last = after[0], dict(after[1] or {})
        for ch, t_ns, raw in self.salvage.records():
            if ch.topic not in topics:
                continue
            if last is not None and t_ns < last:
                continue
            if t_ns == last and at_last.get(ch.topic, 0) > 0:
                at_last[ch.topic] -= 1
                continue
            yield self._message(ch.topic, ch.msgtype, int(t_ns), raw, decode)
        if self.salvage.damage is not None:
            raise BagError(self.damage)

    def _message(self, topic: str, msgtype: str, t_ns: int, raw: bytes, decode: bool) -> BagMessage:
        m = BagMessage(topic, msgtype, t_ns, raw=raw)
        if raw[:4] == ZSTD_MAGIC:
            # rosbag2's per-message compression, left as stored: a bare .db3 has no metadata.yaml
            # to say so, and the salvage readers return messages as stored (CDR never starts so)
            try:
                m.raw = _zstd_decompress(raw)
            except Exception as e:
                m.error = f"cannot decompress {msgtype} on {topic} (zstd): {_one_line(e)}"
                return m
        return self.decode(m) if decode else m

    def decode(self, m: BagMessage) -> BagMessage:
        """Deserialise a message read with ``decode=False`` (sets ``msg``, or ``error``)."""
        if m.error:
            return m
        try:
            m.msg = self.ts.deserialize_cdr(m.raw, m.msgtype)
        except Exception as e:
            m.error = f"cannot deserialise {m.msgtype} on {m.topic}: {_one_line(e)}"
        return m


# --------------------------------------------------------------------- messages
def _header(t_ns: int, frame_id: str):
    ts = typestore()
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000)), frame_id=frame_id)


def image_msg(img: np.ndarray, encoding: str, t_ns: int, frame_id: str):
    """sensor_msgs/Image from a contiguous uint8 array (H x W or H x W x C)."""
    img = np.ascontiguousarray(img, np.uint8)
    Image = typestore().types[IMAGE]
    return Image(header=_header(t_ns, frame_id), height=int(img.shape[0]), width=int(img.shape[1]),
                 encoding=encoding, is_bigendian=0, step=int(img.strides[0]), data=img.reshape(-1))


def compressed_msg(data: bytes, fmt: str, t_ns: int, frame_id: str):
    CompressedImage = typestore().types[COMPRESSED]
    return CompressedImage(header=_header(t_ns, frame_id), format=fmt,
                           data=np.frombuffer(data, np.uint8).copy())


def camera_info_topic(image_topic: str) -> str:
    """image_transport's sibling of a raw image topic, where its CameraInfo is: /camera/image_raw ->
    /camera/camera_info; absolute stays absolute (/image_raw -> /camera_info, not the node
    namespace's camera_info). The node and the live evaluation's player both follow it."""
    base = image_topic.rstrip("/").rsplit("/", 1)[0] if "/" in image_topic.strip("/") else ""
    if base:
        return f"{base}/camera_info"
    return "/camera_info" if image_topic.startswith("/") else "camera_info"


def camera_info_msg(width: int, height: int, t_ns: int, frame_id: str, focal: Optional[float] = None):
    """A nominal pinhole CameraInfo (no distortion): enough for RViz/Foxglove to place the image.
    The datasets shipped here carry no calibration, so the focal length is a stated guess."""
    ts = typestore()
    f = float(focal or width)  # ~53 degrees horizontal field of view
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    Roi = ts.types["sensor_msgs/msg/RegionOfInterest"]
    return ts.types[CAMERA_INFO](
        header=_header(t_ns, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5, np.float64), k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1], np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1, 0], np.float64),
        binning_x=0, binning_y=0, roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


class BagWriter:
    """A new rosbag2 (metadata version 8) in mcap or sqlite3 storage.

    Version 8, not Jazzy's 9: Humble's rosbag2 reads `offered_qos_profiles` as one YAML string
    with numeric policies (9 writes a sequence with names), and Jazzy reads 8 as well.

    compress: mcap -> zstd-compressed chunks (what `ros2 bag record --storage-preset-profile
    zstd_fast` makes); sqlite3 -> zstd per message. Both are read by `ros2 bag info/play`."""

    def __init__(self, path: str | Path, fmt: str = "mcap", compress: bool = False):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
        if fmt not in FORMATS:
            raise BagError(f"unknown bag format '{fmt}'; valid choices: {', '.join(FORMATS)}")
        path = Path(path).expanduser()
        if path.exists():
            raise BagError(f"{path} exists already; a bag is written to a new folder: remove it or choose another")
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fmt = path, fmt
        self.writer = Writer(path, version=8,
                             storage_plugin=StoragePlugin.MCAP if fmt == "mcap" else StoragePlugin.SQLITE3)
        if compress:
            self.writer.set_compression(CompressionMode.STORAGE if fmt == "mcap" else CompressionMode.MESSAGE,
                                        CompressionFormat.ZSTD)
        self.writer.open()
        self.ts = typestore()
        self.conns: Dict[str, object] = {}
        self.counts: Dict[str, int] = {}

    def _conn(self, topic: str, msgtype: str):
        c = self.conns.get(topic)
        if c is None:
            c = self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
            self.counts[topic] = 0
        return c

    def set_custom_data(self, key: str, value: str) -> None:
        """A key of metadata.yaml's custom_data (rosbag2 keeps it; `ros2 bag info` ignores it)."""
        self.writer.set_custom_data(key, value)

    def write(self, topic: str, msg, t_ns: int) -> None:
        msgtype = msg.__msgtype__
        self.write_raw(topic, msgtype, bytes(self.ts.serialize_cdr(msg, msgtype)), t_ns)

    def write_raw(self, topic: str, msgtype: str, raw: bytes, t_ns: int) -> None:
        self.writer.write(self._conn(topic, msgtype), int(t_ns), raw)
        self.counts[topic] += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            if self.fmt == "mcap":  # checksums as `ros2 bag record` writes them (rosbags leaves 0)
                from .mcap_salvage import add_chunk_crcs
                for f in self.path.glob("*.mcap"):
                    add_chunk_crcs(f)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe(path: str | Path) -> str:
    """'N messages over S s: topic (type, count); ...' for messages and tests."""
    with BagReader(path) as r:
        if r.salvage is not None:
            s = r.salvage
            dur = (s.end_ns - s.start_ns) / 1e9 if s.message_count else 0.0
            return f"{s.message_count} readable messages over {dur:.2f} s: {r.listing()} ({r.damage})"
        dur = r.reader.duration / 1e9 if r.reader.message_count else 0.0
        return f"{r.reader.message_count} messages over {dur:.2f} s: {r.listing()}"


ZSTD_STORAGE = (".mcap.zstd", ".db3.zstd")


def _bare_compressed(path: Path) -> list:
    """Storage files zstd-compressed whole ('ros2 bag record --compression-mode file' writes
    rec_0.mcap.zstd) handed in without their metadata.yaml: the file itself, or a folder without
    one -- with the plain files beside them too, as an interrupted split recording leaves them
    (each file is compressed when the next one starts; the last is still plain). rosbags reads
    them only as metadata.yaml describes. [] for anything else."""
    if path.is_file():
        return [path] if path.name.endswith(ZSTD_STORAGE) else []
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return []
    packed = [f for f in path.iterdir() if f.name.endswith(ZSTD_STORAGE) and f.is_file()]
    if not packed:
        return []
    return sorted(packed + list(path.glob("*.mcap")) + list(path.glob("*.db3")))


def _decompress_copy(bag: Path, files: list):
    """(tempdir, folder holding each file decompressed under its name without .zstd -- a plain one
    linked as it is --, names of files cut short). A file that is not zstd at all, or a copy that
    cannot be written, is a BagError."""
    import shutil
    import tempfile
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd
        except ImportError:  # older rosbags bring zstandard
            zstd = None
    if zstd is not None:
        reader, errors = (lambda f: zstd.open(f, "rb")), (EOFError, zstd.ZstdError)
    else:
        import zstandard
        reader = lambda f: zstandard.ZstdDecompressor().stream_reader(open(f, "rb"), closefd=True)  # noqa: E731
        errors = (EOFError, zstandard.ZstdError)
    tmp = tempfile.TemporaryDirectory(prefix="seg_bag_zstd_")
    root = Path(tmp.name)
    cut, twins = [], []
    plain = {f.name for f in files if not f.name.endswith(ZSTD_STORAGE) and f.is_file()}
    for f in files:
        try:
            if not f.name.endswith(ZSTD_STORAGE):
                # a plain file as it is, with an sqlite write-ahead log beside it (merged later)
                for g in (f, f.parent / (f.name + "-wal"), f.parent / (f.name + "-shm")):
                    if g.is_file():
                        (root / g.name).symlink_to(g.resolve())
                continue
            if f.name[:-len(".zstd")] in plain:
                twins.append(f.name)
                continue  # its plain twin (compression interrupted, or 'zstd -d' kept both) is read
            # "xb": never through a link onto a file of the user's bag
            with reader(f) as src, open(root / f.name[:-len(".zstd")], "xb") as dst:
                # small reads: a cut file's last read fails, and loses what it had decoded
                shutil.copyfileobj(src, dst, 1 << 14)
        except EOFError:  # cut short (a copy that broke off): what came out is read as a damaged bag
            cut.append(f.name)
        except errors as e:
            tmp.cleanup()
            raise BagError(f"bag {bag}: {f.name} cannot be decompressed ({_one_line(e)}): it is not zstd or is "
                           "damaged") from None
        except OSError as e:
            tmp.cleanup()
            # the copy's side: a full or limited disk (a write's error names no file), the copy's own
            # path (open), or the link's (symlink_to names the user's file first, the link second)
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or e.filename is None or \
                    str(root) in str(e.filename) + str(getattr(e, "filename2", "") or ""):
                raise BagError(f"bag {bag}: cannot write the decompressed copy of {f.name} in {root.parent} "
                               f"({_one_line(e)}): free space there, or set TMPDIR to a larger folder") from None
            raise BagError(f"bag {bag}: cannot read {f.name} ({_one_line(e)})") from None
    return tmp, root, cut, twins


WAL_MAGIC = (0x377F0682, 0x377F0683)


def _wal_cut(wal: Path) -> str:
    """Why sqlite's write-ahead log `wal` is cut short ("" when it is not): the log is a 32-byte
    header, then frames of (page size + 24) bytes each; a size that is not a whole number of frames
    is a log that broke off (a copy cut short), and sqlite drops every frame after the last commit
    that is whole. A log sqlite would not read at all (no WAL magic, a bad page size) is not judged.

    A log of exactly its 32-byte header is not judged cut either: sqlite writes the header only in the
    call that writes the log's first frames, right before them (sqlite3WalFrames), and never truncates a
    log to 32 bytes (wal_checkpoint(TRUNCATE) and journal_size_limit leave 0 bytes or whole frames), but a
    writer that stops between the two writes (killed, disk full) leaves just the header, and with it no
    committed row lost. A copy cut right after the header looks the same; metadata.yaml's counts, where
    there is one, tell the two apart (the frames it lists and the file lacks)."""
    try:
        size = wal.stat().st_size
        with open(wal, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return ""
    if 0 < size < 32:
        return f"{wal.name} is cut short ({size} bytes, less than its 32-byte header)"
    magic, _, page = struct.unpack(">III", head[:12])
    if magic not in WAL_MAGIC or page < 512 or page > 65536 or page & (page - 1):
        return ""
    frame = page + 24
    if (size - 32) % frame:
        return (f"{wal.name} is cut short ({size:,} bytes: {(size - 32) // frame:,} whole frames of {frame:,} bytes "
                "and part of another)")
    return ""


def _message_rows(db: Path, immutable: bool) -> Optional[int]:
    """Rows of rosbag2's messages table as sqlite reads them (immutable: the file alone, ignoring a
    -wal beside it); 0 without the table, None when sqlite cannot read the file."""
    from urllib.parse import quote
    try:
        con = sqlite3.connect(f"file:{quote(str(db))}?{'immutable=1' if immutable else 'mode=ro'}", uri=True)
        try:
            return int(con.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        return 0 if "no such table" in str(e) else None
    except sqlite3.Error:
        return None


def _merge_wal(path: Path, target: Path):
    """rosbags reads .db3 files as immutable, so rows still in a <file>.db3-wal (sqlite's write-ahead
    log, which an interrupted recording in WAL mode leaves) are never seen. Returns (merged, failed, cut):
    merged, where such a log holds anything, is (tempdir, path, target, {file: messages the log added,
    None when unknown}) of a copy of the bag with each log merged into its file by sqlite itself, else
    None; failed, why the merge failed ("" without a log or when it worked); cut, a sentence per log
    that is cut short (``_wal_cut``), whose messages after its last whole commit are lost either way."""
    import shutil
    import tempfile
    files = [target] if target.is_file() else sorted(path.glob("*.db3")) if path.is_dir() else []
    walled = [f for f in files if f.suffix == ".db3" and (f.parent / (f.name + "-wal")).is_file()
              and (f.parent / (f.name + "-wal")).stat().st_size > 0]
    # sqlite deletes the log of a database file without a page (a recording in WAL mode cut before
    # its first checkpoint leaves a 0-byte .db3): merged, it would add nothing, without a word
    headless = [f for f in walled if f.stat().st_size < 100]
    unread = (f"{', '.join(f.name for f in headless)} {'is' if len(headless) == 1 else 'are'} empty or cut within "
              f"sqlite's 100-byte header beside a write-ahead log of "
              f"{', '.join(format((f.parent / (f.name + '-wal')).stat().st_size, ',') for f in headless)} bytes: "
              "sqlite cannot apply a log to a database file without its first page (a recording cut before "
              "its first checkpoint), so the messages in the log are not read") if headless else ""
    walled = [f for f in walled if f not in headless]
    if not walled:
        return None, unread, []
    cut = [c for c in (_wal_cut(f.parent / (f.name + "-wal")) for f in walled) if c]
    tmp = tempfile.TemporaryDirectory(prefix="seg_bag_wal_")
    root = Path(tmp.name)
    added: Dict[str, Optional[int]] = {}
    try:
        sources = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else \
            [p for p in (path, path.parent / (path.name + "-wal"), path.parent / (path.name + "-shm")) if p.is_file()]
        for p in sources:  # copyfile: the copy is writable (a read-only bag's mode would stop the merge)
            shutil.copyfile(p, root / p.name)
        for f in walled:
            before = _message_rows(root / f.name, immutable=True)  # as rosbags would read it: the log ignored
            con = sqlite3.connect(str(root / f.name))
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                con.close()
            after = _message_rows(root / f.name, immutable=False)
            added[f.name] = after - before if before is not None and after is not None else None
    except (OSError, sqlite3.Error) as e:
        tmp.cleanup()  # the bag is read as it is; the rows of its log are not, and the note says so
        return None, f"{', '.join(f.name for f in walled)} had rows in a write-ahead log (-wal) that could not be " \
            f"merged into a copy ({_one_line(e)}): they are not read", cut
    copy = root if path.is_dir() else root / path.name
    return (tmp, copy, (root / target.name if target != path else copy), added), unread, cut


_KINDS = ((b"\x89MCAP0\r\n", "mcap"), (b"SQLite format 3\x00", "sqlite3"), (ZSTD_MAGIC, "zstd"),
          (b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"))


def _file_kind(f: Path) -> str:
    """What a file is by its first bytes: mcap, sqlite3, zstd, gzip, zip; "" for anything else
    (and for an empty or unreadable file)."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return ""
    return next((kind for magic, kind in _KINDS if head.startswith(magic)), "")


def _not_storage(target: Path) -> str:
    """Why a file handed in is no rosbag2 storage file at all (a PNG, an archive), so that it is not
    called damaged; "" for a storage file, a folder or an empty file (the salvage readers say those)."""
    if not target.is_file() or target.stat().st_size == 0:
        return ""
    kind = _file_kind(target)
    if kind in ("mcap", "sqlite3") or (not kind and target.suffix in (".mcap", ".db3")):
        return ""  # a storage file, or one damaged at its start: the salvage readers say where
    if kind == "zstd":
        return f"{target.name} is zstd-compressed: decompress it ('zstd -d') and pass the result"
    if kind:
        return (f"{target.name} is a {kind} archive, not a rosbag2 file: unpack it and pass the bag folder or its "
                ".mcap/.db3 file")
    return (f"{target.name} is not a rosbag2 file (it starts like neither an MCAP nor an sqlite3 file): pass a bag "
            "folder (with metadata.yaml) or its .mcap/.db3 file")


def _salvage(path: Path, target: Path):
    """A bag the indexed reader refuses or breaks off in, read by the salvage readers (.mcap in
    file order, .db3 page by page, a bag of several files file by file); None for files they
    do not read (another format, whole-file compression)."""
    from .mcap_salvage import McapSalvage
    from .split_salvage import SplitSalvage, split_files
    from .sqlite_salvage import SqliteSalvage
    info = _bag_information(path)
    mode = str(info.get("compression_mode") or "").lower()
    listed = [Path(str(p)).name for p in info.get("relative_file_paths") or []] if target.is_dir() else []
    if listed:  # only the files metadata.yaml lists are the recording (a stale file beside them is not)
        # a listed file compressed whole is read as its plain twin where that is there (see _decompress_copy)
        listed = [n[:-len(".zstd")] if n.endswith(ZSTD_STORAGE) and (target / n[:-len(".zstd")]).is_file() else n
                  for n in listed]
        files = [target / n for n in listed if (target / n).is_file()]
    else:
        files = [target] if target.is_file() else list(target.glob("*.mcap")) + list(target.glob("*.db3"))
    if not files or len({f.suffix for f in files}) != 1 or files[0].suffix not in (".mcap", ".db3"):
        return None
    if mode == "file" and any(_file_kind(f) not in ("mcap", "sqlite3") for f in files):
        return None  # compressed whole: nothing to read record by record (plain ones, despite metadata.yaml, are)

    def scan(f: Path):
        return McapSalvage.scan(f) if f.suffix == ".mcap" else SqliteSalvage.scan(f)
    if len(files) == 1 and len(listed) <= 1:
        s = scan(files[0])
    else:
        s = SplitSalvage([(name, scan(f) if f else None) for name, f in split_files(files, listed)])
    return s


def _bag_information(path: Path) -> dict:
    """metadata.yaml's rosbag2_bagfile_information ({} without a readable one)."""
    meta = path / "metadata.yaml" if path.is_dir() else path.parent / "metadata.yaml"
    if not meta.is_file():
        return {}
    try:
        import yaml
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        return info if isinstance(info, dict) else {}
    except Exception:  # a damaged metadata.yaml costs only what it would have told
        return {}


def _recorded_counts(info: dict) -> Dict[str, int]:
    """Messages per topic as metadata.yaml recorded them: what a damaged file should have held."""
    try:
        return {t["topic_metadata"]["name"]: int(t["message_count"]) for t in info["topics_with_message_count"]}
    except Exception:
        return {}


def bag_size(path: str | Path) -> int:
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
