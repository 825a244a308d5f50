"""Cost profiler: torchvision's documented numbers, closed-form counts of every attention module and of a
hand-checked model, bookkeeping."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torchvision

from lbam.attention import BAM, CBAM, ECA, LBAM, SE
from lbam.complexity import attention_modules, count_flops, profile_model
from lbam.models import build_backbone


@pytest.mark.parametrize(
    ("name", "reference", "params", "gmacs"),
    [
        ("vgg16", torchvision.models.vgg16, 138_357_544, 15.47),
        ("resnet50", torchvision.models.resnet50, 25_557_032, 4.09),
        ("resnet18", torchvision.models.resnet18, 11_689_512, 1.81),
    ],
)
def test_torchvision_documented_costs(name, reference, params, gmacs):
    """torchvision's docs list params and "GFLOPS" (really GMACs) at 224×224; the meta device costs nothing."""
    with torch.device("meta"):
        ours, theirs = build_backbone(name, 1000), reference()
    cost = profile_model(ours, (1, 3, 224, 224))
    assert cost["params"] == params and cost["attention_params"] == 0
    assert round(cost["macs"] / 1e9, 2) == gmacs
    with pytest.warns(UserWarning, match="no attention module"):  # torchvision's models declare none
        assert profile_model(theirs, (1, 3, 224, 224))["macs"] == cost["macs"]


class Gate(nn.Module):
    def forward(self, x):
        return x + x * torch.sigmoid(x)


def test_exact_counts_on_a_small_model():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False),  # 2·4·4 outputs × 9 = 288 MACs
        nn.BatchNorm2d(2),  # 32 elements × 2
        nn.ReLU(),  # 32
        Gate(),  # sigmoid, mul, add: 3 × 32
        nn.MaxPool2d(2),  # 8 outputs × 4-element windows = 32
        nn.AdaptiveAvgPool2d(1),  # reads 8
        nn.Flatten(),
        nn.Linear(2, 3),  # 6 MACs (bias not counted)
    )
    with pytest.warns(UserWarning, match=r"no attention module .* found in Sequential: attention_params=0"):
        cost = profile_model(model, (1, 1, 4, 4))
    assert cost["macs"] == 294
    assert cost["flops"] == 2 * 294 + 64 + 32 + 96 + 32 + 8
    assert cost["params"] == 18 + 4 + 9 and cost["attention_params"] == 0  # no attention_modules attribute


def test_attention_params_and_extra_flops():
    plain = build_backbone("cnn4", 4, width_mult=0.25)
    model = build_backbone("cnn4", 4, attention="lbam", width_mult=0.25)
    cost, base = profile_model(model, (1, 3, 64, 64)), profile_model(plain, (1, 3, 64, 64))
    expected = sum(p.numel() for m in model.attention_modules for p in m.parameters())
    assert cost["attention_params"] == expected > 0
    assert cost["params"] == base["params"] + expected
    # attention is mostly pooling, gating and element-wise work: FLOPs beyond 2·MACs must grow
    assert cost["flops"] - 2 * cost["macs"] > base["flops"] - 2 * base["macs"]
    assert all(isinstance(v, int) for v in cost.values())


def test_modes_and_state_are_restored():
    model = build_backbone("resnet18", 3, attention="se", placement="block", width_mult=0.125)
    model.train()
    model.layer2.eval()
    bn = model.bn1
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    profile_model(model, (1, 3, 32, 32))
    assert model.training and model.layer1.training and not model.layer2.training
    assert not any(m.training for m in model.layer2.modules())
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])


def test_batch_norm_counts_more_in_training():
    bn, x = nn.BatchNorm2d(3), torch.randn(2, 3, 4, 4)
    counts = []
    for train in (False, True):
        with torch.no_grad():
            counts.append(count_flops(bn.train(train), x))
    # Training: + batch mean and variance; + 1 for num_batches_tracked += 1.
    assert counts == [(0, 2 * x.numel()), (0, 4 * x.numel() + 1)]


def test_addcmul_counts_two_per_element():
    x = torch.randn(2, 3, 4, 4)
    assert count_flops(torch.addcmul, x, x, x) == (0, 2 * x.numel())


# ---- the attention modules, profiled as they train (eval mode), against closed forms ----
# n images, C channels, P = H·W pixels, E = n·C·P full-size elements, h = C // r hidden width, k the 1-D kernel.
N, C, H, W = 2, 32, 5, 6
P, E, R = H * W, N * C * H * W, 16
HID, K = C // R, 3  # ECA's k for C = 32


