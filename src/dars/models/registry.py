"""The model factories by name: ``f(num_classes, **model_config) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from dars.models.deeplab import RATES, DeepLabV2
from dars.models.pspnet import PSPNet
from dars.models.tiny import TinySegNet


def tiny(num_classes: int, width: int = 32, **_: object) -> nn.Module:
    """The small CPU model of the demo and tests (no pretrained backbone)."""
    return TinySegNet(num_classes, width=width)


def _backbone_options(deep_stem: bool = False, frozen_bn_affine: bool = False,
                      stride_in_1x1: bool = False, ceil_mode_pool: bool = False,
                      **_: object) -> dict[str, bool]:
    """The ``model`` keys of :class:`ResNetBackbone`; their defaults are those of checkpoints
    written before the keys existed, so such checkpoints rebuild as they were trained."""
    return {"deep_stem": deep_stem, "frozen_bn_affine": frozen_bn_affine,
            "stride_in_1x1": stride_in_1x1, "ceil_mode_pool": ceil_mode_pool}


def pspnet(num_classes: int, backbone: str | None = None, aux_head: bool = True,
           **model_config: object) -> nn.Module:
    """PSPNet, dilated ResNet-50 by default (the paper's main model)."""
    return PSPNet(num_classes, backbone or "resnet50", aux_head,
                  **_backbone_options(**model_config))


def deeplabv2(num_classes: int, backbone: str | None = None,
              aspp_rates: Sequence[int] = RATES, **model_config: object) -> nn.Module:
    """DeepLabv2, dilated ResNet-101 by default (the paper's comparison model)."""
    return DeepLabV2(num_classes, backbone or "resnet101", aspp_rates,
                     **_backbone_options(**model_config))


FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "tiny": tiny, "pspnet": pspnet, "deeplabv2": deeplabv2,
}
