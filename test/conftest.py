"""Shared fixtures.

Models here carry RANDOM weights unless a test says otherwise: they exercise
the plumbing (shapes, headers, encodings, agreement between backends), not
accuracy. Accuracy is measured with the shipped weights in models/.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Two processes on these machines only discover each other with these settings; each
# test session gets its own domain so parallel runs don't cross-talk.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_STATIC_PEERS", "127.0.0.1")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")


def pytest_terminal_summary(terminalreporter):
    # Most accuracy and node tests read CamVid frames; when it is missing, say so once at the
    # end instead of leaving the user to read it out of each error.
    from seg_perception.data.datasets import default_camvid_root
    root = default_camvid_root()
    if not (root / "val.txt").is_file():
        terminalreporter.write_line(
            f"CamVid NOT FOUND at {root}: tests that read it cannot run. Put it at "
            "../shared/datasets/camvid beside the checkout or set SEG_PERCEPTION_CAMVID=/path/to/camvid")


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    from seg_perception.data.datasets import default_camvid_root
    root = default_camvid_root()
    assert (root / "val.txt").is_file(), (
        f"CamVid not found at {root}: tests need ../shared/datasets/camvid or $SEG_PERCEPTION_CAMVID")
    return root


@pytest.fixture(scope="session")
def val_frames(camvid_root):
    """A few CamVid val frames (RGB) with their labels."""
    from seg_perception.data.datasets import camvid
    ds = camvid(camvid_root, "val")
    return [ds.load(i) for i in (0, 17, 34, 51, 68, 85)]


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
    net = build_model(arch, CAMVID.num_classes).eval()
    # Random BN statistics make the random net's output depend on the input more.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    name = f"random_{arch}"
    torch.save(net.state_dict(), folder / f"{name}.pt")
    card = card_for_table(name, arch, CAMVID, width, height, files={"weights": f"{name}.pt"},
                          training={"note": "RANDOM WEIGHTS: a test fixture, not a trained model"})
    card.save(folder / f"{name}.yaml")
    if onnx:
        export_onnx(load_card(folder / f"{name}.yaml"), folder / f"{name}.onnx")
    return folder / f"{name}.yaml"


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """Card path of an ESSNet-D with random weights, exported to ONNX (480x360)."""
    return make_random_model(tmp_path_factory.mktemp("random_model"))


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The default trained model from models/ (fails if it is missing: it must ship)."""
    from seg_perception.paths import DEFAULT_MODEL, resolve_model
    return resolve_model(DEFAULT_MODEL)


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def executable(name: str) -> str:
    """A console script of this package, from the interpreter's own bin folder first."""
    cand = Path(sys.executable).parent / name
    if cand.is_file():
        return str(cand)
    found = shutil.which(name)
    assert found, f"{name} is not installed: run 'pip install -e .' (make setup does)"
    return found
