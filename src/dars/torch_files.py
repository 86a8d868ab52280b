"""Reading torch files safely: ``weights_only`` loads, one clear error for any bad file.

Checkpoints and pretrained backbones come from disk a user points at; ``weights_only=True``
means a file from an untrusted source cannot run code, and torch's many exception types for
truncated or foreign files become one :class:`DarsError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from dars.errors import DarsError


def load_weights_only(path: str | os.PathLike[str], what: str, remedy: str = "") -> Any:
    """``torch.load(path)`` on CPU, weights only; ``what`` names the file in errors and
    ``remedy`` (e.g. which file to delete to regenerate it) ends the error line.

    A truncated or damaged file (a job killed by the file system, a failed copy) fails inside
    torch's zip reader; only the first line of torch's message is kept, so the remedy stays
    on the one error line.
    """
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
