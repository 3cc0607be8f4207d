"""Every network of the zoo: size against its paper's table, output shapes, ONNX parity.

Counting: ``count_params`` (learnable parameters) and ``count_macs`` (torch's
FlopCounterMode run on the meta device; it counts convolutions and matmuls
only, one MAC = two FLOPs). Units: the ESSNet thesis's "GFLOPs" are MACs;
EdgeSegNet/AttendSeg figures (AttendSeg Table 1) are MACs at 512x512.

Class counts: ESSNet thesis networks (ERFNet, ESSNet A/B/final, WSPD-Net) are
counted with 20 classes (Cityscapes 19 + void), EdgeSegNet and AttendSeg with
32 (CamVid's full label set; 11 classes moves params by < 0.2 % and MACs by
< 1.5 %).
"""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from seg_perception.nets import build_model, list_models
from seg_perception.nets.complexity import count_macs, count_params
from seg_perception.train.grouping import make_gradual


@dataclass(frozen=True)
class Row:
    name: str
    classes: int
    height: int
    width: int
    params: float  # the paper's figure
    params_tol: float  # relative
    gmacs: float | None
    gmacs_tol: float | None
    why: str


# Tolerance per row, and why. "layer table" rows are rebuilt from a full table;
# "open design" rows are our designs within the paper's principles (+-15 %);
# "reconstruction" rows could not be checked against the source table and carry
# the measured gap (documented in their module docstrings).
ROWS = [
    Row("erfnet", 20, 512, 1024, 2.055e6, 0.0075, 27.7, 0.05,
        "layer table: 2.04-2.07 M; torch counts 26.61 G vs the thesis's 27.7"),
    Row("wspdnet", 20, 512, 1024, 0.67e6, 0.15, None, None, "open design (Table 4.2 not retrievable)"),
    Row("edgesegnet", 32, 512, 512, 7.09e6, 0.15, 77.89, 0.15, "open design, AttendSeg Table 1"),
    Row("attendseg", 32, 512, 512, 1.19e6, 0.15, 7.45, 0.15, "open design, AttendSeg Table 1"),
    Row("essnet_b_d", 20, 512, 1024, 683_568, 0.18, None, None, "reconstruction: -17.0 % (Table 3.2)"),
    Row("essnet_b_dg2", 20, 512, 1024, 395_568, 0.06, None, None, "reconstruction: +5.2 % (Table 3.2)"),
    Row("essnet_a_d", 20, 512, 1024, 1_291_648, 0.10, None, None, "reconstruction: +9.6 % (Table 3.4)"),
    Row("edanet", 20, 512, 1024, 0.68e6, 0.02, None, None, "reconstruction from the EDANet paper's text: 0.68 M"),
    Row("cgnet", 19, 1024, 2048, 0.5e6, 0.02, None, None, "reconstruction from the CGNet paper's text: 0.5 M (M=3, N=21)"),
]

# Exact counts of our builds (table classes; MACs at 1024x512 except 512x512
# for EdgeSegNet/AttendSeg): any change to a network shows up here first.
PINNED = {
    "erfnet": (2_064_256, 26_612_727_808),
    "essnet_d": (409_024, 5_330_829_312),
    "essnet_dg2": (257_472, 3_585_998_848),
    "essnet_dg4": (181_696, 2_713_583_616),
    "essnet_b_d": (567_552, 9_390_915_584),
    "essnet_b_dg2": (416_000, 7_646_085_120),
    "essnet_b_dg4": (340_224, 6_773_669_888),
    "essnet_b_dg8": (302_336, 6_337_462_272),
    "essnet_a_d": (1_416_064, 21_294_350_336),
    "essnet_a_dg2": (1_350_528, 20_757_479_424),
    "essnet_a_dg4": (1_317_760, 20_489_043_968),
    "essnet_a_dg8": (1_301_376, 20_354_826_240),
    "wspdnet": (699_648, 15_279_718_400),
    "rdsnet": (423_504, 4_858_970_112),
    "rdsnet_ibn": (423_504, 4_858_970_112),  # instance norm's affine weights replace half of BN's
    "rdsnet_skip": (426_224, 5_497_552_896),  # +0.6 % weights, +13 % MACs: the classifier at 1/4
    "edgesegnet": (7_124_800, 76_926_418_944),
    "attendseg": (1_173_984, 7_492_141_056),
    "edanet": (688_246, 8_836_579_328),
    "cgnet": (496_582, 6_764_409_856),
}
for _g in (2, 4, 8):  # channel shuffle adds no weights and no MACs
    for _f in ("a", "b"):
        PINNED[f"essnet_{_f}_dg{_g}s"] = PINNED[f"essnet_{_f}_dg{_g}"]

