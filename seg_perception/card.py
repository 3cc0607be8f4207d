"""Model cards: the one source of truth for what a weights file means.

A card is a YAML file next to the weights (``foo.pt`` -> ``foo.yaml``) holding
the architecture, classes (names, colours), ignore id, drivable classes, the
input resolution, the normalisation, how it was trained and what was measured.
Training writes it; export, the node and evaluation read it through
``load_card`` and nothing else.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

from .files import atomic_write, sha256

CARD_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The precisions a model can run at, everywhere (node, backends, engines, CLI). fp32 and
# fp16 run the float ONNX graph; int8 runs the Q/DQ graph made by `seg-perception quantize`.
PRECISIONS = ("fp32", "fp16", "int8")


# Card figures that depend on the architecture alone: still true for other weights (adapt, export).
ARCHITECTURE_METRICS = ("params", "gmacs", "gmacs_at")


# What a training setting was before it was recorded (a card's "training" block, a checkpoint's
# config): the only behaviour there was then. A run or card without the key compares as this.
SETTING_BEFORE_RECORDED = {"label_resize": "nearest", "processes": 1}


# The card's training block records the hash of the weights file it was written with: the two files
# cannot be replaced as one unit, and a run stopped between them leaves new weights beside an old card.
WEIGHTS_HASH = "weights_sha256"


def weights_mismatch(card: "ModelCard") -> Optional[str]:
    """Why the card's weights file is not the one the card was written for; None when it is, or when
    the card records no hash (cards written before it, hand-made ones)."""
    recorded, weights = card.training.get(WEIGHTS_HASH), card.file("weights")
    if not recorded or weights is None or not weights.is_file() or sha256(weights) == recorded:
        return None
    return (f"{weights.name} is not the weights file its card {card.path.name if card.path else card.name} was "
            "written for (a run stopped between writing the two, or the file was replaced)")


class CardError(ValueError):
    """A model card that is missing or malformed; the message names the file."""


def check_model_name(name: str, flag: str = "--name") -> str:
    """A model name becomes file names (NAME.pt, NAME.yaml, ...) in one folder: refuse one that is empty,
    reaches into another folder or makes hidden files, before anything is written."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"{flag} '{name}' is not a model name: give a plain file name without '/' or '\\' "
                         "that does not start with '.', e.g. essnet_d_mycam")
    return name


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS, else a ValueError that lists them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; valid choices: {', '.join(PRECISIONS)}")
    return precision


# Where an INT8 graph runs decides its layout: TensorRT wants symmetric int8 Q/DQ on the dense
# convolutions (role onnx_int8); ONNX Runtime's CPU kernels are fast on uint8 activations x int8
# weights with every op quantized (QOperator: QLinearConv, ..., role onnx_int8_cpu).
INT8_TARGETS = ("tensorrt", "cpu")


def onnx_role(precision: str, target: str = "tensorrt") -> str:
    """The card's file role of the ONNX graph that serves ``precision`` on ``target``
    (``tensorrt``: TensorRT and ONNX Runtime on a GPU; ``cpu``: ONNX Runtime on the CPU)."""
    if check_precision(precision) != "int8":
        return "onnx"
    if target not in INT8_TARGETS:
        raise ValueError(f"unknown int8 target '{target}'; valid choices: {', '.join(INT8_TARGETS)}")
    return "onnx_int8_cpu" if target == "cpu" else "onnx_int8"


