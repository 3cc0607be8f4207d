"""Class legend on every overlay image the package writes: the node/pipeline overlay and the
report's sample frames carry each class's colour swatch, from the model card."""
import cv2
import numpy as np

from seg_perception.card import load_card
from seg_perception.data.classes import CAMVID, CITYSCAPES
from seg_perception.evaluation.commands import evaluate
from seg_perception.evaluation.config import EvalConfig
from seg_perception.runtime.legend import draw_legend, legend_panel
from seg_perception.runtime.pipeline import Pipeline

from conftest import SAMPLE_BAG


def _swatch_centres(n, image_height):
    row = legend_panel(["x"] * n, [(0, 0, 0)] * n, image_height).shape[0] - 8
    row //= n
    return [(4 + i * row + row // 2, 4 + (row - 4) // 2) for i in range(n)], row


def test_panel_has_every_class_colour_and_fits():
    for table, h in ((CAMVID, 360), (CITYSCAPES, 720), (CAMVID, 48)):
        panel = legend_panel(table.names, table.colors, h)
        assert panel.shape[0] <= max(h, 8 * table.num_classes + 8)
        centres, _ = _swatch_centres(table.num_classes, h)
        for (y, x), color in zip(centres, table.colors):
            assert tuple(panel[y, x]) == color
    tiny = draw_legend(np.zeros((20, 30, 3), np.uint8), CAMVID.names, CAMVID.colors)
    assert tiny.shape == (20, 30, 3)  # clipped, not grown


def test_pipeline_overlay_has_legend_only_in_corner(random_model, val_frames):
    card = load_card(random_model)
    frame = val_frames[0][0]
    with_legend = Pipeline.from_card(card, backend="onnxruntime", threads=1)(frame, overlay=True).overlay
    plain = Pipeline.from_card(card, backend="onnxruntime", threads=1, overlay_legend=False)(frame, overlay=True).overlay
    ph, pw = legend_panel(card.class_names, card.class_colors, frame.shape[0]).shape[:2]
    diff = np.any(with_legend != plain, axis=2)
    assert diff[:ph, -pw:].mean() > 0.5 and not diff[ph:].any() and not diff[:, :-pw].any()


def _near_legend(tile, names, colors, alpha=0.8):
    """Every swatch pixel is alpha x its class colour + (1 - alpha) x whatever was below."""
    centres, _ = _swatch_centres(len(names), tile.shape[0])
    pw = legend_panel(names, colors, tile.shape[0]).shape[1]
    for (y, x), color in zip(centres, colors):
        px = tile[y, tile.shape[1] - pw + x].astype(float)
        if np.any(np.abs(px - alpha * np.asarray(color)) > (1 - alpha) * 255 + 2):
            return False
    return True


def test_report_samples_have_legend(random_model, tmp_path):
    card = load_card(random_model)
    cfg = EvalConfig(bag=SAMPLE_BAG, model=str(random_model), threads=1, max_frames=1, samples=1, progress=False)
    _, files, code = evaluate(cfg, "offline", tmp_path)
    assert code == 0
    strip = cv2.cvtColor(cv2.imread(str(next(p for k, p in files.items() if k.startswith("sample_")))),
                         cv2.COLOR_BGR2RGB)
    w = (strip.shape[1] - 8) // 3  # input | prediction | ground truth, 4-pixel gaps
    assert _near_legend(strip[:, w + 4:2 * w + 4], card.class_names, card.class_colors)
    assert not _near_legend(strip[:, :w], card.class_names, card.class_colors)  # the input has none
