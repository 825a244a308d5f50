"""Attention modules: SE, CBAM, BAM, ECA and LBAM, each N×C×H×W → N×C×H×W, built by name."""

from torch import nn

from .bam import BAM
from .cbam import CBAM
from .eca import ECA
from .lbam import LBAM
from .se import SE

ATTENTIONS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "se": SE,
    "cbam": CBAM,
    "bam": BAM,
    "eca": ECA,
    "lbam": LBAM,
}


def build_attention(name: str, channels: int, **kwargs) -> nn.Module | None:
    """The attention module ``name`` for ``channels`` channels (None for "none"); kwargs go to its constructor."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; valid names: {', '.join(ATTENTIONS)}")
    cls = ATTENTIONS[name]
    return None if cls is None else cls(channels, **kwargs)


__all__ = ["ATTENTIONS", "BAM", "CBAM", "ECA", "LBAM", "SE", "build_attention"]
