"""Reading torch files safely: ``weights_only`` loads, one clear error for any bad file.

Checkpoints and pretrained backbones come from disk a user points at; ``weights_only=True``
means a file from an untrusted source cannot run code, and torch's many exception types for
truncated or foreign files become one :class:`DarsError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dars.errors import DarsError


def load_weights_only(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path)`` on CPU, weights only; ``what`` names the file in errors."""
    p = Path(path)
    if not p.is_file():
        raise DarsError(f"{what}: file not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise DarsError(f"cannot load {what} {p}: {exc}") from exc
