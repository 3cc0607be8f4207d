"""Pipeline.run_batch (several cameras' frames in one backend call), no ROS: frame by frame it
must give what the single-frame pipeline gives, on real CamVid frames, with the shipped model
(trained weights, dynamic-batch ONNX) on ONNX Runtime and PyTorch."""
import cv2
import numpy as np
import pytest

from seg_perception.runtime.pipeline import Pipeline


def _frames(val_frames):
    """Four different frames: sizes and colour layouts differ, as between cameras."""
    a, b, c, d = (f[0] for f in val_frames[:4])
    return ([a, cv2.cvtColor(b, cv2.COLOR_RGB2BGR), cv2.resize(c, (640, 480)), cv2.resize(d, (320, 240))],
            ["rgb", "bgr", "rgb", "rgb"])


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_batch_equals_single_frames(shipped_model, val_frames, backend):
    pipe = Pipeline.from_card(shipped_model, backend=backend, threads=1)
    frames, colors = _frames(val_frames)
    batch = pipe.run_batch(frames, colors, overlay=[False, True, False, False], confidence=True)
    assert len(batch) == len(frames)
    for i, (frame, color, res) in enumerate(zip(frames, colors, batch)):
        ref = pipe(frame, color, overlay=i == 1, confidence=True)
        assert res.labels.shape == frame.shape[:2]
        # Batched kernels may sum in another order: allow a handful of argmax ties to flip.
        assert (res.labels == ref.labels).mean() > 0.9995, f"frame {i}"
        np.testing.assert_array_equal(res.drivable, pipe.drivable_lut[res.labels])
        assert np.abs(res.confidence.astype(int) - ref.confidence.astype(int)).max() <= 1
        assert (res.overlay is not None) == (i == 1)
        assert res.timings["batch"] == 4
    # the frames really differ, so a mixed-up order would fail above
    assert (batch[0].labels != cv2.resize(batch[3].labels, (480, 360), interpolation=cv2.INTER_NEAREST)).mean() > 0.05


def test_onnxruntime_runs_the_batch_in_one_call(shipped_model, val_frames):
    pipe = Pipeline.from_card(shipped_model, backend="onnxruntime", threads=1)
    assert pipe.backend.batches  # the shipped ONNX has a symbolic batch dim, left free
    x = np.stack([pipe.preprocess(f[0]) for f in val_frames[:3]])
    labels, conf = pipe.backend.infer_batch(x)
    assert labels.shape == (3, pipe.backend.height, pipe.backend.width) and conf.shape == labels.shape
    calls = []
    run = pipe.backend.session.run
    pipe.backend.session.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    pipe.run_batch([f[0] for f in val_frames[:3]], ["rgb"] * 3)
    assert len(calls) == 1


def test_fixed_batch_graph_runs_frame_by_frame(random_model, val_frames):
    """A graph exported with batch fixed at 1 (the random test model) still serves a batch."""
    pipe = Pipeline.from_card(random_model, backend="onnxruntime", threads=1)
    assert not pipe.backend.batches
    frames = [f[0] for f in val_frames[:2]]
    results = pipe.run_batch(frames, ["rgb", "rgb"])
    assert len(results) == len(frames)
    for res, frame in zip(results, frames):
        np.testing.assert_array_equal(res.labels, pipe(frame).labels)


def test_batch_input_errors(shipped_model, val_frames):
    pipe = Pipeline.from_card(shipped_model, backend="onnxruntime", threads=1)
    assert pipe.run_batch([], []) == []
    with pytest.raises(ValueError, match="2 frames but 1 colour"):
        pipe.run_batch([val_frames[0][0]] * 2, ["rgb"])
