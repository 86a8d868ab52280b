"""Atomic artifact writes: build under a temporary name, then rename.

Snakemake (and the user) treat an output that exists as complete. A job killed mid-write must
therefore never leave a file or directory at the final path, so every writer goes through these
helpers: the temporary sibling lives on the same filesystem, making ``os.replace`` atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


def _tmp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{suffix}")


def remove_path(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it onto ``path`` only if the block succeeds.

    Works for files and for directories (e.g. a folder of pseudo-label PNGs). On error the
    temporary is removed and any previous ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    remove_path(tmp)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        remove_path(tmp)


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a data frame as csv atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write an object as indented json atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
