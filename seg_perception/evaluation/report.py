"""The report folder: metrics.json, report.md and plots (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from ..metrics import no_nan, percentiles
from ..runtime.legend import draw_legend
from .scoring import EvalResult

METRICS = "metrics.json"
REPORT = "report.md"
CONFUSION = "confusion_matrix.png"
PER_CLASS = "per_class_iou.png"
LATENCY = "latency_hist.png"
SAMPLES = "samples"


def _plt():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed (CI, ssh, a robot)
    import matplotlib.pyplot as plt
    return plt


def write_report(result: EvalResult, out_dir: str | Path, title: str = "Bag evaluation") -> Dict[str, Path]:
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    # A report written here before (another bag, a run with ground truth) must not leave figures or
    # samples beside this one's: only this report's own file names, nothing else in the folder.
    for name in (METRICS, LATENCY, CONFUSION, PER_CLASS, REPORT):
        (out / name).unlink(missing_ok=True)
    for old in (out / SAMPLES).glob("frame_*.png") if (out / SAMPLES).is_dir() else ():
        old.unlink()
    metrics = result.metrics()
    files: Dict[str, Path] = {}
    files["metrics"] = out / METRICS
    files["metrics"].write_text(json.dumps(no_nan(metrics), indent=2) + "\n")
    plt = _plt()
    if result.latencies_ms:
        files["latency"] = _latency_hist(plt, result, out / LATENCY)
    if result.confusion is not None and result.counts.scored:
        files["confusion"] = _confusion(plt, result, out / CONFUSION)
        files["per_class"] = _per_class(plt, result, out / PER_CLASS)
    files.update(_samples(result, out / SAMPLES))
    files["report"] = out / REPORT
    files["report"].write_text(_markdown(result, metrics, files, out, title))
    return files


def _latency_hist(plt, result: EvalResult, path: Path) -> Path:
    lat = np.asarray(result.latencies_ms)
    p = percentiles(result.latencies_ms, (50, 95))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(lat, bins=min(40, max(5, len(lat) // 2)), color="#4c72b0")
    for q, style in (("p50", "--"), ("p95", ":")):
        ax.axvline(p[q], color="k", linestyle=style, label=f"{q} {p[q]:.1f} ms")
    what = "publish -> /segmentation/labels received" if result.mode == "live" else "decode + pipeline"
    ax.set_xlabel(f"latency (ms): {what}")
    ax.set_ylabel("frames")
    ax.set_title(f"End-to-end latency ({result.mode}, {len(lat)} frames)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def recall_rows(confusion) -> np.ndarray:
    """The confusion matrix with each truth row divided by that class's pixels, as the report's IoU
    and recall count them: predictions of ids past the class table are misses too (they have no
    column to be drawn in), so such a row sums to less than 1."""
    mat = confusion.mat.astype(np.float64)
    rows = confusion.truth_pixels().astype(np.float64)[:, None]
    return np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)


def _confusion(plt, result: EvalResult, path: Path) -> Path:
    norm = recall_rows(result.confusion)
    names = result.class_names
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix (rows normalised)")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _per_class(plt, result: EvalResult, path: Path) -> Path:
    iou = result.confusion.iou()
    names = result.class_names
    colors = [tuple(c / 255.0 for c in result.palette[i]) for i in range(len(names))]
    vals = [0.0 if np.isnan(v) else 100 * v for v in iou]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    bars = ax.bar(range(len(names)), vals, color=colors, edgecolor="black", linewidth=0.5)
    for b, v in zip(bars, iou):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, "n/a" if np.isnan(v) else f"{100 * v:.0f}",
                ha="center", fontsize=7)
    miou = 100 * result.confusion.miou()
    ax.axhline(miou, color="k", linestyle="--", label=f"mIoU {miou:.1f}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("IoU (%)")
    ax.set_title(f"Per-class IoU ({result.counts.scored} frames)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _samples(result: EvalResult, folder: Path) -> Dict[str, Path]:
    out = {}
    if not result.samples:
        return out
    folder.mkdir(exist_ok=True)
    pal = result.palette
    for s in result.samples:
        overlay = cv2.addWeighted(s.rgb, 0.5, pal[s.labels], 0.5, 0.0) if s.labels.shape == s.rgb.shape[:2] \
            else pal[s.labels]
        overlay = draw_legend(overlay, result.class_names, [pal[i] for i in range(len(result.class_names))])
        panels = [("input", s.rgb), ("prediction", overlay)]
        if s.gt is not None:
            gt = pal[s.gt]  # ids past the table (the ignore id) are black
            panels.append(("ground truth", gt))
        h = max(p.shape[0] for _, p in panels)
        tiles = []
        for name, img in panels:
            img = img if img.shape[0] == h else cv2.resize(img, (img.shape[1] * h // img.shape[0], h),
                                                             interpolation=cv2.INTER_NEAREST_EXACT)
            img = np.array(img, np.uint8, copy=True)  # message buffers are read-only
            cv2.putText(img, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(img)
            tiles.append(np.full((h, 4, 3), 255, np.uint8))
        strip = np.hstack(tiles[:-1])
        path = folder / f"frame_{s.index:04d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        out[f"sample_{s.index}"] = path
    return out


def _fmt(v, unit="", digits=1) -> str:
    """n/a for a figure with nothing to measure (None, or NaN: every pixel of the ignore id)."""
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.{digits}f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _markdown(result: EvalResult, m: Dict, files: Dict[str, Path], out: Path, title: str) -> str:
    c = result.counts
    lat = m["latency_ms"]
    lines: List[str] = [f"# {title}", ""]
    lines += [f"- bag: `{result.bag}` ({result.image_topic}, {result.image_type})",
              f"- mode: **{result.mode}**" + (" (frames played into segmentation_node over DDS)"
                                               if result.mode == "live" else " (Pipeline in-process, no ROS)"),
              f"- model: {m['model'].get('name')} on {m['model'].get('backend')}",
              f"- ground truth: {result.gt_source or 'none (no accuracy metrics)'}"]
    if m["model"].get("camera_info"):  # live: the bag's CameraInfo, played beside the frames
        lines.append(f"- CameraInfo: {m['model']['camera_info']}")
    if result.out_bag:
        lines.append(f"- outputs bag: `{result.out_bag}`")
    if result.partial:
        lines += ["", f"**Partial result:** {result.partial}. The figures below cover the frames that could be read."]
    lines += ["", "## Frames and timing", "", "| frames in | out | dropped | rejected | corrupt | repeated stamps | FPS | "
              "latency p50 | p95 | max |", "|---|---|---|---|---|---|---|---|---|---|",
              f"| {c.frames_in} | {c.frames_out} | {c.dropped} | {c.rejected} | {c.corrupt} | {c.duplicate_stamps} | "
              f"{_fmt(result.fps)} | "
              f"{_fmt(lat['p50'], ' ms')} | {_fmt(lat['p95'], ' ms')} | {_fmt(lat['max'], ' ms')} |", ""]
    if result.mode == "live":
        lines.append("Latency: from publishing a frame to receiving its /segmentation/labels (matched by header "
                     "stamp), every frame timed, the first included (the node warmed its model up at start-up). FPS: frames answered per second, from the first answer to the last: a node that keeps up "
                     "answers at the playback's rate, so this is not the node's capacity (its processing_ms below is).")
        pb = result.playback
        if pb:
            lines.append(f"Playback: asked {pb['asked']}; {pb['recorded_s']:.2f} s of recording played in "
                         f"{pb['played_s']:.2f} s (real-time factor "
                         + (f"{pb['realtime_factor']:.2f}" if pb["realtime_factor"] else "n/a") + ").")
        if result.node:
            items = [(k, v) for k, v in result.node.items() if k != "stages" and not isinstance(v, dict)]
            # the stages' medians too: processing_ms is the node's capacity the text above points to
            stages = [(k, v) for k, v in (result.node.get("stages") or {}).items() if k not in dict(items)]
            medians = ", ".join(f"{k} {v}" for k, v in items + stages if k.endswith("_ms"))
            lines.append("Node counters over the run: " + ", ".join(f"{k} {v}" for k, v in items if not k.endswith("_ms"))
                         + "." + (f" The node's medians over its last 100 frames: {medians}." if medians else ""))
    else:
        lines.append("Latency: decode + pipeline per frame in this process, every frame timed (the model ran two "
                     "blank frames first, untimed; the first frame's decode is in). FPS: 1 / mean latency.")
    if "latency" in files:
        lines += ["", f"![latency]({files['latency'].relative_to(out)})"]
    if result.confusion is not None:
        seg = m["segmentation"]
        lines += ["", "## Accuracy", ""]
        if c.scored:
            drv = m["drivable"]
            lines += [f"- mIoU **{_fmt(seg['miou'], '%', 2)}**, pixel accuracy {_fmt(seg['pixel_accuracy'], '%', 2)} "
                      f"over {c.scored} frames ({seg['pixels']} labelled pixels)"
                      + (f"; no pixel of {', '.join(seg['classes_absent'])} in the ground truth: not in the mean"
                         if seg.get("classes_absent") else ""),
                      f"- drivable area ({', '.join(drv['classes'])}): IoU {_fmt(drv.get('iou'), '%')}, "
                      f"precision {_fmt(drv.get('precision'), '%')}, recall {_fmt(drv.get('recall'), '%')}"
                      if drv["classes"] else "- drivable area: none (" + (
                          "the node's drivable_classes parameter names none" if result.mode == "live"
                          else "the model card names no drivable class") + ")"]
            if result.trained_on_gt:
                lines.append(f"- **Not held out:** {result.trained_on_gt}")
            lines += ["",
                      "| class | IoU (%) |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in seg["per_class_iou"].items()]
            lines += ["", f"![per-class IoU]({files['per_class'].relative_to(out)})", "",
                      f"![confusion matrix]({files['confusion'].relative_to(out)})"]
        else:
            lines.append("No frame could be scored (see the counts below).")
        skipped = {k: seg[k] for k in ("no_ground_truth", "gt_size_mismatch", "gt_unreadable", "gt_without_frame",
                                       "repeated_stamp", "gt_repeated_stamp") if seg[k]}
        if skipped:
            lines += ["", "Not scored: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items())]
    samples = [p for k, p in files.items() if k.startswith("sample_")]
    if samples:
        panels = "input | prediction overlay" + (" | ground truth" if any(x.gt is not None for x in result.samples)
                                                  else "")
        lines += ["", "## Frames", "", panels, ""]
        lines += [f"![{p.stem}]({p.relative_to(out)})" for p in samples]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
