"""Recordings cut short or damaged: every frame before the damage is evaluated, the report
and one stderr line say how many were lost and where, and the exit code (5) says "partial";
live mode announces the frames it will really play."""
from __future__ import annotations

import json
import struct

import numpy as np

from seg_perception.cli import main
from seg_perception.data import bag_io
from seg_perception.data.mcap_salvage import McapSalvage

T0 = 1_700_000_000 * 10**9
FRAMES = 6


def chunky_bag(path):
    """FRAMES small frames with ground truth; a 600 kB padding message per frame makes the
    writer close a (1 MiB) chunk every two frames, as a real camera recording does."""
    rng = np.random.default_rng(0)
    with bag_io.BagWriter(path, "mcap") as w:
        for n in range(FRAMES):
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
    assert McapSalvage.scan(f).damage.offset == chunks[2]
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "partial result (exit 5)" in lines[0]
    assert f"cannot be read past byte {chunks[2]:,}" in lines[0] and "4 frames read before it" in lines[0]
    assert "2 of the 6 recorded frames on /camera/image_raw are lost" in lines[0]
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["frames"]["in"] == 4 and m["segmentation"]["frames_scored"] == 4 and "2 of the 6" in m["partial"]
    assert "**Partial result:**" in (tmp_path / "r" / "report.md").read_text()
    # Without metadata.yaml (the recorder never wrote it) the lost count is unknown, and said so.
    (bag / "metadata.yaml").unlink()
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r2", "--threads", 1)
    assert rc == 5 and "4 frames read before it" in err and "how many: unknown" in err


def test_damaged_chunk_stops_reading_there(tmp_path, capsys, random_model):
    bag = chunky_bag(tmp_path / "bag")
    f = _mcap(bag)
    data = bytearray(f.read_bytes())
    c = _chunks(bytes(data))[1]
    data[c + 9 + 24:c + 9 + 28] = b"\x12\x34\x56\x78"  # the second chunk's checksum
    f.write_bytes(bytes(data))
    rc, out, err = run(capsys, "eval-bag", bag, "--model", random_model, "--out", tmp_path / "r", "--threads", 1)
    assert rc == 5, err
    assert "Chunk checksum mismatch" in err and "2 frames read before it, 4 of the 6 recorded" in err
    assert "[eval-bag] offline: 2 frames in, 2 out" in out


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
