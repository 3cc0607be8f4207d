"""Class tables of the supported datasets.

This is the only place class names and colours are written down; training
copies the table of its dataset into the model card, and everything
downstream (node, evaluation, reports) reads the card, never this file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple


@dataclass(frozen=True)
class ClassTable:
    dataset: str
    names: Tuple[str, ...]
    colors: Tuple[Tuple[int, int, int], ...]  # RGB
    ignore_index: int
    drivable: Tuple[int, ...]  # class ids a ground vehicle may drive on

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def as_card_classes(self) -> List[dict]:
        return [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(self.names, self.colors))]


CAMVID = ClassTable(
    dataset="camvid",
    names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"),
    colors=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)),
    ignore_index=11,
    drivable=(3,),
)

CITYSCAPES = ClassTable(
    dataset="cityscapes",
    names=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
           "motorcycle", "bicycle"),
    colors=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
            (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
            (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
            (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    ignore_index=255,
    drivable=(0,),
)

# Cityscapes label ids (gtFine_labelIds.png) -> the 19 train ids; everything else -> 255.
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                            24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

TABLES = {"camvid": CAMVID, "cityscapes": CITYSCAPES}


def generic_table(num_classes: int, ignore_index: int = 255, names: Sequence[str] | None = None,
                  drivable: Sequence[int] = ()) -> ClassTable:
    """A table for a user's own folder dataset (names default to class_<i>)."""
    names = tuple(names) if names else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    return ClassTable("folder", names, default_palette(num_classes), ignore_index, tuple(drivable))


def _voc_colour(c: int) -> Tuple[int, int, int]:
    """Colour c of the PASCAL VOC palette (bits of c interleaved into r, g, b from the top)."""
    r = g = b = 0
    for k in range(8):
        r |= ((c >> 0) & 1) << (7 - k)
        g |= ((c >> 1) & 1) << (7 - k)
        b |= ((c >> 2) & 1) << (7 - k)
        c >>= 3
    return (r, g, b)


def voc_colormap(n: int) -> Tuple[Tuple[int, int, int], ...]:
    """The PASCAL VOC palette's first n colours (index 0 black): the colours of VOC-style RGB masks."""
    return tuple(_voc_colour(c) for c in range(n))


def default_palette(n: int) -> Tuple[Tuple[int, int, int], ...]:
    """Distinct colours for n classes: the PASCAL VOC palette without its black."""
    return tuple(_voc_colour(c + 1) for c in range(n))
