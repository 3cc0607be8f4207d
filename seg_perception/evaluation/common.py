"""Set-up shared by offline and live evaluation: which topics, which ground truth,
which model card, and a progress bar that only a terminal sees."""
from __future__ import annotations

import json
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..card import CardError, ModelCard, load_card
from ..data import bag_io
from ..data.classes import CAMVID
from ..data.datasets import DatasetError, default_camvid_root, image_folder, label_reading
from ..data.label_images import LabelColors
from ..paths import DEFAULT_MODEL, resolve_model
from .config import EvalConfig, EvalError
from .scoring import GroundTruthFolder, card_label_colors, sample_indices


@dataclass
class Inputs:
    image: bag_io.TopicInfo
    gt: Optional[bag_io.TopicInfo]
    gt_folder: Optional[GroundTruthFolder]
    total: int                      # image messages that will be taken (after --max-frames)
    samples: List[int]
    gt_source: Optional[str]
    readable: int = 0               # image messages that can be read (before any damage)
    recorded: Optional[int] = None  # image messages the bag's index or metadata.yaml says it holds
    damage: str = ""                # where and why the bag stops being readable ("" when whole)
    repeated: int = 0               # of the frames taken, those whose header stamp an earlier one had
    unlisted: List[str] = field(default_factory=list)  # storage files beside a metadata.yaml that omits them
    corrupt: int = 0                # of the frames taken, those whose message does not deserialise (counted
    #                                 by select_inputs only when asked: live mode, which does not send them)
    lost_where: str = "after it"    # where frames of unknown count are lost: "in it" for a middle file of a split bag
    unknown_why: str = "the bag's index is gone"  # why that count is unknown
    read_damage: bool = False       # damage in the files read (not only files metadata.yaml leaves out)
    harmless: bool = False          # the reader's damage costs none of the frames taken (a note says it), so
    #                                 its break-off while reading is no partial result either

    def loss(self) -> str:
        """One sentence on what a damaged bag cost; "" for a whole one."""
        if not self.damage:
            return ""
        # the files metadata.yaml does not list are the only damage: frames its counts miss are probably there
        only_unlisted = self.unlisted and not self.read_damage
        if self.recorded is not None and self.recorded > self.readable and only_unlisted:
            k = self.recorded - self.readable
            lost = (f"{k} of the {self.recorded} recorded frames on {self.image.name} {'is' if k == 1 else 'are'} not "
                    f"read, probably in {', '.join(self.unlisted)}, which metadata.yaml does not list (see the note)")
        elif only_unlisted:  # a stale metadata.yaml that counts only the files it lists
            lost = (f"frames on {self.image.name} in {', '.join(self.unlisted)} are not read (how many: unknown, "
                    "metadata.yaml counts only the files it lists; move it aside and every file is read)")
        elif self.recorded is not None and self.recorded > self.readable:
            k = self.recorded - self.readable
            lost = f"{k} of the {self.recorded} recorded frames on {self.image.name} {'is' if k == 1 else 'are'} lost"
        elif self.recorded is not None:
            lost = f"none of the {self.recorded} recorded frames on {self.image.name} is lost (other messages are)"
        else:
            lost = f"frames on {self.image.name} {self.lost_where} are lost (how many: unknown, {self.unknown_why})"
        if self.unlisted and not only_unlisted:  # damage in the listed files, and files it does not list
            lost += f"; {', '.join(self.unlisted)}, which metadata.yaml does not list, not read (see the note)"
        return f"{self.damage}; {self.readable} frame{'' if self.readable == 1 else 's'} can be read, {lost}"

    @property
    def topics(self) -> List[str]:
        return [self.image.name] + ([self.gt.name] if self.gt else [])


def open_bag(path) -> bag_io.BagReader:
    """Open a bag for reading; a bag that cannot be read becomes an EvalError (exit 2). The reader's
    notes (a log merged, a decompressed copy, files not read) go into the result's notes, and so into
    the output, report.md and metrics.json; where the evaluation stops with an error, ``notes_on_error``
    prints them."""
    try:
        return bag_io.BagReader(path)
    except bag_io.BagError as e:
        raise EvalError(str(e)) from None


@contextmanager
def notes_on_error(reader: bag_io.BagReader):
    """An evaluation that ends in an EvalError has no result to carry the reader's notes: say them here."""
    try:
        yield
    except EvalError:
        for note in reader.notes:
            print(f"[eval-bag] note: {note}", flush=True)
        raise


