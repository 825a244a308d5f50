"""Backbones: shapes, attention placement, torchvision equivalence, width scaling, pretrained weights."""

from __future__ import annotations

import copy
import math
import urllib.error
from typing import ClassVar

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import Bottleneck

import lbam.attention
from lbam.models import BACKBONES, PLACEMENTS, build_backbone, scale_width

# (placement, expected number of inserted modules) per backbone, as the backbone docstrings state.
EXPECTED_COUNTS = {
    "cnn4": {"stage": 4, "block": 5},
    "vgg16": {"stage": 5, "block": 13},
    "resnet50": {"stage": 3, "block": 16},
    "resnet18": {"stage": 3, "block": 8},
}


class Probe(nn.Identity):
    """Stand-in attention: identity that records its channels, kwargs and the input shapes it sees."""

    calls: ClassVar[list[Probe]] = []

    def __init__(self, channels: int, **kwargs):
        super().__init__()
        self.channels, self.kwargs, self.seen = channels, kwargs, []
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels
        self.seen.append(tuple(x.shape))
        Probe.calls.append(self)
        return x * self.scale.view(1, -1, 1, 1)


@pytest.fixture
def probe(monkeypatch):
    """Replaces lbam.attention.build_attention by Probe (any name but "none"); returns the call log."""
    Probe.calls = []
    monkeypatch.setattr(
        lbam.attention,
        "build_attention",
        lambda name, channels, **kw: None if name == "none" else Probe(channels, **kw),
    )
    return Probe.calls


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize(
    ("attention", "placement"),
    [
        ("none", "stage"),
        ("lbam", "stage"),
        ("bam", "block"),
        ("se", "auto"),
        ("cbam", "block"),
        ("eca", "stage"),
    ],
)
def test_forward_backward_real_attention(name, attention, placement):
    model = build_backbone(name, 5, attention=attention, placement=placement, width_mult=0.125)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)
    out.sum().backward()
    registered = {id(m) for m in model.modules()}
    assert all(id(m) in registered for m in model.attention_modules)
    for p in (p for m in model.attention_modules for p in m.parameters()):
        assert p.grad is not None
    if attention == "none":
        assert model.attention_modules == []
    else:
        resolved = "block" if placement == "auto" else placement  # se's paper inserts per block
        assert len(model.attention_modules) == EXPECTED_COUNTS[name][resolved]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("placement", ["stage", "block"])
def test_placement_count_and_forward_order(probe, name, placement):
    model = build_backbone(
        name, 3, attention="x", attention_kwargs={"reduction": 4}, placement=placement, width_mult=0.125
    )
    assert len(model.attention_modules) == EXPECTED_COUNTS[name][placement]
    model(torch.zeros(1, 3, 64, 64))
    assert probe == model.attention_modules  # each runs once, in the listed order
    assert all(m.kwargs == {"reduction": 4} for m in model.attention_modules)


def test_auto_placement_follows_each_paper(probe):
    for attention, expected in [("bam", 4), ("lbam", 4), ("se", 5), ("cbam", 5), ("eca", 5)]:
        assert (
            len(build_backbone("cnn4", 2, attention=attention, placement="auto").attention_modules)
            == expected
        )


def test_cnn4_positions(probe):
    stage = build_backbone("cnn4", 2, attention="x")
    stage(torch.zeros(1, 3, 128, 128))
    # before each 2×2 max-pool: full resolution at stage 1, halved at each next stage
    assert [m.seen[0] for m in stage.attention_modules] == [
        (1, 32, 128, 128),
        (1, 64, 64, 64),
        (1, 128, 32, 32),
        (1, 256, 16, 16),
    ]
    for stage_seq in stage.stages:
        assert isinstance(stage_seq[-1], nn.MaxPool2d) and isinstance(stage_seq[-2], Probe)
    block = build_backbone("cnn4", 2, attention="x", placement="block")
    assert (
        block.residual.body[-1] is block.attention_modules[-1]
    )  # inside the residual branch, before the add
    assert block.default_input_size == (128, 128)


