"""The model factories by name: ``f(num_classes, **model_config) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dars.models.deeplab import DeepLabV2
from dars.models.pspnet import PSPNet
from dars.models.tiny import TinySegNet


def tiny(num_classes: int, width: int = 32, **_: object) -> nn.Module:
    """The small CPU model of the demo and tests (no pretrained backbone)."""
    return TinySegNet(num_classes, width=width)


def pspnet(num_classes: int, backbone: str | None = None, deep_stem: bool = False,
           **_: object) -> nn.Module:
    """PSPNet, dilated ResNet-50 by default (the paper's main model)."""
    return PSPNet(num_classes, backbone or "resnet50", deep_stem)


def deeplabv2(num_classes: int, backbone: str | None = None, deep_stem: bool = False,
              **_: object) -> nn.Module:
    """DeepLabv2, dilated ResNet-101 by default (the paper's comparison model)."""
    return DeepLabV2(num_classes, backbone or "resnet101", deep_stem)


FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "tiny": tiny, "pspnet": pspnet, "deeplabv2": deeplabv2,
}
