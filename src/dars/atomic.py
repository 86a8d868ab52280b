"""Atomic artifact writes: build under a temporary name, then rename.

Snakemake (and the user) treat an output that exists as complete. A job killed mid-write must
therefore never leave a file or directory at the final path, so every writer goes through these
helpers: the temporary sibling lives on the same filesystem, making ``os.replace`` atomic.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from dars.errors import DarsError

# OSErrors that mean "the disk refused the write", reported as one clear DarsError.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_HOST = socket.gethostname()


def _tmp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """``.<name>.<host>-<pid>.tmp``: the writer is named so a stale one can be recognised."""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}{suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_tmps(path: Path) -> None:
    """Remove temporaries of ``path`` left by killed writers on this host.

    A job killed mid-write (SIGKILL, OOM, pre-emption) cannot clean up after itself; its
    temporary (possibly a directory of thousands of pseudo labels) would stay forever. Only
    temporaries of this host whose writer process is gone are removed, so a live writer (or one
    on another node sharing the file system) is never disturbed.
    """
    prefix, parent = f".{path.name}.", path.parent
    if not parent.is_dir():
        return
    for sibling in parent.iterdir():
        name = sibling.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        host, _, pid = name[len(prefix):-len(".tmp")].rpartition("-")
        if host == _HOST and pid.isdigit() and not _pid_alive(int(pid)):
            remove_path(sibling)


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
    temporary is removed and any previous ``path`` is left untouched; a full disk (or quota,
    read-only file system) becomes a DarsError naming ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmps(final)
    tmp = _tmp_sibling(final)
    remove_path(tmp)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise DarsError(f"cannot write {final}: {exc.strerror} (nothing was written there; "
                            "free space and rerun)") from exc
        raise
    finally:
        remove_path(tmp)


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str],
              float_format: str | None = None) -> None:
    """Write a data frame as csv atomically (``float_format`` as in ``DataFrame.to_csv``)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write an object as indented json atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
