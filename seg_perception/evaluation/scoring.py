"""What offline and live evaluation share: turning bag messages into frames and
ground truth, pairing predictions with ground truth by header stamp, and the
counters and metrics that end up in metrics.json.

All numbers come from seg_perception.metrics (the same code training uses).
"""
from __future__ import annotations

import re
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data import bag_io
from ..data.label_images import ColourLabelError, LabelColors, LabelError, read_label
from ..metrics import ConfusionMatrix, binary_scores, binary_summary, percentiles
from ..runtime.image_conversion import ImageError, encoded_size, image_to_array, message_to_array


def decode_frame(m: bag_io.BagMessage) -> Tuple[np.ndarray, str]:
    """A bag image message -> (uint8 array, colour layout); ImageError for a bad image."""
    return message_to_array(m.msg)


LABEL_ENCODINGS = ("mono8", "8UC1")  # class ids as they are: not mono16, whose frames are scaled to 8 bits


def decode_labels(msg) -> np.ndarray:
    """A mono8 label image (ground truth or the node's /segmentation/labels) -> uint8 H x W."""
    if str(msg.encoding) not in LABEL_ENCODINGS:
        raise ImageError(f"label image has encoding '{msg.encoding}'; expected mono8 class ids")
    arr, _ = image_to_array(msg)
    return np.ascontiguousarray(arr)


def frame_size(msg) -> Optional[Tuple[int, int]]:
    """(height, width) of an image message without decoding its pixels (a compressed one's from its
    header); None where that cannot be told."""
    if not hasattr(msg, "format"):  # sensor_msgs/Image
        return int(msg.height), int(msg.width)
    size = encoded_size(np.frombuffer(bytes(msg.data), np.uint8)) if len(msg.data) else None
    return None if size is None else (size[1], size[0])


# --------------------------------------------------------------------- ground truth folder
def _name_order(path: Path, seconds: bool = False) -> list:
    """frame_2.png before frame_10.png: the numbers in a name compare as numbers; with ``seconds``,
    a time in seconds with a fraction (1700000000.25.png) as a decimal: .2, .25, .5, not .2, .5, .25."""
    parts = re.split(r"(\d{9,}\.\d+|\d+)" if seconds else r"(\d+)", path.stem)
    return [Decimal(t) if t[:1].isdigit() else t for t in parts]


def _fractions_are_seconds(files: Sequence[Path]) -> bool:
    """Whether names like 1700000000.25 are seconds with a fraction: not where any name has 9
    digits after the point, as <sec>.<nanosec> names do (unpadded ones among them, 1700000000.50000000,
    are 50 ms, and sort as the numbers they are)."""
    return not any(re.search(r"\d{9,}\.\d{9}(?!\d)", f.stem) for f in files)


