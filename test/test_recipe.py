"""The recipe pieces of `seg-perception train`: losses, EMA, scale augmentation,
distillation, several training splits, precision choice. Each test checks the
piece against an independent computation, so a wrong piece fails."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seg_perception.card import load_card
from seg_perception.data.transforms import TrainAugment
from seg_perception.train.ema import ModelEMA
from seg_perception.train.loop import TrainConfig, check_config, optimizer_step, train, training_record
from seg_perception.train.precision import (StepShape, choose_step, cpu_has_bf16, cuda_amp_dtype, loss_scaler,
                                            resolve_step, time_train_steps)
from seg_perception.train.losses import build_loss, distillation_kl, lovasz_softmax, ohem_cross_entropy
from seg_perception.train.mixing import class_mix

IGNORE = 11


def _onehot_logits(pred: torch.Tensor, c: int, scale: float = 60.0) -> torch.Tensor:
    return scale * F.one_hot(pred, c).permute(0, 3, 1, 2).float()


def test_lovasz_equals_one_minus_iou_for_hard_predictions():
    """For 0/1 probabilities the Lovasz extension is exactly the Jaccard loss: mean over the
    classes present in the labels of 1 - IoU, computed here from counts. The logits have 5
    classes, the labels only 0-3: class 4 (absent, though predicted at some pixels) must not
    count, neither as a loss of 1 nor as a fifth term of the mean."""
    g = torch.Generator().manual_seed(0)
    c, present = 5, 4
    target = torch.randint(0, present, (2, 9, 11), generator=g)
    target[0, :2] = IGNORE
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target.clamp(max=c - 1),
                       torch.randint(0, c, target.shape, generator=g))
    got = lovasz_softmax(_onehot_logits(pred, c), target, IGNORE)
    valid = target != IGNORE
    assert (pred[valid] == 4).any() and set(target[valid].unique().tolist()) == {0, 1, 2, 3}
    losses = []
    for k in range(present):  # the classes in the labels
        t, p = (target == k) & valid, (pred == k) & valid
        losses.append(1 - float((t & p).sum()) / float((t | p).sum()))
    assert got.item() == pytest.approx(np.mean(losses), abs=1e-5)


def test_lovasz_is_zero_when_perfect_and_has_gradients():
    target = torch.randint(0, 3, (1, 6, 6))
    assert lovasz_softmax(_onehot_logits(target, 3), target, IGNORE).item() == pytest.approx(0, abs=1e-6)
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    lovasz_softmax(logits, target, IGNORE).backward()
    assert logits.grad.abs().sum() > 0


def test_ohem_averages_the_hard_pixels_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8) * 3
    target = torch.randint(0, 5, (2, 8, 8))
    target[1, 0] = IGNORE
    w = torch.rand(5) + 0.5
    got = ohem_cross_entropy(logits, target, w, IGNORE, thresh=0.7, min_kept=0.0)
    valid = target != IGNORE
    p_true = logits.softmax(1).gather(1, target.clamp(max=4)[:, None])[:, 0]
    hard = valid & (p_true < 0.7)
    per_pixel = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, reduction="none")
    assert 0 < hard.sum() < valid.sum()
    assert got.item() == pytest.approx(per_pixel[hard].mean().item(), rel=1e-5)


def test_ohem_keeps_at_least_min_kept_pixels():
    """When almost everything is easy, the top-k hardest pixels are still trained on: k is a
    fraction of the VALID pixels (40 of 100 are ignored here: 12, not 20), and "hardest" is
    -log p(true class), not the class-weighted loss (which would rank the heavy class first);
    the kept pixels' weighted losses are averaged. Reference in numpy, from log-softmax."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (1, 10, 10), generator=g)
    target[0, :4] = IGNORE
    margin = 3.0 + 4.0 * torch.rand(1, 1, 10, 10, generator=g)  # every pixel its own loss: no ties
    logits = margin * F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    logits += 0.3 * torch.randn(1, 3, 10, 10, generator=g)
    logits[0, :, 6, :3] = 0.2 * torch.randn(3, 3, generator=g)  # three uncertain pixels
    w = torch.tensor([0.3, 1.0, 4.0])
    got = ohem_cross_entropy(logits, target, w, IGNORE, thresh=0.7, min_kept=0.2)
    t = target[0].numpy()
    valid = t != IGNORE
    lg = logits[0].double().numpy()
    log_p = lg - np.log(np.exp(lg).sum(0, keepdims=True))
    plain = -np.take_along_axis(log_p, np.where(valid, t, 0)[None], 0)[0][valid]
    weighted = w.double().numpy()[t[valid]] * plain
    assert valid.sum() == 60 and (np.exp(-plain) < 0.7).sum() == 3  # fewer hard pixels than 20 % of 60
    hardest = np.argsort(-plain)
    want = weighted[hardest[:12]].mean()
    # the mistakes this pins: 20 % of all 100 pixels, or the 12 highest weighted losses
    assert abs(want - weighted[hardest[:20]].mean()) > 0.05 and abs(want - np.sort(weighted)[-12:].mean()) > 0.02
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_build_loss_names():
    torch.manual_seed(0)
    w = torch.tensor([0.5, 1.0, 2.0])  # unequal, so a loss that drops the class weights differs
    logits, target = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    target[0, 0, :2] = IGNORE
    ce = build_loss("ce", w, IGNORE)(logits, target)
    want = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)
    assert ce.item() == pytest.approx(want.item(), rel=1e-5)
    assert ce.item() != pytest.approx(F.cross_entropy(logits, target, ignore_index=IGNORE).item(), rel=1e-3)
    mix = build_loss("ce+lovasz", w, IGNORE, lovasz_weight=0.5)(logits, target)
    assert mix.item() == pytest.approx(ce.item() + 0.5 * lovasz_softmax(logits, target, IGNORE).item(), rel=1e-5)
    assert build_loss("lovasz", w, IGNORE)(logits, target).item() == pytest.approx(
        lovasz_softmax(logits, target, IGNORE).item(), rel=1e-5)
    ohem = build_loss("ohem", w, IGNORE, 0.6, 0.2)(logits, target)
    assert ohem.item() == pytest.approx(ohem_cross_entropy(logits, target, w, IGNORE, 0.6, 0.2).item(), rel=1e-5)
    with pytest.raises(ValueError, match="valid choices: ce, ohem, lovasz, ce\\+lovasz"):
        build_loss("focal", w, IGNORE)