TABLE_SIZE = {"edgesegnet": (512, 512), "attendseg": (512, 512)}
TABLE_CLASSES = {"edgesegnet": 32, "attendseg": 32}


def test_every_registered_network_is_checked():
    assert set(list_models()) == set(PINNED)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_size_against_paper(row):
    m = build_model(row.name, row.classes)
    p = count_params(m)
    assert abs(p / row.params - 1) <= row.params_tol, (row.name, p, row.params, row.why)
    if row.gmacs is not None:
        g = count_macs(m, row.height, row.width) / 1e9
        assert abs(g / row.gmacs - 1) <= row.gmacs_tol, (row.name, g, row.gmacs, row.why)


def test_final_essnet_differs_from_table_3_5_by_its_decoder_only():
    # Table 3.5 (20 classes, 1024x512): 431,312 / 279,760 / 203,984 params and
    # 5.77 / 4.03 / 3.16 GFLOPs (= MACs). The gap is the same for D, DG2 and DG4
    # (the encoder matches exactly; the decoder is our reconstruction).
    table = {"essnet_d": (431_312, 5.77), "essnet_dg2": (279_760, 4.03), "essnet_dg4": (203_984, 3.16)}
    for name, (params, gmacs) in table.items():
        m = build_model(name, 20)
        assert params - count_params(m) == 22_288, name
        assert abs(gmacs - count_macs(m, 512, 1024) / 1e9 - 0.44) <= 0.02, name


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_counts(name):
    h, w = TABLE_SIZE.get(name, (512, 1024))
    m = build_model(name, TABLE_CLASSES.get(name, 20))
    assert (count_params(m), count_macs(m, h, w)) == PINNED[name]


def test_meta_count_equals_a_real_run_and_scales_with_pixels():
    m = build_model("essnet_d", 20)
    real = count_macs(m, 512, 1024, meta=False)
    assert real == count_macs(m, 512, 1024) == PINNED["essnet_d"][1]
    # A fully convolutional net's MACs scale with pixel count (sizes divisible by 8).
    assert count_macs(m, 64, 128) * 64 == real


@pytest.mark.parametrize("family,pointwise", [("b", 303_104), ("a", 131_072)])
def test_grouping_removes_the_grouped_pointwise_weights(family, pointwise):
    # Every D layer has two CxC pointwise convs; DGx keeps 1/x of them, DGxS adds a shuffle only.
    d = count_params(build_model(f"essnet_{family}_d", 20))
    for g in (2, 4, 8):
        dg = count_params(build_model(f"essnet_{family}_dg{g}", 20))
        assert d - dg == pointwise - pointwise // g
        assert count_params(build_model(f"essnet_{family}_dg{g}s", 20)) == dg


def test_grouped_pointwise_convs_are_real_grouped_convs():
    m = build_model("essnet_b_dg4", 11)
    grouped = [c for c in m.modules()
               if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (1, 1) and c.groups == 4]
    assert len(grouped) == 26  # 13 encoder layers x 2
    assert make_gradual(m) == 26  # gradual grouping finds and swaps every one


@pytest.mark.parametrize("name", sorted(PINNED))
def test_output_is_logits_at_input_size(name):
    m = build_model(name, 11).to("meta").eval()
    with torch.no_grad():
        for h, w in ((360, 480), (512, 1024)):
            assert m(torch.empty(2, 3, h, w, device="meta")).shape == (2, 11, h, w)
        if hasattr(m, "encoder"):  # the encoder-first training stage needs 1/8 features
            assert m.encoder(torch.empty(1, 3, 360, 480, device="meta")).shape[-2:] == (45, 60)


def test_rdsnet_layer_output_sizes():
    m = build_model("rdsnet", 20).to("meta").eval()
    expect = [(16, 256, 512), (64, 128, 256)] + [(64, 128, 256)] * 5 + [(128, 64, 128)] * 9
    seen = []
    hooks = [layer.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape[1:])))
             for layer in m.encoder]
    hooks.append(m.classifier.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape[1:]))))
    with torch.no_grad():
        out = m(torch.empty(1, 3, 512, 1024, device="meta"))
    for hk in hooks:
        hk.remove()
    assert seen == expect + [(20, 64, 128)]
    assert out.shape == (1, 20, 512, 1024)


