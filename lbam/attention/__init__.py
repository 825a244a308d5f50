"""Attention modules SE, CBAM, BAM, ECA and LBAM (N×C×H×W → N×C×H×W) built by name; plain PyTorch, public ops.

``torch.compile`` is the speed switch (``model.compile()`` compiles in place and keeps the state-dict keys). The
BatchNorms are standard: in train mode a batch of one raises PyTorch's error in BAM's channel MLP (and at N=1 with
a 1×1 map in the spatial branches); the training loader drops a last batch of one; eval mode takes any batch.

Each module takes PyTorch's factory kwargs (``device``, ``dtype``) and its ``forward`` traces with ``torch.fx``:
it is timm's ``attn_layer`` (``timm.create_model("resnet18", block_args=dict(attn_layer=LBAM))``) and works in
torchvision's ``create_feature_extractor`` (tests/test_interop.py).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .bam import BAM
from .cbam import CBAM
from .eca import ECA
from .lbam import LBAM
from .se import SE

ATTENTIONS = {"none": None, "se": SE, "cbam": CBAM, "bam": BAM, "eca": ECA, "lbam": LBAM}
MAP_NAMES = ("gate", "spatial", "channel_gate")


def build_attention(name: str, channels: int, **kwargs) -> nn.Module | None:
    """The attention module ``name`` for ``channels`` channels (None for "none"); kwargs go to its constructor."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; valid names: {', '.join(ATTENTIONS)}")
    cls = ATTENTIONS[name]
    return None if cls is None else cls(channels, **kwargs)


@contextmanager
def capture_maps(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While open, each forward of ``module`` (the forward that trains) stores in the yielded dict the detached
    outputs of those of its submodules named in ``MAP_NAMES``, by name: ``gate`` (an ``nn.Sigmoid``) outputs the
    map M that multiplies F (N×C×H×W for BAM and LBAM, N×C×1×1 for SE, ECA and channel-only LBAM; CBAM's is its
    last, spatial gate, N×1×H×W, and ``channel_gate`` its Mc); ``spatial`` the spatial branch's logits, N×1×H×W.
    The hooks are removed on exit::

        with capture_maps(model.attention_modules[-1]) as maps:
            model(images)
        m, spatial_logits = maps["gate"], maps["spatial"]
    """
    children = {name: getattr(module, name) for name in MAP_NAMES if getattr(module, name, None) is not None}
    if not children:
        raise ValueError(f"{type(module).__name__} has none of the map submodules {', '.join(MAP_NAMES)}")
    maps: dict[str, torch.Tensor] = {}
    handles = [
        child.register_forward_hook(lambda _m, _inputs, out, name=name: maps.__setitem__(name, out.detach()))
        for name, child in children.items()
    ]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["ATTENTIONS", "BAM", "CBAM", "ECA", "LBAM", "SE", "build_attention", "capture_maps"]