def _lost_where(reader: bag_io.BagReader) -> str:
    """'in it' where the damage of unknown cost is in files of a split bag before its last one (a
    missing or cut middle file: the files after it were read), else 'after it'."""
    parts = getattr(getattr(reader.salvage, "damage", None), "parts", None)
    if parts and all(k < n for _, k, n, _ in parts):
        return "in it" if len(parts) == 1 else "in them"
    return "after it"


def _all_read(reader: bag_io.BagReader) -> bool:
    """The salvage reader read as many messages on every topic as metadata.yaml counts (so the
    damage it found cost nothing); False without metadata.yaml's counts, and where the damage lies
    inside the data (a chunk skipped or cut, a message without its channel): messages were lost
    there, so counts that match were rebuilt from the damaged file ('ros2 bag reindex')."""
    counts = getattr(reader, "metadata_counts", {})
    if reader.salvage is None or not counts:
        return False
    parts = [s for _, s in reader.salvage.parts] if hasattr(reader.salvage, "parts") else [reader.salvage]
    for s in parts:
        d = getattr(s, "damage", None)
        if d is not None and (getattr(d, "skipped", None) or getattr(d, "orphans", None)
                              or getattr(d, "cut_chunk", False)):
            return False
    read = {t: i.count for t, i in reader.topics().items()}
    return all(read.get(t, 0) == k for t, k in counts.items())


def _intact_frames(reader: bag_io.BagReader, topic: str, count: int) -> int:
    """Of the `count` messages read on `topic`, those read before the first damage (each as recorded,
    none lost between them); 0 when the salvage reader cannot say where its damage lies."""
    s = reader.salvage
    if s is None or s.damage is None:  # the indexed reader broke off, or a log cut: all read came before it
        return count
    counts = getattr(s, "intact_counts", None)
    return 0 if counts is None else counts.get(topic, 0)


