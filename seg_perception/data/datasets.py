"""Datasets: CamVid (SegNet layout), Cityscapes (leftImg8bit/gtFine) and a plain
images + labels folder. Each yields (RGB uint8 HxWx3, label uint8/int HxW)
pairs and carries the ClassTable that ends up in the model card.

Every problem with the data is a DatasetError whose message names the file.
"""
from __future__ import annotations

import difflib
import functools
import io
import logging
import os
import shlex
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .classes import (CAMVID, CITYSCAPES, CITYSCAPES_ID_TO_TRAINID, ClassTable, default_palette, generic_table,
                      voc_colormap)
from .label_images import ColourLabelError, LabelColors, LabelError, imread, is_palette_png, read_label

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message says which file and why."""


class MissingSplit(DatasetError):
    """The split asked for is not in the dataset (the message lists those that are); a command
    adds which of its options names a split."""

    def naming(self, option: str) -> "MissingSplit":
        if "splits here: none" in str(self):
            return self  # nothing to name: the message says where the dataset may be instead
        return MissingSplit(f"{self}: name one of them with {option}")


_warned_low_bits = False


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8, turned upright by its EXIF orientation. A 16-bit PNG keeps its
    high byte, as the node reads 16-bit camera frames, so training sees what deployment sees."""
    global _warned_low_bits
    img = imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise DatasetError(f"cannot read image {path}: missing or not an image file")
    if img.dtype == np.uint16:
        if not _warned_low_bits and 0 < int(img.max()) < 4096:
            _warned_low_bits = True  # once: a folder of such frames would repeat it for every file
            log.warning(f"{path} is a 16-bit image whose values all sit below 4096 (10- or 12-bit data in the "
                        "low bits): it reads nearly black, as the node reads such camera frames. Save the frames "
                        "as 8-bit (scaled to full range) to train on them")
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DatasetError(f"image {path} holds {img.dtype} pixels; save it as 8-bit")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class SegmentationDataset:
    """A list of (image, label) files with one class table.

    ``cache=True`` keeps decoded frames in memory: CamVid is ~190 MB decoded and
    PNG decoding would otherwise cost as much CPU as a small net's step.
    """

    def __init__(self, pairs: Sequence[Tuple[Path, Path]], table: ClassTable,
                 transform: Optional[Callable] = None, label_map: Optional[np.ndarray] = None,
                 cache: bool = False, label_colors: Optional[LabelColors] = None, kind: str = "folder",
                 where: str = "", notes: Sequence[str] = (), classes_from: str = "",
                 card_colors: Optional[LabelColors] = None):
        if not pairs:
            raise DatasetError(f"no image/label pairs in {where or 'the dataset'}")
        self.pairs = [(Path(i), Path(l)) for i, l in pairs]
        self.table = table
        self.transform = transform
        self.label_map = label_map  # lookup table for raw label values -> class ids
        self.label_colors = label_colors  # colour -> class id, for RGB-coded label images
        # a model card's class colours, where no file gives the dataset's: for colour images only (an id
        # or palette PNG stays ids; the card's colours may be display colours alone)
        self.card_colors = card_colors
        self.kind = kind  # the --dataset kind, for advice on labels it cannot read
        self.notes = list(notes)  # what was left out on reading, for the commands to say
        self.classes_from = str(classes_from)  # the file that lists the classes, for advice on wrong ids
        self._cache: dict = {} if cache else None
        self.cache_limit: Optional[int] = None  # bytes of decoded frames to keep (None: all of them)
        self.cached_bytes = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def check_label_reading(self) -> None:
        """Once every label was read: single-channel masks read both by their grey levels as class
        colours and as class ids (decided frame by frame) are an error, not labels half wrong."""
        why = self.label_colors.mixed_reading() if self.label_colors is not None else ""
        if why:
            raise DatasetError(why)

    def load(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and idx in self._cache:
            return self._cache[idx]
        img_path, lab_path = self.pairs[idx]
        try:
            img = read_rgb(img_path)
            try:
                lab = read_label(lab_path, self.label_colors)
            except ColourLabelError:
                if self.card_colors is None:
                    raise
                try:
                    lab = read_label(lab_path, self.card_colors)
                except LabelError as e:
                    raise DatasetError(f"{e} (read with the model card's class colours, one per class and no "
                                       "unlabelled colour: give the dataset's in dataset.yaml)") from None
        except ColourLabelError as e:
            if self.kind == "folder":
                raise DatasetError(str(e)) from None
            raise DatasetError(f"label {lab_path} is a colour image, but --dataset {self.kind} reads labels as class "
                               "ids: for colour-coded labels use --dataset folder with a dataset.yaml that gives "
                               "each class its colour") from None
        except LabelError as e:
            raise DatasetError(str(e)) from None
        if self.label_map is not None:  # raw values -> ids; 16-bit values above 255 stay for the range check
            lab = self.label_map[lab] if lab.dtype == np.uint8 else np.where(
                lab < 256, self.label_map[np.minimum(lab, 255)], lab)
        if img.shape[:2] != lab.shape:
            # Linear resizing blends class ids (or colours) at every edge into values of no class.
            fix = (" (turned: frames are read upright by their EXIF orientation, as a camera app shows them; "
                   "label them upright too, or save them without the orientation tag)"
                   if img.shape[:2] == lab.shape[::-1] else
                   f": resize the label to {img.shape[1]}x{img.shape[0]} with nearest-neighbour (cv2.INTER_NEAREST, "
                   "PIL Image.NEAREST; never linear, which blends class ids), or label the frame at its size")
            raise DatasetError(f"label {lab_path} is {lab.shape[1]}x{lab.shape[0]} but image "
                               f"{img_path} is {img.shape[1]}x{img.shape[0]}{fix}")
        bad = (lab >= self.table.num_classes) & (lab != self.table.ignore_index)
        if bad.any():
            value, values = int(lab[bad][0]), np.unique(lab[bad])
            if len(values) > 3 and values.max() <= 255:  # not one unlabelled value but a ramp of them
                raise DatasetError(f"label {lab_path} has {len(values)} different values outside the "
                                   f"{self.table.num_classes} classes (e.g. {', '.join(map(str, values[:3]))} on "
                                   f"{int(bad.sum())} px): labels resized or rotated with interpolation blend the "
                                   "ids at every edge (resize labels with nearest-neighbour: cv2.INTER_NEAREST, "
                                   "PIL Image.NEAREST); or the data has more classes than that (dataset.yaml, "
                                   "--num-classes)")
            if value > 255:
                raise DatasetError(f"label {lab_path} has value {value}: class ids and the ignore id must be 0..255 "
                                   f"(the {self.table.num_classes} classes, ignore id {self.table.ignore_index}); "
                                   "re-save 16-bit labels with unlabelled pixels as 255")
            if Path(self.classes_from).name in (LABEL_COLORS_FILE, LABELMAP_FILE):  # the export's own list
                raise DatasetError(f"label {lab_path} has value {value} outside the {self.table.num_classes} classes "
                                   f"that {self.classes_from} lists: a class missing there (a line deleted)?")
            described = Path(self.classes_from).name in ("dataset.yaml", "dataset.yml")
            one_based = (f"; if the classes are numbered 1..{value} with 0 for unlabelled pixels (as many "
                         "annotation tools save them), "
                         + ("set first_id: 1 in dataset.yaml instead" if described else
                            "write a dataset.yaml with the classes and first_id: 1 instead")
                         if value == self.table.num_classes and self.kind == "folder" and self.label_map is None
                         and (described or not self.classes_from) else "")
            raise DatasetError(f"label {lab_path} has value {value} outside the {self.table.num_classes} classes "
                               f"(ignore id {self.table.ignore_index}); if {value} marks unlabelled pixels, "
                               f"pass --ignore-index {value} (or set ignore_index: {value} in dataset.yaml)"
                               + one_based)
        lab = lab.astype(np.uint8)  # after the range check: a 16-bit 256 must not pass as 0
        if self._cache is not None and (self.cache_limit is None
                                        or self.cached_bytes + img.nbytes + lab.nbytes <= self.cache_limit):
            self._cache[idx] = (img, lab)
            self.cached_bytes += img.nbytes + lab.nbytes
        return img, lab

    @property
    def cached(self) -> int:
        """Frames kept decoded in memory."""
        return len(self._cache) if self._cache is not None else 0

    def __getitem__(self, idx: int):
        img, lab = self.load(idx)
        if self.transform is not None:
            return self.transform(img, lab)
        return img, lab


def share_label_reading(*datasets: Optional[SegmentationDataset]) -> None:
    """Splits of one dataset (the same dataset.yaml) note their masks' readings in one place: a val
    split whose frames lack the white class reads 0/255 masks as colours while train, which has its
    id, reads them as ids; checked one split at a time, neither was mixed and val's unlabelled pixels
    were scored as that class. Call before the first label is read."""
    first: Dict[str, LabelColors] = {}
    for ds in datasets:
        if ds is not None and ds.label_colors is not None:
            ds.label_colors = first.setdefault(ds.label_colors.source, ds.label_colors)


def _hidden(path: Path) -> bool:
    """A file no one put there as data: macOS's ._NAME resource forks, .DS_Store, editors' dot files."""
    return path.name.startswith(".")


def _require_dir(root: Path, what: str) -> None:
    if root.is_file() and root.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".7z"):
        raise DatasetError(f"{root} is an archive: unpack it and pass the folder it holds with --data")
    if root.is_file():
        raise DatasetError(f"{root} is a file: pass the dataset's folder with --data (here: {root.parent})")
    if not root.is_dir():
        raise DatasetError(f"{what} not found at {root}: pass the dataset folder with --data"
                           + (" (or set SEG_PERCEPTION_CAMVID)" if "CamVid" in what else ""))


