"""Attention modules: values and gradients against the papers' formulas written here, compile, precision/layout,
validation, state-dict layout, parameter counts, attention maps."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lbam.attention import ATTENTIONS, BAM, CBAM, ECA, LBAM, SE, build_attention, capture_maps

# (name, kwargs): every module, and every non-default option path.
VARIANTS = [
    ("se", {}),
    ("cbam", {}),
    ("cbam", {"spatial_kernel": 3, "reduction": 4}),
    ("bam", {}),
    ("bam", {"combine": "mul"}),
    ("bam", {"output_bn": True}),
    ("eca", {}),
    ("eca", {"kernel_size": 5}),
    ("lbam", {}),
    ("lbam", {"shared_conv": False}),
    ("lbam", {"residual": False}),
    ("lbam", {"branches": "channel"}),
    ("lbam", {"branches": "spatial"}),
    ("lbam", {"pool": "avg"}),
    ("lbam", {"pool": "max", "kernel_size": 5, "dilation": 2, "reduction": 4}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in VARIANTS]
# (C, N, H, W): C from 1 to 2048, non-square maps, 1×1; small N·H·W where C is large.
SHAPES = [(1, 2, 5, 7), (3, 2, 1, 1), (3, 2, 9, 4), (16, 2, 4, 9), (64, 2, 3, 2), (2048, 2, 2, 1)]


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomise(module):
    """Non-trivial BN statistics and affine parameters (fresh BNs are the identity in eval mode)."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    return module


# ---- the papers' formulas, written independently of lbam.attention (functional ops, the module's tensors) ----


def bn(t, layer, training):
    """BatchNorm by hand: batch statistics (biased variance) in training, running statistics in eval."""
    dims = [d for d in range(t.dim()) if d != 1]
    shape = [1, -1] + [1] * (t.dim() - 2)
    if training:
        mean, var = t.mean(dims), t.var(dims, unbiased=False)
    else:
        mean, var = layer.running_mean, layer.running_var
    return (t - mean.view(shape)) / torch.sqrt(var.view(shape) + layer.eps) * layer.weight.view(
        shape
    ) + layer.bias.view(shape)


def mlp(v, first, second):  # Linear → ReLU → Linear
    return F.linear(F.relu(F.linear(v, first.weight, first.bias)), second.weight, second.bias)


def se_formula(m, x, training):
    s = torch.sigmoid(mlp(x.mean((2, 3)), m.fc[0], m.fc[2]))
    return x * s[:, :, None, None]


def argmax_pool(t, dims):
    """Max pooling whose gradient goes to one argmax, as max_pool2d / torch.max in the papers' code."""
    return t.flatten(2).max(2).values if dims == "hw" else t.max(1, keepdim=True).values


def amax_pool(t, dims):
    """The same values; the gradient of a tied maximum split evenly over the ties."""
    return t.amax((2, 3)) if dims == "hw" else t.amax(1, keepdim=True)


def cbam_formula(m, x, training, pool=argmax_pool):
    n, c = x.shape[:2]
    mc = torch.sigmoid(mlp(x.mean((2, 3)), m.mlp[0], m.mlp[2]) + mlp(pool(x, "hw"), m.mlp[0], m.mlp[2]))
    f1 = x * mc.view(n, c, 1, 1)
    desc = torch.cat((f1.mean(1, keepdim=True), pool(f1, "c")), 1)
    conv = m.spatial[0]
    ms = torch.sigmoid(bn(F.conv2d(desc, conv.weight, padding=conv.padding), m.spatial[1], training))
    return f1 * ms


