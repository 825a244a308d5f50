"""`vgg16`: torchvision's VGG16 (configuration D), the backbone of the patent's embodiment 2 (224×224×3).

Attention positions:
- `stage`: after the last conv (ReLU) of each of the 5 stages, before its max-pool: 5 modules.
- `block`: after every conv's ReLU (VGG's "blocks" are single convs; SE/CBAM/ECA insert per block): 13 modules.

`width_mult` scales the conv widths and the classifier's hidden size (4096 × width_mult).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights, vgg16, vgg16_bn
from torchvision.models.vgg import VGG, cfgs, make_layers

from .common import AdaptiveAvgPool, AttentionInserter, load_pretrained, scale_width


def _init_like_torchvision(model: nn.Module) -> None:
    """The initialisation torchvision's `VGG(init_weights=True)` applies."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # weight 1, bias 0 and fresh running statistics
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _scaled_vgg16(num_classes: int, width_mult: float, batch_norm: bool, in_channels: int) -> VGG:
    cfg = [v if v == "M" else scale_width(v, width_mult) for v in cfgs["D"]]
    hidden = scale_width(4096, width_mult)
    # VGG hard-codes its 4096-wide classifier: build it without storage, resize, then allocate and initialise.
    with torch.device("meta"):
        model = VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=num_classes, init_weights=False)
        if in_channels != 3:
            model.features[0] = nn.Conv2d(in_channels, cfg[0], 3, padding=1)
        model.classifier[0] = nn.Linear(cfg[-2] * 7 * 7, hidden)
        model.classifier[3] = nn.Linear(hidden, hidden)
        model.classifier[6] = nn.Linear(hidden, num_classes)
    model.to_empty(device=torch.get_default_device())
    _init_like_torchvision(model)
    return model


def build_vgg16(
    num_classes: int,
    attention: str = "none",
    attention_kwargs: dict | None = None,
    placement: str = "stage",
    width_mult: float = 1.0,
    batch_norm: bool = False,
    pretrained: bool = False,
    in_channels: int = 3,
) -> VGG:
    """VGG16 (`batch_norm=True`: VGG16-BN) with attention at `placement`; `pretrained` loads ImageNet weights."""
    if pretrained:
        weights = VGG16_BN_Weights.IMAGENET1K_V1 if batch_norm else VGG16_Weights.IMAGENET1K_V1
        model = load_pretrained(vgg16_bn if batch_norm else vgg16, weights, width_mult, in_channels)
        model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
        _init_like_torchvision(model.classifier[6])
    else:
        model = _scaled_vgg16(num_classes, width_mult, batch_norm, in_channels)

    insert = AttentionInserter(attention, attention_kwargs)
    layers: list[nn.Module] = []
    channels = in_channels
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        at_point = isinstance(layer, nn.MaxPool2d) if placement == "stage" else isinstance(layer, nn.ReLU)
        attn = insert(channels) if at_point else None
        if placement == "stage" and attn is not None:
            layers.append(attn)  # before the max-pool
        layers.append(layer)
        if placement == "block" and attn is not None:
            layers.append(attn)  # after the ReLU
    model.features = nn.Sequential(*layers)
    model.avgpool = AdaptiveAvgPool(model.avgpool.output_size)
    model.attention_modules = insert.modules
    model.default_input_size = (224, 224)
    return model
