"""Recordings cut short or damaged: every frame before the damage is evaluated, the report
and one stderr line say how many were lost and where, and the exit code (5) says "partial";
live mode announces the frames it will really play."""
from __future__ import annotations

import json
import sqlite3
import struct
import zlib

import numpy as np
import pytest

from seg_perception.cli import main
from seg_perception.data import bag_io
from seg_perception.data.mcap_salvage import McapSalvage
from seg_perception.data.sqlite_salvage import SqliteSalvage

T0 = 1_700_000_000 * 10**9
FRAMES = 6


def chunky_bag(path, fmt="mcap", compress=False, frames=FRAMES):
    """Small frames with ground truth; a 600 kB padding message per frame makes the mcap
    writer close a (1 MiB) chunk every two frames, as a real camera recording does (and fills
    ~150 overflow pages per frame in sqlite3)."""
    rng = np.random.default_rng(0)
    with bag_io.BagWriter(path, fmt, compress=compress) as w:
        for n in range(frames):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", t, "c"), t)
            w.write("/padding", bag_io.image_msg(rng.integers(0, 255, (750, 800), np.uint8), "mono8", t, "c"), t)
    return path


def _chunks(data: bytes):
    pos, out = 8, []
    while pos < len(data) and data[pos] != 0x0F:  # up to DataEnd
        (n,) = struct.unpack_from("<Q", data, pos + 1)
        if data[pos] == 0x06:
            out.append(pos)
        pos += 9 + n
    return out


def _mcap(bag):
    return next(bag.glob("*.mcap"))


def set_counts(bag, counts) -> None:
    """Write metadata.yaml's message count of each topic in ``counts`` ({topic: n}; "*": every topic)."""
    import yaml
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    for t in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        name = t["topic_metadata"]["name"]
        if name in counts or "*" in counts:
            t["message_count"] = counts.get(name, counts.get("*"))
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))


def run(capsys, *args):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cut_recording_is_evaluated_up_to_the_cut(tmp_path, capsys, random_model):
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = f.read_bytes()
    chunks = _chunks(data)
    assert len(chunks) == 3
    f.write_bytes(data[: chunks[2] + 1000])  # power lost while the third chunk was written
    d = McapSalvage.scan(f).damage  # the chunk is read up to the cut: no whole record of it there
    assert d.offset == chunks[2] + 1000 and d.reason == f"it ends inside the chunk at byte {chunks[2]:,}, read up to " \
                                                         "the cut"
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "partial result (exit 5)" in lines[0]
    assert "is cut short after 12 messages" in lines[0] and "4 frames can be read" in lines[0]
    assert "2 of the 6 recorded frames on /camera/image_raw are lost" in lines[0]
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["frames"]["in"] == 4 and m["segmentation"]["frames_scored"] == 4 and "2 of the 6" in m["partial"]
    assert "**Partial result:**" in (tmp_path / "r" / "report.md").read_text()
    # Without metadata.yaml (the recorder never wrote it) the lost count is unknown, and said so.
    (bag / "metadata.yaml").unlink()
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1)
    assert rc == 5 and "4 frames can be read" in err and "how many: unknown" in err


def test_recording_cut_at_a_record_boundary_is_partial(tmp_path, capsys, random_model):
    """Every record of a file cut between two records reads, but the data section never ends
    (no DataEnd, no footer): that is a recording cut short, not a whole bag of fewer frames."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = f.read_bytes()
    f.write_bytes(data[:_chunks(data)[2]])  # the third chunk never written
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "offline: 4 frames in" in out, (out, err)
    assert f"its file ({_chunks(data)[2]:,} bytes) is cut short after 12 messages" in err
    assert "2 of the 6 recorded frames on /camera/image_raw are lost" in err
    alone = tmp_path / "rec.mcap"  # the file alone, as a recorder killed before metadata.yaml leaves it
    alone.write_bytes(f.read_bytes())
    rc, out, err = run(capsys, "eval-bag", alone, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1)
    assert rc == 5 and "cut short after 12 messages" in err and "how many: unknown" in err, (out, err)
    alone.write_bytes(data[:8])  # the magic and nothing else
    rc, out, err = run(capsys, "eval-bag", alone, "--model", random_model, "--out", tmp_path / "r3")
    line = err.strip()
    assert rc == 2 and "nothing in it can be read (its file (8 bytes) is cut short after 0 messages" in line, line


def test_damaged_chunk_loses_only_its_frames(tmp_path, capsys, random_model):
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # the second chunk's checksum (frames 2 and 3)
    f.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5, err
    assert f"1 damaged chunk, skipped (the first at byte {c:,}: chunk checksum mismatch)" in err
    assert "4 frames can be read, 2 of the 6 recorded" in err
    assert "[eval-bag] offline: 4 frames in, 4 out" in out
    with bag_io.BagReader(bag) as r:
        stamps = []
        with pytest.raises(bag_io.BagError):
            for m in r.messages(["/camera/image_raw"]):
                stamps.append(m.t_ns)
    assert stamps == [T0 + n * 10**8 for n in (0, 1, 4, 5)]


def test_broken_record_inside_a_chunk_loses_the_rest_of_that_chunk(tmp_path):
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    (n,) = struct.unpack_from("<I", data, c + 9 + 28)  # chunk: start, end, size, crc, compression, records
    pos = c + 9 + 28 + 4 + n + 8
    for _ in range(3):  # frame 2's image, ground truth, padding: frame 3's image comes next
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        pos += 9 + length
    assert data[pos] == 0x05 and struct.unpack_from("<Q", data, pos + 9 + 6)[0] == T0 + 3 * 10**8
    data[pos + 1:pos + 9] = struct.pack("<Q", 2**62)  # its length made garbage
    data[c + 9 + 24:c + 9 + 28] = bytes(4)  # and no checksum (0: "not computed") to catch it first
    f.write_bytes(bytes(data))
    s = McapSalvage.scan(f)
    assert s.damage.offset is None and s.damage.skipped == [(c, "record cut short")]
    assert "1 damaged chunk, skipped" in s.damage.where()
    read = [t for ch, t, _ in s.records() if ch.topic == "/camera/image_raw"]
    assert read == [T0 + k * 10**8 for k in (0, 1, 2, 4, 5)]  # frame 3 on: lost up to the chunk's end


def test_an_end_of_data_opcode_inside_a_chunk_loses_only_the_rest_of_that_chunk(tmp_path):
    """A damaged byte that reads as DataEnd inside a chunk (no checksum to catch it) is the
    chunk's damage: the later chunks are still read, not taken for the end of the file."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    (n,) = struct.unpack_from("<I", data, c + 9 + 28)
    pos = c + 9 + 28 + 4 + n + 8
    for _ in range(3):  # frame 2's image, ground truth, padding: frame 3's image comes next
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        pos += 9 + length
    assert data[pos] == 0x05
    data[pos] = 0x0F  # DataEnd
    data[c + 9 + 24:c + 9 + 28] = bytes(4)  # no checksum (0: "not computed")
    f.write_bytes(bytes(data))
    s = McapSalvage.scan(f)
    read = [t for ch, t, _ in s.records() if ch.topic == "/camera/image_raw"]
    assert read == [T0 + k * 10**8 for k in (0, 1, 2, 4, 5)]
    assert s.damage.skipped == [(c, "end-of-data record 0x0f inside a chunk")], s.damage.skipped