class GroundTruthFolder:
    """Label PNGs for the frames of a bag, matched by name:
      <stamp in ns>.png, or <sec>.<nanosec>.png / <sec>_<nanosec>.png (nanosec 9 digits);
    otherwise, when the folder holds exactly one PNG per frame, in name order with numbers
    compared as numbers (frame_2 before frame_10). Names that are frame numbers (000001.png, or
    consecutive numbers 1.png, 2.png, ...) are not stamps: no camera stamps frames 1 ns apart."""

    _SPLIT = re.compile(r"^(\d+)[._](\d{9})$")

    def __init__(self, folder: str | Path, frame_count: int):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ValueError(f"ground-truth folder {folder} " + ("is a file: --gt-dir takes the folder of the "
                             "label PNGs" if folder.exists() else "not found"))
        files = list(folder.glob("*.png"))
        seconds = _fractions_are_seconds(files)
        files.sort(key=lambda f: _name_order(f, seconds))
        if not files:
            raise ValueError(f"ground-truth folder {folder} has no .png label images")
        self.folder = folder
        self.by_stamp: Dict[int, Path] = {}
        numbers = sorted(int(f.stem) for f in files if f.stem.isdigit())
        counted = len(numbers) > 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        for f in files:
            stem = f.stem
            if stem.isdigit() and not counted and not (len(stem) > 1 and stem[0] == "0"):
                self.by_stamp[int(stem)] = f
            elif (mt := self._SPLIT.match(stem)):
                self.by_stamp[int(mt.group(1)) * 1_000_000_000 + int(mt.group(2))] = f
        self.by_order: List[Path] = []
        if len(self.by_stamp) < len(files):
            if len(files) != frame_count:
                raise ValueError(
                    f"cannot match the {len(files)} PNGs in {folder} to the {frame_count} frames of the bag: "
                    "name them <stamp_ns>.png (or <sec>.<nanosec>.png), or give exactly one per frame")
            self.by_stamp = {}
            self.by_order = files
        self.mode = "stamp" if self.by_stamp else "order"
        # the model card's class colours, for colour-coded (RGB) label PNGs, and how the folder's own
        # dataset.yaml reads labels (its colours where complete, its first_id table): set once the
        # card is known (common.check_ground_truth_classes)
        self.colors: Optional[LabelColors] = None
        self.dataset_reading: Optional[Tuple[Optional[LabelColors], Optional[np.ndarray]]] = None

    def lookup(self, stamp: int, index: int) -> Optional[np.ndarray]:
        path = self.by_stamp.get(stamp) if self.mode == "stamp" else (
            self.by_order[index] if 0 <= index < len(self.by_order) else None)
        if path is None:
            return None
        own_colors, lut = self.dataset_reading or (None, None)
        try:  # read_label keeps a palette PNG's indices (OpenCV would expand them to colours)
            lab = read_label(path, own_colors)  # as training read the dataset's labels, where it has a dataset.yaml
        except ColourLabelError as e:
            if self.colors is None:
                raise ImageError(str(e)) from None
            # Only a colour image is read by the card's colours: they may be display colours alone (a
            # dataset of ids with labels: ids, or no colours given), so id and palette PNGs stay ids.
            try:
                lab, lut = read_label(path, self.colors), None  # ids by colour: no first_id shift
            except LabelError as e:
                raise ImageError(f"{e} (colour-coded ground truth is read with the model card's class colours, "
                                 "one per class; a colour no class has, an unlabelled colour too, cannot be "
                                 "scored: save such pixels as a class's colour, or the labels as class ids)") from None
        except LabelError as e:
            raise ImageError(str(e)) from None
        if lab.ndim != 2 or lab.dtype != np.uint8:
            channels = 1 if lab.ndim == 2 else lab.shape[2]
            raise ImageError(f"ground truth {path} is {lab.dtype} in {channels} channel(s); expected 8-bit class ids "
                             "in one: save it as a single-channel 8-bit or palette PNG of class ids")
        return lut[lab] if lut is not None else lab

    def mixed_reading(self) -> str:
        """Once every label was read: single-channel masks read both as the dataset's grey colours and
        as ids (decided frame by frame), which train refuses too; "" otherwise."""
        colors = (self.dataset_reading or (None, None))[0]
        why = colors.mixed_reading() if colors is not None else ""
        return f"ground truth in {self.folder}: {why}" if why else ""


def card_label_colors(card) -> LabelColors:
    """A model card's class colours as label colours (colour -> class id): colour-coded ground truth
    read as the model's dataset.yaml gave its classes' colours (the card records the first of each).
    A colour two classes share names neither: those classes count as uncoloured (the error says)."""
    owners: Dict[Tuple[int, int, int], int] = {}
    shared = set()
    for i, c in enumerate(card.class_colors):
        rgb = tuple(int(v) for v in c)
        if rgb in owners:
            shared.update((owners[rgb], i))
        owners.setdefault(rgb, i)
    uncoloured = [card.class_names[i] for i in sorted(shared)]
    return LabelColors({rgb: i for rgb, i in owners.items() if i not in shared}, uncoloured,
                       source=f"model card {card.path or card.name}")


