"""Where shipped files live: the models/ folder in a checkout, an install prefix or
a colcon install space (share/seg_perception/models)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

PACKAGE = "seg_perception"
DEFAULT_MODEL = "essnet_d_camvid"


def models_dirs() -> List[Path]:
    """Candidate model folders, most specific first."""
    out: List[Path] = []
    env = os.environ.get("SEG_PERCEPTION_MODELS")
    if env:
        out.append(Path(env))
    try:  # colcon / ament install: share/seg_perception/models
        from ament_index_python.packages import get_package_share_directory
        out.append(Path(get_package_share_directory(PACKAGE)) / "models")
    except Exception:
        pass
    out.append(Path(__file__).resolve().parents[1] / "models")  # source checkout / editable install
    out.append(Path(sys.prefix) / "share" / PACKAGE / "models")  # pip install of the wheel
    return [p for p in out if p.is_dir()]


def available_models() -> List[str]:
    names = set()
    for d in models_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_model(model: str) -> Path:
    """A model name (a card in a models folder) or a path to a card/weights/ONNX file -> card path."""
    from .card import card_path_for
    if not model:
        raise ValueError(f"no model given; available: {', '.join(available_models()) or 'none'}")
    p = Path(model).expanduser()
    if p.suffix or os.sep in model:
        cp = card_path_for(p)
        if not cp.is_file():
            raise FileNotFoundError(f"model card {cp} not found; available models: "
                                    f"{', '.join(available_models()) or 'none'}")
        return cp
    for d in models_dirs():
        cp = d / f"{model}.yaml"
        if cp.is_file():
            return cp
    raise ValueError(f"unknown model '{model}'; valid choices: {', '.join(available_models()) or 'none'} "
                     "(or a path to a model card .yaml)")


def default_model() -> Optional[Path]:
    try:
        return resolve_model(DEFAULT_MODEL)
    except (ValueError, FileNotFoundError):
        return None