def test_unreadable_cut_file_is_one_line(tmp_path, capsys, random_model):
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    f.write_bytes(f.read_bytes()[: _chunks(f.read_bytes())[0] + 100])  # nothing before the cut
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "cannot open bag" in err


def test_live_announces_the_frames_it_really_plays(tmp_path, capsys, random_model):
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = f.read_bytes()
    f.write_bytes(data[: _chunks(data)[2] + 1000])
    rc, out, err = run(capsys, "eval-bag", bag, "--mode", "live", "--model", random_model, "--out", tmp_path / "r",
                       "--threads", 1, "--rate", 5)
    assert "playing 4 frames (of 6 recorded; bag" in out, out
    assert rc == 5 and "2 of the 6 recorded frames" in err, err


# ------------------------------------------------------------------ sqlite3 (.db3) bags
def sqlite_bag(path, compress=False, frames=FRAMES):
    return chunky_bag(path, "sqlite3", compress, frames)


def _db3(bag):
    return next(bag.glob("*.db3"))


def _rows(db):
    """{row id: (topic name, timestamp, data)} as sqlite itself reads the whole file."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {i: (t, ts, bytes(d)) for i, t, ts, d in con.execute(
            "SELECT m.id, t.name, m.timestamp, m.data FROM messages m JOIN topics t ON t.id = m.topic_id")}
    finally:
        con.close()


def _pages_of_rows(db):
    """{row id: (its leaf page, [its overflow pages])}, from sqlite's own dbstat table: an
    account of the file's layout independent of the salvage reader's parsing."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ids = [i for (i,) in con.execute("SELECT id FROM messages ORDER BY id")]
        stat = con.execute("SELECT path, pageno, pagetype, ncell FROM dbstat WHERE name = 'messages'").fetchall()
    except sqlite3.OperationalError as e:  # an sqlite built without dbstat
        pytest.skip(f"sqlite has no dbstat table: {e}")
    finally:
        con.close()
    cells, overflow = [], {}
    for path, pageno, kind, ncell in stat:  # leaves come in key order
        if kind == "leaf":
            cells += [(path + f"{c:03x}", pageno) for c in range(ncell)]
        elif kind == "overflow":
            overflow.setdefault(path.split("+")[0], []).append(pageno)
    assert len(cells) == len(ids)
    return {i: (leaf, overflow.get(key, [])) for i, (key, leaf) in zip(ids, cells)}


def test_cut_sqlite_bag_reads_every_intact_message(tmp_path, capsys, random_model):
    bag = sqlite_bag(tmp_path / "bag")
    db = _db3(bag)
    whole, pages = _rows(db), _pages_of_rows(db)
    data = db.read_bytes()
    page = 4096
    keep = int(len(data) * 0.55) // page  # a copy that broke off: the first 55 % of the pages
    db.write_bytes(data[: keep * page + 700])
    intact = {i for i, (leaf, over) in pages.items() if max([leaf] + over) <= keep}
    assert 0 < len(intact) < len(whole)
    with pytest.raises(sqlite3.DatabaseError):  # what sqlite (and so rosbags) makes of it
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT count(*) FROM messages").fetchone()
    s = SqliteSalvage.scan(db)
    got = [(ch.topic, t, raw) for ch, t, raw in s.records()]
    assert sorted(got, key=lambda m: m[1]) == got  # recorded-time order
    assert sorted(got) == sorted(whole[i] for i in intact)  # every intact message, byte for byte, no other
    assert f"ends after page {keep:,} of {len(data) // page:,}" in s.damage.where()
    frames = sum(1 for i in intact if whole[i][0] == "/camera/image_raw")
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5, err
    assert f"[eval-bag] offline: {frames} frames in, {frames} out" in out
    assert f"{FRAMES - frames} of the {FRAMES} recorded frames on /camera/image_raw are lost" in err
    assert len(err.strip().splitlines()) == 1


def test_damaged_sqlite_page_loses_only_its_messages(tmp_path, capsys, random_model):
    """A page in the middle overwritten: rosbags stops there; the pages after it are read on."""
    bag = sqlite_bag(tmp_path / "bag")
    db = _db3(bag)
    whole, pages = _rows(db), _pages_of_rows(db)
    frame3 = next(i for i in whole if whole[i][0] == "/camera/image_raw" and whole[i][1] == T0 + 3 * 10**8)
    leaf = pages[frame3][0]
    lost = {i for i, (their_leaf, _) in pages.items() if their_leaf == leaf}  # the rows on that page
    data = bytearray(db.read_bytes())
    data[(leaf - 1) * 4096:leaf * 4096] = np.random.default_rng(1).integers(0, 255, 4096, np.uint8).tobytes()
    db.write_bytes(bytes(data))
    with bag_io.BagReader(bag) as r:
        got, err = [], None
        try:
            for m in r.messages(["/camera/image_raw", "/camera/labels_gt", "/padding"], decode=False):
                got.append((m.topic, m.t_ns, m.raw))
        except bag_io.BagError as e:
            err = str(e)
    assert sorted(got) == sorted(whole[i] for i in set(whole) - lost)  # each once, byte for byte
    assert err and "has damaged pages" in err
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    frames = sum(1 for i in set(whole) - lost if whole[i][0] == "/camera/image_raw")
    assert rc == 5 and f"offline: {frames} frames in" in out, (out, err)


@pytest.mark.parametrize("page_size", [0, 3, 40000])
def test_damaged_sqlite_header_page_size(tmp_path, capsys, random_model, page_size):
    """The header's page size overwritten (0 once raised ZeroDivisionError; 3 or 40000 read nothing):
    the pages are found at SQLite's sizes and every message is read; with no page found at any
    size either, one line says the header is damaged."""
    bag = sqlite_bag(tmp_path / "bag", frames=2)
    db = _db3(bag)
    whole = _rows(db)
    data = bytearray(db.read_bytes())
    data[16:18] = struct.pack(">H", page_size)
    db.write_bytes(bytes(data))
    s = SqliteSalvage.scan(db)
    assert sorted((ch.topic, t, raw) for ch, t, raw in s.records()) == sorted(whole.values())
    for size in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
        data[size] = 0  # no b-tree page where page 2 would start at any page size
    db.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "sqlite3 header is damaged" in err, (out, err)