def test_distillation_kl_matches_definition():
    torch.manual_seed(1)
    s, t = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    target = torch.randint(0, 4, (1, 5, 5))
    target[0, 0] = IGNORE
    assert distillation_kl(s, s, target, IGNORE).item() == pytest.approx(0, abs=1e-6)
    T = 2.0
    pt, ps = (t / T).softmax(1), (s / T).softmax(1)
    kl = (pt * (pt.log() - ps.log())).sum(1)[target != IGNORE].mean() * T * T
    assert distillation_kl(s, t, target, IGNORE, T).item() == pytest.approx(kl.item(), rel=1e-5)
    # A teacher at another resolution is resized (bilinear) to the student's.
    t10 = torch.randn(1, 4, 10, 10)
    resized = F.interpolate(t10, size=(5, 5), mode="bilinear", align_corners=False)
    assert distillation_kl(s, t10, target, IGNORE).item() == pytest.approx(
        distillation_kl(s, resized, target, IGNORE).item(), rel=1e-6)


def test_ema_follows_the_formula_and_copies_counters():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema = ModelEMA(net, decay=0.9)
    before = ema.module[0].weight.clone()
    mean_before, var_before = ema.module[1].running_mean.clone(), ema.module[1].running_var.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()(torch.randn(2, 3, 4, 4) + 3.0)  # moves BN statistics and the batch counter
    ema.update(net)
    d = min(0.9, 2 / 11)  # warm-up decay at the first update
    torch.testing.assert_close(ema.module[0].weight, d * before + (1 - d) * net[0].weight)
    # BN statistics are averaged like weights (not copied)
    torch.testing.assert_close(ema.module[1].running_mean, d * mean_before + (1 - d) * net[1].running_mean)
    torch.testing.assert_close(ema.module[1].running_var, d * var_before + (1 - d) * net[1].running_var)
    assert not torch.allclose(ema.module[1].running_mean, net[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == int(net[1].num_batches_tracked) == 1
    for _ in range(200):
        ema.update(net)
    assert ema.current_decay() == 0.9
    torch.testing.assert_close(ema.module[0].weight, net[0].weight, atol=1e-6, rtol=0)
    twin = ModelEMA(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), 0.9)
    twin.load_state_dict(ema.state_dict())
    assert twin.updates == ema.updates
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(twin.module.state_dict()[k], v, rtol=0, atol=0, msg=k)
    with pytest.raises(ValueError, match="ema-decay"):
        ModelEMA(net, 1.0)


def test_scale_range_sets_the_zoom():
    """Crop 320x240 of a 480x360 frame: at scale 0.5 the frame covers a quarter of the crop
    (the rest is the ignore id); at scale 2.0 it covers all of it."""
    img = np.full((360, 480, 3), 100, np.uint8)
    lab = np.zeros((360, 480), np.uint8)
    small = TrainAugment((320, 240), IGNORE, scale=(0.5, 0.5), translate_px=0, jitter=0, seed=0)
    _, out = small(img, lab)
    assert out.shape == (240, 320)
    assert (out != IGNORE).mean() == pytest.approx(0.25, abs=0.01)
    big = TrainAugment((320, 240), IGNORE, scale=(2.0, 2.0), translate_px=0, jitter=0, seed=0)
    assert (big(img, lab)[1] != IGNORE).all()


def test_scale_is_relative_to_the_model_resolution():
    """A 320x240 crop for a 480x360 model at scale 1.0 is a window of the frame at 480x360,
    not the frame shrunk into the crop: an 8-pixel stripe of a 960x720 frame is 4 pixels wide."""
    img = np.zeros((720, 960, 3), np.uint8)
    lab = np.zeros((720, 960), np.uint8)
    lab[:, 480:488] = 1
    aug = TrainAugment((320, 240), IGNORE, scale=(1.0, 1.0), translate_px=0, jitter=0, seed=0, base=(480, 360))
    widths = []
    for _ in range(20):
        _, out = aug(img, lab)
        assert (out != IGNORE).all()
        cols = np.flatnonzero((out == 1).any(axis=0))
        if len(cols):
            widths.append(len(cols))
    assert widths and set(widths) <= {4}


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.4])
def test_jitter_scales_brightness_within_its_range(amount):
    """A flat grey frame stays flat (contrast and saturation leave it alone); its level moves by
    at most the brightness factor 1 +- jitter, and with jitter 0 not at all."""
    img = np.full((48, 64, 3), 100, np.uint8)
    lab = np.zeros((48, 64), np.uint8)
    aug = TrainAugment((64, 48), IGNORE, scale=(1.0, 1.0), translate_px=0, jitter=amount, seed=1)
    levels = []
    for _ in range(200):
        out, _ = aug(img, lab)
        assert out.min() == out.max()
        levels.append(int(out[0, 0, 0]))
    lo, hi = min(levels), max(levels)
    assert 100 * (1 - amount) - 1 <= lo and hi <= 100 * (1 + amount) + 1
    if amount:  # the draws fill most of the range
        assert hi - lo >= 100 * amount
    else:
        assert lo == hi == 100


@pytest.mark.parametrize("amount", [0.1, 0.3])
def test_jitter_scales_contrast_and_saturation_within_their_range(amount):
    """A frame of a different colour on each row (the same under a horizontal flip; values kept off
    0 and 255, so nothing clips). The factors are read back from each output by least squares:
    brightness b = mean level ratio, contrast c = slope of the pixel's grey level (channel mean)
    about the frame's mean over b, saturation s = slope of the pixel's chroma (colour minus its
    grey) over b x c. Each lies within 1 +- jitter, contrast and saturation fill most of it, and
    b m + b c (grey - m) + b c s chroma rebuilds every output pixel (within the uint8 truncation)."""
    rows = np.random.default_rng(2).integers(90, 161, (48, 1, 3))
    img = np.broadcast_to(rows, (48, 64, 3)).astype(np.uint8).copy()
    lab = np.zeros((48, 64), np.uint8)
    aug = TrainAugment((64, 48), IGNORE, scale=(1.0, 1.0), translate_px=0, jitter=amount, seed=1)
    grey_in = img.mean(axis=2)
    m = grey_in.mean()
    chroma_in = img - grey_in[..., None]
    factors = []
    for _ in range(100):
        out, _ = aug(img, lab)
        assert 0 < out.min() and out.max() < 255
        x = out + 0.5  # uint8 truncates: the value it came from is within half a level of this
        grey = x.mean(axis=2)
        b = grey.mean() / m
        bc = ((grey - grey.mean()) * (grey_in - m)).sum() / ((grey_in - m) ** 2).sum()
        bcs = ((x - grey[..., None]) * chroma_in).sum() / (chroma_in ** 2).sum()
        rebuilt = b * m + bc * (grey_in - m)[..., None] + bcs * chroma_in
        assert np.abs(x - rebuilt).max() < 1.5
        factors.append((b, bc / b, bcs / bc))
    lo, hi = np.min(factors, axis=0), np.max(factors, axis=0)
    assert (lo >= 1 - amount - 0.01).all() and (hi <= 1 + amount + 0.01).all(), (lo, hi)
    assert (hi - lo >= amount).all(), (lo, hi)  # 100 uniform draws of each factor fill most of 2 x jitter


