"""Checkpoints: model + optimizer + progress + the model config needed to rebuild it.

Saved atomically (a killed job never leaves a truncated file) and loaded with
``weights_only=True`` so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from dars.atomic import atomic_path
from dars.errors import DarsError
from dars.models import build_model
from dars.torch_files import load_weights_only


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | os.PathLike[str], remedy: str | None = None) -> dict[str, Any]:
    """A checkpoint's state; a truncated or foreign file is one DarsError ending in ``remedy``
    (default: delete the file and rerun the job that wrote it)."""
    if remedy is None:
        remedy = f"delete {path} and rerun the job that wrote it (`snakemake` regenerates it)"
    state = load_weights_only(path, "checkpoint", remedy)
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise DarsError(f"{path} is not a dars checkpoint (no model/model_config)")
    return state


def load_model(path: str | os.PathLike[str], num_classes: int,
               state: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the model recorded in a checkpoint and load its weights (eval mode); ``state``
    is the checkpoint's, when the caller has loaded it already."""
    state = load(path) if state is None else state
    if state["num_classes"] != num_classes:
        raise DarsError(f"checkpoint {path} predicts {state['num_classes']} classes but the "
                        f"dataset has {num_classes}")
    model = build_model(state["model_config"], num_classes)
    load_weights(model, state, path)
    return model.eval()


def load_weights(model: nn.Module, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Load weights, turning an architecture mismatch into a clear error."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        name = state["model_config"].get("name")
        raise DarsError(f"checkpoint {path} does not fit model {name!r}: "
                        f"{str(exc).splitlines()[0]}") from exc