# --------------------------------------------------------------------- counters and results
@dataclass
class Counts:
    frames_in: int = 0          # image messages taken from the bag
    frames_out: int = 0         # frames with a prediction (matched by header stamp)
    dropped: int = 0            # frames the node never answered (live) and did not reject
    rejected: int = 0           # frames the pipeline/node refused (bad encoding, size, ...)
    corrupt: int = 0            # messages that do not deserialise: skipped, never sent
    duplicate_stamps: int = 0   # frames whose header stamp an earlier frame already had (live: not played)
    scored: int = 0             # frames with a prediction and a ground truth of the same size
    no_ground_truth: int = 0    # predicted frames without a ground truth of the same stamp
    gt_size_mismatch: int = 0   # ground truth of another size than the frame: not scored
    labels_resized: int = 0     # scored frames whose labels (output_size network) were resized to the ground truth
    gt_unknown_id_pixels: int = 0    # ground-truth pixels of an id neither a class nor the ignore id: not scored
    pred_unknown_id_pixels: int = 0  # scored pixels predicted as an id past the classes: wrong for every class
    undecodable: int = 0        # live: frames answered with a label image that does not decode
    gt_unreadable: int = 0      # ground-truth messages/files that are not mono8 class ids
    gt_without_frame: int = 0   # ground-truth messages whose stamp no predicted frame has
    repeated_stamp: int = 0     # predicted frames not scored: ground truth is matched by stamp, and theirs repeats
    gt_repeated_stamp: int = 0  # ground-truth messages of a stamp whose earlier one waits for its frame: unused


@dataclass
class Sample:
    index: int
    stamp: int
    rgb: np.ndarray
    labels: np.ndarray
    gt: Optional[np.ndarray] = None


