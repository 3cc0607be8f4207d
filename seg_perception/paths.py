"""Where files live: the shipped models, the node's parameter file and the sample bag
(in a checkout, an install prefix or a colcon install space: share/seg_perception/...),
and the one cache folder for what is made on this machine (ONNX exports, TensorRT engines)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

PACKAGE = "seg_perception"
DEFAULT_MODEL = "rdsnet_camvid"
SAMPLE_BAG = "camvid_val_sample"
_HERE = Path(__file__).resolve().parents[1]
# the source checkout (editable installs too); in a pip install the folder above the package is
# site-packages, which is no checkout (an empty site-packages/models of another package is not ours)
_CHECKOUT = _HERE if (_HERE / "package.xml").is_file() else _HERE / "no-checkout"


def _ament_share() -> List[Path]:
    """share/seg_perception of a colcon/ament install, when the ament index knows the package."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return [Path(get_package_share_directory(PACKAGE))]
    except Exception:  # no ament index here, or the package is not in it
        return []


def _install_shares() -> List[Path]:
    """share/seg_perception of a pip install of the wheel: where its record says pip put the data
    files (sys.prefix in a venv, but ~/.local for `pip install --user` and /usr/local for a
    system pip on Debian/Ubuntu), then sys.prefix's."""
    out: List[Path] = []
    try:
        from importlib.metadata import distribution
        dist = distribution(PACKAGE)
        for f in dist.files or []:
            if f.name == "package.xml" and f.parent.name == PACKAGE and f.parent.parent.name == "share":
                out.append(Path(dist.locate_file(f)).resolve().parent)
    except Exception:  # not installed as a distribution (a checkout, a colcon install), or no record
        pass
    prefix = Path(sys.prefix) / "share" / PACKAGE
    return out + ([prefix] if prefix not in out else [])


def models_dirs(existing: bool = True) -> List[Path]:
    """Candidate model folders, most specific first (``existing``: only those there now)."""
    out: List[Path] = []
    env = os.environ.get("SEG_PERCEPTION_MODELS")
    if env:
        out.append(Path(env).expanduser())
    out += [d / "models" for d in _ament_share() + [_CHECKOUT] + _install_shares()]
    return [p for p in out if p.is_dir() or not existing]


def is_installed_models_dir(folder: Path) -> bool:
    """The models folder of an installed package (share/seg_perception/models of a pip or colcon
    install), not one of the user's: commands write there only when told to. A checkout's models/
    is not one (release ships there by default; git shows what changed)."""
    shipped = [d / "models" for d in _ament_share() + _install_shares()]
    try:
        return any(Path(folder).resolve() == d.resolve() for d in shipped)
    except OSError:
        return False


def release_dir() -> Optional[Path]:
    """Where `release` ships without --to: a folder names resolve from, $SEG_PERCEPTION_MODELS, else
    a checkout's models/ (None in an install: its share folder is the package's, not the user's)."""
    env = os.environ.get("SEG_PERCEPTION_MODELS")
    if env:
        return Path(env).expanduser()
    return _CHECKOUT / "models" if (_CHECKOUT / "models").is_dir() else None


def available_models() -> List[str]:
    names = set()
    for d in models_dirs():  # not the copies of a card that `quantize` writes beside its INT8 files
        names.update(p.stem for p in run_cards(d))
    return sorted(names)


def resolve_model(model: str) -> Path:
    """A model name (a card in a models folder), a path to a card/weights/ONNX file, or a folder
    holding one card (a training run) -> card path."""
    from .card import card_path_for
    if not model:
        raise ValueError(f"no model given; available: {', '.join(available_models()) or 'none'}")
    p = Path(model).expanduser()
    if p.is_dir() and (os.sep in model or not _named_card(model)):
        return _card_in_folder(p)
    if p.suffix or os.sep in model:
        cp = card_path_for(p)
        if not cp.is_file():
            raise FileNotFoundError(f"model card {cp} not found; available models: "
                                    f"{', '.join(available_models()) or 'none'}")
        return cp
    cp = _named_card(model)
    if cp is not None:
        return cp
    env = os.environ.get("SEG_PERCEPTION_MODELS")
    missing = (f"; SEG_PERCEPTION_MODELS={env} is not a folder" if env and not Path(env).expanduser().is_dir()
               else "")
    raise ValueError(f"unknown model '{model}'; valid choices: {', '.join(available_models()) or 'none'} "
                     f"(or a path to a model card .yaml, or a training run's folder){missing}")


def _named_card(name: str) -> Optional[Path]:
    return next((d / f"{name}.yaml" for d in models_dirs() if (d / f"{name}.yaml").is_file()), None)


INT8_TWINS = ("_int8", "_int8_cpu")  # `quantize` writes NAME_int8.yaml beside NAME.yaml: the same card


# `export --logits` writes NAME_logits.yaml beside NAME.yaml: the card of an evaluation graph, not a model
LOGITS_CARD = "_logits"


def run_cards(folder: Path) -> list:
    """The model cards of a folder, without the copies `quantize` writes beside its INT8 files
    and the cards of --logits exports."""
    cards = sorted(c for c in folder.glob("*.yaml") if c.name != "metadata.yaml")
    names = {c.stem for c in cards}
    return [c for c in cards if not any(c.stem.endswith(t) and c.stem[: -len(t)] in names
                                        for t in (*INT8_TWINS, LOGITS_CARD))]


def _card_in_folder(folder: Path) -> Path:
    """A run folder (train, adapt, release --to): the one card in it."""
    cards = run_cards(folder)
    if not cards and (folder / "last.pt").is_file():
        raise FileNotFoundError(f"{folder} is a training run with no model yet (only its checkpoint last.pt): "
                                "the weights and card are written at its first validation, or at the end of a "
                                "--keep last run")
    if len(cards) != 1:
        listed = f" ({', '.join(c.name for c in cards)})" if cards else ""
        raise FileNotFoundError(f"{folder} is a folder with {len(cards)} model cards{listed}: "
                                "pass the card .yaml itself")
    return cards[0]


def default_model() -> Optional[Path]:
    try:
        return resolve_model(DEFAULT_MODEL)
    except (ValueError, FileNotFoundError):
        return None


def default_params_file() -> Optional[Path]:
    """config/jetson.yaml: the package share's (ROS install) or the checkout's."""
    cands = [d / "config" / "jetson.yaml" for d in _ament_share() + [_CHECKOUT] + _install_shares()]
    return next((p for p in cands if p.is_file()), None)


def sample_bag() -> Path:
    """The shipped CamVid sample bag (test/data in a checkout, share/.../data in an install)."""
    cands = [_CHECKOUT / "test" / "data" / SAMPLE_BAG] + [d / "data" / SAMPLE_BAG
                                                          for d in _ament_share() + _install_shares()]
    for p in cands:
        if (p / "metadata.yaml").is_file():
            return p
    raise FileNotFoundError(f"the sample bag {SAMPLE_BAG} is not here (looked in "
                            f"{', '.join(str(c) for c in cands)}); pass --bag, or make one with "
                            "'seg-perception make-bag'")


def cache_dir() -> Path:
    """$SEG_PERCEPTION_CACHE, else $XDG_CACHE_HOME/seg_perception, else ~/.cache/seg_perception."""
    env = os.environ.get("SEG_PERCEPTION_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / PACKAGE