def select_inputs(cfg: EvalConfig, reader: bag_io.BagReader, count_corrupt: bool = False) -> Inputs:
    """The topics, frames and ground truth of an evaluation. count_corrupt: deserialise every frame to
    count those that do not (live mode announces the frames it really sends)."""
    try:
        image = reader.image_topic(cfg.image_topic)
        gt = None if (cfg.no_gt or cfg.gt_dir) else reader.gt_topic(cfg.gt_topic)
    except bag_io.BagError as e:
        raise EvalError(str(e)) from None
    # Count what can really be read (not what the index promises): a damaged bag plays less.
    stamps = []  # header stamps, read from the raw bytes: live mode announces what it will play
    bad = []     # with count_corrupt, whether each frame's message does not deserialise
    try:
        for m in reader.messages([image.name], decode=False):
            stamps.append(bag_io.raw_stamp_ns(m.raw))
            if count_corrupt:
                bad.append(bool(reader.decode(m).error))
    except bag_io.BagError:
        pass  # reader.damage says where
    count = len(stamps)
    recorded = reader.expected.get(image.name)
    log = getattr(reader, "log_damage", "")  # a write-ahead log cut short: its last messages are lost
    damage = "; ".join(d for d in (reader.damage, log) if d)
    if not damage and recorded is not None and count < recorded:  # the index promises more than the file holds
        damage = f"bag {reader.path} holds {count} of the {recorded} messages its index lists on {image.name}"
    where, unknown_why = _lost_where(reader), getattr(reader, "split_part", "") or "the bag's index is gone"
    harmless = False
    listed = getattr(reader, "metadata_counts", {}).get(image.name)
    if log and not reader.damage and listed is not None and listed == count:
        # metadata.yaml, written when the recording ended, counts every frame read: the cut log lost none
        recorded, damage = listed, ""
        note = (f"bag {reader.path}: its write-ahead log {'; '.join(getattr(reader, 'cut_logs', []))}, but every one "
                f"of the {listed} frames its metadata.yaml records on {image.name} was read: none is lost")
        if note not in reader.notes:
            reader.notes.append(note)
    elif log and not reader.damage and (recorded is None or recorded <= count):
        # no metadata.yaml: the count is the merged file's own, which knows nothing of what the log lost
        recorded, where, unknown_why = None, "recorded after that commit", "a cut log does not say"
    if reader.damage and not log and _all_read(reader):
        # every message metadata.yaml counts was read: only the index (or what follows the data) is damaged
        note = (f"{reader.damage}; but every message its metadata.yaml records was read "
                f"({', '.join(f'{k} on {t}' for t, k in reader.metadata_counts.items())}): none is lost")
        if note not in reader.notes:
            reader.notes.append(note)
        damage, harmless = "", True
    n = cfg.max_frames
    # The frames taken were read before the damage, and their ground truth from the bag too, which is
    # recorded after its frame and often sits in the next chunk: either the frame after them was read
    # (by time; a recording may hold ground truth for every k-th frame only), or one ground truth per
    # frame taken (counted as the salvage reader read them before the damage, not as the index lists them)
    frames = _intact_frames(reader, image.name, count)
    gts = (getattr(reader.salvage, "intact_counts", None) or {}).get(gt.name, 0) if gt is not None else n
    before = 0 < n <= frames and (gt is None or n < frames or n <= gts)
    if (reader.damage or log) and damage and before and not reader.unlisted:
        # --max-frames N takes only frames read before the damage: it costs none of them
        note = (f"{damage}; but " + (f"the {n} frames taken (--max-frames {n}) all come" if n > 1 else
                                     "the frame taken (--max-frames 1) comes")
                + " before the damage, with their ground truth: none of them is lost")
        if note not in reader.notes:
            reader.notes.append(note)
        damage, harmless = "", True
    # damage met reading the files (not an index that promises more: those frames may be in unlisted files)
    unlisted, read_damage = list(reader.unlisted), bool(damage and (reader.damage or log))
    if not damage and unlisted:  # storage files beside a stale metadata.yaml: their frames are not read
        damage = (f"bag {reader.path}: {', '.join(unlisted)} in its folder {'is' if len(unlisted) == 1 else 'are'} "
                  "not listed in its metadata.yaml, so not read")
    if count == 0:  # a bag damaged before its first frame is input that cannot be used (2)
        # an index that lists messages the file does not hold there: metadata.yaml and the file disagree
        # (unless its log was cut: then that is why)
        why = reader.damage or log or (reader.disagreement(image.name) if recorded else "") or damage
        raise EvalError(f"topic {image.name} in bag {reader.path} has no messages"
                        + (f" that can be read ({why})" if why else ""), 2 if why else 3)
    total = min(count, cfg.max_frames) if cfg.max_frames > 0 else count
    seen: set = set()
    repeated = 0
    for k, st in enumerate(stamps[:total]):
        if bad and bad[k]:
            continue  # not sent (nor counted as a repeat): it does not deserialise
        repeated += st is not None and st in seen
        seen.add(st)
    folder = None
    source = None
    if cfg.gt_dir and not cfg.no_gt:
        try:
            folder = GroundTruthFolder(cfg.gt_dir, count)
        except ValueError as e:
            raise EvalError(str(e)) from None
        source = f"folder {folder.folder} (matched by {'stamp' if folder.mode == 'stamp' else 'order'})"
    elif gt is not None:
        source = f"topic {gt.name}"
    return Inputs(image, gt, folder, total, sample_indices(total, cfg.samples), source, readable=count,
                  recorded=recorded, damage=damage, repeated=repeated, unlisted=unlisted, read_damage=read_damage,
                  corrupt=sum(bad[:total]), lost_where=where, unknown_why=unknown_why, harmless=harmless)


def dataset_label_reading(folder: Path, card: ModelCard) -> Optional[Tuple[Optional[LabelColors], Optional[np.ndarray]]]:
    """How training read the labels of the dataset a --gt-dir folder belongs to, where its classes
    are the model's: its label colours where they give every class one (every colour of a class and
    the ignore colours, which the card's one colour per class lacks; grey levels that are class
    colours, as 0/255 masks), and its lookup table from mask values to ids (first_id, an export's
    'ignored' index). A folder dataset's split (<root>/<split>/labels, <root>/labels/<split>) is opened
    as train opens it (dataset.yaml, labelmap.txt); else the dataset.yaml in the folder or up to two
    folders up. None: no such file, or one that does not read (then as the card's: ids as they are,
    colour images by the card's colours)."""
    def same(table) -> bool:
        return tuple(table.names) == tuple(card.class_names) and table.ignore_index == card.ignore_index

    def colours(c: Optional[LabelColors]) -> Optional[LabelColors]:
        return c if c is not None and c.complete else None
    here = folder.resolve()
    splits = ([(folder.parent.parent, folder.parent.name)] if folder.name == "labels" else []) + (
        [(folder.parent.parent, folder.name)] if folder.parent.name == "labels" else [])
    for root, split in splits:
        try:
            ds = image_folder(root, split)
        except (DatasetError, OSError, ValueError):
            continue  # not a folder dataset, or one train would refuse: as below
        # (the label's folder, not the file, resolved: labels linked in from elsewhere are still this split's)
        if any(here in (lab.parent.resolve(), *lab.parent.resolve().parents) for _, lab in ds.pairs[:1]):
            return (colours(ds.label_colors), ds.label_map) if same(ds.table) else None
    for root in (folder, folder.parent, folder.parent.parent):
        try:
            found = label_reading(root)
        except (DatasetError, OSError, ValueError):  # (ValueError: a file that is not UTF-8 text too)
            return None  # unreadable: the card's colours (train would have said what is wrong)
        if found is not None:
            table, colors, lut = found
            return (colours(colors), lut) if same(table) else None
    return None