def test_cut_humble_db3_without_metadata(tmp_path, capsys, random_model):
    """A bare .db3 as ROS 2 Humble records it (5-column topics table), cut short, no metadata.yaml."""
    db = tmp_path / "humble" / "humble_0.db3"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
        CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
        CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                            serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
        CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                              data BLOB NOT NULL);
        CREATE INDEX timestamp_idx ON messages (timestamp ASC);
        INSERT INTO schema VALUES (3, 'humble');""")
    con.executemany("INSERT INTO topics VALUES (?, ?, ?, 'cdr', ?)",
                    [(1, "/cam/image", bag_io.IMAGE, "- history: 3\n" * 40), (2, "/padding", bag_io.IMAGE, "")])
    ts = bag_io.typestore()
    rng = np.random.default_rng(2)
    for n in range(8):
        t = T0 + n * 10**8
        for topic_id, shape in ((1, (48, 64, 3)), (2, (600, 800))):
            msg = bag_io.image_msg(rng.integers(0, 255, shape, np.uint8), "rgb8" if len(shape) == 3 else "mono8", t, "c")
            con.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                        (topic_id, t, bytes(ts.serialize_cdr(msg, bag_io.IMAGE))))
    con.commit()
    con.close()
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with bag_io.BagReader(db.parent) as r:
        assert r.salvage is not None and r.image_topic("/cam/image").msgtype == bag_io.IMAGE
        images = []
        with pytest.raises(bag_io.BagError, match="ends after page"):
            for m in r.messages(["/cam/image"]):
                images.append(m)
    assert 2 <= len(images) < 8 and [m.msg.width for m in images] == [64] * len(images)
    assert [m.t_ns for m in images] == [T0 + n * 10**8 for n in range(len(images))]
    rc, out, err = run(capsys, "eval-bag", db.parent, "--model", random_model, "--image-topic", "/cam/image",
                       "--no-gt", "--threads", 1, "--out", tmp_path / "r")
    assert rc == 5 and f"offline: {len(images)} frames in" in out and "how many: unknown" in err, (out, err)


def test_cut_sqlite_bag_with_compressed_messages(tmp_path):
    bag = sqlite_bag(tmp_path / "bag", compress=True, frames=12)
    db = _db3(bag)
    with bag_io.BagReader(bag) as r:
        whole = [(m.topic, m.t_ns, m.raw) for m in r.messages(["/camera/image_raw", "/padding"], decode=False)]
    data = db.read_bytes()
    db.write_bytes(data[: len(data) * 2 // 3])
    with bag_io.BagReader(bag) as r:
        assert r.salvage is not None
        got = []
        with pytest.raises(bag_io.BagError, match="ends after page"):
            for m in r.messages(["/camera/image_raw", "/padding"], decode=False):
                got.append((m.topic, m.t_ns, m.raw))
    assert 0 < len(got) < len(whole) and got == whole[:len(got)]  # decompressed, the recorded bytes


def test_written_mcap_chunks_carry_checksums_that_catch_a_changed_pixel(tmp_path, capsys, random_model):
    """BagWriter (make-bag) writes chunk CRCs as `ros2 bag record` does; rosbags' writer leaves 0."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    for c in _chunks(bytes(data)):  # uncompressed chunks: the CRC is over the records as stored
        (crc,) = struct.unpack_from("<I", data, c + 9 + 24)
        (n,) = struct.unpack_from("<I", data, c + 9 + 28)
        (size,) = struct.unpack_from("<Q", data, c + 9 + 32 + n)
        at = c + 9 + 32 + n + 8
        assert crc == zlib.crc32(bytes(data[at:at + size])) != 0
    c = _chunks(bytes(data))[2]
    data[c + 5000] ^= 0x01  # one bit of frame 4's pixels
    f.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "chunk checksum mismatch" in err and "offline: 4 frames in" in out, (out, err)


def test_compressed_chunks_get_checksums_too(tmp_path):
    with bag_io.BagWriter(tmp_path / "z", "mcap", compress=True) as w:
        for n in range(3):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(np.full((48, 64, 3), n, np.uint8), "rgb8", t, "c"), t)
    data = _mcap(tmp_path / "z").read_bytes()
    crcs = [struct.unpack_from("<I", data, c + 9 + 24)[0] for c in _chunks(data)]
    assert crcs and all(crcs)
    with bag_io.BagReader(tmp_path / "z") as r:  # rosbags checks them as it decompresses
        assert [m.msg.data[0] for m in r.messages(["/camera/image_raw"])] == [0, 1, 2]


