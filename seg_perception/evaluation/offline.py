"""Offline evaluation: every frame of the bag through the Pipeline, in this process
(no ROS runtime). Latency here is decode + pipeline time per frame; FPS is the
throughput that time allows (1 / mean latency)."""
from __future__ import annotations

import time
from pathlib import Path

from ..card import CardError
from ..data import bag_io
from ..runtime.backends import BackendError
from ..runtime.image_conversion import to_rgb
from ..runtime.pipeline import Pipeline
from .common import (Progress, check_ground_truth_classes, load_model_card, notes_on_error, open_bag, partial_reason,
                     select_inputs, trained_on_ground_truth)
from .config import EvalConfig, EvalError
from .out_bag import DRIVABLE, LABELS, OVERLAY, OutputBag, copy_topics
from .scoring import Counts, EvalResult, Scorer, add_gt_message, admit_frame, decode_frame


def make_pipeline(cfg: EvalConfig, card) -> Pipeline:
    try:
        # labels alone, as the node runs the model unless it publishes confidence: its latency, not more
        pipe = Pipeline.from_card(card.path, backend=cfg.backend, precision=cfg.precision, onnx=cfg.onnx,
                                  threads=cfg.threads, confidence=False)
    except (ValueError, FileNotFoundError, CardError, BackendError) as e:
        raise EvalError(str(e)) from None
    pipe.backend.warmup()
    return pipe


def run_offline(cfg: EvalConfig) -> EvalResult:
    card = load_model_card(cfg.model)
    pipe = make_pipeline(cfg, card)
    counts = Counts()
    latencies = []
    t_start = time.perf_counter()
    out = None
    reader = open_bag(cfg.bag)
    with reader, notes_on_error(reader):
        inp = select_inputs(cfg, reader)
        check_ground_truth_classes(inp, reader, card)
        held_in, held_in_why = trained_on_ground_truth(inp, reader, card)
        scorer = Scorer(card.num_classes, pipe.drivable_classes, counts, inp.gt_folder, inp.samples,
                        keep_labels=cfg.keep_labels, with_gt=inp.gt is not None, ignore_index=card.ignore_index)
        topics = list(inp.topics)
        if cfg.out_bag:
            try:
                out = OutputBag(cfg.out_bag, cfg.out_bag_format)
            except bag_io.BagError as e:
                raise EvalError(str(e)) from None
            out.keep_custom_data(reader)
            topics = sorted(set(topics) | set(copy_topics(reader, inp.image.name, inp.gt and inp.gt.name)))
        bar = Progress(inp.total, "offline", cfg.progress)
        seen = set()
        index = -1
        read_error = ""
        try:
            for m in reader.messages(topics):
                if m.topic == inp.image.name:
                    index += 1
                    if index >= inp.total:
                        break  # ground truth recorded with the last frame has been read by now
                if out is not None:
                    out.copy(m)
                if inp.gt is not None and m.topic == inp.gt.name:
                    add_gt_message(scorer, m, counts)
                    continue
                if m.topic != inp.image.name:
                    continue
                bar.update()
                stamp, repeated = admit_frame(scorer, m, counts, seen)
                if stamp is None:
                    continue
                t0 = time.perf_counter()
                try:
                    frame, layout = decode_frame(m)
                    res = pipe(frame, layout)
                except ValueError as e:  # ImageError and frames the pipeline refuses
                    scorer.reject(str(e))
                    continue
                seen.add(stamp)  # a rejected frame claims no stamp: a good one of the same stamp is scored
                dt = time.perf_counter() - t0
                latencies.append(dt * 1e3)
                rgb = to_rgb(frame, layout) if index in scorer.sample_indices else None
                scorer.add_prediction(stamp, res.labels, index, rgb, repeated, frame_size=frame.shape[:2])
                if out is not None:  # the overlay is drawn outside the timing: it is this bag's, not the node's
                    t_out = m.t_ns + int(dt * 1e9)
                    h = m.msg.header
                    for topic, img, enc in ((LABELS, res.labels, "mono8"), (DRIVABLE, res.drivable, "mono8"),
                                            (OVERLAY, pipe.overlay(frame, layout, res.labels), "rgb8")):
                        out.add_msg(t_out, topic, bag_io.image_msg(img, enc, bag_io.stamp_ns(h), h.frame_id))
        except bag_io.BagError as e:
            # A file that breaks off mid-way: what was read still counts, and the report says so.
            read_error = str(e)
        finally:
            bar.close()
            if out is not None:
                out.close()
        scorer.finish()
        scorer.repeated_stamps_note(live=False)
    if inp.gt_folder is not None and inp.gt_folder.mixed_reading():  # not scored against labels read two ways
        raise EvalError(inp.gt_folder.mixed_reading())
    wall = time.perf_counter() - t_start
    fps = len(latencies) / (sum(latencies) / 1e3) if latencies else None  # None: no frame to time
    return EvalResult(
        mode="offline", bag=str(Path(cfg.bag)), image_topic=inp.image.name, image_type=inp.image.msgtype,
        gt_source=inp.gt_source, model=_model_info(card, pipe.backend.describe()),
        class_names=list(card.class_names), palette=card.palette, drivable_classes=list(pipe.drivable_classes),
        counts=counts, latencies_ms=latencies, fps=fps, wall_s=wall,
        confusion=scorer.cm if scorer.with_gt else None, drivable=scorer.bin if scorer.with_gt else None,
        samples=[scorer.samples[i] for i in sorted(scorer.samples)],
        notes=list(reader.notes) + list(scorer.warned.values()),  # what the reader did or left out, first
        labels_by_stamp=scorer.labels_by_stamp, out_bag=str(out.path) if out is not None else None,
        partial=partial_reason(inp, read_error, counts.corrupt, scorer.gt_corrupt_frames),
        trained_on_gt=held_in_why, held_in=held_in,
        rejections=scorer.rejections)


def _model_info(card, backend: str) -> dict:
    return {"name": card.name, "card": str(card.path), "architecture": card.architecture, "backend": backend}