def _listed_pairs(root: Path, listing: Path) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """The pairs of a CamVid split list ('image label' per line, paths below ``root``; quoted where a
    name has spaces, as Datumaro writes them). A frame listed without a label (CVAT's CamVid export
    lists frames that have no annotation so) is left out, and a note says how many."""
    pairs, unlabelled = [], []
    for n, line in enumerate(listing.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            parts = shlex.split(line)
        except ValueError:
            parts = line.split()
        if len(parts) == 1:
            unlabelled.append(parts[0])
            continue
        if len(parts) != 2:
            raise DatasetError(f"{listing}:{n}: expected 'image label', got {line!r}")
        # Lists from the SegNet tutorial carry absolute paths of its authors' machine.
        img, lab = (root / Path(p.replace("/SegNet/CamVid/", "")).as_posix().lstrip("/") for p in parts)
        if not img.is_file():
            raise DatasetError(f"image {img} listed in {listing}:{n} does not exist"
                               + (" (an export without its images? export again with 'Save images')"
                                  if lab.is_file() and not img.parent.is_dir() else ""))
        if not lab.is_file():
            raise DatasetError(f"image {img} has no label: {lab} (listed in {listing}:{n}) does not exist")
        pairs.append((img, lab))
    if not pairs and unlabelled:
        raise DatasetError(f"no frame in {listing} has a label ({len(unlabelled)} listed without one): "
                           "annotate them before exporting")
    return pairs, _left_out(unlabelled, listing)


def _left_out(unlabelled: List[str], listing: Path) -> List[str]:
    return [f"{len(unlabelled)} frame(s) listed in {listing} have no label and are left out (e.g. {unlabelled[0]}; "
            "an export lists the frames nobody annotated without one)"] if unlabelled else []


FOLDER_KEYS = ("num_classes", "ignore_index", "class_names", "drivable", "from_card", "ignore_given",
               "class_colors")  # image_folder's


def _split_lists(root: Path) -> str:
    listed = ", ".join(sorted(p.stem for p in root.glob("*.txt") if p.name != LABEL_COLORS_FILE))
    return listed or "none" + _elsewhere(root)


DATASET_MARKS = ("label_colors.txt", "dataset.yaml", "dataset.yml", "labelmap.txt", "ImageSets")
SPLIT_NAMES = ("train", "val", "test", "trainval", "default")  # the usual names of a split folder


def _elsewhere(root: Path) -> str:
    """Where the dataset is when --data names a folder above or inside it (a common slip with
    exports unpacked into a folder of their own), or how to lay out a flat images/ + labels/ folder."""
    def holds(d: Path) -> bool:
        return any((d / m).exists() for m in DATASET_MARKS) or any(d.glob("*/images"))
    below = [d for d in sorted(root.iterdir()) if d.is_dir() and holds(d)] if root.is_dir() else []
    if below:
        return f"; the dataset is one level down: --data {below[0]}"
    up = root.parent
    # A folder beside ours with images/ (its own images/ too) says nothing of ours: only the
    # dataset's marks, a list named after it or a split's name make it a folder inside the dataset.
    if (any((up / m).exists() for m in DATASET_MARKS) or (up / f"{root.name}.txt").is_file()
            or (root.name in SPLIT_NAMES and any(up.glob("*/images")))):
        return f"; --data names a folder inside the dataset: --data {up}"
    if (root / "images").is_dir():
        # beside folders that hold images/ too: ours is a split of another name (ADE20K's training/)
        beside = sorted(d.name for d in up.iterdir() if d != root and (d / "images").is_dir())
        if beside:
            return (f"; {root.name}/ looks like one split of the dataset in {up} (beside {', '.join(beside)}/): "
                    f"--data {up} --train-split {root.name}, and --val-split with the other's name")
        held = "images/ and labels/" if (root / "labels").is_dir() else "images/"
        return (f"; {root} holds {held} directly: move them into {root / 'train'}/ (validation frames "
                f"into {root / 'val'}/)")
    return ""


def camvid(root: str | Path, split: str, **kw) -> SegmentationDataset:
    """CamVid as distributed with the SegNet tutorial: <split>.txt lists 'image label'. With a
    label_colors.txt beside it (CamVid's own list, or CVAT's "CamVid 1.0" export of your data), the
    classes and the mask colours come from that file."""
    root = Path(root)
    _require_dir(root, "CamVid dataset")
    listing = root / f"{split}.txt"
    if not listing.is_file():
        folder = (any((root / f).is_file() for f in (DESCRIPTION_FILE, "dataset.yml", LABELMAP_FILE))
                  or (root / VOC_LISTS).is_dir() or (root / "images").is_dir()
                  or any((p / "images").is_dir() for p in root.iterdir()))
        raise MissingSplit(f"CamVid split list {listing} not found (splits here: {_split_lists(root)})"
                           + (": this is a folder dataset, add --dataset folder" if folder else ""))
    folder_kw = {k: kw.pop(k) for k in FOLDER_KEYS if k in kw}  # the flags of a folder dataset's classes
    if (root / LABEL_COLORS_FILE).is_file():
        return image_folder(root, split, **folder_kw, **kw)  # classes from that file, as for --dataset folder
    # the SegNet layout's classes are CamVid's: a typed other table would be dropped unseen
    typed = {"--num-classes": (None if folder_kw.get("from_card") else folder_kw.get("num_classes") or None,
                               CAMVID.num_classes),
             "--ignore-index": (folder_kw.get("ignore_index") if folder_kw.get("ignore_given") else None,
                                CAMVID.ignore_index)}
    for flag, (value, own) in typed.items():
        if value is not None and value != own:
            raise DatasetError(f"{flag} {value} does not apply to --dataset camvid (CamVid's {CAMVID.num_classes} "
                               f"classes, ignore id {CAMVID.ignore_index}): it is for --dataset folder; leave it out")
    pairs, notes = _listed_pairs(root, listing)
    return SegmentationDataset(pairs, CAMVID, kind="camvid", where=str(listing), notes=notes, **kw)


LABEL_COLORS_FILE = "label_colors.txt"  # CamVid's class list; CVAT's CamVid export writes one too
VOID_LABEL = "void"  # CamVid's name for unlabelled pixels


def read_label_colors(root: str | Path) -> Optional[Tuple[ClassTable, LabelColors, np.ndarray]]:
    """``<root>/label_colors.txt`` as CamVid and CVAT's "CamVid 1.0" export (Datumaro) write it: one
    class per line, ``r g b name``, or ``name`` alone when the task gave no colours. None without one.

    The export's masks hold an index per class (or its colour): index 0 is black, the background,
    which the file lists only when a class is black or named 'background' (moved to the front);
    otherwise the export adds it unlisted, and its pixels are those nobody labelled: ignored. A file
    without colours paints index i in the PASCAL VOC palette's colour i. A class named Void is
    CamVid's unlabelled: ignored too. Returns the class table, the colours (to the export's index)
    and the lookup table from the export's index to the class id."""
    path = Path(root) / LABEL_COLORS_FILE
    if not path.is_file():
        return None
    entries: List[Tuple[str, Optional[Tuple[int, int, int]]]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].isdigit():
            if len(fields) < 4 or not all(v.isdigit() and int(v) <= 255 for v in fields[:3]):
                raise DatasetError(f"{path}:{n}: expected 'r g b name' (or a name alone), got {line.strip()!r}")
            entries.append((" ".join(fields[3:]), tuple(int(v) for v in fields[:3])))
        else:
            entries.append((line.strip(), None))
    names = [e[0] for e in entries]
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise DatasetError(f"{path}: class name(s) {', '.join(twice)} listed twice: each class once")
    coloured = any(c is not None for _, c in entries)
    # Datumaro's order: the background (the black entry, else one named 'background', else an added
    # unlisted one) at index 0, the rest as listed.
    bg = next((i for i, (_, c) in enumerate(entries) if c == (0, 0, 0)),
              next((i for i, (nm, _) in enumerate(entries) if nm == "background"), None))
    order = ([entries[bg]] + entries[:bg] + entries[bg + 1:]) if bg is not None else \
        [(None, (0, 0, 0) if coloured else None)] + entries
    palette = voc_colormap(len(order))
    class_names, class_colours, owners, uncoloured = [], [], {}, []
    lut = np.arange(256, dtype=np.uint8)
    for index, (name, colour) in enumerate(order):
        if colour is None and not coloured:
            colour = palette[index]
        if name is None or name.lower() == VOID_LABEL:
            lut[index] = 255  # unlabelled pixels
        else:
            lut[index] = len(class_names)
            class_names.append(name)
            class_colours.append(colour or palette[index])
            if colour is None:
                uncoloured.append(name)
        if colour is not None:
            if colour in owners:
                raise DatasetError(f"{path}: colour {list(colour)} is given to both {order[owners[colour]][0]} "
                                   f"and {name}")
            owners[colour] = index
    if len(class_names) < 2:
        raise DatasetError(f"{path}: lists {len(class_names)} class(es); a dataset needs at least two")
    table = ClassTable(Path(root).resolve().name or "folder", tuple(class_names), tuple(class_colours), 255, ())
    return table, LabelColors(owners, uncoloured, source=str(path), classes=len(class_names)), lut


def cityscapes(root: str | Path, split: str, **kw) -> SegmentationDataset:
    """Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine labelIds."""
    root = Path(root)
    img_root = root / "leftImg8bit" / split
    _require_dir(img_root, "Cityscapes images")
    pairs = []
    # <city>/ folders as Cityscapes ships them; frames straight in the split folder as exports
    # of other data in its layout (Datumaro's) write them.
    for img in sorted([*img_root.glob("*/*_leftImg8bit.png"), *img_root.glob("*_leftImg8bit.png")]):
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = root / "gtFine" / img.relative_to(root / "leftImg8bit").parent / f"{stem}_gtFine_labelIds.png"
        if not lab.is_file():
            raise DatasetError(f"image {img} has no label: {lab} does not exist")
        pairs.append((img, lab))
    lut = np.full(256, CITYSCAPES.ignore_index, np.uint8)
    for raw, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        lut[raw] = train_id
    return SegmentationDataset(pairs, CITYSCAPES, label_map=lut, kind="cityscapes",
                               where=f"{img_root} (frames: <city>/*_leftImg8bit.png)", **kw)


DESCRIPTION_FILE = "dataset.yaml"


DESCRIPTION_KEYS = ("name", "classes", "ignore_index", "ignore_color", "drivable", "labels", "first_id")
# first_id: 1 -- index masks number the classes from 1 and mark unlabelled pixels 0 (many annotation
# tools do): read as ids 0..N-1, 0 as the ignore id
# labels: ids -- every single-channel or palette label holds class ids, whatever dataset.yaml's colours
# (pack-dataset writes it); unset, a grey mask whose levels are class colours is read by its colours,
# decided frame by frame, which a dataset of ids with black and white classes must not be


def _colour_list(value, path: Path, what: str) -> List[Tuple[int, int, int]]:
    """[r, g, b], or a list of them (several label colours; the first is the display colour)."""
    def rgb(v) -> bool:
        return isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in v)
    if rgb(value):
        return [tuple(value)]
    if isinstance(value, list) and value and all(rgb(v) for v in value):
        return [tuple(v) for v in value]
    raise DatasetError(f"{path}: {what} must be [r, g, b] in 0..255, or a list of them, got {value!r}")