@dataclass
class EvalResult:
    mode: str
    bag: str
    image_topic: str
    image_type: str
    gt_source: Optional[str]
    model: Dict[str, object]
    class_names: List[str]
    palette: np.ndarray
    drivable_classes: List[int]
    counts: Counts
    latencies_ms: List[float]
    fps: Optional[float]  # None: too few frames to measure
    wall_s: float  # offline: the whole run (bag scan included); live: first to last publish
    confusion: Optional[ConfusionMatrix] = None
    drivable: Optional[Dict[str, int]] = None
    samples: List[Sample] = field(default_factory=list)
    node: Optional[Dict[str, object]] = None
    notes: List[str] = field(default_factory=list)
    labels_by_stamp: Dict[int, np.ndarray] = field(default_factory=dict)  # kept on request (tests)
    out_bag: Optional[str] = None
    partial: str = ""  # why the report covers fewer frames than were recorded (a damaged bag)
    playback: Optional[Dict[str, object]] = None  # live: the pace asked and the pace played (live.playback_pace)
    trained_on_gt: str = ""  # why the accuracy is not held out: the model trained on these frames' split (or chose by it)
    held_in: str = ""  # the same, short: "frames the model trained on" (the summary line)
    rejections: Dict[str, Optional[int]] = field(default_factory=dict)  # reason -> frames (None: not counted)

    def metrics(self) -> Dict[str, object]:
        c = self.counts
        out: Dict[str, object] = {
            "mode": self.mode, "bag": self.bag, "image_topic": self.image_topic, "image_type": self.image_type,
            "ground_truth": self.gt_source, "model": self.model,
            "frames": {"in": c.frames_in, "out": c.frames_out, "dropped": c.dropped, "rejected": c.rejected,
                       "corrupt": c.corrupt, "duplicate_stamps": c.duplicate_stamps},
            "fps": None if self.fps is None else round(self.fps, 2), "wall_s": round(self.wall_s, 2),
            "latency_ms": percentiles(self.latencies_ms, (50, 95)),
        }
        if self.mode == "live":
            out["frames"]["undecodable"] = c.undecodable
        if self.rejections:
            out["frames"]["rejected_reasons"] = self.rejections
        if self.node is not None:
            out["node"] = self.node
        if self.playback is not None:
            out["playback"] = self.playback
        if self.confusion is not None:
            seg = self.confusion.summary(self.class_names) if c.scored else {}
            seg.update({"frames_scored": c.scored, "no_ground_truth": c.no_ground_truth,
                        "gt_size_mismatch": c.gt_size_mismatch, "gt_unreadable": c.gt_unreadable,
                        "gt_without_frame": c.gt_without_frame, "repeated_stamp": c.repeated_stamp,
                        "gt_repeated_stamp": c.gt_repeated_stamp, "labels_resized": c.labels_resized,
                        "gt_unknown_id_pixels": c.gt_unknown_id_pixels,
                        "pred_unknown_id_pixels": c.pred_unknown_id_pixels})
            if self.trained_on_gt:
                seg["not_held_out"] = self.trained_on_gt
            out["segmentation"] = seg
            d = binary_summary(self.drivable) if self.drivable and c.scored else {}
            out["drivable"] = {"classes": [self.class_names[i] for i in self.drivable_classes], **d}
            out["confusion_matrix"] = {"classes": self.class_names, "rows": "ground truth",
                                       "columns": "prediction", "pixels": self.confusion.mat.tolist()}
        if self.out_bag:
            out["out_bag"] = self.out_bag
        if self.partial:
            out["partial"] = self.partial
        if self.notes:
            out["notes"] = self.notes
        return out

    def summary_line(self) -> str:
        c = self.counts
        lat = percentiles(self.latencies_ms, (50, 95))
        parts = [f"{c.frames_in} frames in, {c.frames_out} out, {c.dropped} dropped, {c.rejected} rejected"]
        if c.undecodable:
            parts.append(f"{c.undecodable} undecodable")
        if c.corrupt:
            parts.append(f"{c.corrupt} corrupt")
        if c.duplicate_stamps:
            parts.append(f"{c.duplicate_stamps} with a repeated header stamp")
        # live: answers per second, which a node that keeps up holds to the playback's rate (not its capacity)
        parts.append("FPS n/a" if self.fps is None else f"{self.fps:.1f} FPS"
                     + (" answered (at most the playback's rate)" if self.mode == "live" else ""))
        if lat["p50"] is not None:
            parts.append(f"latency p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms max {lat['max']:.0f} ms")
        if self.confusion is not None and c.scored:
            miou = 100 * self.confusion.miou()
            parts.append(("mIoU n/a" if miou != miou else f"mIoU {miou:.1f}%") + f" on {c.scored} frames"
                         + (f" ({c.labels_resized} with labels resized to the ground truth)" if c.labels_resized else "")
                         + (f" ({self.held_in or 'frames the model trained on'}: not held out)"
                            if self.trained_on_gt else ""))
            d = binary_summary(self.drivable)
            if d["iou"] is not None:
                parts.append(f"drivable IoU {d['iou']:.1f}%")
        return ", ".join(parts)


