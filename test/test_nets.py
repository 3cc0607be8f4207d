"""The zoo: registry behaviour, shapes, and sizes against the papers' tables."""
import pytest
import torch

from seg_perception.nets import build_model, list_models


def count_params(m):
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_seed_networks():
    names = list_models()
    for n in ("erfnet", "essnet_d", "essnet_dg2", "essnet_dg4"):
        assert n in names


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError) as e:
        build_model("segnet9000", 11)
    assert "segnet9000" in str(e.value) and "erfnet" in str(e.value)


@pytest.mark.parametrize("name", ["erfnet", "essnet_d", "essnet_dg2", "essnet_dg4"])
def test_output_is_logits_at_input_size(name):
    m = build_model(name, 11).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 11, 64, 96)
    assert torch.isfinite(y).all()


def test_erfnet_matches_reference_table():
    # ERFNet layer table: 2.04-2.07 M parameters (20 classes, Cityscapes)
    n = count_params(build_model("erfnet", 20))
    assert 2_040_000 <= n <= 2_070_000, n


def test_grouping_removes_exactly_the_grouped_pointwise_weights():
    # ESSNet thesis Table 3.5: D -> DG2 saves 151,552 and DG2 -> DG4 75,776 parameters,
    # i.e. half, then a quarter, of the encoder's 1x1 weights (303,104).
    d, g2, g4 = (count_params(build_model(n, 20)) for n in ("essnet_d", "essnet_dg2", "essnet_dg4"))
    assert d - g2 == 151_552
    assert g2 - g4 == 75_776


def test_tiny_weights_are_flushed_when_loading_for_deployment():
    """Subnormal weights (left by weight decay) are zeroed by load_net; everything else stays."""
    import torch
    from seg_perception.nets.deployable import TINY_WEIGHT, flush_tiny_weights
    from seg_perception.nets import build_model
    net = build_model("essnet_d", 11)
    w = next(net.parameters())
    torch.set_flush_denormal(False)  # a training run earlier in this process turns it on: 1e-40 would be stored as 0
    with torch.no_grad():
        w.view(-1)[:3] = torch.tensor([1e-40, -1e-25, 3e-20])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert flush_tiny_weights(net) == 2
    assert w.view(-1)[:2].eq(0).all() and w.view(-1)[2] == torch.tensor(3e-20)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == 1 and TINY_WEIGHT == 1e-20


def test_load_net_flushes_tiny_weights_from_the_file(tmp_path):
    """What deployment loads (load_net: export, the PyTorch backend) comes out flushed."""
    import torch
    from conftest import make_random_model
    from seg_perception.card import load_card
    from seg_perception.nets.deployable import load_net
    card = load_card(make_random_model(tmp_path, onnx=False))
    state = torch.load(card.file("weights"), weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() >= 3)
    state[key].view(-1)[:3] = torch.tensor([1e-40, -1e-25, 3e-20])
    torch.save(state, card.file("weights"))
    got = load_net(card).state_dict()[key].view(-1)[:3]
    assert got[:2].eq(0).all() and got[2] == torch.tensor(3e-20)
    assert not load_net(card).training