def read_description(root: str | Path) -> Optional[ClassTable]:
    """The class table of a folder dataset from ``<root>/dataset.yaml``, or None without one."""
    described = describe(root)
    return described[0] if described is not None else None


CLASS_KEYS = ("name", "color", "id")


def _class_entry(c, i: int, path: Path) -> Tuple[str, Optional[List[Tuple[int, int, int]]], Optional[int]]:
    """One entry of dataset.yaml's classes: (name, label colours or None, id or None)."""
    if isinstance(c, str):
        return c, None, None
    if isinstance(c, dict) and isinstance(c.get("name"), str):
        for key in c:
            if key not in CLASS_KEYS:
                near = difflib.get_close_matches(str(key), CLASS_KEYS + ("colour",), n=1, cutoff=0.5)
                near = "color" if near == ["colour"] else (near[0] if near else None)
                hint = f" (did you mean {near!r}?)" if near else ""
                raise DatasetError(f"{path}: class {i} ({c['name']}) has unknown key '{key}'{hint}; "
                                   f"a class has {', '.join(CLASS_KEYS)}")
        cid = c.get("id")
        if cid is not None and (not isinstance(cid, int) or isinstance(cid, bool)):
            raise DatasetError(f"{path}: class {i} ({c['name']}) id must be a whole number, got {cid!r}")
        col = c.get("color")
        return c["name"], (_colour_list(col, path, f"class {i} ({c['name']}) color") if col is not None else None), cid
    if isinstance(c, (bool, int, float)) or (isinstance(c, dict) and isinstance(c.get("name"), (bool, int, float))):
        raise DatasetError(f"{path}: class {i} is {c!r}, not a name: YAML reads yes, no, on, off, true, false and "
                           "numbers as values; quote the name (e.g. 'yes')")
    raise DatasetError(f"{path}: class {i} must be a name or {{name, color}}, got {c!r}")