@dataclass
class ModelCard:
    name: str
    architecture: str
    class_names: List[str]
    class_colors: List[Tuple[int, int, int]]
    ignore_index: int
    drivable_classes: List[int]
    input_width: int
    input_height: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    dataset: str = ""
    files: Dict[str, str] = field(default_factory=dict)  # role -> file name, relative to the card
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None  # where it was loaded from or will be saved (not saved itself)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def first_trained_split(self) -> str:
        """The split the weights first trained on ("train" of "train+val"; "train" where the card does not
        say): where INT8 calibration frames come from."""
        training = self.training if isinstance(self.training, dict) else {}
        return str(training.get("train_split") or "train").split("+")[0]

    @property
    def palette(self) -> np.ndarray:
        """(256, 3) uint8 RGB lookup table; ids past the table are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.class_colors, np.uint8)
        return lut

    def check_classes(self, names: List[str], where: str, hint: str) -> None:
        """Scoring or calibrating on data labelled with other classes gives meaningless figures:
        a ValueError naming both tables, unless they agree. Names count only where both sides have
        real ones (a folder dataset without dataset.yaml calls its classes class_0, class_1, ...)."""
        names = [str(n) for n in names]
        generic = any(n == [f"class_{i}" for i in range(len(n))] for n in (names, list(self.class_names)))
        if len(names) == self.num_classes and (generic or names == list(self.class_names)):
            return

        def listed(n):
            return ", ".join(n[:6]) + (", ..." if len(n) > 6 else "")
        same = ""
        if sorted(n.lower() for n in names) == sorted(str(n).lower() for n in self.class_names):
            same = ("the same classes in another order (a folder dataset: list them in the model's order in "
                    "dataset.yaml, or give each its model id with id:); ")
        elif len(names) == self.num_classes:
            same = "the same number of classes with other names: "
        raise ValueError(f"{where} has {len(names)} classes ({listed(names)}) but model '{self.name}' has "
                         f"{self.num_classes} ({listed(list(self.class_names))}): {same}{hint}")

    def file(self, role: str) -> Optional[Path]:
        """Absolute path of a file the card lists (weights, onnx, ...), or None."""
        name = self.files.get(role)
        if not name:
            return None
        p = Path(name)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def onnx_for(self, precision: str, target: str = "tensorrt") -> Optional[Path]:
        """The ONNX file this card lists for ``precision`` on ``target`` (None when it lists none).

        The one place that chooses: on the CPU, int8 is the CPU INT8 graph when the card lists
        one, else the TensorRT-style Q/DQ graph (which runs, but slower than fp32 there)."""
        if target == "cpu" and check_precision(precision) == "int8":
            return self.file(onnx_role(precision, "cpu")) or self.file(onnx_role(precision))
        return self.file(onnx_role(precision, target))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "card_version": CARD_VERSION,
            "name": self.name,
            "architecture": self.architecture,
            "dataset": self.dataset,
            "classes": [{"id": i, "name": n, "color": [int(v) for v in c]}
                        for i, (n, c) in enumerate(zip(self.class_names, self.class_colors))],
            "ignore_index": int(self.ignore_index),
            "drivable_classes": [int(c) for c in self.drivable_classes],
            "input": {"width": int(self.input_width), "height": int(self.input_height)},
            "normalization": {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                              "applies_to": "RGB scaled to [0, 1]"},
            "files": dict(self.files),
            "training": copy.deepcopy(self.training),
            "metrics": copy.deepcopy(self.metrics),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False, width=110, default_flow_style=None))
        self.path = path
        return path


# The keys of a card (as to_dict writes them), per block: an unknown key close to one of these is a typo
# whose value would be dropped for the default unseen (ignore_idx: the ignore id 255); one far from all
# is kept for a card written by a newer version.
CARD_KEYS = {"": ("card_version", "name", "architecture", "dataset", "classes", "ignore_index", "drivable_classes",
                  "input", "normalization", "files", "training", "metrics"),
             "input": ("width", "height"),
             "normalization": ("mean", "std", "applies_to")}


def _check_spelling(d: Dict[str, Any], where: str) -> None:
    for block, known in CARD_KEYS.items():
        keys = d.get(block) if block else d
        for key in keys if isinstance(keys, dict) else ():
            near = [] if key in known else difflib.get_close_matches(str(key), known, n=1, cutoff=0.8)
            if near:
                raise CardError(f"{where}: unknown key '{f'{block}.' if block else ''}{key}': did you mean "
                                f"'{near[0]}'? (see models/README.md for the card format)")


def _check_tables(metrics: Dict[str, Any], where: str) -> None:
    """The figures read as tables (models --shipped, export, release) must be tables: a hand-written
    'int8_cpu: n/a' broke the command that read it with an AttributeError."""
    tables = [(f"metrics.{k}", v) for k, v in metrics.items() if k in ("int8", "int8_cpu", "cpu_latency")]
    latency = metrics.get("cpu_latency")
    if isinstance(latency, dict):  # its timings: {p50: ..., ...} per backend
        tables += [(f"metrics.cpu_latency.{k}", v) for k, v in latency.items() if str(k).endswith("_ms")]
    for key, v in tables:
        if not isinstance(v, dict):
            raise CardError(f"{where}: {key} is {v!r}, not a mapping of figures: fix it or delete the key")


def card_from_dict(d: Dict[str, Any], path: Optional[Path] = None) -> ModelCard:
    where = str(path) if path else "model card"
    _check_spelling(d, where)
    try:
        classes = sorted(d["classes"], key=lambda c: int(c["id"]))
        if [int(c["id"]) for c in classes] != list(range(len(classes))):
            raise CardError(f"{where}: class ids must be 0..N-1 without gaps")
        card = ModelCard(
            name=str(d["name"]),
            architecture=str(d["architecture"]),
            class_names=[str(c["name"]) for c in classes],
            class_colors=[tuple(int(v) for v in c["color"]) for c in classes],
            ignore_index=int(d.get("ignore_index", 255)),
            drivable_classes=[int(c) for c in d.get("drivable_classes", [])],
            input_width=int(d["input"]["width"]),
            input_height=int(d["input"]["height"]),
            mean=tuple(float(v) for v in (d.get("normalization") or {}).get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in (d.get("normalization") or {}).get("std", IMAGENET_STD)),
            dataset=str(d.get("dataset") or ""),
            files=dict(d.get("files", {})),
            training=dict(d.get("training", {}) or {}),
            metrics=dict(d.get("metrics", {}) or {}),
            path=path,
        )
    except CardError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CardError(f"{where} is malformed ({type(e).__name__}: {e}); see models/README.md "
                        "for the card format") from None
    _check_tables(card.metrics, where)
    for c in card.drivable_classes:
        if not 0 <= c < card.num_classes:
            raise CardError(f"{where}: drivable class {c} is not one of the {card.num_classes} classes")
    if card.input_width % 8 or card.input_height % 8 or card.input_width <= 0 or card.input_height <= 0:
        raise CardError(f"{where}: input {card.input_width}x{card.input_height} must be a positive multiple of 8")
    for name, c in zip(card.class_names, card.class_colors):  # the palette takes 3 bytes a class
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise CardError(f"{where}: class '{name}' has colour {list(c)}; a colour is 3 values R, G, B of 0..255")
    if len(card.mean) != 3 or len(card.std) != 3 or not all(v > 0 for v in card.std):  # frames are divided by std
        raise CardError(f"{where}: normalization needs 3 mean values and 3 std values above 0, got mean "
                        f"{list(card.mean)} and std {list(card.std)}")
    return card


def card_path_for(path: str | Path) -> Path:
    """The card that belongs to a weights/ONNX/engine file: same stem, .yaml."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return p.with_suffix(".yaml")


