"""Built-in model factories; importing this module registers them."""

from __future__ import annotations

from torch import nn

from dars.models import register
from dars.models.tiny import TinySegNet


@register("tiny")
def tiny(num_classes: int, width: int = 32, **_: object) -> nn.Module:
    """The small CPU model of the demo and tests (pretrained weights do not apply)."""
    return TinySegNet(num_classes, width=width)