def _load_description(path: Path) -> dict:
    import yaml
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{path} is not valid YAML{where} ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must be a mapping with {', '.join(DESCRIPTION_KEYS)}")
    for key in doc:
        if key not in DESCRIPTION_KEYS:
            near = difflib.get_close_matches(str(key), DESCRIPTION_KEYS, n=1, cutoff=0.5)
            raise DatasetError(f"{path}: unknown key '{key}'{f' (did you mean {near[0]!r}?)' if near else ''}; "
                               f"the keys are {', '.join(DESCRIPTION_KEYS)}")
    if isinstance(doc.get("classes"), dict):  # name: colour, as people write it: the list it means
        doc["classes"] = _class_mapping(doc["classes"], path)
    return doc


def _class_mapping(classes: dict, path: Path) -> list:
    """dataset.yaml's classes as a mapping ``name: [r, g, b]`` (a list of colours, or nothing), in id
    order as written: the list of {name, color} entries it stands for (_class_entry checks them)."""
    listed = []
    for name, colour in classes.items():
        if colour is not None and not isinstance(colour, list):  # e.g. 0: road, YOLO's id: name
            raise DatasetError(f"{path}: 'classes' as a mapping gives each class its colour (road: [128, 64, 128]), "
                               f"got {name!r}: {colour!r}; or list them in id order: classes: [road, wall]")
        listed.append({"name": name} if colour is None else {"name": name, "color": colour})
    return listed


def _drivable(doc: dict, names: Sequence[str], path: Path) -> Tuple[int, ...]:
    """dataset.yaml's drivable: class ids or names (a lone name too)."""
    drivable, names = [], list(names)
    listed = doc.get("drivable", []) or []
    for d in listed if isinstance(listed, list) else [listed]:
        if isinstance(d, str) and d in names:
            drivable.append(names.index(d))
        elif isinstance(d, int) and not isinstance(d, bool) and 0 <= d < len(names):
            drivable.append(d)
        else:
            raise DatasetError(f"{path}: drivable class {d!r} is neither a class id nor one of {names}")
    return tuple(drivable)


def _add_description(root: Path, table: ClassTable, source: str, fixed: bool) -> Tuple[ClassTable, List[str]]:
    """A dataset.yaml without classes beside a file that lists them (labelmap.txt, label_colors.txt):
    its name and drivable classes added to that file's table. ``fixed``: the masks hold that file's
    indices (a CamVid export), so a dataset.yaml that lists classes must list the same, in its
    order, and its colours and ignore settings are not used (the note says so)."""
    path = description_file(root)
    if not path.is_file():
        return table, []
    doc = _load_description(path)
    notes = []
    if fixed:
        listed = doc.get("classes")
        entries = [_class_entry(c, i, path) for i, c in enumerate(listed)] if isinstance(listed, list) else []
        if listed is not None and [e[0] for e in entries] != list(table.names):
            raise DatasetError(f"{path} lists classes {[e[0] for e in entries] or listed}, {source} "
                               f"{list(table.names)}: beside a CamVid export the classes, their colours and ids are "
                               f"{source}'s (its masks were written by it); dataset.yaml adds name and drivable: "
                               "drop its classes or list the same")
        unused = [k for k in ("ignore_index", "ignore_color", "first_id") if k in doc] + (
            ["class colours"] if any(e[1] for e in entries) else [])
        if unused:
            notes.append(f"{path}: {', '.join(unused)} not used: the export's masks follow {source}")
    elif "first_id" in doc:
        notes.append(f"{path}: first_id not used: the masks hold {source}'s indices, counted from 0")
    return ClassTable(str(doc.get("name", table.dataset)), table.names, table.colors, table.ignore_index,
                      _drivable(doc, table.names, path)), notes


