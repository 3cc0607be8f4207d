"""The ROS-free pipeline with the real ONNX Runtime and PyTorch backends (random
weights: these tests check plumbing and agreement, not accuracy)."""
import cv2
import numpy as np
import pytest

from conftest import needs_no_tensorrt
from seg_perception.card import load_card
from seg_perception.runtime.backends import BackendError, create_backend
from seg_perception.runtime.legend import draw_legend
from seg_perception.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def ort_pipe(random_model):
    return Pipeline.from_card(random_model, backend="onnxruntime")


def test_the_random_fixture_model_sees_its_input(ort_pipe, val_frames):
    """The node, bag and pipeline tests compare a random model's labels across colour paths and
    frames: that only catches a swapped channel order or a stale frame if its labels move with them."""
    rgb = val_frames[0][0]
    a = ort_pipe(rgb).labels
    assert (a != ort_pipe(np.ascontiguousarray(rgb[..., ::-1])).labels).mean() > 0.05  # BGR for RGB
    assert (a != ort_pipe(val_frames[3][0]).labels).mean() > 0.05  # another frame
    assert len(np.unique(a)) >= 3 and (a == 3).any()  # several classes, the drivable one among them


def test_labels_drivable_confidence_overlay(ort_pipe, val_frames):
    img, _ = val_frames[0]
    res = ort_pipe(img, overlay=True, confidence=True)
    assert res.labels.shape == (360, 480) and res.labels.dtype == np.uint8
    assert res.labels.max() < 11
    np.testing.assert_array_equal(res.drivable, np.where(res.labels == 3, 255, 0))
    assert res.confidence.shape == (360, 480) and res.confidence.dtype == np.uint8
    assert res.confidence.min() >= 255 // 11 - 1  # the max of 11 probabilities is at least 1/11
    assert res.overlay.shape == (360, 480, 3)
    # CamVid's colours written out here (not read from the card) and the blend at alpha 0.5
    palette = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                        [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]])
    expected = np.round((img.astype(int) + palette[res.labels]) / 2).astype(np.uint8)
    # the legend's corner: the card's names beside those colours
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist"]
    assert ort_pipe.card.class_names == names
    expected = draw_legend(expected, names, palette)
    assert np.abs(res.overlay.astype(int) - expected.astype(int)).max() <= 1
    assert set(res.timings) == {"pre_ms", "infer_ms", "post_ms"}


