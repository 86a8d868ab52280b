"""Reading the small csv/json artifacts of a run, with one error line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from dars.errors import DarsError


def read_csv(path: str | Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DarsError(f"cannot read {path}: {exc}") from exc


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DarsError(f"cannot read {path}: {exc}") from exc