def split_bag(path, fmt, parts=3, per=2):
    """A bag split over `parts` files as `ros2 bag record --max-bag-size` leaves it: per file
    `per` frames (with padding), one metadata.yaml listing the files in order."""
    import shutil
    import yaml
    rng = np.random.default_rng(0)
    ext = ".mcap" if fmt == "mcap" else ".db3"
    path.mkdir()
    infos = []
    for k in range(parts):
        part = path.parent / f"{path.name}_part{k}"
        with bag_io.BagWriter(part, fmt) as w:
            for n in range(k * per, (k + 1) * per):
                t = T0 + n * 10**8
                w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
                w.write("/padding", bag_io.image_msg(rng.integers(0, 255, (750, 800), np.uint8), "mono8", t, "c"), t)
        info = yaml.safe_load((part / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        name = f"{path.name}_{k}{ext}"
        shutil.move(next(part.glob("*" + ext)), path / name)
        info["files"][0]["path"] = name
        infos.append(info)
    meta = infos[0]
    meta["files"] = [i["files"][0] for i in infos]
    meta["relative_file_paths"] = [f["path"] for f in meta["files"]]
    meta["message_count"] = sum(i["message_count"] for i in infos)
    for t in meta["topics_with_message_count"]:
        t["message_count"] = parts * per
    (path / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": meta}))
    return path


@pytest.mark.parametrize("fmt", ["mcap", "sqlite3"])
def test_split_bag_with_its_last_file_cut_reads_the_other_files(tmp_path, capsys, random_model, fmt):
    bag = split_bag(tmp_path / "split", fmt)
    with bag_io.BagReader(bag) as r:  # whole: the indexed reader, every frame
        assert [m.t_ns for m in r.messages(["/camera/image_raw"])] == [T0 + n * 10**8 for n in range(6)]
    last = sorted(bag.glob("split_2.*"))[0]
    keep = last.stat().st_size // 2
    if fmt == "mcap":  # frames 4 and 5 share one chunk, and the cut is inside it, in frame 4's padding:
        (chunk,) = _chunks(last.read_bytes())  # the chunk is read up to the cut, frame 4's image with it
        frames = 5
    else:  # each message whose pages are all before the cut survives (sqlite's own account of them)
        rows, pages = _rows(last), _pages_of_rows(last)
        frames = 4 + sum(1 for i, (leaf, over) in pages.items()
                         if rows[i][0] == "/camera/image_raw" and max([leaf] + over) <= keep // 4096)
    last.write_bytes(last.read_bytes()[:keep])
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                       "--threads", 1)
    assert rc == 5 and f"offline: {frames} frames in" in out, (out, err)
    assert f"file {last.name} (3 of 3): its file" in err and f"{6 - frames} of the 6 recorded frames" in err


def test_split_bag_with_a_file_gone_names_it(tmp_path, capsys, random_model):
    bag = split_bag(tmp_path / "split", "mcap")
    (bag / "split_1.mcap").unlink()
    with bag_io.BagReader(bag) as r:
        stamps = []
        with pytest.raises(bag_io.BagError, match=r"file split_1.mcap \(2 of 3\): missing"):
            for m in r.messages(["/camera/image_raw"]):
                stamps.append(m.t_ns)
    assert stamps == [T0 + n * 10**8 for n in (0, 1, 4, 5)]


def test_split_recording_without_metadata_names_a_lost_first_or_cut_middle_file(tmp_path, capsys, random_model):
    """rosbag2 numbers a split recording's files from 0: without _0 the recording lost its start.
    A middle file cut between two records loses its frames too, and is named."""
    bag = split_bag(tmp_path / "split", "mcap")
    (bag / "metadata.yaml").unlink()
    (bag / "split_0.mcap").unlink()
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                       "--threads", 1)
    assert rc == 5 and "offline: 4 frames in" in out and "file split_0.mcap (1 of 3): missing" in err, (out, err)
    bag = split_bag(tmp_path / "mid", "mcap")
    (bag / "metadata.yaml").unlink()
    middle = bag / "mid_1.mcap"
    data = middle.read_bytes()
    (chunk,) = _chunks(data)
    middle.write_bytes(data[:chunk])  # its one chunk (frames 2 and 3) never written
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r2",
                       "--threads", 1)
    assert rc == 5 and "offline: 4 frames in" in out, (out, err)
    assert f"file mid_1.mcap (2 of 3): its file ({chunk:,} bytes) is cut short after 0 messages" in err


def test_split_recording_without_metadata_reads_its_files_in_order(tmp_path):
    """The recorder killed: no metadata.yaml, the last file cut; rosbag2 numbers its files
    without padding (bag_10 sorts before bag_8 by name), and a gap in the numbers is a lost file."""
    bag = split_bag(tmp_path / "split", "sqlite3", parts=3, per=1)
    (bag / "metadata.yaml").unlink()
    for k in (2, 1, 0):
        (bag / f"split_{k}.db3").rename(bag / f"split_{k + 8}.db3")
    last = bag / "split_10.db3"
    last.write_bytes(last.read_bytes()[:4096 * 3])  # nothing of frame 2 left
    with bag_io.BagReader(bag) as r:
        stamps = []
        # numbered from 0: files 0 to 7 are missing (named once), and 10 is cut
        with pytest.raises(bag_io.BagError, match=r"^bag .*: files split_0.db3 to split_7.db3 \(1 to 8 of 11\): "
                                                  r"missing; file split_10.db3 \(11 of 11\)"):
            for m in r.messages(["/camera/image_raw"]):
                stamps.append(m.t_ns)
    assert stamps == [T0, T0 + 10**8]
    (bag / "split_9.db3").unlink()
    with bag_io.BagReader(bag) as r:
        stamps = []
        with pytest.raises(bag_io.BagError, match=r"file split_9.db3 \(10 of 11\): missing; file split_10.db3"):
            for m in r.messages(["/camera/image_raw"]):
                stamps.append(m.t_ns)
    assert stamps == [T0]


def test_damaged_sqlite_time_index_loses_nothing(tmp_path, capsys, random_model):
    """rosbags reads in timestamp order through the index; with the index's pages hit, every
    message is still read, from the table itself."""
    bag = sqlite_bag(tmp_path / "bag")
    db = _db3(bag)
    whole = _rows(db)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    index_pages = [p for (p,) in con.execute("SELECT pageno FROM dbstat WHERE name = 'timestamp_idx'")]
    con.close()
    data = bytearray(db.read_bytes())
    for p in index_pages:
        data[(p - 1) * 4096:p * 4096] = bytes([0xEE]) * 4096
    db.write_bytes(bytes(data))
    with bag_io.BagReader(bag) as r:
        got = [(m.topic, m.t_ns, m.raw) for m in r.messages(["/camera/image_raw", "/camera/labels_gt", "/padding"],
                                                            decode=False)]
        assert r.salvage is not None and r.damage == ""
    assert sorted(got) == sorted(whole.values())
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0 and f"offline: {FRAMES} frames in" in out, (out, err)


def test_compressed_sqlite_bag_without_metadata_decompresses(tmp_path):
    """Only metadata.yaml says "compression_mode: message"; without it the zstd frames are
    recognised by their magic number, on the indexed path and on the salvage path."""
    bag = sqlite_bag(tmp_path / "bag", compress=True, frames=4)
    with bag_io.BagReader(bag) as r:
        whole = [(m.topic, m.t_ns, m.raw) for m in r.messages(["/camera/image_raw"], decode=False)]
    (bag / "metadata.yaml").unlink()
    with bag_io.BagReader(bag) as r:
        assert r.salvage is None
        got = [m for m in r.messages(["/camera/image_raw"])]
    assert [(m.topic, m.t_ns, m.raw) for m in got] == whole and all(m.msg is not None for m in got)
    db = _db3(bag)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    with bag_io.BagReader(db) as r:
        assert r.salvage is not None
        got = []
        with pytest.raises(bag_io.BagError):
            for m in r.messages(["/camera/image_raw"]):
                got.append(m)
    assert got and [(m.topic, m.t_ns, m.raw) for m in got] == whole[:len(got)] and all(m.msg for m in got)


def test_damaged_first_chunk_keeps_the_later_ones(tmp_path, capsys, random_model):
    """The channels are written once, inside the first chunk; the summary at the end repeats them."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[0]
    data[c + 4000:c + 4000 + 4096] = bytes(4096)  # a zeroed block inside frame 0's pixels
    f.write_bytes(bytes(data))
    s = McapSalvage.scan(f)
    assert s.damage.skipped == [(c, "chunk checksum mismatch")] and s.damage.offset is None
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "offline: 4 frames in" in out and "2 of the 6 recorded frames" in err, (out, err)


def test_index_that_promises_more_frames_than_the_file_holds_is_partial(tmp_path, capsys, random_model):
    bag = sqlite_bag(tmp_path / "bag")
    set_counts(bag, {"/camera/image_raw": 20})
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and f"offline: {FRAMES} frames in" in out, (out, err)
    assert f"holds {FRAMES} of the 20 messages its index lists on /camera/image_raw" in err
    assert f"{20 - FRAMES} of the 20 recorded frames on /camera/image_raw are lost" in err


def test_rows_in_a_write_ahead_log_are_read(tmp_path, capsys, random_model):
    """An interrupted recording in sqlite's WAL mode leaves rows in <file>.db3-wal. rosbags reads the
    .db3 as immutable and never saw them (6 of 12 frames, no word of it): the bag is read from a copy
    with the log merged in, the bag itself is left as it was, and the run says so."""
    import shutil
    src = sqlite_bag(tmp_path / "src")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(_db3(src), live / "rec_0.db3")
    con = sqlite3.connect(live / "rec_0.db3")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    rows = con.execute("SELECT topic_id, timestamp, data FROM messages").fetchall()
    con.executemany("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                    [(t, ts + 10**9, d) for t, ts, d in rows])
    con.commit()
    bag = tmp_path / "bag"  # the files as the recorder left them: copied while it still had them open
    shutil.copytree(live, bag)
    con.close()
    assert (bag / "rec_0.db3-wal").stat().st_size > 0
    before = {f.name: f.read_bytes() for f in bag.iterdir()}
    with bag_io.BagReader(bag) as r:
        assert len(list(r.messages(["/camera/image_raw"], decode=False))) == 2 * FRAMES and not r.damage
        assert "write-ahead log" in r.notes[0] and str(bag) in r.notes[0]
        copy = r.read_path
    assert not copy.exists() and {f.name: f.read_bytes() for f in bag.iterdir()} == before
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0 and f"offline: {2 * FRAMES} frames in" in out and "write-ahead log" in out, (out, err)


def test_bag_file_compressed_whole_without_metadata_is_read(tmp_path, capsys, random_model):
    """'ros2 bag record --compression-mode file' writes rec_0.mcap.zstd; handed in without its
    metadata.yaml (the file, or a folder of it) it was "Unrecognized storage format '.zstd'; the
    file is truncated or damaged". Now it is read from a decompressed copy; cut short, up to the cut."""
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        from backports import zstd
    bag = chunky_bag(tmp_path / "bag")
    with bag_io.BagReader(bag) as r:
        whole = [(m.topic, m.t_ns, m.raw) for m in r.messages(["/camera/image_raw"], decode=False)]
    packed = zstd.compress(_mcap(bag).read_bytes())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "rec_0.mcap.zstd").write_bytes(packed)
    for given in (bare, bare / "rec_0.mcap.zstd"):
        with bag_io.BagReader(given) as r:
            got = [(m.topic, m.t_ns, m.raw) for m in r.messages(["/camera/image_raw"], decode=False)]
            assert "rec_0.mcap.zstd compressed whole (zstd)" in r.notes[0] and r.damage == ""
        assert got == whole
    from seg_perception.runtime.frame_sources import is_bag
    assert is_bag(bare) and is_bag(bare / "rec_0.mcap.zstd")  # doctor, bench-node and adapt take it too
    (bare / "rec_0.mcap.zstd").write_bytes(packed[:int(0.7 * len(packed))])  # a copy that broke off
    rc, out, err = run(capsys, "eval-bag", bare, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "rec_0.mcap.zstd cut short" in out + err, (out, err)
    n = int(out.split("offline: ")[1].split(" frames in")[0])
    assert 2 <= n < FRAMES, out
    (bare / "rec_0.mcap.zstd").write_bytes(b"not zstd" * 64)
    with pytest.raises(bag_io.BagError, match="rec_0.mcap.zstd cannot be decompressed .*: it is not zstd"):
        bag_io.BagReader(bare)
    # An interrupted split recording: each file was compressed when the next began, the last is
    # plain, and there is no metadata.yaml. Every file is read, in order (only the plain one was).
    split = split_bag(tmp_path / "split", "mcap")
    (split / "metadata.yaml").unlink()
    for k in (0, 1):
        f = split / f"split_{k}.mcap"
        (split / (f.name + ".zstd")).write_bytes(zstd.compress(f.read_bytes()))
        f.unlink()
    with bag_io.BagReader(split) as r:
        assert [m.t_ns for m in r.messages(["/camera/image_raw"])] == [T0 + n * 10**8 for n in range(6)]
        assert "split_0.mcap.zstd, split_1.mcap.zstd compressed whole (zstd)" in r.notes[0]
    # Compression interrupted (or 'zstd -d' keeping its source): a file beside its own .zstd. The
    # plain one is read, and left as it was (the copy linked it: writing through the link emptied it).
    whole_1 = split / "split_1.mcap"
    whole_1.write_bytes(zstd.decompress((split / "split_1.mcap.zstd").read_bytes()))
    size = whole_1.stat().st_size
    (split / "split_1.mcap.zstd").write_bytes(b"not zstd" * 64)
    with bag_io.BagReader(split) as r:
        assert [m.t_ns for m in r.messages(["/camera/image_raw"])] == [T0 + n * 10**8 for n in range(6)]
        assert "split_1.mcap.zstd not read: the same file beside it uncompressed is" in r.notes[0]
    assert whole_1.stat().st_size == size


# ------------------------------------------------------------------ what a reader leaves out, said
def _stale_metadata(bag, keep):
    """metadata.yaml as an interrupted split recording leaves it: the first `keep` files listed and
    counted (rosbag2 rewrites it at each split), the later ones beside it unlisted."""
    import yaml
    meta = bag / "metadata.yaml"
    info = yaml.safe_load(meta.read_text())
    i = info["rosbag2_bagfile_information"]
    i["relative_file_paths"], i["files"] = i["relative_file_paths"][:keep], i["files"][:keep]
    for t in i["topics_with_message_count"]:
        t["message_count"] = keep
    meta.write_text(yaml.safe_dump(info))


def test_unlisted_file_is_partial_and_reader_notes_reach_the_report(tmp_path, capsys, random_model):
    """A file a (stale) metadata.yaml leaves out is not read: that was one stdout note and exit 0,
    with nothing in report.md or metrics.json. Now it is partial (exit 5), and the reader's notes are
    the result's notes: in the output once, in report.md and in metrics.json."""
    bag = split_bag(tmp_path / "split", "mcap", per=1)
    _stale_metadata(bag, 2)
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                       "--threads", 1)
    assert rc == 5 and "offline: 2 frames in" in out, (out, err)
    assert "partial result (exit 5)" in err and "split_2.mcap in its folder is not listed in its metadata.yaml" in err
    assert "frames on /camera/image_raw in split_2.mcap are not read (how many: unknown" in err, err
    note = "split_2.mcap in its folder is not listed in its metadata.yaml, so not read (a stale metadata.yaml?"
    assert out.count(note) == 1, out
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "split_2.mcap" in m["partial"] and any(note in n for n in m["notes"]), m
    report = (tmp_path / "r" / "report.md").read_text()
    assert "**Partial result:**" in report and note in report
    # a file beside its own listed copy compressed whole (compression interrupted) is that file again
    (bag / "split_2.mcap").unlink()
    (bag / "split_1.mcap.zstd").write_bytes(b"")
    with bag_io.BagReader(bag) as r:
        assert r.unlisted == [] and not r.notes