def test_confidence_is_the_top_softmax_probability(random_model, val_frames):
    """The confidence map is max_k softmax(logits)_k x 255, from the network's own logits."""
    import torch
    from seg_perception.nets.deployable import load_net
    card = load_card(random_model)
    pipe = Pipeline.from_card(random_model, backend="onnxruntime", output_size="network")
    net = load_net(card)
    for img, _ in val_frames[:2]:
        res = pipe(img, confidence=True)
        x = pipe.preprocess(img)  # uint8 RGB at the network's size, as the backend gets it
        t = torch.from_numpy(x).float().permute(2, 0, 1)[None] / 255.0
        t = (t - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
        with torch.no_grad():
            prob = torch.softmax(net(t), dim=1)[0].max(dim=0).values.numpy()
        expected = np.round(prob * 255.0)
        diff = np.abs(res.confidence.astype(np.float64) - expected)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99
        assert expected.max() - expected.min() > 50  # the confidences differ across the frame


def test_without_confidence_the_graph_is_cut_to_labels_and_labels_stay_the_same(ort_pipe, random_model, val_frames):
    import onnx
    from seg_perception.runtime.backends import labels_only_graph
    lean = Pipeline.from_card(random_model, backend="onnxruntime", confidence=False)
    assert not lean.backend.has_confidence and lean.backend.outputs == ["labels"]
    full_graph = onnx.load(str(ort_pipe.backend.path)).graph
    cut = onnx.load_from_string(labels_only_graph(ort_pipe.backend.path)).graph
    assert [o.name for o in cut.output] == ["labels"]
    ops = lambda g: [n.op_type for n in g.node]  # noqa: E731
    assert "Exp" in ops(full_graph) and "Exp" not in ops(cut) and "ReduceSum" not in ops(cut)
    assert len(cut.node) < len(full_graph.node)
    # Constants of the cut nodes go with them (ONNX Runtime prints a warning per unused one).
    read = {i for n in cut.node for i in n.input}
    assert all(init.name in read for init in cut.initializer)
    for img, _ in val_frames[:3]:
        res = lean(img)
        np.testing.assert_array_equal(res.labels, ort_pipe(img).labels)
        assert res.confidence is None
    with pytest.raises(ValueError, match="confidence=False"):
        lean(val_frames[0][0], confidence=True)


@pytest.mark.parametrize("size", [(640, 480), (123, 77), (1920, 1080)])
def test_any_frame_size_comes_back_at_its_size(ort_pipe, val_frames, size):
    img = cv2.resize(val_frames[1][0], size)
    res = ort_pipe(img)
    assert res.labels.shape == (size[1], size[0])
    # Nearest-neighbour resize back: labels at the frame size are the model-size labels resized,
    # each frame pixel taking the label under its centre (as the input's resize maps centres).
    small = ort_pipe.backend.infer(ort_pipe.preprocess(img))[0]
    np.testing.assert_array_equal(res.labels, cv2.resize(small, size, interpolation=cv2.INTER_NEAREST_EXACT))
    ys = ((np.arange(size[1]) + 0.5) * small.shape[0] / size[1]).astype(int)
    xs = ((np.arange(size[0]) + 0.5) * small.shape[1] / size[0]).astype(int)
    assert (res.labels != small[ys][:, xs]).mean() < 0.03  # (OpenCV's fixed point rounds a few when shrinking)


def test_outputs_at_network_size(random_model, val_frames):
    """output_size 'network': the backend's own labels, no resize; the overlay is of the frame
    shrunk to the network's size; frame_size still names the camera frame."""
    pipe = Pipeline.from_card(random_model, backend="onnxruntime", output_size="network")
    img = cv2.resize(val_frames[1][0], (1280, 720))
    res = pipe(img, overlay=True, confidence=True)
    small, conf = pipe.backend.infer(pipe.preprocess(img))
    np.testing.assert_array_equal(res.labels, small)
    np.testing.assert_array_equal(res.drivable, np.where(small == 3, 255, 0))
    assert res.confidence.shape == res.overlay.shape[:2] == small.shape == (360, 480)
    assert res.frame_size == (1280, 720)
    with pytest.raises(ValueError, match="unknown output_size 'half'; valid choices: camera, network"):
        Pipeline.from_card(random_model, backend="onnxruntime", output_size="half")


def test_colour_layouts_agree(ort_pipe, val_frames):
    img = val_frames[2][0]
    ref = ort_pipe(img).labels
    np.testing.assert_array_equal(ort_pipe(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), "bgr").labels, ref)
    np.testing.assert_array_equal(ort_pipe(cv2.cvtColor(img, cv2.COLOR_RGB2BGRA), "bgra").labels, ref)


def test_torch_and_onnxruntime_agree(random_model, val_frames):
    torch_pipe = Pipeline.from_card(random_model, backend="torch")
    ort_pipe = Pipeline.from_card(random_model, backend="onnxruntime")
    for img, _ in val_frames[:3]:
        a, b = torch_pipe(img).labels, ort_pipe(img).labels
        assert (a == b).mean() > 0.999


def test_drivable_override(random_model, val_frames):
    pipe = Pipeline.from_card(random_model, backend="onnxruntime", drivable_classes=[3, 4])
    res = pipe(val_frames[0][0])
    np.testing.assert_array_equal(res.drivable > 0, np.isin(res.labels, [3, 4]))
    with pytest.raises(ValueError, match="drivable class 11"):
        Pipeline.from_card(random_model, backend="onnxruntime", drivable_classes=[11])


@pytest.mark.parametrize("frame,color,msg", [
    (np.zeros((10, 10), np.float32), "rgb", "uint8"),
    (np.zeros((10, 10, 4), np.uint8), "rgb", "needs 3 channel"),
    (np.zeros((0, 10, 3), np.uint8), "rgb", "empty"),
    (np.zeros((10, 10, 3), np.uint8), "hsv", "unknown colour layout"),
])
def test_bad_frames(ort_pipe, frame, color, msg):
    with pytest.raises(ValueError, match=msg):
        ort_pipe(frame, color)


