"""The attention modules in other people's models: PyTorch's factory kwargs (device, dtype), timm's `attn_layer`
contract (the README's recipe, on resnet18 and resnet26d) and torch.fx (torchvision's create_feature_extractor).
timm is a test extra (pyproject's dev extra, pinned in requirements.txt)."""

import functools

import pytest
import timm
import torch
from test_attention import IDS, VARIANTS, randomise
from torchvision.models.feature_extraction import create_feature_extractor

from lbam.attention import ATTENTIONS, LBAM, capture_maps

MODULES = [name for name, cls in ATTENTIONS.items() if cls is not None]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_every_module_takes_pytorchs_factory_kwargs(name, kwargs):
    m = ATTENTIONS[name](16, **kwargs, device="meta", dtype=torch.float64)
    tensors = [*m.parameters(), *m.buffers()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    # on a real device: the module runs in that dtype
    y = ATTENTIONS[name](16, **kwargs, dtype=torch.float64).eval()(
        torch.randn(2, 16, 5, 4, dtype=torch.float64)
    )
    assert y.dtype == torch.float64 and y.shape == (2, 16, 5, 4)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=IDS)
def test_forward_traces_with_torch_fx_and_computes_the_same(name, kwargs):
    m = randomise(ATTENTIONS[name](16, **kwargs)).eval()
    traced = torch.fx.symbolic_trace(m)
    x = torch.randn(2, 16, 5, 4)
    torch.testing.assert_close(traced(x), m(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="C=16"):  # eager keeps its clear shape check
        m(torch.randn(2, 8, 5, 4))


def timm_model(arch: str, attn_layer, **kwargs) -> torch.nn.Module:
    """The recipe of the README: any of the modules as timm's attention layer of every residual block."""
    return timm.create_model(
        arch, pretrained=False, num_classes=3, block_args={"attn_layer": attn_layer}, **kwargs
    )


@pytest.mark.parametrize("arch", ["resnet18", "resnet26d"])
@pytest.mark.parametrize("name", MODULES)
def test_timm_attn_layer_recipe(arch, name):
    cls = ATTENTIONS[name]
    model = timm_model(arch, cls)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
    assert len(blocks) == 8 and all(isinstance(b.se, cls) for b in blocks)  # timm names the slot `se`
    assert [b.se.channels for b in blocks[::2]] == [c * (4 if arch == "resnet26d" else 1) for c in (64, 128, 256, 512)]  # fmt: skip
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in blocks[-1].se.parameters())
    meta = timm_model(arch, cls, device="meta")  # timm hands its factory kwargs to the attention layer
    assert {p.device.type for p in meta.parameters()} == {"meta"}


def test_timm_recipe_takes_options_through_partial():
    model = timm_model("resnet18", functools.partial(LBAM, residual=False, kernel_size=3))
    assert not model.layer1[0].se.residual and model.layer1[0].se.conv.kernel_size == (3,)


@pytest.mark.parametrize("name", MODULES)
def test_create_feature_extractor_on_a_model_with_the_module(name):
    model = timm_model("resnet18", ATTENTIONS[name]).eval()
    x = torch.randn(2, 3, 64, 64)
    extractor = create_feature_extractor(model, {"layer3.1.se.gate": "gate", "fc": "logits"})
    got = extractor(x)
    with capture_maps(model.layer3[1].se) as maps:
        logits = model(x)
    torch.testing.assert_close(got["logits"], logits)
    torch.testing.assert_close(got["gate"], maps["gate"])  # the map M, taken from the traced graph
