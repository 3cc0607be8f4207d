"""Shared fixtures.

Models here carry RANDOM weights unless a test says otherwise: they exercise
the plumbing (shapes, headers, encodings, agreement between backends), not
accuracy. Accuracy is measured with the shipped weights in models/.

Real frames come from the sample bag in test/data (``camvid_sample``, ``val_frames``),
so the suite runs on any clone. Only tests that need the full CamVid splits ask for
``camvid_full``; without the dataset they skip, and the run ends with one line that
says how to point them at it (SEG_PERCEPTION_REQUIRE_CAMVID=1 turns the skip into a
failure, for CI). ``camvid_root`` is for tests written before this split.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Two processes on these machines only discover each other with these settings; each
# test session gets its own domain so parallel runs don't cross-talk: held for the session,
# so that a second run at once takes another (by pid alone, 1 time in 100 they shared one).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_STATIC_PEERS", "127.0.0.1")
if "ROS_DOMAIN_ID" not in os.environ:
    from seg_perception.runtime.node_process import hold_domain
    _first = os.getpid() % 100
    _SESSION_DOMAIN = hold_domain([1 + (_first + i) % 100 for i in range(100)])  # kept open: held until exit
    os.environ["ROS_DOMAIN_ID"] = str(_SESSION_DOMAIN[0] if _SESSION_DOMAIN else 1 + _first)
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
# ONNX exports and engines of the tests' models go to a cache of this session's own, not the user's
# (~/.cache/seg_perception): a test run beside a user's commands shared one, and the tests' files
# should not outlive them. Node processes the tests start inherit it.
_TEST_CACHE = tempfile.mkdtemp(prefix="seg_perception_test_cache_")
os.environ["SEG_PERCEPTION_CACHE"] = _TEST_CACHE
os.environ.pop("SEG_PERCEPTION_ENGINE_CACHE", None)  # it would win over the one above for engines
atexit.register(shutil.rmtree, _TEST_CACHE, True)


SAMPLE_BAG = REPO / "test" / "data" / "camvid_val_sample"
WITHOUT_CAMVID = "CamVid not found at {root}: {n} test(s) that need the full dataset skipped; set " \
                 "SEG_PERCEPTION_CAMVID=/path/to/camvid (or put it at ../shared/datasets/camvid) to run them"


# scripts/check_oldest_deps.sh runs this suite in a plain `pip install .` (no torch, no ROS) on
# the oldest dependencies setup.py allows: there, and only there, a test that needs a module of an
# extra is skipped with the extra's name instead of failing. Everywhere else a missing module fails.
CORE_ONLY = os.environ.get("SEG_PERCEPTION_CORE_ONLY") == "1"
EXTRA_MODULES = {"torch": "train", "rclpy": "ros", "sensor_msgs": "ros", "std_msgs": "ros", "nav_msgs": "ros",
                 "geometry_msgs": "ros", "diagnostic_msgs": "ros", "lifecycle_msgs": "ros",
                 "builtin_interfaces": "ros", "ament_index_python": "ros"}


def _extra_missing(text: str):
    """'No module named X' for a module of an extra -> that module, else None."""
    import re
    m = re.search(r"No module named '([\w.]+)'", text)
    name = m.group(1).split(".")[0] if m else None
    return name if name in EXTRA_MODULES else None


def _skip_for(name: str) -> str:
    return f"needs {name}, which a core install lacks (pip install 'seg_perception[{EXTRA_MODULES[name]}]')"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if CORE_ONLY and rep.failed and call.excinfo is not None \
            and isinstance(call.excinfo.value, ModuleNotFoundError):
        name = _extra_missing(str(call.excinfo.value))
        if name:
            rep.outcome, rep.longrepr = "skipped", (str(item.path), item.location[1], _skip_for(name))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    name = _extra_missing(str(rep.longrepr)) if CORE_ONLY and rep.failed else None
    if name:
        rep.outcome, rep.longrepr = "skipped", (str(collector.path), 0, _skip_for(name))


# A test that reaches torch through the CLI (which ends in one line, exit 2, without it).
needs_torch = pytest.mark.skipif(CORE_ONLY and importlib.util.find_spec("torch") is None, reason=_skip_for("torch"))


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "CamVid not found" in str(r.longrepr)]
    if skipped:
        from seg_perception.data.datasets import default_camvid_root
        terminalreporter.write_line(WITHOUT_CAMVID.format(root=default_camvid_root(), n=len(skipped)))


def camvid_from_bag(bag: Path, out: Path) -> Path:
    """A CamVid-layout folder (SegNet lists, PNG frames and label images) from a bag made by
    make-bag: frame i pairs with the ground truth of the same header stamp. Even frames are
    listed as train, odd ones as val."""
    from seg_perception.data import bag_io
    from seg_perception.runtime.image_conversion import message_to_array
    frames, labels = {}, {}
    with bag_io.BagReader(bag) as r:
        for m in r.messages([bag_io.DEFAULT_COMPRESSED_TOPIC, bag_io.DEFAULT_GT_TOPIC]):
            arr, layout = message_to_array(m.msg)
            stamp = bag_io.stamp_ns(m.msg.header)
            if m.topic == bag_io.DEFAULT_GT_TOPIC:
                labels[stamp] = arr
            else:
                assert layout == "bgr", layout
                frames[stamp] = arr
    assert frames and sorted(frames) == sorted(labels), f"{bag}: every frame needs its ground truth"
    lists = {"train": [], "val": []}
    for i, stamp in enumerate(sorted(frames)):
        split = "train" if i % 2 == 0 else "val"
        for folder, img in ((split, frames[stamp]), (f"{split}annot", labels[stamp])):
            (out / folder).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(out / folder / f"sample_{i:02d}.png"), img)
        lists[split].append(f"{split}/sample_{i:02d}.png {split}annot/sample_{i:02d}.png")
    for split, lines in lists.items():
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def ros():
    """rclpy's default context for a module whose test client uses it (the node runs in its own process)."""
    import rclpy
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="session")
def camvid_sample(tmp_path_factory) -> Path:
    """A small CamVid (train 10, val 10 frames at 480x360, with labels) made from the shipped
    sample bag: the same real frames on any clone. Not the full dataset: see camvid_full."""
    return camvid_from_bag(SAMPLE_BAG, tmp_path_factory.mktemp("camvid_sample"))


