"""Render docs/images/ground_grid.png: a synthetic calibrated camera's label image (CamVid
colours from the model card) next to the drivable grid the node publishes for it.

    .venv/bin/python scripts/render_ground_picture.py [--out PATH]
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from seg_perception.card import load_card
from seg_perception.paths import DEFAULT_MODEL, resolve_model
from seg_perception.runtime.ground import Camera, CameraPose, GridLookup, GridSpec, GroundCloud

W, H = 640, 480
ROAD, PAVEMENT, BUILDING, SKY, CAR = 3, 4, 1, 0, 8


def scene(x, y):
    """A road 3 m wide curving left, pavement beside it, a car-sized box on the road, walls farther out."""
    centre = 0.02 * x * x
    cls = np.full(x.shape, BUILDING, np.uint8)
    cls[np.abs(y - centre) < 4.0] = PAVEMENT
    cls[np.abs(y - centre) < 1.5] = ROAD
    cls[(x > 6.0) & (x < 7.5) & (y - centre > -0.2) & (y - centre < 1.3)] = CAR
    return cls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "images" / "ground_grid.png"),
                    help="where to write the picture (default: %(default)s)")
    args = ap.parse_args()
    card = load_card(resolve_model(DEFAULT_MODEL))
    cam = Camera.from_camera_info(W, H, [500, 0, 319.5, 0, 500, 239.5, 0, 0, 1], [-0.2, 0.05, 0, 0, 0], "plumb_bob")
    pose = CameraPose.from_body_xyz_rpy([0.25, 0.0, 0.9], [0.0, 0.2, 0.0])
    pts = GroundCloud(cam, pose, 1, 30.0).points
    hit = np.isfinite(pts[..., 0])
    labels = np.full((H, W), SKY, np.uint8)
    labels[hit] = scene(pts[hit][:, 0], pts[hit][:, 1])
    spec = GridSpec(0.05, (0.5, 10.0), (-5.0, 5.0))
    grid = GridLookup(cam, pose, spec, 10.0).grid(np.isin(labels, card.drivable_classes).astype(np.uint8))
    # grid image: x forward = up, y left = left (flip both axes of the row-major grid)
    shade = np.where(grid == 0, 255, np.where(grid == 100, 0, 160)).astype(np.uint8)[::-1, ::-1].T
    shade = cv2.resize(np.ascontiguousarray(shade), (H * shade.shape[1] // shade.shape[0], H),
                       interpolation=cv2.INTER_NEAREST)
    left = cv2.cvtColor(card.palette[labels], cv2.COLOR_RGB2BGR)
    right = cv2.cvtColor(shade, cv2.COLOR_GRAY2BGR)
    out = np.hstack([left, np.full((H, 8, 3), 255, np.uint8), right])
    cv2.putText(out, "labels (camera)", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    cv2.putText(out, "drivable_grid (base_footprint)", (W + 18, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2)
    path = Path(args.out)
    half = cv2.resize(out, (out.shape[1] // 2, out.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(path), half):
        raise SystemExit(f"cannot write {path} (does its folder exist?)")
    print(path)


if __name__ == "__main__":
    main()
