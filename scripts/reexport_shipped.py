"""Re-export the shipped models' ONNX files from their .pt (dynamic shape, tiny weights flushed by
load_net) and re-make both INT8 models the way `seg-perception release` does, measuring val mIoU.

    .venv/bin/python scripts/reexport_shipped.py [--models rdsnet_camvid essnet_d_camvid erfnet_camvid] [--threads 1]

Keeps file names and the card's training/metrics; rewrites files, export, quantization and the
int8 / int8_cpu figures, and the val figure of weights trained without val (of weights trained on
val, only val_miou_not_held_out: their val figure is the recipe run's).
"""
import argparse
import json

from seg_perception.card import load_card
from seg_perception.data.datasets import default_camvid_root
from seg_perception.deploy.export import exported_card, write_onnx
from seg_perception.deploy.quantize import (calibration_frames, evaluate_int8, list_calibration_images, note_int8,
                                            quantize_onnx)
from seg_perception.evaluation.split_accuracy import evaluate
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "models"

ap = argparse.ArgumentParser()
ap.add_argument("--models", nargs="+", default=["rdsnet_camvid", "essnet_d_camvid", "erfnet_camvid"])
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--calib-images", type=int, default=100)
a = ap.parse_args()
data = str(default_camvid_root())
for name in a.models:
    card = load_card(MODELS / f"{name}.yaml")
    onnx = write_onnx(card, card.path.parent / f"{name}.onnx", dynamic=True)
    card = exported_card(card, onnx, dynamic=True)
    res = evaluate(card, data, "camvid", "val", backend="onnxruntime", threads=a.threads)
    if "val" in str(card.training.get("train_split", "train")).split("+"):
        # val is in these weights' training data: the card's val figures are its recipe run's
        # (release --recipe-run) and stay; this one is for the record only, as release keeps it
        print(f"[{name}] fp32 val mIoU {res['miou']:.2f}, not held out (card said "
              f"{card.metrics.get('val_miou_not_held_out')})", flush=True)
        card.metrics["val_miou_not_held_out"] = res["miou"]
    else:
        print(f"[{name}] fp32 val mIoU {res['miou']:.2f} (card said {card.metrics.get('val_miou')})", flush=True)
        card.metrics["val_miou"] = res["miou"]
        card.metrics["val_pixel_accuracy"] = res["pixel_accuracy"]
        card.metrics["val_per_class_iou"] = res["per_class_iou"]
    files = list_calibration_images(data, a.calib_images)
    frames = calibration_frames(files, card, onnx)
    for target, suffix in (("tensorrt", "_int8"), ("cpu", "_int8_cpu")):
        q = quantize_onnx(onnx, onnx.with_name(f"{name}{suffix}.onnx"), frames, method="auto", target=target)
        acc = evaluate_int8(card, onnx, q.path, data, threads=a.threads)
        key = "int8" if target == "tensorrt" else "int8_cpu"
        # release's speed figure (the same method, so the same graph) and its note stay with the new figures
        kept = {k: v for k, v in card.metrics.get(key, {}).items() if k in ("speed_vs_fp32", "note")}
        note_int8(card, q.path, q, {**acc, **kept})
        print(f"[{name}] {target} int8: {json.dumps(acc)}", flush=True)
    card.save(card.path)
    print(f"[{name}] wrote {card.path}", flush=True)