def check_ground_truth_classes(inp: Inputs, reader: bag_io.BagReader, card: ModelCard) -> None:
    """A bag whose metadata names its ground truth's classes (make-bag writes them) must be
    scored by a model of those classes: ids of another table give a meaningless mIoU. The model
    known, a --gt-dir folder reads colour-coded label PNGs by its dataset's colours, else the card's."""
    if inp.gt_folder is not None:
        inp.gt_folder.colors = card_label_colors(card)
        inp.gt_folder.dataset_reading = dataset_label_reading(inp.gt_folder.folder, card)
    stated = reader.custom_data.get(bag_io.GT_CLASSES_KEY)
    if inp.gt is None or not stated:
        return
    try:
        names = [str(n) for n in json.loads(stated)]
    except (ValueError, TypeError):
        return  # unreadable metadata: score as a bag without it
    try:
        card.check_classes(names, f"the ground truth on {inp.gt.name} in bag {reader.path}",
                           "pass the model trained on these classes with --model, or --no-gt to measure speed only")
    except ValueError as e:
        raise EvalError(str(e)) from None


def _data_of(training: dict) -> Optional[str]:
    """The dataset folder a card's run trained on: recorded, else its command's --data (or the
    CamVid default a camvid command without --data read); None when unknown."""
    if training.get("data"):
        return str(training["data"])
    try:
        args = shlex.split(str(training.get("command") or ""))
    except ValueError:
        return None
    for i, a in enumerate(args):
        if a == "--data" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--data="):
            return a.split("=", 1)[1]
    return str(default_camvid_root()) if args and training.get("dataset") == "camvid" else None


CAMVID_SPLITS = ("train", "val", "test")  # CamVid's own lists: the same frames in any copy of it


def trained_splits(card: ModelCard, dataset: str, data, split: str) -> str:
    """The splits ``card``'s run trained on (its ``train_split``, e.g. 'train+val') when they hold
    split ``split`` of the ``dataset`` kind (--dataset: camvid, folder, ...) read from the folder
    ``data``; "" otherwise, and whenever either side does not say. The folder must be the one the
    run trained on (training.data, else its command's --data), resolved: a folder dataset's
    'train' elsewhere is other frames. CamVid's own splits are the exception: the same public
    frames wherever a copy of CamVid lies. One rule for `evaluate` and for a bag's ground truth."""
    tr = card.training if isinstance(card.training, dict) else {}
    trained = str(tr.get("train_split") or "")
    if not trained or str(split) not in trained.split("+") or not _same_frames(card, tr, dataset, data, split):
        return ""
    return trained


def chosen_on(card: ModelCard, dataset: str, data, split: str) -> str:
    """How ``card``'s run chose by the frames of ``split`` without training on them (its val split; the
    same frames by trained_splits' rule): it kept the epoch that scored best on them (--keep best), or
    cut its learning rate by their score (--schedule plateau). Either makes their score optimistic:
    "" when neither. E.g. "kept the epoch that scored best on val"."""
    tr = card.training if isinstance(card.training, dict) else {}
    if not tr.get("val_split") or str(split) != str(tr["val_split"]) or not _same_frames(card, tr, dataset, data,
                                                                                         split):
        return ""
    how = ([f"kept the epoch that scored best on {split}"] if tr.get("best_epoch") is not None else []) + \
        ([f"cut its learning rate by its {split} score (plateau schedule)"] if tr.get("schedule") == "plateau" else [])
    return " and ".join(how)