def _wal_bag(tmp_path, one_commit_per_message: bool, keep: float):
    """An sqlite3 bag as a recorder in WAL mode leaves it when killed: the schema and topics in the
    .db3, the messages still in its -wal (one commit per message, or all in one transaction), the
    log then cut to `keep` of its size (a copy that broke off)."""
    import shutil
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    with bag_io.BagWriter(src, "sqlite3") as w:  # small frames: a few pages each
        for n in range(4):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", t, "c"), t)
    bag = tmp_path / "bag"
    bag.mkdir()
    db = bag / _db3(src).name
    shutil.copy(src / "metadata.yaml", bag / "metadata.yaml")
    shutil.copy(_db3(src), tmp_path / "live.db3")
    con = sqlite3.connect(tmp_path / "live.db3", isolation_level=None)
    rows = con.execute("SELECT id, topic_id, timestamp, data FROM messages ORDER BY id").fetchall()
    con.execute("DELETE FROM messages")
    con.execute("VACUUM")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("BEGIN")
    for k, r in enumerate(rows):
        con.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", r)
        if one_commit_per_message:
            con.execute("COMMIT")
            con.execute("BEGIN")
    con.execute("COMMIT")
    for suffix in ("", "-wal", "-shm"):  # copied while the recorder still had them open
        shutil.copyfile(tmp_path / ("live.db3" + suffix), db.parent / (db.name + suffix))
    con.close()
    wal = bag / (db.name + "-wal")
    data = wal.read_bytes()
    (tmp_path / "whole-wal").write_bytes(data)
    wal.write_bytes(data[:int(len(data) * keep)])
    return bag, wal


def test_cut_write_ahead_log_is_partial_and_named(tmp_path, capsys, random_model):
    """A -wal cut short: sqlite keeps what its last complete commit holds. That was 'read from a copy
    with the log merged in', fewer frames and exit 0; now the cut log is named and the result partial."""
    bag, wal = _wal_bag(tmp_path, one_commit_per_message=True, keep=0.6)
    with bag_io.BagReader(bag) as r:
        n = len(list(r.messages(["/camera/image_raw"], decode=False)))
    assert 0 < n < 4
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and f"offline: {n} frames in" in out, (out, err)
    assert f"its write-ahead log {wal.name} is cut short ({wal.stat().st_size:,} bytes" in err
    assert f"{4 - n} of the 4 recorded frames on /camera/image_raw {'is' if n == 3 else 'are'} lost" in err, err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert any("messages in a write-ahead log" in x and "merged in" in x for x in m["notes"]), m  # rows it added
    # without metadata.yaml (as the recorder was killed) nothing counts what the log lost: that was exit 0
    (bag / "metadata.yaml").unlink()
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1)
    assert rc == 5 and f"offline: {n} frames in" in out and f"{wal.name} is cut short" in err, (out, err)
    assert "recorded after that commit are lost (how many: unknown, a cut log does not say)" in err, err