def test_vgg16_positions(probe):
    model = build_backbone("vgg16", 2, attention="x", width_mult=0.125)
    layers = list(model.features)
    for m in model.attention_modules:
        assert isinstance(layers[layers.index(m) + 1], nn.MaxPool2d)
    assert [m.channels for m in model.attention_modules] == [8, 16, 32, 64, 64]
    block = build_backbone("vgg16", 2, attention="x", placement="block", batch_norm=True, width_mult=0.125)
    layers = list(block.features)
    assert all(isinstance(layers[layers.index(m) - 1], nn.ReLU) for m in block.attention_modules)
    assert model.default_input_size == (224, 224)


def test_resnet_positions(probe):
    model = build_backbone("resnet50", 2, attention="x", width_mult=0.25)
    assert [model.layer1[-1], model.layer2[-1], model.layer3[-1]] == model.attention_modules
    assert [m.channels for m in model.attention_modules] == [64, 128, 256]
    block = build_backbone("resnet50", 2, attention="x", placement="block", width_mult=0.25)
    blocks = [b for layer in (block.layer1, block.layer2, block.layer3, block.layer4) for b in layer]
    assert all(isinstance(b, Bottleneck) and b.bn3[1] is m for b, m in zip(blocks, block.attention_modules))
    assert len(blocks) == len(block.attention_modules)


@pytest.mark.parametrize(
    ("ours", "theirs", "n_params"),
    [
        (dict(name="vgg16"), torchvision.models.vgg16, 138_357_544),
        (dict(name="vgg16", batch_norm=True), torchvision.models.vgg16_bn, 138_365_992),
        (dict(name="resnet50"), torchvision.models.resnet50, 25_557_032),
        (dict(name="resnet18"), torchvision.models.resnet18, 11_689_512),
    ],
)
def test_full_width_matches_torchvision(ours, theirs, n_params):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model, reference = build_backbone(num_classes=1000, **ours), theirs()
    assert sum(p.numel() for p in model.parameters()) == n_params
    shapes = [(k, v.shape) for k, v in model.state_dict().items()]
    assert shapes == [(k, v.shape) for k, v in reference.state_dict().items()]


def test_scaled_models_are_initialised():
    model = build_backbone("vgg16", 4, width_mult=0.125, batch_norm=True)
    bn = model.features[1]
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert model.classifier[0].out_features == 512 and model.classifier[6].out_features == 4
    for p in model.parameters():
        assert torch.isfinite(p).all()
    assert model.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.1)  # torchvision's N(0, 0.01)
    assert build_backbone("resnet50", 4, width_mult=0.5).fc.in_features == 1024


def test_options():
    assert build_backbone("cnn4", 3, widths=(8, 8, 16, 24)).fc.in_features == 24
    assert build_backbone("cnn4", 3, width_mult=0.5).widths == [16, 32, 64, 128]
    for name in BACKBONES:
        model = build_backbone(name, 3, width_mult=0.125, in_channels=1).eval()
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


def test_scale_width():
    assert [scale_width(c, 1.0) for c in (3, 20, 64)] == [3, 20, 64]
    assert [scale_width(64, m) for m in (0.5, 0.25, 0.15, 0.1, 2.0)] == [32, 16, 8, 6, 128]
    assert scale_width(3, 0.5) == 2 and scale_width(32, 0.01) == 1