def test_cgnet_stage_outputs_and_blocks():
    """M = 3 and N = 21 CG blocks (the first of each stage strided); the stage joins carry the
    frame at 1/2 and 1/4 and each stage's first block beside its last, as the layer table says."""
    from seg_perception.nets.cgnet import CGBlock
    m = build_model("cgnet", 19).to("meta").eval()
    blocks = [mod for mod in m.modules() if isinstance(mod, CGBlock)]
    assert len(blocks) == 3 + 21 and [b.down for b in blocks].count(True) == 2
    seen = {}
    for name in ("join1", "join2", "join3"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        m(torch.empty(1, 3, 512, 1024, device="meta"))
    assert seen == {"join1": (35, 256, 512), "join2": (131, 128, 256), "join3": (256, 64, 128)}
    assert [b.surround.dilation for b in blocks] == [(2, 2)] * 3 + [(4, 4)] * 21


def test_cgnet_blocks_add_their_input_back_except_the_strided_ones():
    from seg_perception.nets.cgnet import CGBlock
    torch.manual_seed(0)
    block, down = CGBlock(64, 64, 2, 8).eval(), CGBlock(64, 64, 2, 8, down=True).eval()
    for b in (block, down):  # a closed context gate: the block's own branch contributes zero
        torch.nn.init.constant_(b.context.fc[2].bias, -1e4)
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        assert torch.equal(block(x), x)
        assert down(x).shape == (1, 64, 8, 8) and down(x).abs().max() == 0


def test_rdsnet_skip_classifies_at_a_quarter_with_the_same_encoder():
    """The skip variant's classifier sees 1/4 features that carry both the 1/8 encoder output
    and the 1/4 stage: change either and its logits move."""
    m = build_model("rdsnet_skip", 11).eval()
    base = build_model("rdsnet", 11)
    assert [type(a) for a in m.encoder] == [type(b) for b in base.encoder]
    seen = []
    hook = m.classifier.register_forward_hook(lambda mod, i, o: seen.append(tuple(i[0].shape[1:])))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = m(x)
        hook.remove()
        assert seen == [(64, 16, 24)] and y.shape == (1, 11, 64, 96)
        for stage in (m.encoder[6], m.encoder[-1]):  # last 1/4 block, last 1/8 block
            saved = copy.deepcopy(stage.state_dict())
            for p in stage.parameters():
                p.add_(0.5)
            assert not torch.allclose(m(x), y, atol=1e-4)
            stage.load_state_dict(saved)
        assert torch.equal(m(x), y)


def test_ibn_normalises_half_the_channels_per_frame():
    """IBN: the first half of the channels is invariant to a frame's own gain and offset (instance
    norm), the second half is not (batch norm with running statistics, eval mode)."""
    from seg_perception.nets.layers import IBN
    torch.manual_seed(0)
    ibn = IBN(8).eval()
    ibn.bn.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(2, 8, 16, 16)
    y, y2 = ibn(x), ibn(x * 3.0 + 1.5)
    assert torch.allclose(y[:, :4], y2[:, :4], atol=1e-2)  # eps 1e-3 in the variance
    assert not torch.allclose(y[:, 4:], y2[:, 4:], atol=1e-1)
    m = build_model("rdsnet_ibn", 11)
    assert sum(isinstance(mod, IBN) for mod in m.modules()) == 5  # the 64-channel stage only


@pytest.mark.parametrize("channels,groups", [(64, 4), (128, 4), (96, 2)])
def test_channel_shuffle_exports_as_the_same_permutation(channels, groups):
    """In ONNX the shuffle is a 1x1 conv with a 0/1 matrix (faster on ONNX Runtime's CPU): it
    must move every channel exactly where the reshape-transpose-reshape does."""
    from seg_perception.nets.layers import ChannelShuffle
    shuffle = ChannelShuffle(groups)
    x = torch.randn(2, channels, 5, 7)
    assert torch.equal(shuffle.as_conv(x), shuffle(x))
    c = torch.arange(channels, dtype=torch.float32).reshape(1, channels, 1, 1)
    assert not torch.equal(shuffle(c), c)  # it is a permutation that moves channels


def test_an_exported_network_has_its_shuffles_as_convs(tmp_path):
    onnx = pytest.importorskip("onnx")
    m = build_model("rdsnet", 11).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(1, 3, 96, 128),), str(tmp_path / "r.onnx"), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "r.onnx")).graph.node]
    assert "Transpose" not in ops and ops.count("Conv") == 2 * 13 + 13 + 3 + 1  # 13 blocks, 3 downsamplers


# ONNX parity: legacy exporter, opset 17, 96x128 input (every net supports it).
# Pass: argmax agrees on >= 99.9 % of pixels, and max |torch - ORT| <= 1e-4 *
# max(1, max |logits|) (fp32 kernels differ by ~1e-7 here).
@pytest.mark.parametrize("name", sorted(PINNED))
def test_onnx_export_matches_torch(name):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = build_model(name, 11).eval()
    for bn in m.modules():  # random statistics so the output depends on the input
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 96, 128)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = m(x).numpy()
    assert got.shape == want.shape == (1, 11, 96, 128)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