def test_cut_write_ahead_log_that_adds_nothing_is_named_not_metadata(tmp_path, capsys, random_model):
    """All messages in one transaction, its log cut: the log adds nothing. Not "merged", and the error
    names the cut log, not metadata.yaml (it was "storage file has no such topic ... correct metadata.yaml")."""
    bag, wal = _wal_bag(tmp_path, one_commit_per_message=False, keep=0.6)
    with bag_io.BagReader(bag) as r:
        assert not any("merged" in x for x in r.notes), r.notes
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    line = err.strip()
    assert rc == 2 and f"its write-ahead log {wal.name} is cut short" in line and "metadata.yaml" not in line, line
    # the same log whole is no damage
    assert bag_io._wal_cut(wal) and not bag_io._wal_cut(tmp_path / "whole-wal")


def test_short_write_ahead_log_beside_a_whole_recording_loses_nothing(tmp_path, capsys, random_model):
    """A -wal shorter than its 32-byte header beside an intact .db3 whose metadata.yaml counts every frame
    read (4 of 4): that was "frames recorded after that commit are lost (how many: unknown)", exit 5. The
    log is named in a note, nothing is lost, exit 0; without metadata.yaml nothing counts what a cut log
    lost, so that stays partial. A log of just its header is not judged cut (sqlite leaves one when its
    writer stops between the header and the first frame: see _wal_cut)."""
    import shutil
    rng = np.random.default_rng(0)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag, "sqlite3") as w:
        for n in range(4):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
    wal = bag / (_db3(bag).name + "-wal")
    wal.write_bytes(b"\x00" * 20)
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                       "--threads", 1)
    assert rc == 0 and "offline: 4 frames in" in out and "lost" not in err, (out, err)
    note = (f"its write-ahead log {wal.name} is cut short (20 bytes, less than its 32-byte header), but every one "
            "of the 4 frames its metadata.yaml records on /camera/image_raw was read: none is lost")
    assert note in out, out
    assert any(note in x for x in json.loads((tmp_path / "r" / "metrics.json").read_text())["notes"])
    shutil.copy(bag / "metadata.yaml", tmp_path / "metadata.yaml")
    (bag / "metadata.yaml").unlink()
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r2",
                       "--threads", 1)
    assert rc == 5 and "recorded after that commit are lost (how many: unknown, a cut log does not say)" in err, err
    shutil.copy(tmp_path / "metadata.yaml", bag / "metadata.yaml")
    wal.write_bytes(struct.pack(">IIII", 0x377F0682, 3007000, 4096, 0) + bytes(16))  # its header alone
    assert bag_io._wal_cut(wal) == ""
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r3",
                       "--threads", 1)
    assert rc == 0 and "offline: 4 frames in" in out and "write-ahead log" not in out + err, (out, err)


def test_cut_file_compressed_whole_listed_in_metadata_is_read_up_to_the_cut(tmp_path, capsys, random_model):
    """'--compression-mode file': metadata.yaml lists rec_0.mcap.zstd. Cut short, it was refused (exit 2,
    "try 'ros2 bag reindex'", which cannot repair a zstd stream); handed in alone it read up to the cut.
    Now the folder reads the same way, with metadata.yaml's counts. With the complete plain file still
    beside it (compression interrupted) that file is read, whole: 6 frames, exit 0 (was 2 frames, exit 5)."""
    import yaml
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        from backports import zstd
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    whole = f.read_bytes()
    packed = zstd.compress(whole)
    (bag / (f.name + ".zstd")).write_bytes(packed[:int(0.7 * len(packed))])
    f.unlink()
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    i = meta["rosbag2_bagfile_information"]
    i["compression_mode"], i["compression_format"] = "file", "zstd"
    i["relative_file_paths"] = [f.name + ".zstd"]
    i["files"][0]["path"] = f.name + ".zstd"
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "reindex" not in err, (out, err)
    n = int(out.split("offline: ")[1].split(" frames in")[0])
    k = FRAMES - n
    assert 2 <= n < FRAMES and f"{k} of the {FRAMES} recorded frames on /camera/image_raw {'is' if k == 1 else 'are'} " \
                               "lost" in err
    assert f"{f.name}.zstd cut short" in out
    f.write_bytes(whole)  # the plain original beside its cut .zstd: compression was interrupted
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1)
    assert rc == 0 and f"offline: {FRAMES} frames in" in out, (out, err)
    assert f"{f.name}.zstd not read: the same file beside it uncompressed is" in out and "cut short" not in out
    assert "not listed in its metadata.yaml" not in out, out


def test_lost_middle_file_of_a_split_bag_loses_the_frames_in_it(tmp_path):
    """Without counts, a missing middle file's frames were lost "after it", though the later files were read."""
    from seg_perception.evaluation.common import partial_reason, select_inputs
    from seg_perception.evaluation.config import EvalConfig
    bag = split_bag(tmp_path / "split", "mcap", per=1)
    (bag / "metadata.yaml").unlink()
    (bag / "split_1.mcap").unlink()
    with bag_io.BagReader(bag) as r:
        inp = select_inputs(EvalConfig(bag=bag, no_gt=True), r)
    said = partial_reason(inp, "", 0)
    assert "file split_1.mcap (2 of 3): missing; 2 frames can be read, frames on /camera/image_raw in it are lost" \
           in said and "after it" not in said, said
    bag = split_bag(tmp_path / "last", "mcap", per=1)  # the last file cut: its frames, and any after it
    (bag / "metadata.yaml").unlink()
    last = bag / "last_2.mcap"
    data = last.read_bytes()
    last.write_bytes(data[:_chunks(data)[0]])
    with bag_io.BagReader(bag) as r:
        inp = select_inputs(EvalConfig(bag=bag, no_gt=True), r)
    said = partial_reason(inp, "", 0)
    assert "2 frames can be read, frames on /camera/image_raw after it are lost" in said, said


def test_empty_bag_says_it_holds_nothing(tmp_path):
    """No messages and no topics (the recording never started): not "no image topic to choose from;
    pass --image-topic. The bag has: no topics"."""
    for fmt in ("mcap", "sqlite3"):
        with bag_io.BagWriter(tmp_path / fmt, fmt):
            pass
        with bag_io.BagReader(tmp_path / fmt) as r:
            for asked in (None, "/camera/image_raw"):
                with pytest.raises(bag_io.BagError) as e:
                    r.image_topic(asked)
                assert "holds no messages and no topics" in str(e.value) and "--image-topic" not in str(e.value)


def test_live_does_not_count_frames_it_will_not_send(tmp_path, capsys, random_model):
    """Frames whose message does not deserialise are not sent: 'playing 4 frames' for 3 sent."""
    ts = bag_io.typestore()
    rng = np.random.default_rng(0)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag) as w:
        for n in range(4):
            t = T0 + n * 2 * 10**8
            raw = bytes(ts.serialize_cdr(bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"),
                                         bag_io.IMAGE))
            w.write_raw("/camera/image_raw", bag_io.IMAGE, raw[:60] if n == 2 else raw, t)  # its stamp reads
    rc, out, err = run(capsys, "eval-bag", bag, "--mode", "live", "--model", random_model, "--no-gt",
                       "--out", tmp_path / "r", "--threads", 1, "--rate", 5)
    assert "playing 3 frames (1 more does not deserialise (corrupt): not sent)" in out, out
    assert rc == 5 and "offline" not in out and "live: 4 frames in, 3 out" in out, (out, err)