class Scorer:
    """Pairs predictions with ground truth by header stamp, whichever arrives first, and
    accumulates the confusion matrix and the drivable-area counts."""

    def __init__(self, num_classes: int, drivable_classes: Sequence[int], counts: Counts,
                 gt_folder: Optional[GroundTruthFolder] = None, sample_indices: Sequence[int] = (),
                 keep_labels: bool = False, with_gt: bool = True, ignore_index: int = 255):
        self.n = int(num_classes)
        self.ignore = int(ignore_index)
        self.drivable = np.asarray(list(drivable_classes), np.int64)
        self.counts = counts
        self.gt_folder = gt_folder
        self.with_gt = with_gt or gt_folder is not None
        self.cm = ConfusionMatrix(self.n)
        self.bin = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        self.sample_indices = set(sample_indices)
        self.samples: Dict[int, Sample] = {}
        self.keep_labels = keep_labels
        self.labels_by_stamp: Dict[int, np.ndarray] = {}
        self._gt: Dict[int, np.ndarray] = {}
        self._pred: Dict[int, Tuple[np.ndarray, int, Optional[Tuple[int, int]]]] = {}
        self._paired: set = set()  # stamps whose ground truth met its frame (by stamp)
        self.gt_corrupt: set = set()  # header stamps of ground-truth messages that do not deserialise
        self.gt_corrupt_frames = 0    # frames left unscored for it (finish() counts them)
        self.warned: Dict[str, str] = {}
        self.rejections: Dict[str, int] = {}
        self.first_repeat: Optional[int] = None  # the first header stamp a frame repeated
        self.first_resize = ""  # the sizes of the first frame whose labels were resized, for the note
        self.gt_unknown_ids: set = set()
        self.pred_unknown_ids: set = set()

    @property
    def matches_stamps(self) -> bool:
        """Whether ground truth is paired with frames by header stamp (not by frame order)."""
        return self.with_gt and (self.gt_folder is None or self.gt_folder.mode == "stamp")

    def warn_once(self, kind: str, text: str) -> None:
        self.warned.setdefault(kind, text)

    def reject(self, reason: str) -> None:
        """A frame the pipeline refused, counted under its reason."""
        self.counts.rejected += 1
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def add_gt(self, stamp: int, gt: np.ndarray) -> None:
        if stamp in self._pred:
            labels, index, size = self._pred.pop(stamp)
            self._paired.add(stamp)
            self._score(stamp, labels, gt, index, size)
        elif stamp in self._gt or stamp in self._paired:  # the first of this stamp waits for, or met, its frame
            self.counts.gt_repeated_stamp += 1
        else:
            self._gt[stamp] = gt

    def add_prediction(self, stamp: int, labels: np.ndarray, index: int, rgb: Optional[np.ndarray] = None,
                       repeated: bool = False, frame_size: Optional[Tuple[int, int]] = None) -> None:
        """repeated: an earlier frame had this header stamp; predicted, but not paired by stamp.
        frame_size: the frame's (height, width) where known (labels may be the network's size)."""
        self.counts.frames_out += 1
        if self.keep_labels:
            self.labels_by_stamp[stamp] = labels
        if index in self.sample_indices and rgb is not None:
            self.samples[index] = Sample(index, stamp, rgb, labels)
        if not self.with_gt:
            return
        if repeated and self.matches_stamps:
            self.counts.repeated_stamp += 1
            return
        if self.gt_folder is not None:
            try:
                gt = self.gt_folder.lookup(stamp, index)
            except ImageError as e:
                self.counts.gt_unreadable += 1
                self.warn_once("gt_unreadable", str(e))
                return
            if gt is None:
                self.counts.no_ground_truth += 1
                return
            self._score(stamp, labels, gt, index, frame_size)
        elif stamp in self._gt:
            self._paired.add(stamp)
            self._score(stamp, labels, self._gt.pop(stamp), index, frame_size)
        else:
            self._pred[stamp] = (labels, index, frame_size)

    def _fit(self, stamp: int, labels: np.ndarray, gt: np.ndarray,
             frame: Optional[Tuple[int, int]]) -> Optional[np.ndarray]:
        """Labels of another size than the ground truth (a node with output_size network), resized to
        it where the ground truth is the frame's size; None (a counted skip) where it is not."""
        (gh, gw), (lh, lw) = gt.shape, labels.shape
        if frame is not None:
            fits, other = tuple(frame) == (gh, gw), f"the frame is {frame[1]}x{frame[0]}"
        else:  # frame size not known: the same aspect ratio (within a pixel) says the same view
            fits, other = abs(lh * gw / lw - gh) <= 1, f"the labels are {lw}x{lh} (another aspect ratio)"
        if not fits:
            self.counts.gt_size_mismatch += 1
            self.warn_once("gt_size", f"ground truth at stamp {bag_io.format_stamp(stamp)} is {gw}x{gh} but "
                                      f"{other}: such frames are not scored")
            return None
        self.counts.labels_resized += 1
        self.first_resize = self.first_resize or f"labels {lw}x{lh}, ground truth {gw}x{gh}"
        # as Pipeline.postprocess resizes: pixel centres aligned
        return cv2.resize(labels, (gw, gh), interpolation=cv2.INTER_NEAREST_EXACT)

    def _score(self, stamp: int, labels: np.ndarray, gt: np.ndarray, index: int,
               frame: Optional[Tuple[int, int]] = None) -> None:
        if gt.shape != labels.shape:
            labels = self._fit(stamp, labels, gt, frame)
            if labels is None:
                return
        self.cm.update(labels, gt)
        valid = gt < self.n  # the ignore id (and anything past the classes) is not scored
        hist = np.bincount(gt.ravel(), minlength=self.n)
        for i in np.flatnonzero(hist[self.n:]) + self.n:  # ids neither a class nor the ignore id
            if i != self.ignore:
                self.gt_unknown_ids.add(int(i))
                self.counts.gt_unknown_id_pixels += int(hist[i])
        odd = (labels >= self.n) & valid  # predicted ids past the classes: wrong (ConfusionMatrix)
        if odd.any():
            self.pred_unknown_ids.update(np.unique(labels[odd]).tolist())
            self.counts.pred_unknown_id_pixels += int(odd.sum())
        s = binary_scores(np.isin(labels, self.drivable), np.isin(gt, self.drivable), valid)
        for k in self.bin:
            self.bin[k] += s[k]
        self.counts.scored += 1
        if index in self.samples:
            self.samples[index].gt = gt

    def finish(self) -> None:
        """Whatever is still unpaired: predictions without ground truth, and the reverse."""
        if self.with_gt:
            self.counts.no_ground_truth += len(self._pred)
            self.counts.gt_without_frame += len(self._gt)
            k = self.counts.no_ground_truth
            corrupt = sum(1 for stamp in self._pred if stamp in self.gt_corrupt)  # it was there, unreadable
            # one whose stamp does not read (cut before it, or still compressed) may be any unscored frame's
            unclaimed = sum(1 for s in self.gt_corrupt if s not in self._pred and s not in self._paired)
            self.gt_corrupt_frames = corrupt + min(unclaimed, len(self._pred) - corrupt)
            if k and self.counts.scored:  # none scored at all is the command's error instead
                self.warn_once("no_gt", f"{k} frame{'s have' if k > 1 else ' has'} no ground truth "
                                        f"{'in ' + str(self.gt_folder.folder) if self.gt_folder else 'of the same header stamp'}"
                                        + (f" ({corrupt} of them: {'its' if corrupt == 1 else 'their'} ground-truth "
                                           "message is corrupt)" if corrupt else "") + ": not scored")
        self._pred.clear()
        self._gt.clear()
        if self.counts.gt_repeated_stamp:
            k = self.counts.gt_repeated_stamp
            self.warn_once("gt_repeat", f"{k} ground-truth message{'s repeat' if k > 1 else ' repeats'} the header stamp "
                                        "of an earlier one: one ground truth per stamp is paired with a frame, so "
                                        f"{'these are' if k > 1 else 'it is'} counted (gt_repeated_stamp), not used")
        if self.rejections:
            self.warned["rejected"] = rejection_note(self.rejections, self.counts.rejected)
        c = self.counts
        if c.labels_resized:
            self.warned["labels_resized"] = (
                f"{c.labels_resized} frame{'s' if c.labels_resized > 1 else ''} had labels of another size than "
                f"the ground truth ({self.first_resize}; a node with output_size network?): resized to it "
                "(nearest, pixel centres aligned) and scored (labels_resized)")
        if c.gt_unknown_id_pixels:
            self.warned["gt_unknown_ids"] = (
                f"{c.gt_unknown_id_pixels} ground-truth pixels have {_ids(self.gt_unknown_ids)}, neither a class "
                f"of the model (0-{self.n - 1}) nor its ignore id {self.ignore}: not scored (gt_unknown_id_pixels); "
                "is this ground truth labelled with another class table?")
        if c.pred_unknown_id_pixels:
            self.warned["pred_unknown_ids"] = (
                f"{c.pred_unknown_id_pixels} scored pixels were predicted as {_ids(self.pred_unknown_ids)}, past "
                f"the model's classes (0-{self.n - 1}): counted as wrong (pred_unknown_id_pixels); does the node "
                "run a model of another class table?")

    def repeated_stamps_note(self, live: bool) -> None:
        """The note on frames whose header stamp repeats an earlier frame's (a driver that stamps 0,
        or a fixed time): how many, what became of them, and what to do."""
        k = self.counts.duplicate_stamps
        if not k:
            return
        what = (f"{k} frame{'s repeat' if k > 1 else ' repeats'} an earlier frame's header stamp (the first: "
                f"{bag_io.format_stamp(self.first_repeat)})")
        if live:
            why = ("not played: the node's outputs are matched to frames by stamp; give each frame its own stamp "
                   "in the camera driver, or run --mode offline, which evaluates them")
        elif self.matches_stamps:
            why = ("evaluated, but not scored: ground truth is matched by stamp; give each frame its own stamp in "
                   "the camera driver, or pass --gt-dir with one PNG per frame (matched in frame order)")
        else:
            why = "evaluated all the same (nothing is matched by stamp here; live mode cannot play them)"
        self.warned["duplicate"] = f"{what}: {why}"