def test_config_refusals():
    base = dict(model="essnet_d", data="x", out="y")
    with pytest.raises(ValueError, match="also trained on"):
        check_config(TrainConfig(train_split="train+val", **base))
    with pytest.raises(ValueError, match="--keep last"):
        check_config(TrainConfig(train_split="train+val", val_split="none", **base))
    with pytest.raises(ValueError, match="multiples of 8"):
        check_config(TrainConfig(crop_width=100, crop_height=64, **base))
    with pytest.raises(ValueError, match="--jitter must be within"):
        check_config(TrainConfig(jitter=1.5, **base))
    with pytest.raises(ValueError, match="--classmix is a probability"):
        check_config(TrainConfig(classmix=2, **base))
    with pytest.raises(ValueError, match="--workers must be -1 \\(auto\\) or a number of processes >= 0, got -3"):
        check_config(TrainConfig(workers=-3, **base))
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="--cache-gb must be -1 \\(auto\\) or a size in GB >= 0"):
            check_config(TrainConfig(cache_gb=bad, **base))
    with pytest.raises(ValueError, match="unknown --label-resize 'bilinear'; valid choices: nearest, centred"):
        check_config(TrainConfig(label_resize="bilinear", **base))
    with pytest.raises(ValueError, match="--class-crop is a probability"):
        check_config(TrainConfig(class_crop=-0.1, **base))
    with pytest.raises(ValueError, match="--eval-every is a number of epochs >= 1, got 0"):
        check_config(TrainConfig(eval_every=0, **base))
    with pytest.raises(ValueError, match="--class-weight-c must be above 1, got 1.0"):
        check_config(TrainConfig(class_weight_c=1.0, **base))
    with pytest.raises(ValueError, match="valid choices: auto, fp32, bf16"):
        resolve_step("fp8", "auto", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown memory format 'nhwc'"):
        check_config(TrainConfig(memory_format="nhwc", **base))
    check_config(TrainConfig(train_split="train+val", val_split="none", keep="last", **base))


def test_a_dataset_smaller_than_a_batch_is_refused(tmp_path, camvid_root):
    """4 frames and --batch-size 8 made epochs of no steps: the run 'finished' and shipped its
    initial weights with a nan loss."""
    with pytest.raises(ValueError, match="4 training frames make no batch of --batch-size 8: pass --batch-size 4"):
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(TINY, batch_size=8)), log=lambda *_: None)
    assert not list(tmp_path.glob("*.pt"))


def test_a_checkpoint_from_before_a_setting_resumes_as_what_it_meant():
    """A checkpoint saved before --label-resize existed trained with nearest: resumed with the default it
    is the same recipe, resumed with centred the change is said (not skipped as an unknown key)."""
    from dataclasses import asdict
    from seg_perception.train.loop import _changed_settings
    base = dict(model="essnet_d", data="x", out="y")
    old = {k: v for k, v in asdict(TrainConfig(**base)).items() if k not in ("label_resize", "cache_gb")}
    assert _changed_settings(old, TrainConfig(**base)) == []
    assert _changed_settings(old, TrainConfig(label_resize="centred", cache_gb=1.0, **base)) == [
        ("label_resize", "nearest", "centred")]
    # torchrun's process count (the step's batch is --batch-size x processes): a checkpoint from
    # before it was recorded is one process; resumed under two, the recipe changed
    older = {k: v for k, v in asdict(TrainConfig(**base)).items() if k != "processes"}
    assert _changed_settings(older, TrainConfig(**base)) == []
    assert _changed_settings(older, TrainConfig(processes=2, **base)) == [("processes", 1, 2)]


def test_auto_step_keeps_bf16_only_where_it_is_clearly_faster_and_takes_the_faster_layout():
    cl, nchw = "channels_last", "contiguous"
    # Measured on an AVX-512 BF16 EPYC (docs/training.md): RDS-Net, ESSNet-D.
    rds = {("fp32", cl): 1.40, ("fp32", nchw): 1.21, ("bf16", cl): 1.46, ("bf16", nchw): 1.00}
    assert (choose_step(rds).precision, choose_step(rds).memory_format) == ("bf16", nchw)  # 1.21x
    ess = {("fp32", cl): 1.80, ("fp32", nchw): 1.96, ("bf16", cl): 1.30, ("bf16", nchw): 1.52}
    assert (choose_step(ess).precision, choose_step(ess).memory_format) == ("bf16", cl)
    close = {("fp32", cl): 1.51, ("fp32", nchw): 1.60, ("bf16", cl): 1.44, ("bf16", nchw): 1.70}
    assert (choose_step(close).precision, choose_step(close).memory_format) == ("fp32", cl)  # 1.05x: not worth it
    emulated = {("fp32", nchw): 1.14, ("bf16", nchw): 14.8}
    assert choose_step(emulated).precision == "fp32"
    assert choose_step({("fp32", cl): 2.0, ("fp32", nchw): 1.0}).memory_format == nchw
    why = choose_step(ess).why
    assert "bf16 channels_last 1.30" in why and "fp32 contiguous 1.96" in why and "1.15x" in why


def test_auto_step_times_the_network_on_this_cpu():
    cpu = torch.device("cpu")
    fixed = resolve_step("fp32", "contiguous", cpu)
    assert (fixed.precision, fixed.memory_format, fixed.why) == ("fp32", "contiguous", "asked")
    c = resolve_step("auto", "auto", cpu, StepShape("essnet_d", (64, 48), 2), steps=1)
    timed = [part.rsplit(" ", 1)[0] for part in c.why.split("s/step ")[1].split(";")[0].split(", ")]
    assert timed == ["fp32 channels_last", "fp32 contiguous"] + (
        ["bf16 channels_last", "bf16 contiguous"] if cpu_has_bf16() else []), c.why
    assert f"{c.precision} {c.memory_format}" in timed
    if not cpu_has_bf16():
        with pytest.raises(ValueError, match="no bf16 support"):
            resolve_step("bf16", "auto", cpu)
    with pytest.raises(ValueError, match="valid choices: auto, channels_last, contiguous"):
        resolve_step("fp32", "nhwc", cpu)