def test_damaged_split_bag_reads_only_the_files_its_metadata_lists(tmp_path, capsys, random_model):
    """A stale file beside a metadata.yaml that lists the others, and a listed file cut: the salvage
    read every .mcap in the folder, so the unlisted file's frames were scored while the note said
    it was "not read". Only the listed files are read, and the loss is that of the cut one."""
    bag = split_bag(tmp_path / "split", "mcap", per=1)
    _stale_metadata(bag, 2)
    cut = bag / "split_1.mcap"
    data = cut.read_bytes()
    cut.write_bytes(data[:_chunks(data)[0]])  # its frame never written
    with bag_io.BagReader(bag) as r:
        stamps = []
        with pytest.raises(bag_io.BagError, match=r"file split_1.mcap \(2 of 2\)"):
            for m in r.messages(["/camera/image_raw"]):
                stamps.append(m.t_ns)
    assert stamps == [T0]  # not split_2.mcap's frame
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                       "--threads", 1)
    assert rc == 5 and "offline: 1 frames in" in out, (out, err)
    assert "1 of the 2 recorded frames on /camera/image_raw is lost; split_2.mcap, which metadata.yaml does not " \
           "list, not read (see the note)" in err, err
    assert "not listed in its metadata.yaml, so not read" in out, out


def _data_end(data: bytes) -> int:
    pos = 8
    while data[pos] != 0x0F:
        pos += 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    return pos


def test_message_on_a_channel_defined_in_a_lost_chunk_is_skipped_alone(tmp_path):
    """A topic that starts mid-recording has its Channel record in the chunk where it starts; that
    chunk damaged and the summary gone (the file cut after its data), its later messages are on an
    unknown channel. That dropped the rest of each later chunk, other topics' frames with it; now
    only those messages are lost, and counted."""
    rng = np.random.default_rng(0)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag) as w:
        for n in range(FRAMES):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            w.write("/padding", bag_io.image_msg(rng.integers(0, 255, (750, 800), np.uint8), "mono8", t, "c"), t)
            if n >= 2:  # first written in the second chunk (frames 2 and 3), which defines its channel
                w.write("/late", bag_io.image_msg(rng.integers(0, 255, (8, 8), np.uint8), "mono8", t, "c"), t)
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # the second chunk's checksum
    f.write_bytes(bytes(data[:_data_end(bytes(data))]))  # and no summary to repeat the channels
    s = McapSalvage.scan(f)
    read = [t for ch, t, _ in s.records() if ch.topic == "/camera/image_raw"]
    assert read == [T0 + k * 10**8 for k in (0, 1, 4, 5)]
    # /late at frames 3 to 5 (the chunk closes after frame 3's padding): on channel 3, which is unknown
    assert s.damage.skipped == [(c, "chunk checksum mismatch")] and s.damage.orphans == {3: 3}, s.damage
    assert "has 3 messages on channel 3 whose definition was lost, skipped" in s.damage.where()


def test_chunk_the_file_ends_in_is_read_up_to_the_cut(tmp_path, capsys, random_model):
    """Power lost while a chunk was written: its whole records before the cut are read (frame 4's
    image and ground truth, cut in its padding), for plain and zstd chunks alike; frame 5 is lost."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = f.read_bytes()
    c = _chunks(data)[2]
    (n,) = struct.unpack_from("<I", data, c + 9 + 28)
    pos = c + 9 + 28 + 4 + n + 8
    for _ in range(2):  # frame 4's image and ground truth: its padding comes next
        pos += 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    f.write_bytes(data[:pos + 300_000])  # in the middle of frame 4's padding
    s = McapSalvage.scan(f)
    assert [t for ch, t, _ in s.records() if ch.topic == "/camera/labels_gt"] == [T0 + k * 10**8 for k in range(5)]
    assert s.damage.offset == pos + 300_000 and not s.damage.skipped
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "offline: 5 frames in" in out, (out, err)
    assert f"is cut short after 14 messages, last one recorded at {(T0 + 4 * 10**8) / 1e9:.3f} s: it ends inside " \
           f"the chunk at byte {c:,}, read up to the cut; 5 frames can be read, 1 of the 6 recorded frames" in err, err
    bag = chunky_bag(tmp_path / "zstd", compress=True)
    f = _mcap(bag)
    data = f.read_bytes()
    c = _chunks(data)[2]
    f.write_bytes(data[:c + (len(data) - c) // 3])  # a third into the last chunk: in frame 4's padding
    s = McapSalvage.scan(f)
    assert [t for ch, t, _ in s.records() if ch.topic == "/camera/image_raw"] == [T0 + k * 10**8 for k in range(5)]
    assert "read up to the cut" in s.damage.reason and not s.damage.skipped


def test_unreadable_record_is_read_past_to_the_next_chunk_the_summary_lists(tmp_path, capsys, random_model):
    """A zeroed 4 KiB block at a chunk's start (its length lost with it) stopped the reading there:
    every intact chunk after it was lost. The summary's chunk index says where the next one starts."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    data[c:c + 4096] = bytes(4096)
    f.write_bytes(bytes(data))
    s = McapSalvage.scan(f)
    assert [t for ch, t, _ in s.records() if ch.topic == "/camera/image_raw"] == [T0 + k * 10**8 for k in (0, 1, 4, 5)]
    assert s.damage.offset is None and s.damage.skipped == [(c, "invalid record opcode 0")], s.damage
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "offline: 4 frames in" in out and "2 of the 6 recorded frames" in err, (out, err)


def test_damage_that_loses_no_message_metadata_counts_is_a_note(tmp_path, capsys, random_model):
    """A copy cut right after its data (the summary and footer lost): every message metadata.yaml
    counts is read. That was "none of the 6 recorded frames is lost (other messages are)", exit 5;
    it is a note, exit 0. One padding message fewer in the file is a loss again."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = f.read_bytes()
    f.write_bytes(data[:_data_end(data)])
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 0 and "offline: 6 frames in" in out and not err.strip(), (out, err)
    assert "but every message its metadata.yaml records was read (6 on /camera/image_raw, 6 on /camera/labels_gt, " \
           "6 on /padding): none is lost" in out, out
    set_counts(bag, {"/padding": 7})
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1)
    assert rc == 5 and "none of the 6 recorded frames on /camera/image_raw is lost (other messages are)" in err, err


def test_max_frames_before_the_damage_is_no_partial_result(tmp_path, capsys, random_model):
    """--max-frames N of a bag damaged after its N-th frame loses none of the frames taken: a note,
    exit 0 (was exit 5, "2 of the 6 recorded frames are lost"). Fewer than N frames readable, or the
    damage before the N-th frame (a damaged chunk in the middle), is partial still."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = f.read_bytes()
    f.write_bytes(data[:_chunks(data)[2]])  # frames 4 and 5 never written
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1,
                       "--max-frames", 4)
    assert rc == 0 and "offline: 4 frames in" in out and not err.strip(), (out, err)
    assert "but the 4 frames taken (--max-frames 4) all come before the damage, with their ground truth: none of " \
        "them is lost" in out, out
    assert not json.loads((tmp_path / "r" / "metrics.json").read_text()).get("partial")
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1,
                       "--max-frames", 5)
    assert rc == 5 and "2 of the 6 recorded frames on /camera/image_raw are lost" in err, (out, err)
    bag = chunky_bag(tmp_path / "mid")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # frames 2 and 3 lost: the third frame taken is frame 4
    f.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r3", "--threads", 1,
                       "--max-frames", 3)
    assert rc == 5 and "offline: 3 frames in" in out and "2 of the 6 recorded frames" in err, (out, err)
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r4", "--threads", 1,
                       "--max-frames", 2)
    assert rc == 0 and "offline: 2 frames in" in out, (out, err)


