"""Model registry: ``build_model(config["model"], num_classes)``.

Models are looked up by name in :data:`dars.models.registry.FACTORIES`, so configs select them
and a new architecture is one entry there, without touching the stages. Every model returns
``{"out": logits, ...}`` at the input resolution; extra keys (e.g. ``"aux"``) are auxiliary
heads used only in training.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dars.errors import DarsError
from dars.models.registry import FACTORIES


def available() -> list[str]:
    return sorted(FACTORIES)


def build_model(model_config: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the configured model; an unknown name lists the known ones."""
    name = model_config["name"]
    if name not in FACTORIES:
        raise DarsError(f"model.name {name!r} is not registered; available: {available()}")
    return FACTORIES[name](num_classes=num_classes, **model_config)