def test_cuda_autocasts_in_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    """A T4 or a V100 (Turing, Volta) emulates bf16, slowly, though torch.cuda.is_bf16_supported()
    says yes: there fp16 with a loss scale; Ampere and Jetson Orin (8.x) and newer: bf16."""
    assert not loss_scaler(torch.device("cpu")).is_enabled()
    gpu = torch.device("cuda")
    for capability, dtype in (((7, 5), torch.float16), ((7, 2), torch.float16), ((8, 7), torch.bfloat16),
                              ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts there
        assert cuda_amp_dtype(gpu) == dtype
        made = {}
        monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: made.update(device=device, enabled=enabled),
                            raising=False)
        loss_scaler(gpu)
        assert made == {"device": "cuda", "enabled": dtype == torch.float16}
        why = resolve_step("auto", "auto", gpu).why
        assert ("fp16 with loss scaling" in why) == (dtype == torch.float16), why
        # an explicit CPU precision is said to be unused there, not dropped in silence
        assert "--precision fp32 is for a CPU (CUDA always trains under autocast)" in resolve_step("fp32", "auto", gpu).why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # bench-train's timings stay the CPU's
    timed = time_train_steps(StepShape("essnet_d", (32, 24), 1), [("fp32", "contiguous")], steps=1, warmup=0)
    assert list(timed) == [("fp32", "contiguous")] and len(timed["fp32", "contiguous"]) == 1


def _step_net():
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    return net, torch.optim.Adam(net.parameters(), lr=1e-2)


def test_a_pass_through_scaler_steps_exactly_as_a_plain_step():
    """fp32 and bf16 runs (and the runs that resume under this code) must take the same steps as
    plain backward + clip + Adam did."""
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    net, opt = _step_net()
    scaler = loss_scaler(torch.device("cpu"))
    ref, ref_opt = _step_net()
    for _ in range(5):
        assert optimizer_step(opt, scaler, F.cross_entropy(net(x), y), net.parameters(), 0.5) == "stepped"
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


needs_amp_scaler = pytest.mark.skipif(not hasattr(torch.amp, "GradScaler"),
                                      reason="a CPU GradScaler needs torch >= 2.3")


@needs_amp_scaler
def test_an_overflowing_loss_scale_backs_off_until_steps_are_taken():
    """Under fp16 a scale too large makes every gradient inf: the step is skipped and the scale
    lowered, so training goes on after a few skips instead of skipping every step."""
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    net, opt = _step_net()
    scaler = loss_scaler(torch.device("cpu"), enabled=True)  # fp32 here: only the scale can overflow
    assert optimizer_step(opt, scaler, F.cross_entropy(net(x), y), net.parameters(), 0.0) == "stepped"
    scaler.update(new_scale=3e38)
    before = [p.detach().clone() for p in net.parameters()]
    taken = [optimizer_step(opt, scaler, 1e3 * F.cross_entropy(net(x), y), net.parameters(), 0.0) for _ in range(30)]
    first = taken.index("stepped")
    assert 0 < first and set(taken[:first]) == {"gradient"} and set(taken[first:]) == {"stepped"}, taken
    assert scaler.get_scale() < 3e38 / 2 ** first * 1.01
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(net.parameters(), before))


@needs_amp_scaler
def test_a_non_finite_loss_is_skipped_and_keeps_the_loss_scale():
    """A NaN loss comes from the forward pass, which the loss scale does not touch: lowering the
    scale for it would ratchet it down to 0 over a long run, and then every step is skipped."""
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    net, opt = _step_net()
    scaler = loss_scaler(torch.device("cpu"), enabled=True)
    assert optimizer_step(opt, scaler, F.cross_entropy(net(x), y), net.parameters(), 0.0) == "stepped"
    scale = scaler.get_scale()
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        assert optimizer_step(opt, scaler, F.cross_entropy(net(x), y) * float("nan"), net.parameters(), 0.0) == "loss"
    assert scaler.get_scale() == scale
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    assert optimizer_step(opt, scaler, F.cross_entropy(net(x), y), net.parameters(), 0.0) == "stepped"


@needs_amp_scaler
def test_the_loss_scale_is_in_the_checkpoint_and_comes_back_on_resume(tmp_path, camvid_root, monkeypatch):
    """fp16 runs (a GPU without native bf16) resume with the scale they had, not a fresh one that
    overflows again; a CPU run's scaler is a pass-through with nothing to keep."""
    import seg_perception.train.loop as loop
    cfg = dict(TINY, epochs=2)
    monkeypatch.setattr(loop, "loss_scaler", lambda device: torch.amp.GradScaler("cpu", init_scale=1024.0))
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=1)), log=lambda *_: None)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]["scale"] == 1024.0
    seen = []
    def fresh(device):  # a new run would start at 8; the resumed one must go on at 1024
        seen.append(torch.amp.GradScaler("cpu", init_scale=8.0))
        return seen[-1]
    monkeypatch.setattr(loop, "loss_scaler", fresh)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), resume=True, log=lambda *_: None)
    assert seen and seen[0].get_scale() == 1024.0
    monkeypatch.undo()
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "cpu"), **dict(cfg, epochs=1)), log=lambda *_: None)
    assert torch.load(tmp_path / "cpu" / "last.pt", weights_only=True)["scaler"] == {}


def test_the_card_says_which_dtype_amp_ran_in_on_a_gpu(tmp_path):
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path), **TINY)
    gpu = training_record(cfg, 1, 0.5, (), "amp", "channels_last", "fp16")
    assert (gpu["precision"], gpu["autocast"]) == ("amp", "fp16")
    assert "autocast" not in training_record(cfg, 1, 0.5, (), "fp32", "contiguous", None)  # a CPU: precision says it


def test_a_resumed_run_keeps_the_precision_and_layout_it_began_with(tmp_path, camvid_root):
    cfg = dict(TINY, epochs=1, memory_format="contiguous")
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), log=lambda *_: None)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (ck["precision"], ck["memory_format"]) == ("fp32", "contiguous")
    lines = []
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path),
                      **dict(cfg, epochs=2, precision="auto", memory_format="auto")), resume=True, log=lines.append)
    assert any("precision fp32, contiguous (auto: fp32 and contiguous as this run began (last.pt))" in ln
               for ln in lines), lines
    # auto is not a change of recipe; the longer schedule is.
    assert [ln.split(": ", 1)[1] for ln in lines if "settings changed" in ln] == ["epochs 1 -> 2"], lines
    fresh = []
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "new"),
                      **dict(cfg, precision="auto", memory_format="auto")), log=fresh.append)
    assert any(ln.startswith("[train] precision") and "auto: s/step fp32 channels_last" in ln for ln in fresh), fresh


