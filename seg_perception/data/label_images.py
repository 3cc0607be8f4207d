"""Label images as labelling tools save them, read into class ids.

Three forms are read: a single-channel PNG of class ids (8 or 16 bit, CamVid's and Cityscapes'
form); a palette PNG, whose pixel values are palette indices = class ids (Pascal VOC, LabelMe,
CVAT's masks: the file looks coloured but holds ids); and an RGB-coded mask, whose colours
dataset.yaml gives each class (``LabelColors``). OpenCV expands palette PNGs to BGR, so they are
told apart by the PNG header and decoded with Pillow, which keeps the indices. A greyscale PNG of
1, 2 or 4 bits (PIL's mode "1" binary masks) is scaled up to 0..255 by every decoder; its header
tells it apart, and its values are scaled back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np


class LabelError(ValueError):
    """A label file that cannot be read as class ids; the message names the file and the way out."""


class ColourLabelError(LabelError):
    """A colour-coded label image and no colours to read it by."""


RGB = Tuple[int, int, int]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PALETTE = 3  # PNG colour type of an indexed image (IHDR byte 25)
_GREY = 0  # PNG colour type of a greyscale image without alpha


def imread(path: str | Path, flags: int) -> Optional[np.ndarray]:
    """cv2.imread of any file name (None where it cannot be read): OpenCV takes the name as UTF-8 and
    crashed the process (SIGSEGV) on one that is not, as a camera or an old file system can write."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:  # missing, a folder, unreadable
        return None
    return cv2.imdecode(data, flags) if data.size else None


def _png_header(path: str | Path) -> Optional[Tuple[int, int]]:
    """(bit depth, colour type) from a PNG's IHDR chunk (IHDR bytes 24 and 25); None for another file."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def is_palette_png(path: str | Path) -> bool:
    header = _png_header(path)
    return header is not None and header[1] == _PALETTE


def low_bit_grey_png(path: str | Path) -> int:
    """The bit depth of a greyscale PNG of 1, 2 or 4 bits per pixel (PIL saves mode "1" masks so), else 0."""
    header = _png_header(path)
    return header[0] if header is not None and header[1] == _GREY and header[0] < 8 else 0


def _code(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class LabelColors:
    """Colour -> class id for RGB-coded label images, from dataset.yaml.

    ``colors``: (r, g, b) -> class id (several colours may name one class, and the ignore id);
    ``uncoloured``: names of classes dataset.yaml gives no colour, which makes colour-coded labels
    unreadable (their pixels could not be found). ``classes``: the class count, where known (ids from
    it on are the ignore id's colours)."""

    def __init__(self, colors: Dict[RGB, int], uncoloured: Sequence[str] = (), source: str = "dataset.yaml",
                 classes: int = 256, ids_only: bool = False):
        self.uncoloured = tuple(uncoloured)
        self.ids_only = ids_only  # dataset.yaml's labels: ids: no label is read by its colours
        self.source = source
        self.classes = classes
        codes = _code(np.array(list(colors), np.int32).reshape(-1, 3))
        order = np.argsort(codes)
        self._codes = codes[order]
        self._ids = np.array(list(colors.values()), np.uint8)[order]
        # single-channel masks read by their grey levels as colours, and as ids: "colours"/"ids" ->
        # [frames, first path]. Decided frame by frame, so a dataset must not hold both (mixed_reading)
        self.grey_read: Dict[str, list] = {}

    def mixed_reading(self) -> str:
        """An error line when single-channel masks of one dataset were read both ways; "" otherwise.
        The usual cause: masks of ids with 255 unlabelled, and a class whose colour is white: a frame
        without that class's id holds only 0 and 255, which read as black and white colours."""
        if len(self.grey_read) < 2:
            return ""
        (nc, pc), (ni, pi) = self.grey_read["colours"], self.grey_read["ids"]
        return (f"single-channel labels read two ways: {nc} by their grey levels as {self.source}'s class colours "
                f"(e.g. {pc}), {ni} as class ids (e.g. {pi}, whose values are not all class colours): if the masks "
                f"hold class ids, set labels: ids in {self.source}; if they are grey colour masks, give every grey "
                "level they use to a class's colours or to ignore_color")

    def _note_grey(self, how: str, path) -> None:
        seen = self.grey_read.setdefault(how, [0, str(path)])
        seen[0] += 1

    def colours_of(self, class_id: int) -> List[RGB]:
        """The label colours that name ``class_id``."""
        return [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in self._codes[self._ids == class_id].tolist()]

    @property
    def complete(self) -> bool:
        """Every class has a colour: colour-coded labels can be read."""
        return not self.uncoloured and len(self._codes) > 0

    def lookup(self, rgb: np.ndarray) -> np.ndarray:
        """The class id of each colour of an ...x3 array, -1 where no class has it."""
        if not len(self._codes):
            return np.full(rgb.shape[:-1], -1, np.int32)
        px = _code(rgb)
        pos = np.searchsorted(self._codes, px).clip(max=len(self._codes) - 1)
        return np.where(self._codes[pos] == px, self._ids[pos].astype(np.int32), -1)

    def ids(self, rgb: np.ndarray, path: str | Path) -> np.ndarray:
        """Class ids of an HxWx3 RGB label image; unknown colours are an error naming them."""
        listing = Path(self.source).name  # the file the colours come from, for the advice's syntax
        if self.ids_only:
            raise LabelError(f"label {path} is a colour image, but {self.source} says labels: ids (masks of class "
                             "ids): to read colour-coded masks by the classes' colours, drop labels: ids")
        if self.uncoloured:
            how = {"label_colors.txt": "('r g b name' per line)"}.get(listing, "({name: ..., color: [r, g, b]})")
            raise LabelError(f"label {path} is a colour image, but {self.source} gives no color to "
                             f"{', '.join(self.uncoloured)}: give every class its label colour "
                             f"{how} to read colour-coded labels")
        found = self.lookup(rgb)
        known = found >= 0
        if not known.all():
            codes, counts = np.unique(_code(rgb)[~known], return_counts=True)
            top = np.argsort(counts)[::-1][:3]
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) on {n} px"
                              for c, n in zip(codes[top], counts[top]))
            share = 100.0 * (~known).sum() / known.size
            share = f"{share:.2g}" if share < 99.5 else f"{share:.0f}"  # 0.91, 12, 100 (not 1e+02)
            fix = {"labelmap.txt": "a class missing there? add it (name:r,g,b::)",
                   "label_colors.txt": "a class missing there? add it (r g b name)"}.get(
                listing, "add them to a class's color list or to ignore_color")
            raise LabelError(f"label {path} has {len(codes)} colour(s) that no class has in {self.source} "
                             f"({shown}; {share} % of its pixels): {fix}; labels saved as JPEG or scaled "
                             "with smoothing have blended colours: save them as PNG at full size")
        return found.astype(np.uint8)


