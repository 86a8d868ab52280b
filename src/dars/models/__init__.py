"""Model registry: ``build_model(config["model"], num_classes)``.

Models register under a name so configs select them and later architectures (PSPNet, DeepLab)
plug in without touching the stages. Every model returns ``{"out": logits, ...}`` at the input
resolution; extra keys (e.g. ``"aux"``) are auxiliary heads used only in training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dars.errors import DarsError

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a factory ``f(num_classes, **model_config) -> nn.Module``."""

    def add(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def available() -> list[str]:
    return sorted(_REGISTRY)


def build_model(model_config: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the configured model; an unknown name lists the registered ones."""
    name = model_config["name"]
    if name not in _REGISTRY:
        raise DarsError(f"model.name {name!r} is not registered; available: {available()}")
    return _REGISTRY[name](num_classes=num_classes, **model_config)


from dars.models import registry as _builtin  # noqa: E402,F401  (registers built-in models)