def test_a_run_resumed_on_a_gpu_of_another_kind_records_the_autocast_change(tmp_path, camvid_root, monkeypatch):
    """bf16 on one GPU, fp16 with loss scaling on another: release refuses the pair as two recipes, so
    the run that changed between them says so in changed_on_resume (it printed only a note)."""
    from seg_perception.train import loop
    cfg = dict(TINY, epochs=1)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **cfg), log=lambda *_: None)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save(dict(ck, autocast="bf16"), tmp_path / "last.pt")  # as a bf16 GPU left it
    monkeypatch.setattr(loop, "_autocast_name", lambda device: "fp16")  # this GPU: no native bf16
    lines = []
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), **dict(cfg, epochs=2)), resume=True, log=lines.append)
    changed = [ln.split(": ", 1)[1] for ln in lines if "settings changed" in ln]
    assert changed == ["epochs 1 -> 2, autocast bf16 -> fp16"], lines
    card, = tmp_path.glob("*.yaml")
    assert load_card(card).training["changed_on_resume"] == ["epochs 1 -> 2", "autocast bf16 -> fp16"]


# Pinned: runs compared bit for bit must not each time their own precision and layout (auto).
TINY = dict(model="essnet_d", batch_size=2, width=96, height=72, crop_width=64, crop_height=48,
            max_train_images=4, max_val_images=2, threads=1, eval_every=1, precision="fp32",
            memory_format="channels_last", workers=0)  # 0: the in-process loader on a GPU machine too


def test_resume_is_exact_with_ema_and_ohem(tmp_path, camvid_root, monkeypatch):
    """A run stopped after epoch 1 and resumed ends bit for bit where a straight one does. On the
    straight run, spies check that the recipe's settings reach the loop (the augment's scale and
    class crop, ClassMix's probability, the loss) and record the weights after each step: the
    EMA must be the formula applied to those post-step weights, and the card's val mIoU the
    shipped (EMA) weights' own, evaluated here without the training code."""
    import cv2
    import seg_perception.train.loop as loop
    from seg_perception.data.datasets import camvid
    from seg_perception.metrics import ConfusionMatrix
    from seg_perception.nets import build_model
    # keep last: the shipped weights are then the final EMA whichever epoch scored best on val
    cfg = dict(TINY, epochs=2, ema_decay=0.9, loss="ohem", scale_min=0.5, scale_max=2.0, classmix=0.5,
               class_crop=0.5, keep="last")
    seen = {"augment": set(), "classmix": [], "loss": []}
    start, stepped = [], []  # the EMA's initial weights; the model's after each optimizer step
    summarised = []  # the confusion matrix each save_model call writes the card's figures from
    real_call, real_ema_init, real_step = TrainAugment.__call__, ModelEMA.__init__, loop.optimizer_step
    real_save = loop.save_model

    def augment(self, *a, **k):
        seen["augment"].add((tuple(self.scale), self.class_crop))
        return real_call(self, *a, **k)

    def mix(imgs, labs, prob, *a, **k):
        seen["classmix"].append(prob)
        return class_mix(imgs, labs, prob, *a, **k)

    def loss(name, *a, **k):
        seen["loss"].append(name)
        return build_loss(name, *a, **k)

    def ema_init(self, model, decay):
        real_ema_init(self, model, decay)
        start.append((model, {k: v.clone() for k, v in self.module.state_dict().items()}))

    def step(*a, **k):
        outcome = real_step(*a, **k)
        assert outcome == "stepped"
        stepped.append({k: v.detach().clone() for k, v in start[0][0].state_dict().items()})
        return outcome

    def save(run, cm, *a, **k):
        summarised.append((cm.mat.copy(), cm.summary(run.train_ds.table.names)))
        return real_save(run, cm, *a, **k)
    monkeypatch.setattr(TrainAugment, "__call__", augment)
    monkeypatch.setattr(loop, "class_mix", mix)
    monkeypatch.setattr(loop, "build_loss", loss)
    monkeypatch.setattr(ModelEMA, "__init__", ema_init)
    monkeypatch.setattr(loop, "optimizer_step", step)
    monkeypatch.setattr(loop, "save_model", save)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "a"), **cfg), log=lambda *_: None)
    monkeypatch.undo()
    assert seen == {"augment": {((0.5, 2.0), 0.5)}, "classmix": [0.5] * 4, "loss": ["ohem"]}
    assert len(start) == 1 and len(stepped) == 4  # 2 epochs of 2 batches
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "b"), **dict(cfg, epochs=1)), log=lambda *_: None)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "b"), **cfg), resume=True, log=lambda *_: None)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    for k in a["ema"]["module"]:
        torch.testing.assert_close(a["ema"]["module"][k], b["ema"]["module"][k], rtol=0, atol=0, msg=k)
    # The EMA of the weights AFTER each step, decay min(0.9, (1 + n) / (10 + n)) at update n;
    # weights and BN statistics averaged, the batch counters copied.
    ema = dict(start[0][1])
    for n, w in enumerate(stepped, 1):
        d = min(0.9, (1 + n) / (10 + n))
        ema = {k: w[k] if k.endswith("num_batches_tracked") else d * v + (1 - d) * w[k] for k, v in ema.items()}
    for k, v in ema.items():
        torch.testing.assert_close(a["ema"]["module"][k], v, msg=k)
    # The shipped weights are the EMA's, and the log has both figures.
    shipped = torch.load(tmp_path / "a" / "essnet_d_camvid.pt", weights_only=True)
    assert shipped.keys() == a["ema"]["module"].keys()
    for k in shipped:
        torch.testing.assert_close(shipped[k], a["ema"]["module"][k], rtol=0, atol=0, msg=k)
    header = (tmp_path / "a" / "log.csv").read_text().splitlines()[0]
    assert header.endswith("val_miou_raw")
    # poly schedule: epoch e (from 1) trains at lr * (1 - (e - 1) / epochs) ** 0.9, resumed or not
    base = TrainConfig(model="x", data="", out="").lr
    for run in ("a", "b"):
        rows = [ln.split(",") for ln in (tmp_path / run / "log.csv").read_text().splitlines()[1:]]
        assert [int(r[0]) for r in rows] == [1, 2]
        for r in rows:
            assert float(r[3]) == pytest.approx(base * (1 - (int(r[0]) - 1) / 2) ** 0.9, rel=1e-5)
    card = load_card(tmp_path / "a" / "essnet_d_camvid.yaml")
    assert (card.training["classmix"], card.training["class_crop"]) == (0.5, 0.5)
    # The card's val mIoU is the shipped weights': the 2 val frames shrunk to 96x72 (INTER_AREA, as
    # the pipeline does), predicted, the labels resized back with pixel centres aligned.
    mean, std = torch.tensor(card.mean).view(3, 1, 1), torch.tensor(card.std).view(3, 1, 1)
    val = camvid(camvid_root, "val")

    def val_cm(state):
        net = build_model("essnet_d", 11)
        net.load_state_dict(state)
        net.eval()
        cm = ConfusionMatrix(11)
        for i in range(2):
            img, lab = val.load(i)
            x = torch.from_numpy(cv2.resize(img, (96, 72), interpolation=cv2.INTER_AREA)).permute(2, 0, 1).float()
            with torch.no_grad():
                pred = net(((x / 255 - mean) / std)[None])[0].argmax(0).to(torch.uint8).numpy()
            cm.update(cv2.resize(pred, lab.shape[::-1], interpolation=cv2.INTER_NEAREST_EXACT), lab)
        return cm
    ema, raw = val_cm(shipped), val_cm(a["model"])
    # The raw weights predict otherwise somewhere (their figures may round alike: the scores were 0.02 to
    # 0.04 points apart), so the confusion matrix the card was written from tells the two apart: it is the
    # EMA's (up to pixels that float rounding in the loop's channels_last evaluation may flip), not the raw's.
    assert not np.array_equal(ema.mat, raw.mat)
    scored, summary = summarised[-1]
    assert (card.metrics["val_miou"], card.metrics["val_per_class_iou"]) == (summary["miou"], summary["per_class_iou"])
    off_ema, off_raw = (int(np.abs(scored - m.mat).sum()) for m in (ema, raw))
    assert off_ema < off_raw, f"the card's figures are {off_ema} entries off the EMA's scores, {off_raw} off the raw's"
    # and the card's figures are the EMA's own, within the card's rounding (2 decimals)
    assert card.metrics["val_miou"] == pytest.approx(100 * ema.miou(), abs=0.006)
    for name, iou in ema.summary(val.table.names)["per_class_iou"].items():
        assert card.metrics["val_per_class_iou"][name] == pytest.approx(iou, abs=0.011), name