def _ids(ids, most: int = 8) -> str:
    """'id 12' or 'ids 12, 15, 20' (the first few, then how many more)."""
    ranked = sorted(ids)
    more = f" and {len(ranked) - most} more" if len(ranked) > most else ""
    return f"id{'s' if len(ranked) > 1 else ''} " + ", ".join(map(str, ranked[:most])) + more


def rejection_note(reasons: Dict[str, Optional[int]], total: int, who: str = "", most: int = 5) -> str:
    """'5 frames rejected: 3 x reason; 2 x other', the most frequent first (a count of None: not known)."""
    ranked = sorted(reasons.items(), key=lambda kv: -(kv[1] or 0))
    named = "; ".join(f"{n} x {r}" if n else r for r, n in ranked[:most])
    more = f"; and {len(ranked) - most} more reasons" if len(ranked) > most else ""
    return f"{total} frame{'s' if total != 1 else ''} rejected{who}: {named}{more}"


def add_gt_message(scorer: Scorer, m: bag_io.BagMessage, counts: Counts) -> None:
    """A ground-truth message from the bag into the scorer; unreadable ones are counted skips."""
    if m.error:
        counts.gt_unreadable += 1
        scorer.warn_once("gt_unreadable", m.error)
        stamp = bag_io.raw_stamp_ns(m.raw)  # its frame is then not scored for a corrupt message, not a missing one
        scorer.gt_corrupt.add(stamp if stamp is not None else ("unstamped", len(scorer.gt_corrupt)))
        return
    try:
        gt = decode_labels(m.msg)
    except ValueError as e:
        counts.gt_unreadable += 1
        scorer.warn_once("gt_unreadable", f"ground truth on {m.topic} skipped: {e}")
        return
    scorer.add_gt(bag_io.stamp_ns(m.msg.header), gt)


def admit_frame(scorer: Scorer, m: bag_io.BagMessage, counts: Counts, seen) -> Tuple[Optional[int], bool]:
    """Count an image message in: (its header stamp, whether a frame in `seen` had it already);
    None for a corrupt one. A repeated stamp is counted; the caller decides what it costs."""
    counts.frames_in += 1
    if m.error:
        counts.corrupt += 1
        scorer.warn_once("corrupt", m.error)
        return None, False
    stamp = bag_io.stamp_ns(m.msg.header)
    repeated = stamp in seen
    if repeated:
        counts.duplicate_stamps += 1
        if scorer.first_repeat is None:
            scorer.first_repeat = stamp
    return stamp, repeated


def sample_indices(total: int, k: int) -> List[int]:
    if total <= 0 or k <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, min(k, total))})