def _first_id_map(doc: dict, path: Path, table: ClassTable, colors: LabelColors,
                  lut: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """dataset.yaml's ``first_id``: 1 turns masks whose classes run 1..N (0 unlabelled) into ids
    0..N-1 and the ignore id; values above N stay as they are, for the range check to name."""
    first = doc.get("first_id", 0)
    if first not in (0, 1) or isinstance(first, bool):
        raise DatasetError(f"{path}: first_id must be 0 (class ids from 0) or 1 (from 1, with 0 for unlabelled "
                           f"pixels), got {first!r}")
    if first == 0:
        return lut
    if lut is not None or len(colors._ids):
        raise DatasetError(f"{path}: first_id: 1 is for masks that hold class ids, but the labels here are read "
                           "by their colours: set labels: ids (colours then only draw the classes), or drop first_id")
    n = table.num_classes
    shifted = np.arange(256, dtype=np.int32)
    shifted[1:n + 1] -= 1
    shifted[0] = table.ignore_index
    return shifted.astype(np.uint8)


def label_reading(root: str | Path) -> Optional[Tuple[ClassTable, LabelColors, Optional[np.ndarray]]]:
    """How a folder dataset with ``<root>/dataset.yaml`` reads its labels: the class table, the label
    colours and the lookup table from a mask's values to class ids (first_id: 1; None: values are
    ids). None without the file. For label files read outside training (eval-bag's --gt-dir)."""
    found = describe(root)
    if found is None:
        return None
    table, colors = found
    path = description_file(root)
    return table, colors, _first_id_map(_load_description(path), path, table, colors, None)


def description_file(root: str | Path) -> Path:
    """dataset.yaml of a folder dataset (or dataset.yml, the other usual spelling)."""
    path = Path(root) / DESCRIPTION_FILE
    other = path.with_suffix(".yml")
    return other if not path.is_file() and other.is_file() else path


def describe(root: str | Path, fallback_colors: Optional[Dict[str, Tuple[int, int, int]]] = None,
             fallback_ignore: Sequence[Tuple[int, int, int]] = ()) -> Optional[Tuple[ClassTable, LabelColors]]:
    """``<root>/dataset.yaml``: its class table and the label colours it gives, or None without one.

    classes: a list of names, or of {name, color: [r, g, b] or a list of them, id}, in id order
    unless every class gives its id, or a mapping name: color in id order; ignore_index (default
    255); ignore_color: the colour(s) of unlabelled pixels in RGB-coded labels; drivable: class ids
    or names a ground vehicle may drive on (default none). ``fallback_colors``: colours by class
    name for classes the file gives none (labelmap.txt's, when both are there), and
    ``fallback_ignore`` its unlabelled colours.
    """
    path = description_file(root)
    if not path.is_file():
        return None
    doc = _load_description(path)
    classes = doc.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise DatasetError(f"{path}: 'classes' must list at least two classes (names, or {{name, color}}; or map "
                           "name: [r, g, b])")
    entries = [_class_entry(c, i, path) for i, c in enumerate(classes)]
    ids = [e[2] for e in entries]
    if any(cid is not None for cid in ids):
        if sorted(cid for cid in ids if cid is not None) != list(range(len(entries))):
            raise DatasetError(f"{path}: class ids must be 0..{len(entries) - 1}, each once, on every class or on "
                               f"none (got {', '.join('-' if cid is None else str(cid) for cid in ids)})")
        entries = sorted(entries, key=lambda e: e[2])
    names = [e[0] for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"{path}: class name(s) {', '.join(twice)} listed twice: each class once")
    colors = [e[1] if e[1] is not None or not fallback_colors or e[0] not in fallback_colors
              else [fallback_colors[e[0]]] for e in entries]
    ignore = doc.get("ignore_index", 255)
    if not isinstance(ignore, int) or not 0 <= ignore <= 255 or ignore < len(names):
        raise DatasetError(f"{path}: ignore_index must be a label value in {len(names)}..255, got {ignore!r}"
                           + (" (masks with classes from 1 and 0 for unlabelled pixels: first_id: 1)"
                              if ignore == 0 else ""))
    drivable = _drivable(doc, names, path)
    owners: dict = {}
    owned = [(i, cols) for i, cols in enumerate(colors) if cols is not None]
    if doc.get("ignore_color") is not None:
        owned.append((ignore, _colour_list(doc["ignore_color"], path, "ignore_color")))
    elif fallback_ignore:
        owned.append((ignore, list(fallback_ignore)))
    for cid, cols in owned:
        for col in cols:
            if col in owners and owners[col] != cid:
                who = [names[k] if k < len(names) else "ignore_color" for k in (owners[col], cid)]
                raise DatasetError(f"{path}: colour {list(col)} is given to both {who[0]} and {who[1]}: "
                                   "a label colour must name one class")
            owners[col] = cid
    palette = default_palette(len(names))
    table = ClassTable(str(doc.get("name", "folder")), tuple(names),
                       tuple(c[0] if c is not None else palette[i] for i, c in enumerate(colors)),
                       ignore, tuple(drivable))
    uncoloured = [n for n, c in zip(names, colors) if c is None]
    labels = doc.get("labels")
    if labels not in (None, "ids"):
        raise DatasetError(f"{path}: labels must be 'ids' (single-channel and palette labels hold class ids) or "
                           f"left out, got {labels!r}")
    if labels == "ids":  # colours are for display only: no label is decoded by them
        return table, LabelColors({}, (), source=str(path), ids_only=True)
    return table, LabelColors(owners, uncoloured, source=str(path), classes=len(names))


def write_description(root: str | Path, table: ClassTable, labels: Optional[str] = None) -> Path:
    import yaml
    path = Path(root) / DESCRIPTION_FILE
    doc = {"name": table.dataset,
           "classes": [{"name": n, "color": list(c)} for n, c in zip(table.names, table.colors)],
           "ignore_index": table.ignore_index, "drivable": list(table.drivable)}
    if labels:
        doc["labels"] = labels
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


LABEL_EXTS = (".png", ".bmp", ".tif", ".tiff")  # lossless: a label's values must survive saving


def _label_file(img: Path, candidates: List[Path], folder: Path, top: Optional[Path] = None) -> Path:
    """The label of ``img`` among the files of the label folder named like it. ``folder``: where its
    label belongs; ``top``: the label folder that holds it (a frame in a subfolder: labels/seq1/)."""
    for ext in LABEL_EXTS:
        for p in candidates:
            if p.suffix.lower() == ext and p.is_file():
                return p
    if candidates:
        if candidates[0].suffix.lower() in (".json", ".xml", ".txt"):  # LabelMe's polygons, a VOC box file
            raise DatasetError(f"label {candidates[0]} of image {img} is an annotation file, not a mask: export the "
                               "annotations as PNG masks (class ids, or colours dataset.yaml gives each class): "
                               "LabelMe's JSON-to-mask conversion, CVAT's 'Segmentation mask' export")
        raise DatasetError(f"label {candidates[0]} of image {img} is not a lossless image: save labels as PNG "
                           "(JPEG changes class ids and colours at every edge)")
    top = top or folder
    here = folder if folder.is_dir() else top
    # The closest name, not any: a misnamed label (NAME_L.png, NAME_mask.png) shows what differs. Only
    # labels no image claims (f003.png is f003.jpg's, not f001's), and a name that begins with the
    # image's before a merely close one.
    images = {p.stem for p in img.parent.iterdir()} if img.parent.is_dir() else set()
    there = {p.stem: p.name for p in sorted(here.iterdir()) if p.suffix.lower() in LABEL_EXTS and p.stem not in images}
    near = [s for s in there if s.startswith(img.stem)][:1] or difflib.get_close_matches(img.stem, there, n=1, cutoff=0)
    hint = f" (the nearest name in the label folder is {there[near[0]]}: a label has its image's name)" if near else ""
    if folder != top and (top / (img.stem + ".png")).is_file():
        hint = (f" ({top / (img.stem + '.png')} is not its label: a frame in a subfolder of images/ has its label "
                f"in the same subfolder of {top.name}/)")
    raise DatasetError(f"image {img} has no label: {folder / (img.stem + '.png')} does not exist{hint}")


VOC_LISTS = Path("ImageSets") / "Segmentation"
LABELMAP_FILE = "labelmap.txt"
IGNORED_LABEL = "ignored"  # the name Datumaro gives VOC's void colour (224, 224, 192) in labelmap.txt


def read_labelmap(root: str | Path) -> Optional[Tuple[ClassTable, LabelColors, Optional[int]]]:
    """``<root>/labelmap.txt`` as CVAT's Segmentation Mask export writes it (``name:r,g,b:parts:actions``
    per class, in id order), or None without one. A class without a colour (``name:::``, as Datumaro
    writes it) has the PASCAL VOC palette's colour of its id, which its masks are drawn in. The
    third value: the index masks give Datumaro's 'ignored' entry (its place in the list), if any."""
    path = Path(root) / LABELMAP_FILE
    if not path.is_file():
        return None
    names, colours, ignored, ignored_at = [], [], None, None
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        rgb = fields[1].strip().split(",") if len(fields) > 1 and fields[1].strip() else []
        if len(fields) < 2 or not fields[0].strip() or (
                rgb and (len(rgb) != 3 or not all(v.strip().isdigit() and int(v) <= 255 for v in rgb))):
            raise DatasetError(f"{path}:{n}: expected 'name:r,g,b:parts:actions', got {line!r}")
        if fields[0].strip() == IGNORED_LABEL and rgb:
            ignored = tuple(int(v) for v in rgb)  # Datumaro's VOC void: unlabelled, not a class
            ignored_at = len(names)
            continue
        names.append(fields[0].strip())
        colours.append(tuple(int(v) for v in rgb) if rgb else voc_colormap(len(names))[-1])
    if len(names) < 2:
        raise DatasetError(f"{path}: lists {len(names)} class(es); a dataset needs at least two")
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise DatasetError(f"{path}: class name(s) {', '.join(twice)} listed twice: each class once")
    owners: dict = {}
    for i, col in enumerate(colours):
        if col in owners:
            raise DatasetError(f"{path}: colour {list(col)} is given to both {names[owners[col]]} and {names[i]}")
        owners[col] = i
    if ignored is not None and ignored not in owners:
        owners[ignored] = 255
    if ignored_at is not None and ignored_at != len(names):
        raise DatasetError(f"{path}: '{IGNORED_LABEL}' must be the last entry (the classes after it would "
                           "have other ids in index masks)")
    table = ClassTable(Path(root).resolve().name or "folder", tuple(names), tuple(colours), 255, ())
    return table, LabelColors(owners, source=str(path), classes=len(names)), ignored_at


def _index_mask(path: Path) -> bool:
    """A mask of bare ids: one channel (a palette PNG's colours still say which class is which)."""
    if is_palette_png(path):
        return False
    lab = imread(path, cv2.IMREAD_UNCHANGED)
    return lab is not None and lab.ndim == 2


def _files_by_name(folder: Path) -> Dict[str, List[Path]]:
    """The files below ``folder``, subfolders too (one folder per drive or sequence), by their path
    below it without the suffix ('seq1/000123'; a flat folder's: the stem), each name's files in
    sorted order, the names too. Hidden files and folders (._NAME, .DS_Store, .ipynb_checkpoints/) are
    no data."""
    found: Dict[str, List[Path]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(_hidden(Path(part)) for part in rel.parts):
            found.setdefault(rel.with_suffix("").as_posix(), []).append(p)
    return found


def _voc_pairs(base: Path, split: str) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """Pascal VOC's layout, which CVAT's Segmentation Mask export uses: ImageSets/Segmentation/<split>.txt
    lists names, JPEGImages/ holds the frames, SegmentationClass/ the class masks. A listed frame with
    no mask at all (nobody annotated it: the export writes none) is left out, and a note says so."""
    listing = base / VOC_LISTS / f"{split}.txt"
    if not listing.is_file():
        here = sorted(p.stem for p in (base / VOC_LISTS).glob("*.txt"))
        raise MissingSplit(f"no split '{split}' in {base} ({VOC_LISTS / (split + '.txt')} not found; splits here: "
                           f"{', '.join(here) or 'none'})")
    _require_dir(base / "JPEGImages", "frame folder JPEGImages/ (export the images with the masks)")
    _require_dir(base / "SegmentationClass", "class mask folder SegmentationClass/")
    images, labels = _files_by_name(base / "JPEGImages"), _files_by_name(base / "SegmentationClass")
    pairs, unlabelled = [], []
    for n, line in enumerate(listing.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        frame = next((p for p in images.get(name, []) if p.suffix.lower() in IMAGE_EXTS), None)
        if frame is None:
            raise DatasetError(f"{name} (listed in {listing}:{n}) has no frame in {base / 'JPEGImages'}"
                               + (" (an export without its images? export again with 'Save images')"
                                  if not images else ""))
        if name not in labels:
            unlabelled.append(name)
            continue
        pairs.append((frame, _label_file(frame, labels[name], base / "SegmentationClass")))
    if unlabelled and not pairs:
        raise DatasetError(f"no frame in {listing} has a mask in {base / 'SegmentationClass'} ({len(unlabelled)} "
                           "listed): annotate them before exporting")
    return pairs, _left_out(unlabelled, listing)


def image_folder(root: str | Path, split: str, num_classes: int = 0, ignore_index: int = 255,
                 class_names: Optional[List[str]] = None, drivable: Sequence[int] = (),
                 from_card: bool = False, ignore_given: bool = False,
                 class_colors: Optional[Sequence[Sequence[int]]] = None, **kw) -> SegmentationDataset:
    """Your own data: <root>/<split>/images/NAME.(png|jpg) with <root>/<split>/labels/NAME.png
    (or .bmp/.tif: lossless; class ids, a palette PNG or colours as dataset.yaml gives them), in
    subfolders too (images/seq1/NAME.jpg with labels/seq1/NAME.png, paired by the path below each);
    or Pascal VOC's layout (CVAT's Segmentation Mask export), read by ``_voc_pairs``; or CamVid's
    (CVAT's CamVid export: <split>.txt and label_colors.txt), read by ``_listed_pairs``.

    The classes come from <root>/dataset.yaml when there is one, else from CVAT's labelmap.txt,
    else from ``num_classes``. ``from_card``: the class arguments are a model card's (the ignore id
    too, unless ``ignore_given``: the user's --ignore-index), a stand-in
    for a missing description, not the user's flags; a description that differs is for the caller
    to compare with its model. ``class_colors``: the card's, to read colour-image labels by where
    no description gives colours."""
    base = Path(root)
    _require_dir(base, "dataset folder")
    labelmap = read_labelmap(base)
    exported = read_label_colors(base) if not (base / split / "images").is_dir() else None
    classes_listed_in, labelmap_notes = None, []  # labelmap.txt's classes, with a dataset.yaml that lists none
    if exported is not None:
        described = None  # its classes are label_colors.txt's; a dataset.yaml adds to them (below)
    elif labelmap is not None and description_file(base).is_file() and \
            "classes" not in _load_description(description_file(base)):
        table, labelmap_notes = _add_description(base, labelmap[0], LABELMAP_FILE, fixed=False)
        described, classes_listed_in = (table, labelmap[1]), base / LABELMAP_FILE
    else:
        described = (describe(base, dict(zip(labelmap[0].names, labelmap[0].colors)), labelmap[1].colours_of(255))
                     if labelmap else describe(base))
    source = classes_listed_in or description_file(base)
    if described is None and labelmap is not None:
        described, source = labelmap[:2], base / LABELMAP_FILE
    root = base / split
    notes: List[str] = list(labelmap_notes)
    lut = None
    if (root / "image_2").is_dir() and not (root / "images").is_dir():
        raise DatasetError(f"{root} is in KITTI's layout (image_2/, semantic/), which is not read here: export "
                           "the task as 'CamVid 1.0' or 'Segmentation mask 1.1' (both read as they are)")
    if exported is not None:  # CamVid's layout (CVAT's CamVid export): <split>.txt and label_colors.txt
        listing = base / f"{split}.txt"
        if not listing.is_file():
            raise MissingSplit(f"no split '{split}' in {base} ({split}.txt not found; splits here: "
                               f"{_split_lists(base)})")
        (pairs, notes), where = _listed_pairs(base, listing), str(listing)
        table, more = _add_description(base, exported[0], LABEL_COLORS_FILE, fixed=True)
        described, source, lut, notes = (table, exported[1]), base / LABEL_COLORS_FILE, exported[2], notes + more
    elif (base / VOC_LISTS).is_dir() and not (root / "images").is_dir():
        (pairs, notes), where = _voc_pairs(base, split), str(base / VOC_LISTS / f"{split}.txt")
    else:
        img_dir, lab_dir = root / "images", root / "labels"
        if not img_dir.is_dir() and (base / "images" / split).is_dir():
            # images/<split>/ and labels/<split>/ (mmsegmentation's and YOLO's layout): read as it is
            img_dir, lab_dir = base / "images" / split, base / "labels" / split
        where = f"{img_dir} ({', '.join(IMAGE_EXTS)})"
        if not img_dir.is_dir():
            # images/<name>/ beside labels/<name>/ are splits where one has a split's name (else
            # subfolders of a flat images/, e.g. one per drive: _elsewhere says how to lay them out)
            layout = {p.name for p in (base / "images").glob("*") if (base / "labels" / p.name).is_dir()}
            here = sorted({p.name for p in base.iterdir() if (p / "images").is_dir()}
                          | (layout if layout & set(SPLIT_NAMES) else set()))
            raise MissingSplit(f"no split '{split}' in {base} ({split}/images not found; splits here: "
                               f"{', '.join(here) or 'none' + _elsewhere(base)})")
        if not lab_dir.is_dir():
            there = sorted(p.name + "/" for p in lab_dir.parent.iterdir() if p.is_dir() and p != img_dir)
            raise DatasetError(f"no label folder {lab_dir}"
                               + (f" ({lab_dir.parent.relative_to(base).as_posix()}/ holds {', '.join(there)})"
                                  if there else "")
                               + f": the labels go in {lab_dir.relative_to(base).as_posix()}/, each named like "
                               "its image")
        # Paired by the path below images/ and labels/: images/seq1/0001.jpg has labels/seq1/0001.png.
        labels = _files_by_name(lab_dir)
        pairs, stems = [], {}
        for name, files in _files_by_name(img_dir).items():
            for img in (p for p in files if p.suffix.lower() in IMAGE_EXTS):
                pairs.append((img, _label_file(img, labels.get(name, []), (lab_dir / name).parent,
                                               lab_dir)))
                stems.setdefault(name, []).append(img.name)
        pairs.sort()  # by the image's path, as a flat folder's always were
        twins = [names for names in stems.values() if len(names) > 1]
        if twins:  # both are frames (pack-dataset keeps both); an original beside its preview is said
            notes.append(f"{len(twins)} name(s) in {img_dir} have images in several formats (e.g. "
                         f"{' and '.join(twins[0])}): each is a frame of its own, with the one label")
        # Image files only: Thumbs.db, desktop.ini or a notes.txt in labels/ are no labels left alone.
        masks = {n: [p for p in files if p.suffix.lower() in IMAGE_EXTS] for n, files in labels.items()}
        alone = sorted(n for n in set(labels) - set(stems) if masks[n])
        if alone:  # their images are missing, or in a format not read: said, not dropped in silence
            notes.append(f"{len(alone)} label(s) in {lab_dir} have no image in {img_dir} (e.g. "
                         f"{masks[alone[0]][0].relative_to(lab_dir).as_posix()}); images are read as "
                         f"{', '.join(IMAGE_EXTS)}" + (", each in the subfolder of images/ its label has in labels/"
                                                       if any("/" in n for n in alone) else ""))
    notes += _turned_frames_note(pairs)
    if described is not None:
        table, colors = described
        if num_classes and not from_card and num_classes != table.num_classes:
            raise DatasetError(f"--num-classes {num_classes} but {source} lists {table.num_classes} classes")
        if ignore_index != table.ignore_index and (ignore_given or (ignore_index != 255 and not from_card)):
            raise DatasetError(f"--ignore-index {ignore_index} but {source} says the ignore id is "
                               f"{table.ignore_index}: drop the flag" + (
                                   " (the export marks unlabelled pixels itself: black, or a Void class)"
                                   if lut is not None and Path(source).name == LABEL_COLORS_FILE
                                   else " or change the file"))
        if (labelmap is not None and exported is None and table.names != labelmap[0].names and pairs
                and _index_mask(pairs[0][1])):
            raise DatasetError(f"{source} lists classes {list(table.names)}, {LABELMAP_FILE} "
                               f"{list(labelmap[0].names)}, and the masks hold {LABELMAP_FILE}'s ids (e.g. "
                               f"{pairs[0][1].name}): list the same classes in its order (adding drivable), or "
                               "drop the classes from dataset.yaml")
        if lut is None and labelmap is not None and labelmap[2] is not None and labelmap[2] == table.num_classes:
            lut = np.arange(256, dtype=np.uint8)  # index masks: Datumaro's 'ignored' index -> the ignore id
            lut[labelmap[2]] = table.ignore_index
        if source == description_file(base) and source.is_file():
            lut = _first_id_map(_load_description(source), source, table, colors, lut)
        return SegmentationDataset(pairs, table, label_colors=colors, label_map=lut, where=where, notes=notes,
                                   classes_from=source, **kw)
    if num_classes < 2:
        raise DatasetError(f"a folder dataset needs its classes: write {source} "
                           "or pass --num-classes")
    if not num_classes <= ignore_index <= 255:
        raise DatasetError(f"--ignore-index {ignore_index} must be a label value in {num_classes}..255 (class ids "
                           f"are 0..{num_classes - 1}, and labels are 8-bit inside the model); 16-bit labels "
                           "must mark unlabelled pixels with such a value"
                           + ("; masks with classes from 1 and 0 for unlabelled pixels: write a dataset.yaml with "
                              "first_id: 1" if ignore_index == 0 else ""))
    table = generic_table(num_classes, ignore_index, class_names, drivable)
    return SegmentationDataset(pairs, table, where=where, notes=notes, card_colors=_card_colors(class_colors, table),
                               **kw)


def _card_colors(colors: Optional[Sequence[Sequence[int]]], table: ClassTable) -> Optional[LabelColors]:
    """A card's class colours as label colours (a colour two classes share names neither)."""
    if not colors or len(colors) != table.num_classes:
        return None
    owners: Dict[Tuple[int, int, int], int] = {}
    shared = set()
    for i, c in enumerate(colors):
        rgb = tuple(int(v) for v in c)
        if rgb in owners:
            shared.update((owners[rgb], i))
        owners.setdefault(rgb, i)
    return LabelColors({rgb: i for rgb, i in owners.items() if i not in shared},
                       [table.names[i] for i in sorted(shared)], source="the model card's class colours")


EXIF_TURNS = {2: "mirrored left-right", 3: "turned 180°", 4: "mirrored top-bottom", 5: "mirrored across its diagonal",
              6: "turned 90° clockwise", 7: "mirrored across its other diagonal", 8: "turned 90° anticlockwise"}
EXIF_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


@functools.lru_cache(maxsize=None)
def opencv_applies_exif(fmt: str) -> bool:
    """Whether this OpenCV turns a frame of this format by its EXIF orientation (JPEG for long, PNG
    in newer releases): a 1x2 frame saved with a 180° tag, read back."""
    from PIL import Image
    im = Image.fromarray(np.array([[[0] * 3, [255] * 3]], np.uint8))
    exif = im.getexif()
    exif[0x0112] = 3
    buf = io.BytesIO()
    im.save(buf, format=fmt, exif=exif)
    back = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    return back is not None and int(back[0, 0, 0]) > int(back[0, 1, 0])


def _turned_frames_note(pairs: Sequence[Tuple[Path, Path]]) -> List[str]:
    """A note when frames carry an EXIF orientation (phones write one). A 180° turn or a mirror keeps
    the frame's size, so labels drawn on the other view than the one read would be misaligned with
    no error. Reads headers only (Pillow parses the EXIF block on opening)."""
    from PIL import Image, UnidentifiedImageError
    turned = []
    for img, _ in pairs:
        fmt = EXIF_FORMATS.get(img.suffix.lower())
        if fmt is None:
            continue
        try:
            with Image.open(img) as im:
                raw = im.info.get("exif")
                if not raw:
                    continue
                exif = Image.Exif()
                exif.load(raw)
                tag = exif.get(0x0112, 1)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            continue  # read_rgb names a file it cannot read when it gets there
        if tag in EXIF_TURNS:
            turned.append((img, tag, opencv_applies_exif(fmt)))
    notes = []
    for applied in (True, False):
        these = [(img, tag) for img, tag, a in turned if a == applied]
        if not these:
            continue
        img, tag = these[0]
        notes.append(
            f"{len(these)} of the {len(pairs)} frames carry an EXIF orientation (e.g. {img.name}: "
            + (f"{EXIF_TURNS[tag]} on reading) and are read upright, as labelling tools such as CVAT and Label "
               "Studio show them; if your labels were drawn on the frames as stored, save the frames without the tag"
               if applied else
               f"{EXIF_TURNS[tag]} when shown) that this OpenCV does not apply: they are read as stored, while "
               "labelling tools show them turned; save the frames upright, without the tag"))
    return notes


def open_dataset(kind: str, root: str | Path, split: str, **kw) -> SegmentationDataset:
    if kind == "camvid":
        return camvid(root, split, **kw)
    if kind == "cityscapes":
        return cityscapes(root, split, **kw)
    if kind == "folder":
        return image_folder(root, split, **kw)
    raise DatasetError(f"unknown dataset kind '{kind}'; valid choices: camvid, cityscapes, folder")


def default_camvid_root() -> Path:
    """../shared/datasets/camvid beside the checkout, or $SEG_PERCEPTION_CAMVID."""
    env = os.environ.get("SEG_PERCEPTION_CAMVID")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "datasets" / "camvid"
        if cand.is_dir():
            return cand
    return Path("../shared/datasets/camvid")