def _mix_batch(b=4, h=12, w=16, seed=0):
    """Labels of a few classes in blocks (and some ignored pixels); each image pixel encodes its
    sample and position, so where a pasted pixel came from can be read back."""
    g = np.random.default_rng(seed)
    labs = torch.from_numpy(g.integers(0, 5, (b, h // 4, w // 4)).repeat(4, 1).repeat(4, 2))
    labs[:, 0, 0] = IGNORE
    imgs = torch.zeros(b, h, w, 3, dtype=torch.uint8)
    for i in range(b):
        imgs[i, ..., 0] = i
        imgs[i, ..., 1] = torch.arange(h)[:, None]
        imgs[i, ..., 2] = torch.arange(w)[None, :]
    return imgs, labs


def test_class_mix_pastes_whole_classes_of_the_previous_sample():
    imgs, labs = _mix_batch()
    before = (imgs.clone(), labs.clone())
    out_i, out_l = class_mix(imgs, labs, 1.0, IGNORE, torch.Generator().manual_seed(3))
    assert torch.equal(imgs, before[0]) and torch.equal(labs, before[1])  # inputs kept
    b = imgs.shape[0]
    for i in range(b):
        j = (i - 1) % b  # the sample it receives from
        pasted = out_i[i, ..., 0] == j
        # a pixel is either its own (image and label) or the source's, at the same place
        assert torch.equal(out_i[i][~pasted], imgs[i][~pasted]) and torch.equal(out_l[i][~pasted], labs[i][~pasted])
        assert torch.equal(out_i[i][pasted], imgs[j][pasted]) and torch.equal(out_l[i][pasted], labs[j][pasted])
        # whole classes of the source: half of those present (rounded up), never the ignored pixels
        src = labs[j]
        present = [c for c in src.unique().tolist() if c != IGNORE]
        chosen = [c for c in present if pasted[src == c].any()]
        assert len(chosen) == (len(present) + 1) // 2
        for c in chosen:
            assert pasted[src == c].all()
        assert not pasted[src == IGNORE].any()


def test_class_mix_probability_and_determinism():
    imgs, labs = _mix_batch(b=64)
    same_i, same_l = class_mix(imgs, labs, 0.0, IGNORE, torch.Generator().manual_seed(0))
    assert same_i is imgs and same_l is labs
    a = class_mix(imgs, labs, 0.5, IGNORE, torch.Generator().manual_seed(7))
    b = class_mix(imgs, labs, 0.5, IGNORE, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], imgs)
    # Each sample is mixed with probability prob: of n = 2000, within 4.5 binomial standard
    # deviations of n * prob (a fixed seed: the same count every run). Channel 0 is the sample's
    # parity, so a sample that received pixels of the previous one differs from its input.
    n = 2000
    labs = torch.from_numpy(np.random.default_rng(1).integers(0, 5, (n, 2, 2)).repeat(4, 1).repeat(4, 2))
    imgs = (torch.arange(n) % 2).to(torch.uint8).view(n, 1, 1, 1).expand(n, 8, 8, 3).clone()
    for prob in (0.2, 0.5):
        out, _ = class_mix(imgs, labs, prob, IGNORE, torch.Generator().manual_seed(0))
        mixed = int((out != imgs).flatten(1).any(1).sum())
        assert abs(mixed - n * prob) <= 4.5 * (n * prob * (1 - prob)) ** 0.5, (prob, mixed)


def test_final_run_on_train_and_val_with_a_teacher(tmp_path, camvid_full, monkeypatch):
    """train+val, no validation, the last weights shipped; distilled from a teacher card."""
    import seg_perception.train.loop as loop
    camvid_root = camvid_full  # counts the full train+val (468 frames)
    teacher = train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "t"), epochs=1, **TINY),
                    log=lambda *_: None)
    kl_terms = []  # every step adds the teacher's term to the loss

    def counted_kl(*a, **k):
        kl_terms.append(distillation_kl(*a, **k))
        return kl_terms[-1]
    monkeypatch.setattr(loop, "distillation_kl", counted_kl)
    ce_terms, step_losses = [], []  # the criterion's term and the loss each step takes
    real_build, real_step = loop.build_loss, loop.optimizer_step

    def counted_loss(*a, **k):
        criterion = real_build(*a, **k)

        def counted(x, y):
            ce_terms.append(criterion(x, y))
            return ce_terms[-1]
        return counted

    def counted_step(opt, scaler, loss, *a, **k):
        step_losses.append(float(loss.detach()))
        return real_step(opt, scaler, loss, *a, **k)
    monkeypatch.setattr(loop, "build_loss", counted_loss)
    monkeypatch.setattr(loop, "optimizer_step", counted_step)
    lines = []
    cfg = TrainConfig(data=str(camvid_root), out=str(tmp_path / "s"), epochs=1, train_split="train+val",
                      val_split="none", keep="last", teacher=str(teacher.with_suffix(".yaml")),
                      **dict(TINY, max_train_images=0, max_val_images=0, batch_size=117))
    best = train(cfg, log=lines.append)
    assert any("train+val (468 frames)" in ln and "no validation" in ln for ln in lines), lines
    assert any("teacher" in ln for ln in lines)
    card = load_card(best.with_suffix(".yaml"))
    assert card.training["train_split"] == "train+val" and card.training["val_split"] is None
    assert "val_miou" not in card.metrics
    # the last epoch's loss, as in the log (it was left empty for a run without validation)
    rows = (tmp_path / "s" / "log.csv").read_text().splitlines()
    assert card.training["train_loss"] == pytest.approx(float(rows[-1].split(",")[2]), abs=1e-4)
    assert card.training["distillation"].startswith("KL")
    assert len(kl_terms) == 4 and all(float(t.detach()) > 0 for t in kl_terms)  # 468 frames at batch 117
    # the teacher's term is in the loss trained on: cross-entropy + distill_weight (0.5) x KL, each step
    assert len(ce_terms) == len(step_losses) == 4
    for ce, kl, got in zip(ce_terms, kl_terms, step_losses):
        assert got == pytest.approx(float(ce.detach()) + 0.5 * float(kl.detach()), rel=1e-5)
    assert card.training["train_loss"] == pytest.approx(np.mean(step_losses), abs=1e-4)
    assert not (tmp_path / "s" / "best_metrics.json").exists()
    # the last weights are the ones shipped
    last = torch.load(tmp_path / "s" / "last.pt", weights_only=True)["model"]
    shipped = torch.load(best, weights_only=True)
    assert shipped.keys() == last.keys() and all(torch.equal(shipped[k], last[k]) for k in last)


