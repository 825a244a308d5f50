"""`resnet50` / `resnet18`: torchvision's ResNets, used to check costs against the SE/CBAM/BAM/ECA papers' tables.

Attention positions:
- `stage`: after layer1, layer2 and layer3, i.e. at the bottlenecks where the next stage down-samples, as BAM
  does: 3 modules (none after layer4, which the global pool follows).
- `block`: inside every BasicBlock/Bottleneck, after its last BN and before the residual addition, as
  SE/CBAM/ECA do: 16 modules for ResNet-50, 8 for ResNet-18.

`width_mult` scales the stem, every stage's width and hence the FC input.
"""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .common import AdaptiveAvgPool, AttentionInserter, load_pretrained, scale_width

_ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], resnet18, ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (Bottleneck, [3, 4, 6, 3], resnet50, ResNet50_Weights.IMAGENET1K_V1),
}


class ScaledResNet(ResNet):
    """torchvision's ResNet (its blocks and forward), every width × `width_mult`; identical at 1.0."""

    def __init__(self, block, layers, num_classes: int, width_mult: float = 1.0, in_channels: int = 3):
        self._width_mult = width_mult  # read by _make_layer during ResNet.__init__
        super().__init__(block, layers, num_classes=num_classes)
        stem = scale_width(64, width_mult)
        if stem != 64 or in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = nn.BatchNorm2d(stem)
            self.fc = nn.Linear(scale_width(512, width_mult) * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == 64:  # layer1 is built first; its input is the (scaled) stem
            self.inplanes = scale_width(64, self._width_mult)
        return super()._make_layer(block, scale_width(planes, self._width_mult), blocks, stride, dilate)


def build_resnet(
    name: str,
    num_classes: int,
    attention: str = "none",
    attention_kwargs: dict | None = None,
    placement: str = "stage",
    width_mult: float = 1.0,
    pretrained: bool = False,
    in_channels: int = 3,
) -> ResNet:
    """ResNet `name` with attention at `placement`; `pretrained` loads torchvision's ImageNet weights."""
    block, layers, builder, weights = _ARCHS[name]
    if pretrained:
        model = load_pretrained(builder, weights, width_mult, in_channels)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model = ScaledResNet(block, layers, num_classes, width_mult, in_channels)

    insert = AttentionInserter(attention, attention_kwargs)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    if placement == "stage":
        for stage in stages[:3]:
            attn = insert(_out_channels(stage[-1]))
            if attn is not None:
                stage.add_module("attention", attn)  # Sequential: runs after the stage's last block
    else:
        for stage in stages:
            for blk in stage:
                last_bn = "bn3" if isinstance(blk, Bottleneck) else "bn2"
                attn = insert(_out_channels(blk))
                if attn is not None:
                    setattr(blk, last_bn, nn.Sequential(getattr(blk, last_bn), attn))
    model.avgpool = AdaptiveAvgPool(1)  # the same global mean, with a deterministic CUDA backward
    model.attention_modules = insert.modules
    model.default_input_size = (224, 224)
    return model


def _out_channels(blk: nn.Module) -> int:
    return (blk.bn3 if isinstance(blk, Bottleneck) else blk.bn2).num_features
