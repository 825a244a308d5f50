"""Attention modules: shapes, gradients, precision/layout, validation, parameter counts from the papers' formulas."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lbam.attention import ATTENTIONS, BAM, CBAM, ECA, LBAM, SE, build_attention
from lbam.attention._common import BatchNorm1d, BatchNorm2d

# (name, kwargs): every module, and every non-default LBAM/BAM path.
VARIANTS = [
    ("se", {}),
    ("cbam", {}),
    ("bam", {}),
    ("bam", {"combine": "mul"}),
    ("eca", {}),
    ("lbam", {}),
    ("lbam", {"shared_conv": False}),
    ("lbam", {"residual": False}),
    ("lbam", {"branches": "channel"}),
    ("lbam", {"branches": "spatial"}),
    ("lbam", {"pool": "avg"}),
    ("lbam", {"pool": "max", "kernel_size": 5}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in VARIANTS]
# (C, N, H, W): C from 1 to 2048, non-square maps, 1×1; small N·H·W where C is large.
SHAPES = [(1, 2, 5, 7), (3, 2, 1, 1), (3, 2, 9, 4), (16, 2, 4, 9), (64, 2, 3, 2), (2048, 2, 2, 1)]


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shape_equals_input(name, kwargs, shape):
    c, n, h, w = shape
    module = build_attention(name, c, **kwargs)
    x = torch.randn(n, c, h, w)
    for train in (True, False):
        module.train(train)
        out = module(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradients_reach_every_parameter(name, kwargs, train):
    module = build_attention(name, 32, **kwargs).train(train)
    x = torch.randn(2, 32, 6, 5, requires_grad=True)
    (module(x) * torch.rand(2, 32, 6, 5)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        # In train mode BN subtracts the batch mean, so the bias of a layer feeding a BN (kept, as in BAM's
        # official code) gets an exactly zero gradient; in eval mode every parameter must move the output.
        if train and pname in _biases_feeding_bn(module):
            assert p.grad.abs().max() < 1e-4, pname  # zero up to rounding
        else:
            assert p.grad.abs().sum() > 0, pname


def _biases_feeding_bn(module) -> set[str]:
    names = set()
    for prefix, seq in module.named_modules():
        if isinstance(seq, torch.nn.Sequential):
            for i, (a, b) in enumerate(zip(seq, list(seq)[1:])):
                if (
                    isinstance(b, torch.nn.modules.batchnorm._BatchNorm)
                    and getattr(a, "bias", None) is not None
                ):
                    names.add(f"{prefix}.{i}.bias")
    return names


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_bf16_autocast_forward(name, kwargs):
    module = build_attention(name, 16, **kwargs).eval()
    x = torch.randn(2, 16, 6, 5)
    ref = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_channels_last_matches_contiguous(name, kwargs):
    module = build_attention(name, 16, **kwargs)
    x = torch.randn(2, 16, 6, 5)
    for train in (True, False):
        module.train(train)
        # Train mode updates BN running statistics: give both inputs the same starting state.
        ref = copy.deepcopy(module)(x)
        out = copy.deepcopy(module)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("hw", [(1, 1), (4, 3)])
def test_batch_of_one_in_train_mode(name, kwargs, hw):
    module = build_attention(name, 16, **kwargs).train()
    x = torch.randn(1, 16, *hw, requires_grad=True)
    out = module(x)
    out.sum().backward()
    assert out.shape == x.shape and torch.isfinite(out).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bn_cls", [BatchNorm1d, BatchNorm2d])
def test_safe_batchnorm_uses_running_stats_for_one_value_per_channel(bn_cls):
    bn = bn_cls(4)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(1, 4) if bn_cls is BatchNorm1d else torch.randn(1, 4, 1, 1)
    out = bn.train()(x)
    torch.testing.assert_close(out, (x - 1.0) / torch.sqrt(torch.tensor(4.0) + bn.eps))
    assert torch.equal(bn.running_mean, torch.ones(4)) and torch.equal(bn.running_var, torch.full((4,), 4.0))
    # With more than one value per channel it is ordinary BatchNorm: batch statistics, running stats update.
    y = torch.randn(3, 4) if bn_cls is BatchNorm1d else torch.randn(1, 4, 2, 2)
    torch.testing.assert_close(
        bn(y).mean(dim=[d for d in range(y.dim()) if d != 1]), torch.zeros(4), atol=1e-5, rtol=0
    )
    assert not torch.equal(bn.running_mean, torch.ones(4))


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("shape", [(2, 16, 4), (2, 16, 4, 4, 1), (2, 8, 4, 4), (16,)])
def test_bad_input_shape_names_expected_shape(name, kwargs, shape):
    module = build_attention(name, 16, **kwargs)
    with pytest.raises(
        ValueError, match=r"4-D tensor N×C×H×W with C=16, got shape \(" + ", ".join(map(str, shape))
    ):
        module(torch.randn(*shape))


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("se", {"reduction": 0}, "reduction must be an integer >= 1"),
        ("cbam", {"reduction": -2}, "reduction must be an integer >= 1"),
        ("cbam", {"spatial_kernel": 6}, "kernel_size must be odd"),
        ("bam", {"reduction": 0}, "reduction must be an integer >= 1"),
        ("bam", {"dilation": 0}, "dilation must be an integer >= 1"),
        ("bam", {"combine": "max"}, "combine must be one of add, mul"),
        ("eca", {"kernel_size": 4}, "kernel_size must be odd"),
        ("eca", {"kernel_size": 0}, "kernel_size must be an integer >= 1"),
        ("lbam", {"kernel_size": 2}, "kernel_size must be odd"),
        ("lbam", {"reduction": 0}, "reduction must be an integer >= 1"),
        ("lbam", {"reduction": 1.5}, "reduction must be an integer >= 1"),
        ("lbam", {"dilation": 0}, "dilation must be an integer >= 1"),
        ("lbam", {"branches": "none"}, "branches must be one of both, channel, spatial"),
        ("lbam", {"pool": "min"}, "pool must be one of avgmax, avg, max"),
    ],
)
def test_invalid_options_fail_at_construction(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_attention(name, 16, **kwargs)


@pytest.mark.parametrize("name", ["se", "cbam", "bam", "eca", "lbam"])
def test_invalid_channels(name):
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        build_attention(name, 0)


def test_registry():
    assert set(ATTENTIONS) == {"none", "se", "cbam", "bam", "eca", "lbam"}
    assert build_attention("none", 64) is None
    for name, cls in [("se", SE), ("cbam", CBAM), ("bam", BAM), ("eca", ECA), ("lbam", LBAM)]:
        assert type(build_attention(name, 64)) is cls
    assert build_attention("lbam", 64, kernel_size=7).conv.kernel_size == (7,)
    with pytest.raises(ValueError, match="unknown attention 'sa'") as err:
        build_attention("sa", 64)
    assert all(name in str(err.value) for name in ATTENTIONS)


# ---- parameter counts from the papers' formulas (h = max(1, C // r)) ----


def eca_k(c: int) -> int:  # ECA paper eq. (12), γ=2, b=1
    t = int(abs(math.log2(c) / 2 + 1 / 2))
    return t + 1 - t % 2


def se_params(c, r):  # FC C→h and FC h→C, with biases
    h = max(1, c // r)
    return (c * h + h) + (h * c + c)


def cbam_params(c, r, k=7):  # shared MLP with biases + k×k conv 2→1 (no bias) + BN(1)
    return se_params(c, r) + 2 * k * k + 2


def bam_spatial_params(c, r):  # 1×1 C→h, two 3×3 h→h, 1×1 h→1, all with bias; BN (γ, β) after the first three
    h = max(1, c // r)
    return (c * h + h) + 2 * (9 * h * h + h) + (h + 1) + 3 * 2 * h


def bam_params(c, r):  # channel MLP C→h→C with biases and BN on h, + spatial branch
    h = max(1, c // r)
    return (c * h + h) + 2 * h + (h * c + c) + bam_spatial_params(c, r)


@pytest.mark.parametrize("c", [1, 16, 64, 100, 256, 2048])
@pytest.mark.parametrize("r", [16, 8])
def test_parameter_counts_match_formulas(c, r):
    k = eca_k(c)
    assert n_params(SE(c, r)) == se_params(c, r)
    assert n_params(CBAM(c, r)) == cbam_params(c, r)
    assert n_params(CBAM(c, r, spatial_kernel=3)) == cbam_params(c, r, 3)
    assert n_params(ECA(c)) == k
    assert n_params(BAM(c, r)) == n_params(BAM(c, r, combine="mul")) == bam_params(c, r)
    assert n_params(LBAM(c, r)) == k + bam_spatial_params(c, r)
    assert n_params(LBAM(c, r, shared_conv=False)) == 2 * k + bam_spatial_params(c, r)
    assert n_params(LBAM(c, r, shared_conv=False, pool="max")) == k + bam_spatial_params(c, r)
    assert n_params(LBAM(c, r, branches="channel")) == k
    assert n_params(LBAM(c, r, branches="spatial")) == bam_spatial_params(c, r)


RESNET50_PARAMS = 25_557_032  # torchvision's resnet50


def test_resnet50_totals_match_published_tables():
    # SE/CBAM in all 16 bottleneck blocks; BAM at the 3 stage ends (after conv2_x, conv3_x, conv4_x). Published
    # ImageNet totals (M params): ResNet-50 25.56, +SE 28.09, +CBAM 28.09 (CBAM paper), +BAM 25.92 (BAM paper).
    blocks = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
    se = sum(n * n_params(SE(c)) for c, n in blocks)
    cbam = sum(n * n_params(CBAM(c)) for c, n in blocks)
    bam = sum(n_params(BAM(c)) for c in (256, 512, 1024))
    assert [round((RESNET50_PARAMS + extra) / 1e6, 2) for extra in (se, cbam, bam)] == [28.09, 28.09, 25.92]


@pytest.mark.parametrize("c", [64, 128, 256, 512])
def test_lbam_is_at_most_055_of_bam(c):
    assert n_params(LBAM(c)) <= 0.55 * n_params(BAM(c))


@pytest.mark.parametrize(
    ("c", "k"), [(1, 1), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (2048, 7)]
)
def test_eca_adaptive_kernel(c, k):
    assert eca_k(c) == k
    assert ECA(c).conv.kernel_size == (k,)
    assert LBAM(c).conv.kernel_size == (k,)


# ---- behaviour ----


def test_lbam_matches_reference_formula():
    module = LBAM(32, shared_conv=False).eval()
    x = torch.randn(2, 32, 5, 6)
    w_avg, w_max = module.conv.weight[:, :1], module.conv.weight[:, 1:]
    pad = module.conv.padding
    mc = F.conv1d(x.mean((2, 3))[:, None], w_avg, padding=pad) + F.conv1d(
        x.amax((2, 3))[:, None], w_max, padding=pad
    )
    m = torch.sigmoid(mc.view(2, 32, 1, 1) + module.spatial(x))
    torch.testing.assert_close(module(x), x + x * m)
    # A shared conv equals two separate convs with the same weights.
    shared = LBAM(32).eval()
    shared.spatial.load_state_dict(module.spatial.state_dict())
    shared.conv.weight.data.copy_(w_avg)
    module.conv.weight.data.copy_(torch.cat((w_avg, w_avg), dim=1))
    torch.testing.assert_close(shared(x), module(x))


@pytest.mark.parametrize("combine", ["add", "mul"])
def test_bam_combine_and_maps(combine):
    module = BAM(32, combine=combine).eval()
    x = torch.randn(2, 32, 5, 6)
    assert module(x) is not None and module.last_maps is None
    module.keep_maps = True
    out = module(x)
    maps = module.last_maps
    assert maps["channel"].shape == (2, 32, 1, 1) and maps["spatial"].shape == (2, 1, 5, 6)
    assert maps["attention"].shape == x.shape
    mc = module.channel_mlp(x.mean((2, 3)))[:, :, None, None]
    torch.testing.assert_close(maps["channel"], mc)
    torch.testing.assert_close(maps["spatial"], module.spatial(x))
    logits = mc + module.spatial(x) if combine == "add" else mc * module.spatial(x)
    torch.testing.assert_close(maps["attention"], torch.sigmoid(logits))
    torch.testing.assert_close(out, x + x * torch.sigmoid(logits))
    assert not any(t.requires_grad for t in maps.values())


def test_lbam_maps():
    x = torch.randn(2, 16, 4, 7)
    module = LBAM(16)
    module(x)
    assert module.last_maps is None
    module.keep_maps = True
    module(x)
    maps = module.last_maps
    assert maps["channel"].shape == (2, 16, 1, 1) and maps["spatial"].shape == (2, 1, 4, 7)
    torch.testing.assert_close(
        maps["attention"], torch.sigmoid(maps["channel"] + maps["spatial"]).expand(x.shape)
    )
    module = LBAM(16, branches="channel")
    module.keep_maps = True
    module(x)
    assert module.last_maps["spatial"] is None and module.last_maps["attention"].shape == x.shape
    module.keep_maps = False
    module(x)
    assert module.last_maps is None


def test_residual_false_is_the_gated_part_of_residual_true():
    module = LBAM(16, residual=False)
    x = torch.randn(2, 16, 5, 4)
    gated = module(x)
    assert (gated.abs() <= x.abs()).all() and not torch.allclose(gated, x)
    module.residual = True
    torch.testing.assert_close(module(x), x + gated)


def test_branch_ablations_gate_one_axis():
    x = torch.randn(2, 16, 5, 4)
    ratio = LBAM(16, branches="channel")(x) / x  # 1 + σ(Mc): one value per (n, c)
    torch.testing.assert_close(ratio.amax((2, 3)), ratio.amin((2, 3)))
    assert ratio.amin() > 1 and ratio.amax() < 2
    ratio = LBAM(16, branches="spatial")(x) / x  # 1 + σ(Ms): one value per (n, h, w)
    torch.testing.assert_close(ratio.amax(1), ratio.amin(1))
    assert ratio.amin() > 1 and ratio.amax() < 2


def test_pool_options_change_the_result():
    x = torch.randn(2, 16, 5, 4)
    base = LBAM(16).eval()
    outs = {}
    for pool in ("avgmax", "avg", "max"):
        module = LBAM(16, pool=pool).eval()
        module.load_state_dict(base.state_dict())
        outs[pool] = module(x)
    assert not torch.allclose(outs["avg"], outs["max"])
    assert not torch.allclose(outs["avg"], outs["avgmax"])
    assert not torch.allclose(outs["max"], outs["avgmax"])