def test_init_copies_trained_weights_and_leaves_other_shapes_fresh(tmp_path):
    """Fine-tuning a CamVid model on a dataset of 5 classes: every tensor but the
    classifier's comes from the trained file; the classifier keeps its fresh init."""
    from seg_perception.nets import build_model
    from seg_perception.train.loop import init_from
    torch.manual_seed(1)
    trained = build_model("essnet_d", 11)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # unlike any fresh init
    torch.save(trained.state_dict(), tmp_path / "t.pt")
    torch.manual_seed(2)
    student = build_model("essnet_d", 5)
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    copied, kept = init_from(student, str(tmp_path / "t.pt"), "essnet_d")
    src, got = trained.state_dict(), student.state_dict()
    assert kept and all(src[k].shape != got[k].shape for k in kept)
    assert copied == len(got) - len(kept)
    for k, v in got.items():
        torch.testing.assert_close(v, fresh[k] if k in kept else src[k], rtol=0, atol=0, msg=k)
    with pytest.raises(ValueError, match="kernels of erfnet fit"):
        init_from(build_model("erfnet", 11), str(tmp_path / "t.pt"), "erfnet")


def test_init_refuses_a_card_of_another_network(tmp_path):
    from seg_perception.nets import build_model
    from seg_perception.train.loop import init_from
    with pytest.raises(ValueError, match="is a essnet_d, not a erfnet"):
        init_from(build_model("erfnet", 11), "essnet_d_camvid", "erfnet")
    with pytest.raises(FileNotFoundError, match="--init"):
        init_from(build_model("erfnet", 11), str(tmp_path / "none.pt"), "erfnet")


def test_bench_train_prints_step_times(capsys):
    from seg_perception.cli import main
    assert main(["bench-train", "--crop", "64x48", "--batch-size", "2", "--steps", "1", "--precision", "fp32",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| fp32 |" in out and "CPU capability" in out


def test_loader_workers_give_the_same_batches_and_weights(tmp_path, camvid_root):
    """--workers N augments in other processes; each sample's randomness comes from (epoch, index),
    so the batches, and the trained weights, are those of the in-process loader."""
    from seg_perception.data.datasets import camvid
    from seg_perception.train.loop import TrainBatches

    ds = camvid(camvid_root, "val", cache=True)
    ds.pairs = ds.pairs[:6]
    augment = TrainAugment((96, 72), IGNORE, scale=(0.5, 2.0), seed=0, base=(160, 120))

    def two_epochs(workers):  # one loader for both epochs: spawned workers live on between them
        loader = TrainBatches(ds, augment, 2, workers, pin_memory=False)
        return [[(i.clone(), lab.clone()) for i, lab in loader.epoch(100003 * e, [5, 0, 3, 1, 4, 2], 3)]
                for e in (0, 1)]

    here, spawned = two_epochs(0), two_epochs(2)
    for e in (0, 1):
        assert len(here[e]) == len(spawned[e]) == 3
        for (ia, la), (ib, lb) in zip(here[e], spawned[e]):
            assert torch.equal(ia, ib) and torch.equal(la, lb)
    # The second epoch draws other crops: the seed really moves with the epoch.
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(here[0], here[1]))

    # ERFNet has dropout, drawn from torch's global generator: the loader must not draw from it
    # (it did, once per iterator: every epoch in process, only the first with workers that live
    # on, so the second epoch and a resumed one got other dropout masks).
    cfg = dict(TINY, model="erfnet", epochs=2)
    runs = {"a": cfg, "b": dict(cfg, workers=2)}
    for name, c in runs.items():
        train(TrainConfig(data=str(camvid_root), out=str(tmp_path / name), **c), log=lambda *_: None)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "c"), **dict(cfg, workers=2, epochs=1)),
          log=lambda *_: None)
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path / "c"), **dict(cfg, workers=2)), resume=True,
          log=lambda *_: None)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    for other in ("b", "c"):
        b = torch.load(tmp_path / other / "last.pt", weights_only=True)["model"]
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{other}: {k}")


def test_decoded_frames_are_kept_only_up_to_the_memory_budget(tmp_path, camvid_root):
    """A folder of thousands of large frames must not fill the memory: frames past --cache-gb are
    decoded again when used (the same arrays), the run says how many are kept, and it trains."""
    from seg_perception.data.datasets import camvid
    from seg_perception.train.loop import decode_cache_bytes
    whole = camvid(camvid_root, "val", cache=True)
    limited = camvid(camvid_root, "val", cache=True)
    one = sum(a.nbytes for a in whole.load(0))
    limited.cache_limit = int(2.5 * one)
    for i in range(5):
        for a, b in zip(limited.load(i), whole.load(i)):
            assert np.array_equal(a, b)
    assert (whole.cached, limited.cached) == (5, 2) and limited.cached_bytes == 2 * one
    assert all(np.array_equal(a, b) for a, b in zip(limited.load(4), whole.load(4)))  # decoded again, the same
    assert decode_cache_bytes(1.5) == int(1.5 * 2 ** 30) and decode_cache_bytes(-1) > 2 ** 28
    lines = []
    train(TrainConfig(data=str(camvid_root), out=str(tmp_path), cache_gb=2.5 * one / 2 ** 30,
                      **dict(TINY, epochs=1)), log=lines.append)
    note = [ln for ln in lines if "kept decoded in memory" in ln]
    assert len(note) == 2 and "1 of the 4 training frames are kept decoded" in note[0] and "--workers N" in note[0], lines
    assert "0 of the 2 validation frames" in note[1] and "(a 0 MB share of the 2 MB of --cache-gb)" in note[1], note
    assert (tmp_path / "last.pt").is_file()