@pytest.fixture(scope="session")
def camvid_full() -> Path:
    """The full CamVid (train 367, val 101); skips the test when it is not here."""
    from seg_perception.data.datasets import default_camvid_root
    root = default_camvid_root()
    if not (root / "val.txt").is_file():
        why = WITHOUT_CAMVID.split(":")[0].format(root=root)
        if os.environ.get("SEG_PERCEPTION_REQUIRE_CAMVID"):
            pytest.fail(f"{why}, and SEG_PERCEPTION_REQUIRE_CAMVID is set")
        pytest.skip(f"{why}: set SEG_PERCEPTION_CAMVID=/path/to/camvid to run this test")
    return root


@pytest.fixture(scope="session")
def camvid_root(camvid_sample) -> Path:
    """For tests written before camvid_sample and camvid_full (the training tests): the full
    CamVid when it is here, else the sample, so they run on any clone. A new test asks for
    camvid_sample (real frames) or camvid_full (the full splits) instead."""
    from seg_perception.data.datasets import default_camvid_root
    root = default_camvid_root()
    return root if (root / "val.txt").is_file() else camvid_sample


@pytest.fixture(scope="session")
def val_frames(camvid_sample):
    """Six real CamVid val frames (RGB, 480x360) with their labels, from the sample."""
    from seg_perception.data.datasets import camvid
    ds = camvid(camvid_sample, "val")
    return [ds.load(i) for i in range(6)]


def _tensorrt_here() -> bool:
    from seg_perception.runtime.backends import tensorrt_installed
    return tensorrt_installed()


# For assertions about what happens WITHOUT TensorRT: where it is installed (a Jetson; a container
# whose GPU CUDA cannot reach, where `auto` falls back for another reason) they skip.
needs_no_tensorrt = pytest.mark.skipif(_tensorrt_here(), reason="TensorRT is installed here")


def make_random_model(folder: Path, arch: str = "essnet_d", width: int = 480, height: int = 360,
                      onnx: bool = True, seed: int = 0) -> Path:
    """A model card + .pt (+ ONNX) with RANDOM weights for plumbing tests."""
    import torch
    from seg_perception.card import card_for_table, load_card
    from seg_perception.data.classes import CAMVID
    from seg_perception.deploy.export import export_onnx
    from seg_perception.nets import build_model
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = build_model(arch, CAMVID.num_classes)
    # BN statistics measured on smooth random colour images: with made-up ones the activations
    # drift until the labels are a fixed pattern whatever the frame. Measured ones keep the labels
    # following the input (colour order, content), so tests that compare labels across colour
    # paths and frames can fail (test_pipeline.py pins that).
    from seg_perception.card import IMAGENET_MEAN, IMAGENET_STD
    rng = np.random.default_rng(seed)
    imgs = np.stack([cv2.resize(rng.uniform(0, 1, (6, 8, 3)).astype(np.float32), (width, height),
                                interpolation=cv2.INTER_CUBIC) for _ in range(4)])
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration pass
    with torch.no_grad():
        net.train()(x.float())
    net.eval()
    name = f"random_{arch}"
    torch.save(net.state_dict(), folder / f"{name}.pt")
    card = card_for_table(name, arch, CAMVID, width, height, files={"weights": f"{name}.pt"},
                          training={"note": "RANDOM WEIGHTS: a test fixture, not a trained model"})
    card.save(folder / f"{name}.yaml")
    if onnx:
        export_onnx(load_card(folder / f"{name}.yaml"), folder / f"{name}.onnx")
    return folder / f"{name}.yaml"


def label_kappa(pairs) -> float:
    """Cohen's kappa of label maps (a, b): how far their agreement is above chance (sum over classes
    of p_a(k) p_b(k)), as a fraction of the way to 1. Random or constant labels score about 0.
    Used where a random fixture model's labels are compared across precisions: its logits are
    close together, so exact agreement is not expected, but chance-level agreement is a bug."""
    a = np.concatenate([x.ravel() for x, _ in pairs])
    b = np.concatenate([y.ravel() for _, y in pairs])
    n = int(max(a.max(), b.max())) + 1
    chance = float(np.dot(np.bincount(a, minlength=n) / a.size, np.bincount(b, minlength=n) / b.size))
    return (float(np.mean(a == b)) - chance) / (1.0 - chance)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """Card path of an ESSNet-D with random weights, exported to ONNX (480x360)."""
    return make_random_model(tmp_path_factory.mktemp("random_model"))


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The default trained model from models/ (fails if it is missing: it must ship)."""
    from seg_perception.paths import DEFAULT_MODEL, resolve_model
    return resolve_model(DEFAULT_MODEL)


def onnx_that_fails_to_run(path: Path) -> Path:
    """An ONNX file that loads as a frame graph (uint8 image in, labels out) but fails on every
    frame: a Reshape to (-1, 7) of an image whose size 7 does not divide."""
    import onnx
    from onnx import TensorProto, helper
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 7])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["r"]), helper.make_node("Identity", ["r"], ["labels"])],
        "fails", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "h", "w", 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, None)], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
