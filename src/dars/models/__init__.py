"""Model registry: ``build_model(config["model"], num_classes)``, and models rebuilt from
checkpoints (``load_model``).

Models are looked up by name in :data:`dars.models.registry.FACTORIES`, so configs select them
and a new architecture is one entry there, without touching the stages. Every model returns
``{"out": logits, ...}`` at the input resolution; extra keys (e.g. ``"aux"``) are auxiliary
heads used only in training.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from dars.core.errors import DarsError
from dars.models import checkpoint
from dars.models.registry import FACTORIES


def available() -> list[str]:
    return sorted(FACTORIES)


def build_model(model_config: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the configured model; an unknown name lists the known ones."""
    name = model_config["name"]
    if name not in FACTORIES:
        raise DarsError(f"model.name {name!r} is not registered; available: {available()}")
    return FACTORIES[name](num_classes=num_classes, **model_config)


def load_model(path: str | os.PathLike[str], num_classes: int,
               state: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the model recorded in a checkpoint and load its weights (eval mode); ``state``
    is the checkpoint's, when the caller has loaded it already."""
    state = checkpoint.load(path) if state is None else state
    if state["num_classes"] != num_classes:
        raise DarsError(f"checkpoint {path} predicts {state['num_classes']} classes but the "
                        f"dataset has {num_classes}")
    model = build_model(state["model_config"], num_classes)
    checkpoint.load_weights(model, state, path)
    return model.eval()