def test_loader_workers_auto_feeds_a_gpu_and_leaves_a_cpu_to_the_network(monkeypatch):
    """Auto: none on a CPU; on a GPU up to 4 per rank, counting the cores this process may use and
    the ranks on this machine (not the whole torchrun world); the memory budget is shared the same way."""
    from seg_perception.train.loop import decode_cache_bytes, loader_workers
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert [loader_workers(-1, cpu), loader_workers(-1, gpu)] == [0, 4]
    assert [loader_workers(3, cpu), loader_workers(0, gpu)] == [3, 0]  # asked: as asked
    whole = decode_cache_bytes(-1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks here: 2 cores and 1/8 of the budget each
    assert loader_workers(-1, gpu) == 1 and abs(decode_cache_bytes(-1) - whole // 8) <= 1
    assert decode_cache_bytes(2.0) == 2 ** 31  # asked: per process, as asked
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})  # a job given 2 of the machine's cores
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert loader_workers(-1, gpu) == 1


def test_a_containers_memory_limit_bounds_the_budget(tmp_path):
    from seg_perception.train.loop import _machine_memory
    machine = _machine_memory(limits=())
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("max\n")  # cgroup v2 without a limit
    v1.write_text(f"{2 ** 30}\n")  # a 1 GB container (cgroup v1)
    assert _machine_memory(limits=(str(v2),)) == machine
    assert _machine_memory(limits=(str(v2), str(v1), str(tmp_path / "absent"))) == min(machine, 2 ** 30)


def test_class_weights_from_hand_counted_labels(tmp_path):
    """ENet weights 1/ln(c + p_k) with p_k counted by hand; void pixels (11) count for nothing."""
    import cv2
    from seg_perception.data.classes import CAMVID
    from seg_perception.data.datasets import SegmentationDataset
    from seg_perception.train.loop import class_weights
    a = np.zeros((4, 4), np.uint8)  # 10 class-0 pixels, 4 of class 2, 2 void
    a[0, :4] = 2
    a[3, 2:] = IGNORE
    b = np.zeros((4, 4), np.uint8)  # 8 of class 0, 8 of class 1
    b[2:] = 1
    pairs = []
    for i, lab in enumerate((a, b)):
        cv2.imwrite(str(tmp_path / f"i{i}.png"), np.zeros((4, 4, 3), np.uint8))
        cv2.imwrite(str(tmp_path / f"l{i}.png"), lab)
        pairs.append((tmp_path / f"i{i}.png", tmp_path / f"l{i}.png"))
    w = class_weights(SegmentationDataset(pairs, CAMVID), 1.02).numpy()
    p = np.zeros(11)
    p[0], p[1], p[2] = 18 / 30, 8 / 30, 4 / 30
    np.testing.assert_allclose(w, 1.0 / np.log(1.02 + p), rtol=1e-6)
    assert w[2] > w[1] > w[0]  # rarer classes weigh more


def test_teacher_loaded_in_the_students_memory_format(tmp_path):
    """A channels_last run gets a channels_last teacher (contiguous weights under a channels_last
    batch are converted on every call), with the same logits as the contiguous one."""
    from conftest import make_random_model
    from seg_perception.train.loop import load_teacher
    card = make_random_model(tmp_path, arch="rdsnet", width=64, height=48, onnx=False)
    from seg_perception.data.classes import CAMVID
    names = list(CAMVID.names)
    plain = load_teacher(str(card), names, torch.device("cpu"))
    cl = load_teacher(str(card), names, torch.device("cpu"), torch.channels_last)
    convs = [m.weight for m in cl.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in plain.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1)
    assert not any(p.requires_grad for p in cl.parameters()) and not cl.training
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(cl(x.contiguous(memory_format=torch.channels_last)), plain(x),
                                   rtol=1e-4, atol=1e-4)
    # A student of the same classes in another order gets the teacher's outputs in its order.
    turned = load_teacher(str(card), names[::-1], torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(turned(x), plain(x).flip(1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="a teacher must know the student's classes"):
        load_teacher(str(card), names + ["Animal"], torch.device("cpu"))
    with pytest.raises(ValueError, match="a teacher must know the student's classes"):
        load_teacher(str(card), names[:-1] + ["Animal"], torch.device("cpu"))


@pytest.mark.parametrize("arch", ["essnet_d", "erfnet"])
def test_init_from_a_card_matches_the_classifier_by_class_name(tmp_path, arch):
    """--init with a card of other classes, or of the same in another order: each class the card
    knows starts from its own trained classifier weights (ERFNet's transposed-conv classifier
    counts classes in its second dimension), a new class from a fresh init."""
    from conftest import make_random_model
    from seg_perception.card import load_card
    from seg_perception.data.classes import CAMVID
    from seg_perception.nets import build_model
    from seg_perception.train.loop import _class_dims, init_from
    card = make_random_model(tmp_path, arch=arch, width=64, height=48, onnx=False)
    src = torch.load(load_card(card).file("weights"), weights_only=True)
    names = ["Car", "road", "Animal", "Sky"]  # indices 8, 3, (new), 0 in CamVid's table (case aside)
    torch.manual_seed(5)
    student = build_model(arch, len(names))
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    init_from(student, str(card), arch, names)
    got = student.state_dict()
    # the tensors that hold classes, found without the code under test: those whose shape follows
    # the number of classes (each network's classifier is a transposed conv: classes in dim 1)
    a, b = build_model(arch, 4).state_dict(), build_model(arch, 5).state_dict()
    dims = {k: [d for d, (x, y) in enumerate(zip(a[k].shape, b[k].shape)) if x != y][0]
            for k in a if a[k].shape != b[k].shape}
    assert dims == {"classifier.weight": 1, "classifier.bias": 0}
    assert _class_dims(arch, len(names)) == dims
    for key, dim in dims.items():
        for j, i in enumerate([8, 3, -1, 0]):
            want = fresh[key].select(dim, j) if i < 0 else src[key].select(dim, i)
            torch.testing.assert_close(got[key].select(dim, j), want, rtol=0, atol=0, msg=f"{key} class {j}")
    same = build_model(arch, 11)
    init_from(same, str(card), arch, list(CAMVID.names)[::-1])  # the same classes turned round
    for key, dim in dims.items():
        torch.testing.assert_close(same.state_dict()[key], src[key].flip(dim), rtol=0, atol=0)
