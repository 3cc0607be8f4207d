"""Large camera frames between processes: a best-effort camera at 640x480 and 1280x720 (over the
512 KB that Fast DDS's default shared-memory segment holds) reaches the node, which subscribes with
the shipped default QoS (auto: best effort for a best-effort camera), when both sides use the shipped transport
profile (config/fastdds_large_frames.xml). The camera runs at 2 Hz, far below what the node
serves, so every frame should come back; this counts frames, it does not time them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO


def test_large_best_effort_frames_are_answered(random_model, tmp_path):
    out = tmp_path / "cam.json"
    env = dict(os.environ, FASTRTPS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_large_frames.xml"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_STATIC_PEERS", "127.0.0.1")
    cmd = [sys.executable, "-m", "seg_perception.cli", "bench-camera", "--model", str(random_model),
           "--sizes", "640x480", "1280x720", "--rates", "2", "--qos", "best_effort", "--seconds", "3",
           "--json", str(out)]
    # its own process group: on a timeout the node it started goes too (a stray would load the next tests)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        stdout, stderr = p.communicate()
        pytest.fail("bench-camera did not finish in 240 s:\n" + stdout + stderr)
    assert p.returncode == 0, stdout + stderr
    rows = json.loads(out.read_text())
    assert [r["size"] for r in rows] == ["640x480", "1280x720"]
    for r in rows:
        assert r["published"] == 6
        assert r["answered"] >= r["published"] - 1, r   # at most one lost to start-up races
        assert int(r["node_diagnostics"]["frames_missing_upstream"]) <= 1, r
        assert r["rss_mb"][-1][1] > 0
