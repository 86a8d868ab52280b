"""Models by name (:data:`FACTORIES`: a new architecture is one entry) and from checkpoints.
Every model returns ``{"out": logits, ...}`` at input resolution; ``"aux"`` heads train only."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from dars.core.errors import DarsError
from dars.models import checkpoint
from dars.models.deeplab import RATES, DeepLabV2
from dars.models.pspnet import PSPNet
from dars.models.tiny import TinySegNet


def _backbone_options(model_config: dict[str, Any]) -> dict[str, bool]:
    """The ``model`` keys of :class:`~dars.models.backbone.ResNetBackbone`; their default False
    is that of checkpoints written before the keys existed, so those rebuild as trained."""
    keys = ("deep_stem", "frozen_bn_affine", "stride_in_1x1", "ceil_mode_pool")
    return {key: model_config.get(key, False) for key in keys}


def _tiny(num_classes: int, width: int = 32, **_: object) -> nn.Module:
    return TinySegNet(num_classes, width=width)


def _pspnet(num_classes: int, backbone: str | None = None, aux_head: bool = True,
            **model_config: object) -> nn.Module:
    return PSPNet(num_classes, backbone or "resnet50", aux_head, **_backbone_options(model_config))


def _deeplabv2(num_classes: int, backbone: str | None = None,
               aspp_rates: Sequence[int] = RATES, **model_config: object) -> nn.Module:
    return DeepLabV2(num_classes, backbone or "resnet101", aspp_rates,
                     **_backbone_options(model_config))


#: ``f(num_classes, **model_config)`` by ``model.name``; the paper's defaults; tiny: the demo.
FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "tiny": _tiny, "pspnet": _pspnet, "deeplabv2": _deeplabv2,
}


def build_model(model_config: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the configured model; an unknown name lists the known ones."""
    name = model_config["name"]
    if name not in FACTORIES:
        raise DarsError(f"model.name {name!r} is not registered; available: {sorted(FACTORIES)}")
    return FACTORIES[name](num_classes=num_classes, **model_config)


def load_model(path: str | os.PathLike[str], num_classes: int,
               state: dict[str, Any] | None = None) -> nn.Module:
    """A checkpoint's model with its weights, in eval mode; ``state``: the loaded checkpoint."""
    state = checkpoint.load(path) if state is None else state
    if state["num_classes"] != num_classes:
        raise DarsError(f"checkpoint {path} predicts {state['num_classes']} classes but the "
                        f"dataset has {num_classes}")
    model = build_model(state["model_config"], num_classes)
    checkpoint.load_weights(model, state, path)
    return model.eval()