class Probe(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module, self.attention_modules = module, [module]

    def forward(self, x):
        return self.module(x)


def spatial_cost(n=N, c=C, p=P, h=HID):
    """BAM's spatial branch: 1×1 C→h, two 3×3 h→h, 1×1 h→1 (MACs); 3 × (BN 2 + ReLU 1) per hidden element."""
    return n * p * (c * h + 18 * h * h + h), 9 * n * p * h


def closed_form(name, **kw):
    """(MACs, FLOPs) of one eval forward, op by op as the papers' formulas compute them."""
    n, c, p, e, h, k = N, C, P, E, HID, K
    if name == "se":  # GAP E; FC, ReLU n·h, FC; sigmoid n·C; F ⊗ s E
        macs, extra = 2 * n * c * h, e + n * h + n * c + e
    elif name == "eca":  # GAP E; conv1d n·C·k; sigmoid n·C; F ⊗ w E
        macs, extra = n * c * k, e + n * c + e
    elif (
        name == "cbam"
    ):  # GAP, GMP; MLP twice; add, sigmoid; ⊗; mean and max over C; 7×7 conv, BN, sigmoid; ⊗
        macs = 4 * n * c * h + 2 * 49 * n * p
        extra = 2 * e + 2 * n * h + 2 * n * c + e + 2 * e + 2 * n * p + n * p + e
    elif name == "bam":  # GAP; FC, BN1d, ReLU, FC; spatial branch; Mc+Ms, sigmoid, ⊗, + : 4 E
        s_macs, s_extra = spatial_cost()
        macs, extra = 2 * n * c * h + s_macs, e + 3 * n * h + s_extra + 4 * e
        if kw.get("output_bn"):
            extra += 2 * n * c + 2 * n * p
    else:  # LBAM: GAP, GMP; GAP + GMP, conv1d (linear: one call); spatial branch; Mc+Ms, sigmoid, ⊗, + : 4 E
        s_macs, s_extra = spatial_cost()
        macs, extra = n * c * k + s_macs, 2 * e + n * c + s_extra + 4 * e
        if kw.get("residual") is False:
            extra -= e
    return macs, 2 * macs + extra


@pytest.mark.parametrize(
    ("module", "name", "kw"),
    [
        (SE(C), "se", {}),
        (ECA(C), "eca", {}),
        (CBAM(C), "cbam", {}),
        (BAM(C), "bam", {}),
        (BAM(C, combine="mul"), "bam", {}),
        (BAM(C, output_bn=True), "bam", {"output_bn": True}),
        (LBAM(C), "lbam", {}),
        (LBAM(C, residual=False), "lbam", {"residual": False}),
    ],
    ids=["se", "eca", "cbam", "bam", "bam-mul", "bam-output_bn", "lbam", "lbam-residual=False"],
)
def test_attention_modules_match_closed_forms(module, name, kw):
    cost = profile_model(Probe(module), (N, C, H, W))
    macs, flops = closed_form(name, **kw)
    assert (cost["macs"], cost["flops"]) == (macs, flops)
    assert cost["params"] == cost["attention_params"] == sum(p.numel() for p in module.parameters())


def test_full_size_gate_work_is_counted():
    """The gate's full-size work counts: LBAM's FLOPs are above CBAM's (the old counter put them below)."""
    lbam, cbam, bam = (profile_model(Probe(m), (N, C, H, W)) for m in (LBAM(C), CBAM(C), BAM(C)))
    assert lbam["flops"] > cbam["flops"]
    # LBAM pools once more than BAM (GMP): E more element-wise work, plus its 1-D conv outputs' sum.
    assert (lbam["flops"] - 2 * lbam["macs"]) - (bam["flops"] - 2 * bam["macs"]) == E + N * C - 3 * N * HID


@pytest.mark.parametrize(
    ("attention", "mparams"),
    [
        ("se", 28.09),
        ("cbam", 28.09),
        ("bam", 25.92),
        ("eca", 25.56),
    ],  # SE, CBAM, BAM, ECA papers' ImageNet tables
)
def test_resnet50_with_attention_matches_published_params(attention, mparams):
    with torch.device("meta"):
        model = build_backbone("resnet50", 1000, attention=attention, placement="auto")
    assert round(profile_model(model, (1, 3, 224, 224))["params"] / 1e6, 2) == mparams


def test_bam_mac_overhead_matches_paper():
    """BAM paper: ResNet-50 3.864 → 3.94 GMACs (+0.08); its ResNet differs from torchvision's, the overhead not."""
    with torch.device("meta"):
        plain, bam = build_backbone("resnet50", 1000), build_backbone("resnet50", 1000, attention="bam")
    extra = profile_model(bam, (1, 3, 224, 224))["macs"] - profile_model(plain, (1, 3, 224, 224))["macs"]
    assert round(extra / 1e9, 2) == 0.08


# ---- attention modules found by type, in any model ----


def test_lbam_inserted_by_hand_into_a_torchvision_resnet_is_counted():
    model = torchvision.models.resnet18(num_classes=10)
    inserted = []
    for name, channels in (("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)):
        inserted.append(LBAM(channels))
        setattr(model, name, nn.Sequential(getattr(model, name), inserted[-1]))
    plain = torchvision.models.resnet18(num_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # modules were found: no warning
        cost = profile_model(model, (1, 3, 64, 64))
    assert [id(m) for m in attention_modules(model)] == [id(m) for m in inserted]
    expected = sum(p.numel() for m in inserted for p in m.parameters())
    assert cost["attention_params"] == expected > 0
    with pytest.warns(UserWarning, match="no attention module"):
        assert cost["params"] - profile_model(plain, (1, 3, 64, 64))["params"] == expected


def test_every_attention_class_is_found_once_and_nested_ones_count_with_their_parent():
    modules = [SE(16), CBAM(16), BAM(16), ECA(16), LBAM(16)]
    outer = LBAM(16)
    outer.extra = SE(16)  # an attention module inside another: counted as part of the outer one
    model = nn.Sequential(*modules, outer)
    found = attention_modules(model)
    assert [type(m) for m in found] == [SE, CBAM, BAM, ECA, LBAM, LBAM] and found[-1] is outer
    assert profile_model(model, (1, 16, 8, 8))["attention_params"] == sum(
        p.numel() for p in model.parameters()
    )


def test_a_model_that_declares_no_attention_is_not_warned_about():
    model = build_backbone("cnn4", 3, attention="none", width_mult=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profile_model(model, (1, 3, 32, 32))["attention_params"] == 0