def _palette_ids(index: np.ndarray, palette: List[int], colors: Optional[LabelColors], path) -> np.ndarray:
    """Class ids of a palette PNG: its indices (VOC's convention), unless its palette says it is a
    colour-coded mask stored as indices (an optimiser or editor re-saved an RGB mask, or a tool
    numbers the classes in another order than dataset.yaml): every index it uses has a class's
    colour, and some index another class's. Then the colours count, as for the RGB mask it was.
    A palette that mixes the two (an index coloured as another class, and a colour no class has)
    is an error that asks which: read either way, some class would be another."""
    if colors is None or not colors.complete or not palette:
        return index
    pal = np.array(palette[:768] + [0] * (768 - len(palette[:768])), np.uint8).reshape(256, 3)
    used = np.bincount(index.ravel(), minlength=256) > 0
    owner = colors.lookup(pal)
    other = used & (owner >= 0) & (owner != np.arange(256))  # an index coloured as another class (or unlabelled)
    unknown = np.flatnonzero(used & (owner < 0))
    # (an index in the ignore colour alone says little: black is index 0's colour in many palettes)
    as_class = np.flatnonzero(other & (owner < colors.classes))
    if len(as_class) and len(unknown):
        i, u = int(as_class[0]), int(unknown[0])
        rgb = [int(v) for v in pal[u]]  # as dataset.yaml writes a colour
        raise LabelError(f"label {path}: its palette gives index {i} the colour of class id {int(owner[i])} in "
                         f"{colors.source} and index {u} a colour no class has {rgb}: if the indices are the class "
                         f"ids, set labels: ids in {colors.source}; if the colours name the classes (a tool that "
                         f"numbers them in its own order), add {rgb} to ignore_color or to a class's colours")
    return colors.ids(pal[index], path) if other.any() and not len(unknown) else index


def _indexed_ids(index: np.ndarray, pal: np.ndarray, colors: LabelColors, path) -> np.ndarray:
    """A single-channel mask's values as ids, unless every value used is a class's grey colour and
    some value another class's: then by those colours (noted: a dataset must not mix the two)."""
    used = np.bincount(index.ravel(), minlength=256) > 0
    owner = colors.lookup(pal)
    other = used & (owner >= 0) & (owner != np.arange(256))  # a value coloured as another class
    as_colours = bool(other.any()) and not (used & (owner < 0)).any()
    if other.any():  # the two readings differ for this frame (else it says nothing of which is meant)
        colors._note_grey("colours" if as_colours else "ids", path)
    return colors.ids(pal[index], path) if as_colours else index