def test_invalid_arguments():
    with pytest.raises(ValueError, match="cnn4, vgg16, resnet50, resnet18"):
        build_backbone("alexnet", 2)
    with pytest.raises(ValueError, match=", ".join(PLACEMENTS)):
        build_backbone("cnn4", 2, placement="everywhere")
    with pytest.raises(ValueError, match="width_mult"):
        build_backbone("cnn4", 2, width_mult=0)
    with pytest.raises(ValueError, match="4 stage widths"):
        build_backbone("cnn4", 2, widths=(8, 16))
    with pytest.raises(ValueError):  # unknown attention: build_attention's own error
        build_backbone("cnn4", 2, attention="nonsense")
    for name in ("vgg16", "resnet50"):
        with pytest.raises(ValueError, match="width_mult=1"):
            build_backbone(name, 2, pretrained=True, width_mult=0.5)
        with pytest.raises(ValueError, match="in_channels=3"):
            build_backbone(name, 2, pretrained=True, in_channels=1)


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_pretrained_offline_is_a_clear_error(monkeypatch, name):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with (
        torch.device("meta"),
        pytest.raises(RuntimeError, match=r"could not load torchvision's .* ImageNet weights"),
    ):
        build_backbone(name, 2, pretrained=True)


def test_pretrained_weights_are_loaded_then_head_replaced(monkeypatch, probe):
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"].fill_(0.5)
    state["layer4.1.bn2.weight"].fill_(0.25)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", lambda *a, **k: state)
    model = build_backbone("resnet18", 7, attention="x", placement="block", pretrained=True)
    assert torch.all(model.conv1.weight == 0.5)
    assert torch.all(model.layer4[1].bn2[0].weight == 0.25)  # loaded before the attention was inserted
    assert model.fc.out_features == 7 and len(model.attention_modules) == 8


@pytest.mark.slow
def test_compiled_cnn4_with_lbam_trains_like_eager_and_keeps_its_state_dict():
    """model.compile() (in place, as the runner does): same losses as eager over a few AdamW steps, the loss
    falls, the state-dict keys stay unprefixed and load into an uncompiled model."""
    torch.manual_seed(0)
    model = build_backbone("cnn4", 3, attention="lbam", width_mult=0.25)
    eager, keys = copy.deepcopy(model), list(model.state_dict())
    model.compile()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, eager)}
    losses = {id(model): [], id(eager): []}
    for _ in range(4):
        for m in (model, eager):
            optimizers[id(m)].zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            optimizers[id(m)].step()
            losses[id(m)].append(loss.item())
    torch.testing.assert_close(losses[id(model)], losses[id(eager)], rtol=1e-3, atol=1e-4)
    assert losses[id(model)][-1] < losses[id(model)][0]
    assert list(model.state_dict()) == keys
    fresh = build_backbone("cnn4", 3, attention="lbam", width_mult=0.25)
    fresh.load_state_dict(model.state_dict())
    # Train mode: in eval mode the compiled model would compile a second graph.
    torch.testing.assert_close(fresh(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_runners_compile_counter_hands_inductor_the_mode_torch_compile_would():
    """model.compile_mode=reduce-overhead (CUDA graphs on a GPU; on the CPU inductor leaves them out): the counting
    backend passes the mode's options to inductor, which accepts them, and the model trains as eagerly."""
    from lbam.compile import CompileCounter

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    eager = copy.deepcopy(model)
    counter = CompileCounter("inductor", "reduce-overhead")
    model.compile(backend=counter.backend)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    for m in (model, eager):
        F.cross_entropy(m(x), y).backward()
    assert counter.compiles == 1
    torch.testing.assert_close(model[0].weight.grad, eager[0].weight.grad)
    with pytest.raises(ValueError, match="needs the inductor backend"):
        CompileCounter("aot_eager", "reduce-overhead")


@pytest.mark.slow
def test_compiled_cnn4_with_lbam_trains_in_bf16_autocast_and_channels_last():
    """Dynamo and AOT autograd through autocast and channels_last (aot_eager: inductor's CPU code generation of
    the same model is the test above; bf16 kernels matter on the GPU, where `make device-check` compiles
    them)."""
    torch.manual_seed(0)
    model = build_backbone("cnn4", 3, attention="lbam", width_mult=0.25).to(memory_format=torch.channels_last)
    model.compile(backend="aot_eager")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(8, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (8,))
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