def eca_formula(m, x, training):
    w = m.conv.weight
    y = F.conv1d(x.mean((2, 3))[:, None, :], w, padding=(w.shape[-1] - 1) // 2)
    return x * torch.sigmoid(y)[:, 0, :, None, None]


def spatial_formula(seq, x, training):
    """BAM's Ms: 1×1 → BN → ReLU → 2 × (3×3 dilated → BN → ReLU) → 1×1 [→ BN]."""
    t = x
    for i in (0, 3, 6):
        conv = seq[i]
        t = F.relu(
            bn(
                F.conv2d(t, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation),
                seq[i + 1],
                training,
            )
        )
    t = F.conv2d(t, seq[9].weight, seq[9].bias)
    return bn(t, seq[10], training) if len(seq) > 10 else t


def bam_formula(m, x, training):
    lin0, bn0, lin1 = m.channel_mlp[0], m.channel_mlp[1], m.channel_mlp[3]
    mc = F.linear(
        F.relu(bn(F.linear(x.mean((2, 3)), lin0.weight, lin0.bias), bn0, training)), lin1.weight, lin1.bias
    )
    if len(m.channel_mlp) > 4:  # the paper's output BN
        mc = bn(mc, m.channel_mlp[4], training)
    mc, ms = mc[:, :, None, None], spatial_formula(m.spatial, x, training)
    return x + x * torch.sigmoid(mc + ms if m.combine == "add" else mc * ms)


def lbam_formula(m, x, training, pool=argmax_pool):
    n, c = x.shape[:2]
    logits = 0
    if m.conv is not None:
        w = m.conv.weight  # 1×1×k shared, or 1×2×k: [w_avg; w_max]
        pad = (w.shape[-1] - 1) // 2
        w_avg, w_max = (w[:, :1], w[:, 1:]) if w.shape[1] == 2 else (w, w)
        mc = 0
        if m.pool in ("avgmax", "avg"):
            mc = mc + F.conv1d(x.mean((2, 3))[:, None], w_avg, padding=pad)
        if m.pool in ("avgmax", "max"):
            mc = mc + F.conv1d(pool(x, "hw")[:, None], w_max, padding=pad)
        logits = logits + mc.view(n, c, 1, 1)
    if m.spatial is not None:
        logits = logits + spatial_formula(m.spatial, x, training)
    gated = x * torch.sigmoid(logits)
    return x + gated if m.residual else gated


FORMULAS = {
    "se": se_formula,
    "cbam": cbam_formula,
    "eca": eca_formula,
    "bam": bam_formula,
    "lbam": lbam_formula,
}


@pytest.mark.parametrize("name", ["cbam", "lbam"])
def test_a_tied_maximum_sends_its_gradient_to_one_position_not_through_a_tie_count(name):
    """GMP (and CBAM's max over channels) back-propagate like max_pool2d: a tied maximum's gradient goes to one
    argmax. amax's backward divides by the tie count instead, which Inductor got wrong in bf16 on CUDA (a count
    of 0, NaN gradients: CBAM diverged at step 2 on an H200). Every map here is constant: 16-way ties."""
    module = randomise(build_attention(name, 8)).train()
    x = torch.arange(1.0, 9.0)[None, :, None, None].expand(2, 8, 4, 4).clone().requires_grad_()
    weight = torch.randn(2, 8, 4, 4)

    def grad(fn):
        (g,) = torch.autograd.grad((fn(x) * weight).sum(), x)
        return g

    got = grad(module)
    torch.testing.assert_close(got, grad(lambda t: FORMULAS[name](module, t, True)))
    assert not torch.allclose(got, grad(lambda t: FORMULAS[name](module, t, True, pool=amax_pool)), atol=1e-4)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_and_gradients_equal_the_formula(name, kwargs, training):
    module = randomise(build_attention(name, 16, **kwargs)).double().train(training)
    x = torch.randn(3, 16, 5, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 16, 5, 6, dtype=torch.float64)
    params = list(module.parameters())
    want = FORMULAS[name](module, x, training)
    got = module(x)
    torch.testing.assert_close(got, want)
    grads_got = torch.autograd.grad(got, [x, *params], g)
    grads_want = torch.autograd.grad(want, [x, *params], g)
    for (pname, _), a, b in zip([("input", x), *module.named_parameters()], grads_got, grads_want):
        torch.testing.assert_close(a, b, msg=lambda m, pname=pname: f"{pname}: {m}")


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_gradcheck_eval(name, kwargs):
    """Autograd's gradients against finite differences (eval mode: BN is a fixed affine map)."""
    module = randomise(build_attention(name, 4, **kwargs)).double().eval()
    # Distinct values: max pooling is differentiable where the maximum is unique.
    x = (torch.randperm(2 * 4 * 3 * 3, dtype=torch.float64) / 20).view(2, 4, 3, 3).requires_grad_()
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.slow
def test_compiled_forward_backward_equals_eager():
    """torch.compile of every module (one graph: compiling is the slow part) matches eager, in train mode."""
    names = ["se", "cbam", "bam", "eca", "lbam"]
    eager = torch.nn.Sequential(
        *(randomise(build_attention(n, 16)) for n in names), randomise(LBAM(16, shared_conv=False))
    ).train()
    inner = copy.deepcopy(eager)
    compiled = torch.compile(inner)
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    g = torch.randn(2, 16, 6, 5)
    names = ["input", *(n for n, _ in eager.named_parameters())]
    for _ in range(2):  # the second call runs with the BN running statistics the first one updated
        out_e, out_c = eager(x), compiled(x)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        grads_e = torch.autograd.grad(out_e, [x, *eager.parameters()], g)
        grads_c = torch.autograd.grad(out_c, [x, *inner.parameters()], g)
        for name, a, b in zip(names, grads_c, grads_e, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    for (name, a), b in zip(inner.state_dict().items(), eager.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


# ---- shapes, precision, layout, batch size ----


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shape_equals_input(name, kwargs, shape):
    c, n, h, w = shape
    module = build_attention(name, c, **kwargs)
    x = torch.randn(n, c, h, w)
    for train in (True, False):
        out = module.train(train)(x)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_bf16_autocast(name, kwargs):
    module = build_attention(name, 16, **kwargs).eval()
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    ref = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    out.float().sum().backward()
    assert out.shape == x.shape and torch.isfinite(out).all() and torch.isfinite(x.grad).all()
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
def test_batch_of_one_in_eval_mode(name, kwargs, hw):
    module = build_attention(name, 16, **kwargs).eval()
    x = torch.randn(1, 16, *hw, requires_grad=True)
    out = module(x)
    out.sum().backward()
    assert out.shape == x.shape and torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_batch_of_one_in_train_mode_follows_batch_norm():
    """Standard BatchNorm (the loader drops a last batch of one): a BN over a single value per channel raises
    PyTorch's error in train mode; modules with more than one value per channel train on a batch of one."""
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        BAM(16).train()(torch.randn(1, 16, 4, 3))  # the channel MLP's BatchNorm1d sees one vector
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        LBAM(16).train()(torch.randn(1, 16, 1, 1))  # the spatial branch's BatchNorm2d sees one pixel
    for module in (SE(16), ECA(16), CBAM(16), LBAM(16)):
        x = torch.randn(1, 16, 4, 3)
        assert module.train()(x).shape == x.shape


# ---- validation ----


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
        ("eca", {"gamma": 0}, "gamma must be an integer >= 1"),
        ("lbam", {"kernel_size": 2}, "kernel_size must be odd"),
        ("lbam", {"reduction": 0}, "reduction must be an integer >= 1"),
        ("lbam", {"reduction": 1.5}, "reduction must be an integer >= 1"),
        ("lbam", {"dilation": 0, "branches": "channel"}, "dilation must be an integer >= 1"),
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


# ---- state-dict layout: checkpoints written before the rewrite (commit b472253) load unchanged ----


def _bn_keys(prefix):
    return {f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def _spatial_keys(output_bn=False):
    keys = {f"spatial.{i}.{p}" for i in (0, 3, 6, 9) for p in ("weight", "bias")}
    keys |= _bn_keys("spatial.1") | _bn_keys("spatial.4") | _bn_keys("spatial.7")
    return keys | (_bn_keys("spatial.10") if output_bn else set())


def test_state_dict_keys_are_those_of_earlier_checkpoints():
    mlp = lambda p: {f"{p}.0.weight", f"{p}.0.bias", f"{p}.2.weight", f"{p}.2.bias"}  # noqa: E731
    assert set(SE(64).state_dict()) == mlp("fc")
    assert set(CBAM(64).state_dict()) == mlp("mlp") | {"spatial.0.weight"} | _bn_keys("spatial.1")
    assert set(ECA(64).state_dict()) == {"conv.weight"}
    bam_mlp = {"channel_mlp.0.weight", "channel_mlp.0.bias", "channel_mlp.3.weight", "channel_mlp.3.bias"}
    bam = bam_mlp | _bn_keys("channel_mlp.1") | _spatial_keys()
    assert set(BAM(64).state_dict()) == set(BAM(64, combine="mul").state_dict()) == bam
    assert set(BAM(64, output_bn=True).state_dict()) == bam | _bn_keys("channel_mlp.4") | _spatial_keys(True)
    assert set(LBAM(64).state_dict()) == {"conv.weight"} | _spatial_keys()
    assert LBAM(64, shared_conv=False).state_dict()["conv.weight"].shape == (1, 2, 3)
    assert LBAM(64, shared_conv=False, pool="avg").state_dict()["conv.weight"].shape == (1, 1, 3)
    assert set(LBAM(64, branches="channel").state_dict()) == {"conv.weight"}
    assert set(LBAM(64, branches="spatial").state_dict()) == _spatial_keys()


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
    assert n_params(BAM(c, r, output_bn=True)) == bam_params(c, r) + 2 * c + 2  # BN(C) and BN(1)
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


# ---- behaviour of the options and the maps ----


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


def test_shared_conv_equals_separate_convs_with_equal_weights():
    x = torch.randn(2, 32, 5, 6)
    shared, separate = LBAM(32).eval(), LBAM(32, shared_conv=False).eval()
    separate.spatial.load_state_dict(shared.spatial.state_dict())
    separate.conv.weight.data.copy_(shared.conv.weight.data.repeat(1, 2, 1))
    torch.testing.assert_close(shared(x), separate(x))


def test_output_bn_normalises_each_branch_output():
    """The paper's BAM: in train mode Mc and Ms leave their BN with zero batch mean per channel."""
    module = BAM(16, output_bn=True).train()
    with capture_maps(module) as maps:
        module(torch.randn(4, 16, 5, 6))
    assert maps["spatial"].mean().abs() < 1e-5
    mc = module.channel_mlp(torch.randn(4, 16))
    torch.testing.assert_close(mc.mean(0), torch.zeros(16), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "kwargs"), [v for v in VARIANTS if v[0] in ("bam", "lbam")])
def test_capture_maps_returns_what_the_forward_used(name, kwargs):
    module = randomise(build_attention(name, 16, **kwargs)).eval()
    x = torch.randn(2, 16, 5, 6, requires_grad=True)
    with capture_maps(module) as maps:
        out = module(x)
    residual = getattr(module, "residual", True)
    # The output is F + F⊗M (or F⊗M) with the captured M: the map is the one that was applied.
    torch.testing.assert_close(out, x + x * maps["gate"] if residual else x * maps["gate"])
    assert not maps["gate"].requires_grad and out.requires_grad
    if module.spatial is not None:
        assert maps["spatial"].shape == (2, 1, 5, 6)
        torch.testing.assert_close(maps["spatial"], spatial_formula(module.spatial, x, False))
    else:
        assert "spatial" not in maps
    # On exit the hooks are gone: a later forward leaves the dict alone.
    before = maps["gate"]
    module(torch.randn(2, 16, 5, 6))
    assert maps["gate"] is before


def test_capture_maps_of_the_other_modules():
    x = torch.randn(2, 16, 5, 6)
    for module in (SE(16), ECA(16)):
        with capture_maps(module) as maps:
            out = module(x)
        assert maps["gate"].shape == (2, 16, 1, 1)
        torch.testing.assert_close(out, x * maps["gate"])
    module = CBAM(16)
    with capture_maps(module) as maps:
        module(x)
    assert maps["channel_gate"].shape == (2, 16, 1, 1) and maps["gate"].shape == (2, 1, 5, 6)
    with pytest.raises(ValueError, match="has none of the map submodules"):
        with capture_maps(torch.nn.Identity()):
            pass