def test_one_file_of_a_split_bag_is_not_counted_against_the_whole_recording(tmp_path, capsys, random_model):
    """A cut file of a split bag handed in alone: its losses were counted against metadata.yaml's counts
    of the whole recording ("4 of the 6 recorded frames are lost" for a file of 2 frames). Those counts
    say nothing of one file: how many is unknown, and the line says to pass the folder."""
    bag = split_bag(tmp_path / "split", "mcap")
    f = bag / "split_1.mcap"
    data = f.read_bytes()
    f.write_bytes(data[:len(data) * 6 // 10])  # in frame 3's padding
    rc, out, err = run(capsys, "eval-bag", f, "--model", random_model, "--no-gt", "--out", tmp_path / "r",
                       "--threads", 1)
    assert rc == 5 and "recorded frames" not in err, (out, err)
    assert "(how many: unknown, split_1.mcap is one of the 3 files of a split recording, and its metadata.yaml " \
           f"counts only the whole recording; pass the bag folder {bag} to count them)" in err, err
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--no-gt", "--out", tmp_path / "r2",
                       "--threads", 1)
    assert rc == 5 and "of the 6 recorded frames on /camera/image_raw" in err, err  # the folder: counted


def test_a_corrupt_ground_truth_message_is_said_and_the_result_is_partial(tmp_path, capsys, random_model):
    """A ground-truth message that does not deserialise gave exit 0 and the note '1 frame has no
    ground truth of the same header stamp': it had one, corrupt. A corrupt frame message makes the
    result partial; so does a corrupt ground-truth message now, and the note says which it was."""
    ts = bag_io.typestore()
    rng = np.random.default_rng(0)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag, "sqlite3") as w:
        for n in range(4):
            t = T0 + n * 2 * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            raw = bytes(ts.serialize_cdr(bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", t, "c"),
                                         bag_io.IMAGE))
            w.write_raw("/camera/labels_gt", bag_io.IMAGE, raw[:200] if n == 1 else raw, t)  # its stamp reads
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5, (out, err)
    assert "the ground truth of 1 frame on /camera/labels_gt cannot be deserialised (corrupt): accuracy covers " \
           "fewer frames" in err, err
    assert "1 frame has no ground truth of the same header stamp (1 of them: its ground-truth message is " \
           "corrupt): not scored" in out, out
    with bag_io.BagWriter(tmp_path / "short", "sqlite3") as w:  # cut before its stamp: any unscored frame's
        for n in range(4):
            t = T0 + n * 2 * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            raw = bytes(ts.serialize_cdr(bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", t, "c"),
                                         bag_io.IMAGE))
            w.write_raw("/camera/labels_gt", bag_io.IMAGE, raw[:8] if n == 1 else raw, t)
    rc, out, err = run(capsys, "eval-bag", tmp_path / "short", "--model", random_model, "--out", tmp_path / "r2",
                       "--threads", 1)
    assert rc == 5 and "the ground truth of 1 frame on /camera/labels_gt cannot be deserialised" in err, (out, err)


def test_a_log_beside_an_empty_database_file_is_named(tmp_path, capsys):
    """A recording in WAL mode cut before its first checkpoint leaves a 0-byte .db3 beside a -wal that
    holds every message. sqlite discards a log beside a file without a page, so the merge added
    nothing, and the error named only the empty file: the log of several MB went unmentioned."""
    import shutil
    src = sqlite_bag(tmp_path / "src")
    bag = tmp_path / "bag"
    shutil.copytree(src, bag)
    db = _db3(bag)
    (bag / (db.name + "-wal")).write_bytes(b"\0" * 4096)  # (its content does not matter: it is not applied)
    db.write_bytes(b"")
    rc, out, err = run(capsys, "eval-bag", bag, "--no-gt", "--out", tmp_path / "r")
    assert rc == 2, (out, err)
    assert f"{db.name} is empty or cut within sqlite's 100-byte header beside a write-ahead log of 4,096 bytes: " \
           "sqlite cannot apply a log to a database file without its first page" in err, err


def test_max_frames_counts_the_ground_truth_of_the_frames_taken_too(tmp_path, capsys, random_model):
    """Large frames close a chunk each, so frame k's ground truth opens the next chunk, beside frame
    k+1: a damaged chunk 2 loses frame 1's ground truth and frame 2. --max-frames 2 took frames 0
    and 1, 'all before the damage', and said exit 0 while frame 1 went unscored."""
    rng = np.random.default_rng(0)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag) as w:
        for n in range(4):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (360, 1200, 3), np.uint8), "rgb8", t, "c"), t)
            w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (360, 1200), np.uint8), "mono8", t, "c"), t)
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[2]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # its checksum: frame 1's ground truth and frame 2 lost
    f.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1,
                       "--max-frames", 2)
    assert rc == 5 and "none of them is lost" not in out, (out, err)
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r1", "--threads", 1,
                       "--max-frames", 1)
    assert rc == 0 and "but the frame taken (--max-frames 1) comes before the damage, with their ground truth" in out, \
        (out, err)


def test_counts_rebuilt_from_a_damaged_file_do_not_make_its_damage_harmless(tmp_path, capsys, random_model):
    """'ros2 bag reindex' writes metadata.yaml's counts from what a damaged file still holds: a
    skipped chunk's messages were lost all the same, so counts that match are no evidence there."""
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # frames 2 and 3 lost
    f.write_bytes(bytes(data))
    set_counts(bag, {"*": FRAMES - 2})  # as a reindex of the damaged file counts them
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5 and "none is lost" not in out, (out, err)


def test_max_frames_with_ground_truth_on_some_frames_only(tmp_path, capsys, random_model):
    """Ground truth every 4th frame (a counted skip for the others): --max-frames 3 of a bag damaged
    at frame 6 takes frames 0-2, all read before the damage, with their ground truth; counting
    ground truth against frames made it partial."""
    rng = np.random.default_rng(0)
    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag) as w:
        for n in range(8):
            t = T0 + n * 10**8
            w.write("/camera/image_raw", bag_io.image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8", t, "c"), t)
            if n % 4 == 0:
                w.write("/camera/labels_gt", bag_io.image_msg(rng.integers(0, 11, (48, 64), np.uint8), "mono8", t, "c"), t)
            w.write("/padding", bag_io.image_msg(rng.integers(0, 255, (750, 800), np.uint8), "mono8", t, "c"), t)
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[3]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # frames 6 and 7 lost
    f.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1,
                       "--max-frames", 3)
    assert rc == 0 and "all come before the damage, with their ground truth" in out, (out, err)
