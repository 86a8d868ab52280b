"""Checkpoints and pretrained weights, saved atomically, loaded ``weights_only`` (an untrusted
file cannot run code); a truncated or foreign file is one :class:`DarsError` naming it."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dars.core.errors import DarsError
from dars.store.artifacts import atomic_path


def load_weights_only(path: str | os.PathLike[str], what: str, remedy: str = "") -> Any:
    """``torch.load(path)`` on CPU, weights only; ``what`` names the file in errors, ``remedy``
    (e.g. which file to delete) ends them. Only torch's first message line is kept (a truncated
    file fails in its zip reader), so the remedy stays on one line."""
    p = Path(path)
    if not p.is_file():
        raise DarsError(f"{what}: file not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not isinstance(exc, pickle.UnpicklingError) and not zipfile.is_zipfile(p):
            reason = f"not a whole torch file, truncated or damaged ({reason})"
        tail = f"; {remedy}" if remedy else ""
        raise DarsError(f"cannot load {what} {p}: {reason}{tail}") from exc


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | os.PathLike[str], remedy: str | None = None) -> dict[str, Any]:
    """A checkpoint's state; a truncated or foreign file is one DarsError ending in ``remedy``."""
    if remedy is None:
        remedy = f"delete {path} and rerun the job that wrote it (`snakemake` regenerates it)"
    state = load_weights_only(path, "checkpoint", remedy)
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise DarsError(f"{path} is not a dars checkpoint (no model/model_config)")
    return state


def load_weights(model: nn.Module, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Load weights, turning an architecture mismatch into a clear error."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        name = state["model_config"].get("name")
        raise DarsError(f"checkpoint {path} does not fit model {name!r}: "
                        f"{str(exc).splitlines()[0]}") from exc