def _grey_ids(lab: np.ndarray, colors: Optional[LabelColors], path) -> np.ndarray:
    """A single-channel 8-bit mask holds class ids, unless dataset.yaml's colours say its grey
    levels are colours: every value is some class's grey colour and some value another class's
    (a 0/255 mask with background black and the class white)."""
    if colors is None or not colors.complete or lab.dtype != np.uint8 or not lab.any():
        return lab  # (all 0 says nothing either way: id 0, as always)
    grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return _indexed_ids(lab, grey, colors, path)


def _low_bit_ids(lab: np.ndarray, bits: int, colors: Optional[LabelColors], path) -> np.ndarray:
    """The values a 1-, 2- or 4-bit greyscale PNG holds (0..2**bits-1). Decoders scale them up to
    0..255 by bit replication (libpng in OpenCV, and Pillow for 2 and 4 bits: x * 255 / (2**bits-1)),
    which made a binary mask's class 1 the ignore id 255; that scaling is undone exactly. Then as an
    8-bit mask: ids, unless dataset.yaml's colours say its grey levels (as the file shows them,
    0 and 255 for a binary mask) are colours."""
    top = (1 << bits) - 1
    step = 255 // top  # 255, 85, 17: exact for 1, 2 and 4 bits
    if not (lab % step).any():
        ids = (lab // step).astype(np.uint8)
    elif int(lab.max()) <= top:  # a decoder that kept the raw values
        ids = lab.astype(np.uint8)
    else:
        raise LabelError(f"label {path} is a {bits}-bit greyscale PNG read with values up to {int(lab.max())}: "
                         "save the labels as 8-bit single-channel PNGs of class ids")
    if colors is None or not colors.complete or not ids.any():
        return ids
    grey = np.zeros((256, 3), np.uint8)
    grey[:top + 1] = (np.arange(top + 1) * step)[:, None]
    return _indexed_ids(ids, grey, colors, path)


def read_label(path: str | Path, colors: Optional[LabelColors] = None) -> np.ndarray:
    """Class ids (HxW, uint8 or uint16) of a label file in any of the three forms above."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"cannot read label {path}: missing")
    if is_palette_png(path):
        from PIL import Image  # only palette PNGs need it; OpenCV reads the rest
        try:
            with Image.open(path) as im:
                return _palette_ids(np.array(im), im.getpalette() or [], colors, path)
        except OSError as e:
            raise LabelError(f"cannot read label {path}: {e}") from None
    with open(path, "rb") as f:
        if f.read(3) == b"\xff\xd8\xff":
            raise LabelError(f"label {path} is JPEG data under another name: JPEG changes class ids and colours "
                             "at every edge; export the labels as PNG")
    lab = imread(path, cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise LabelError(f"cannot read label {path}: not an image file")
    if lab.dtype.kind == "f":  # float TIFFs (GIS tools): whole values are ids; 1.6 was cut to class 1
        whole = np.isfinite(lab).all() and (lab == np.round(lab)).all() and lab.min() >= 0 and lab.max() <= 65535
        if not whole:
            raise LabelError(f"label {path} holds {lab.dtype} values that are not all whole numbers from 0 to 65535: "
                             "class ids are whole numbers; save the labels as 8-bit (or 16-bit) integer images")
        lab = lab.astype(np.uint8 if lab.max() <= 255 else np.uint16)
    if lab.ndim == 2:
        bits = low_bit_grey_png(path)
        return _low_bit_ids(lab, bits, colors, path) if bits else _grey_ids(lab, colors, path)
    if lab.shape[2] not in (3, 4) or lab.dtype != np.uint8:
        raise LabelError(f"label {path} has {lab.shape[2]} channels of {lab.dtype}; expected a single-channel "
                         "image of class ids, a palette PNG, or an 8-bit RGB mask coloured as dataset.yaml says")
    rgb = cv2.cvtColor(lab[..., :3], cv2.COLOR_BGR2RGB)
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    if colors is not None:
        try:
            return colors.ids(rgb, path)
        except LabelError:
            found = colors.lookup(rgb)
            # grey class colours (CamVid's Sky is 128, 128, 128) with one missing from the list: most pixels
            # are listed colours, and several of them name a class other than their grey level would as an
            # id, so the colour is what is wrong, not ids saved as grey RGB (whose 0 may be a black class, 255
            # a white ignore_color: the same either way)
            renamed = found[(found >= 0) & (found != rgb[..., 0])]
            if not grey or ((found >= 0).mean() > 0.5 and len(np.unique(renamed)) > 1):
                raise
    if grey:  # class ids saved as a grey RGB image
        return rgb[..., 0].copy()
    raise ColourLabelError(f"label {path} is a colour image: to read colour-coded labels give every class its "
                     "colour in dataset.yaml (classes: [{name: road, color: [128, 64, 128]}, ...]); "
                     "or save labels as single-channel PNGs of class ids")