def test_backend_errors_list_choices(random_model, tmp_path):
    card = load_card(random_model)
    with pytest.raises(BackendError, match="valid choices: auto, tensorrt, onnxruntime, torch"):
        create_backend("tflite", card)
    with pytest.raises(BackendError, match="valid choices: fp32, fp16, int8"):
        create_backend("onnxruntime", card, precision="fp64")
    with pytest.raises(BackendError, match="int8 ONNX file"):
        create_backend("onnxruntime", card, precision="int8")
    with pytest.raises(BackendError, match="not found"):
        create_backend("torch", card, weights=str(tmp_path / "missing.pt"))
    with pytest.raises(BackendError, match="fixed at 480x360"):
        create_backend("onnxruntime", card, width=320, height=240)


@needs_no_tensorrt
def test_tensorrt_backend_without_tensorrt_says_what_to_install(random_model):
    with pytest.raises(BackendError, match="backend .tensorrt. cannot run here: TensorRT is not installed"):
        create_backend("tensorrt", load_card(random_model))


@needs_no_tensorrt
def test_auto_falls_back_to_onnxruntime_with_a_warning(random_model, caplog):
    be = create_backend("auto", load_card(random_model), precision="fp16")
    assert be.name == "onnxruntime" and be.precision == "fp32"
    assert any("falls back to onnxruntime" in r.message for r in caplog.records)


def test_training_validation_resizes_frames_as_the_pipeline_does(ort_pipe, val_frames):
    """The val figure training writes into a card is the one evaluate prints: the same resize
    (INTER_AREA when shrinking, linear when enlarging) before the network."""
    from seg_perception.data.transforms import EvalResize
    rgb = val_frames[0][0]
    w, h = ort_pipe.size
    portrait = cv2.resize(rgb, (h * 3 // 4, w * 4 // 3))  # narrower but taller than the input
    for frame in (rgb, cv2.resize(rgb, (w // 2, h // 2)), cv2.resize(rgb, (w * 3 // 2, h * 3 // 2)), portrait):
        want = ort_pipe.preprocess(frame, "rgb")
        got, _ = EvalResize(ort_pipe.size)(frame, None)
        assert np.array_equal(got, want)
    # A side that shrinks is averaged, not sampled, also when the other grows (OpenCV's INTER_AREA
    # alone averages only when both shrink): stripes one row high in a portrait frame come out
    # near-uniform grey, not as a beat pattern.
    stripes = np.zeros((w * 4 // 3, h * 3 // 4, 3), np.uint8)
    stripes[::2] = 255
    assert ort_pipe.preprocess(stripes, "rgb").std() < 20
    assert cv2.resize(stripes, (w, h), interpolation=cv2.INTER_AREA).std() > 50  # what it was


def test_from_card_takes_a_shipped_name(val_frames):
    from seg_perception.paths import DEFAULT_MODEL, resolve_model
    by_name = Pipeline.from_card(DEFAULT_MODEL, backend="onnxruntime", threads=1)
    assert by_name.card.path == resolve_model(DEFAULT_MODEL)
    assert by_name(val_frames[0][0]).labels.shape == val_frames[0][0].shape[:2]


def test_a_file_the_backend_would_not_read_is_refused(random_model):
    """--weights with an ONNX backend (or an ONNX file with torch) was ignored: the figures were
    the card's own model's, printed as if they were those weights'."""
    card = load_card(random_model)
    with pytest.raises(BackendError, match="are run by backend 'torch' only"):
        create_backend("onnxruntime", card, weights="/runs/other/last.pt")
    with pytest.raises(BackendError, match="is run by backend onnxruntime or tensorrt, not torch"):
        create_backend("torch", card, onnx_path="/models/other.onnx")


def test_without_the_onnx_package_the_model_runs_whole(random_model, monkeypatch, val_frames):
    """A ROS install with onnxruntime alone (no onnx package) still serves: the labels-only cut
    needs onnx, so the whole graph runs and the labels are the same."""
    import sys
    card = load_card(random_model)
    cut = create_backend("onnxruntime", card, confidence=False, threads=1)
    img = cv2.resize(val_frames[0][0], (card.input_width, card.input_height))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    whole = create_backend("onnxruntime", card, confidence=False, threads=1)
    np.testing.assert_array_equal(whole.infer(img)[0], cut.infer(img)[0])