def card_of_file(path: str | Path) -> ModelCard:
    """The card beside a file, else the card of the model that lists it: the shipped INT8 files
    (NAME_int8.onnx, NAME_int8_cpu.onnx) have no card of their own, NAME.yaml names them."""
    p = Path(path)
    if card_path_for(p).is_file():
        return load_card(p)
    for tail in ("_int8_cpu", "_int8"):
        if p.stem.endswith(tail) and card_path_for(p.with_name(p.stem[: -len(tail)] + p.suffix)).is_file():
            card = load_card(p.with_name(p.stem[: -len(tail)] + p.suffix))
            if p.name in (card.files.get("onnx_int8"), card.files.get("onnx_int8_cpu")):
                return card
    return load_card(p)  # says which card is missing


def load_card(path: str | Path) -> ModelCard:
    """Load the card at ``path`` (or the card beside a weights/ONNX file)."""
    cp = card_path_for(path)
    if not cp.is_file():
        raise CardError(f"model card {cp} not found: every weights file needs its card beside it "
                        "(written by 'seg-perception train' and 'export')")
    try:
        data = yaml.safe_load(cp.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CardError(f"model card {cp} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise CardError(f"model card {cp} is not UTF-8 text (a binary file, or saved in another encoding): "
                        "save it as UTF-8, or pass the model's .yaml card") from None
    if not isinstance(data, dict):
        raise CardError(f"model card {cp} is not a mapping")
    return card_from_dict(data, cp.resolve())


def card_for_table(name: str, architecture: str, table, width: int, height: int, **kw) -> ModelCard:
    """A new card for a network trained on a dataset's ClassTable."""
    return ModelCard(name=name, architecture=architecture, class_names=list(table.names),
                     class_colors=[tuple(c) for c in table.colors], ignore_index=table.ignore_index,
                     drivable_classes=list(table.drivable), input_width=width, input_height=height,
                     dataset=table.dataset, **kw)