def _same_frames(card: ModelCard, tr: dict, dataset: str, data, split: str) -> bool:
    """Split ``split`` of ``dataset`` read from ``data`` is that split of the data the run read."""
    if not dataset or dataset != tr.get("dataset"):
        return False
    if dataset == "camvid" and split in CAMVID_SPLITS and tuple(card.class_names) == CAMVID.names:
        return True
    trained_data = _data_of(tr)
    if not data or not trained_data:
        return False
    return Path(str(data)).expanduser().resolve() == Path(trained_data).expanduser().resolve()


def held_in(card: ModelCard, dataset: str, data, split: str) -> Tuple[str, str]:
    """Why a score on split ``split`` is not held out, (short, clause): ("frames the model trained on",
    "rdsnet_camvid trained on train+val"), or ("frames the model's training was scored on", "m kept
    the epoch that scored best on val"); ("", "") when it is held out, or when either side does not say."""
    trained = trained_splits(card, dataset, data, split)
    if trained:
        return "frames the model trained on", f"{card.name} trained on {trained}"
    how = chosen_on(card, dataset, data, split)
    if how:
        return "frames the model's training was scored on", f"{card.name} {how}"
    return "", ""


def held_out_reference(card: ModelCard) -> str:
    """' (its card's val mIoU, from the same recipe trained on train: 65.90)': the held-out figure a
    card records beside weights that trained on val (a shipped model); "" for a card without one
    (a user's run: its metrics are of its own weights)."""
    held = card.metrics.get("val_miou")
    if "val_miou_not_held_out" not in card.metrics or not isinstance(held, (int, float)):
        return ""  # the card's val figure, where it is the recipe run's (trained without the split)
    recipe = card.training.get("recipe_run") if isinstance(card.training.get("recipe_run"), dict) else {}
    return (f" (its card's val mIoU, from the same recipe trained on {recipe.get('train_split') or 'another split'}: "
            f"{held:.2f})")


def trained_on_ground_truth(inp: Inputs, reader: bag_io.BagReader, card: ModelCard) -> Tuple[str, str]:
    """(short, sentence) when the bag's ground truth comes from a split the model trained on, or whose
    score chose its weights (the same dataset and split; make-bag records them; ``held_in``): its mIoU is
    then not a held-out figure. ("", "") otherwise, and whenever either side does not say."""
    try:
        src = json.loads(reader.custom_data.get(bag_io.GT_SOURCE_KEY) or "{}")
    except ValueError:
        return "", ""
    if inp.gt is None or not isinstance(src, dict):
        return "", ""
    short, _ = held_in(card, src.get("dataset"), src.get("data"), src.get("split"))
    if not short:
        return "", ""
    dataset = "CamVid" if src["dataset"] == "camvid" else f"the {src['dataset']} dataset {src['data']}"
    trained = trained_splits(card, src["dataset"], src.get("data"), src["split"])
    clause = (f"which {card.name} trained on ({trained})" if trained else
              f"and {card.name} {chosen_on(card, src['dataset'], src.get('data'), src['split'])}")
    return short, (f"the ground truth is {dataset} {src['split']}, {clause}: these accuracy figures are not held out"
                   + (held_out_reference(card) if trained else ""))


def partial_reason(inp: Inputs, read_error: str, corrupt: int, gt_corrupt: int = 0) -> str:
    """Why the report covers fewer frames than the bag recorded ("" when it covers them all):
    the damage the frame count found, a break-off met while reading, undecodable messages (frames,
    or ground truth: accuracy then covers fewer frames)."""
    parts = [inp.loss() or ("" if inp.harmless else read_error)]
    if corrupt:
        parts.append(f"{corrupt} frame message{'s' if corrupt > 1 else ''} on {inp.image.name} "
                     "cannot be deserialised (corrupt)")
    if gt_corrupt and inp.gt is not None:
        parts.append(f"the ground truth of {gt_corrupt} frame{'s' if gt_corrupt > 1 else ''} on {inp.gt.name} "
                     "cannot be deserialised (corrupt): accuracy covers fewer frames")
    return "; ".join(p for p in parts if p)


def load_model_card(model: str) -> ModelCard:
    try:
        return load_card(resolve_model(model or DEFAULT_MODEL))
    except (ValueError, FileNotFoundError, CardError) as e:
        raise EvalError(str(e)) from None


class Progress:
    """tqdm on a terminal; silent otherwise (the command prints one summary line)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="frame", leave=False, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, n: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
