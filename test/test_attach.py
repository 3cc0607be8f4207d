"""Attach mode: a running node heard on another topic fails fast with the mismatch (not after
the startup timeout), and the node's own drivable classes (a parameter override) reach the
report, attached or started with --param. Real rclpy over DDS."""
from __future__ import annotations

import json
import time

from ros_harness import start_node
from seg_perception.cli import main
from seg_perception.evaluation.config import EXIT_NODE
from seg_perception.evaluation.make_bag import make_bag


def test_attach_mismatch_fails_fast_and_overrides_reach_report(tmp_path, capsys, random_model, camvid_sample):
    bag = tmp_path / "bag"
    make_bag(bag, root=camvid_sample, fmt="mcap", encoding="rgb8", rate=4, indices=[0, 3])
    node = start_node({"model": str(random_model), "threads": 1, "qos": "reliable",
                       "image_topic": "/other_cam/image_raw", "drivable_classes": [3, 4]}, tmp_path / "node.log")
    try:
        # the clock starts once the node serves, so that its own start-up is not counted
        up = time.monotonic() + 90
        while "segmenting /other_cam/image_raw" not in node.output() and time.monotonic() < up:
            assert node.running(), node.output()
            time.sleep(0.1)
        assert "segmenting /other_cam/image_raw" in node.output(), node.output()
        t0 = time.monotonic()
        rc = main(["eval-bag", str(bag), "--attach", "--model", str(random_model), "--startup-timeout", "90",
                   "--out", str(tmp_path / "r1")])
        waited = time.monotonic() - t0
        err = capsys.readouterr().err.strip()
        assert rc == EXIT_NODE and len(err.splitlines()) == 1, err
        assert "no segmentation node listens on /camera/image_raw" in err and "listens on /other_cam/image_raw" in err
        assert "--publish-topic /other_cam/image_raw" in err
        assert waited < 30, f"waited {waited:.0f} s of the 90 s timeout"  # 7 s measured here
        # JPEG frames for a node that takes raw ones: no --publish-topic can help, restarting it can
        jpeg = tmp_path / "jpeg_bag"
        make_bag(jpeg, root=camvid_sample, fmt="mcap", encoding="jpeg", rate=4, indices=[0])
        rc = main(["eval-bag", str(jpeg), "--attach", "--model", str(random_model), "--publish-topic",
                   "/other_cam/image_raw", "--startup-timeout", "90", "--out", str(tmp_path / "r0")])
        err = capsys.readouterr().err.strip()
        assert rc == EXIT_NODE and len(err.splitlines()) == 1, err
        assert "restart it with use_compressed:=true (it then listens on /other_cam/image_raw/compressed)" in err
        # another model than the node's: its labels would be scored and reported as that model's
        rc = main(["eval-bag", str(bag), "--attach", "--model", "rdsnet_camvid", "--publish-topic",
                   "/other_cam/image_raw", "--out", str(tmp_path / "r3")])
        err = capsys.readouterr().err.strip()
        assert rc == EXIT_NODE and "the attached node runs model 'random_essnet_d', not 'rdsnet_camvid'" in err, err
        rc = main(["eval-bag", str(bag), "--attach", "--model", str(random_model), "--publish-topic",
                   "/other_cam/image_raw", "--out", str(tmp_path / "r2")])
        out = capsys.readouterr().out
        assert rc == 0, out
    finally:
        assert node.stop() == 0, node.output()
    m = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert m["drivable"]["classes"] == ["Road", "Pavement"]  # the node's override, not the card's [Road]
    assert "drivable area (Road, Pavement)" in (tmp_path / "r2" / "report.md").read_text()


def test_started_node_param_override_reaches_report(tmp_path, capsys, random_model, camvid_sample):
    bag = tmp_path / "bag"
    make_bag(bag, root=camvid_sample, fmt="mcap", encoding="jpeg", rate=4, indices=[0])
    rc = main(["eval-bag", str(bag), "--mode", "live", "--model", str(random_model), "--threads", "1",
               "--param", "drivable_classes:=[4]", "--out", str(tmp_path / "r")])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["drivable"]["classes"] == ["Pavement"]


def test_attach_hint_for_a_node_of_the_other_kind():
    from seg_perception.evaluation.live import _attach_hint
    assert "use_compressed:=false" in _attach_hint("/cam/image_raw", "/cam/image_raw/compressed")
    assert _attach_hint("/cam/image_raw", "/front/image_raw").startswith("pass --publish-topic /front/image_raw")
