"""Run artifacts on disk: atomic writes, manifests, and reads with one error line.

Snakemake (and the user) treat an existing output as complete, so writers rename a temporary
sibling (``os.replace``, atomic on one file system); directory artifacts carry a manifest of
their files' sizes (and digests) that readers check first, for damage done later."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from dars.core.errors import DarsError

# OSErrors that mean "the disk refused the write", reported as one clear DarsError.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_tmps(path: Path) -> None:
    """Remove temporaries of ``path`` whose writer, on this host, is gone (a job killed
    mid-write cannot clean up; a live writer, or one on another node, is never disturbed)."""
    prefix, parent = f".{path.name}.", path.parent
    if not parent.is_dir():
        return
    for name in os.listdir(parent):  # names only: a folder may hold thousands of labels
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        host, _, pid = name[len(prefix):-len(".tmp")].rpartition("-")
        if host == _HOST and pid.isdigit() and not _pid_alive(int(pid)):
            remove_path(parent / name)


def remove_path(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path (file or directory) to write; renamed onto ``path`` only if the
    block succeeds. A full disk becomes a DarsError naming ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmps(final)
    tmp = final.with_name(f".{final.name}.{_HOST}-{os.getpid()}.tmp")  # names its writer
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


# ------------------------------------------------------------------------------ manifests
MANIFEST = "manifest.json"  # never an ``<id>.png`` label nor a zarr key
MANIFEST_VERSION = 1


def digest(data: bytes) -> str:
    """Content digest of a file recorded in a manifest (fast, 128 bits)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_entry(path: Path, with_digest: bool) -> dict[str, Any]:
    """Manifest entry of one file: its size, and its digest when asked."""
    if with_digest:
        data = path.read_bytes()
        return {"size": len(data), "blake2b": digest(data)}
    return {"size": path.stat().st_size}


def write_manifest(root: Path, files: dict[str, dict[str, Any]]) -> None:
    """Record what the directory artifact ``root`` must hold (``relative path -> entry``);
    written last, so readers can tell a whole artifact from one that lost a file later."""
    with atomic_path(root / MANIFEST) as tmp:  # compact: it lists thousands of files
        tmp.write_text(json.dumps({"version": MANIFEST_VERSION,
                                   "files": dict(sorted(files.items()))},
                                  separators=(",", ":")) + "\n")


def read_manifest(root: Path, remedy: str) -> dict[str, dict[str, Any]]:
    """The ``files`` of ``root``'s manifest; a missing or unreadable one is a DarsError."""
    try:
        files = json.loads((root / MANIFEST).read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
        return files
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DarsError(f"{root}: manifest {MANIFEST} missing or unreadable ({exc}); "
                        f"{remedy}") from exc


def check_files(root: Path, files: dict[str, dict[str, Any]], remedy: str,
                describe: Callable[[str], str] = lambda rel: f"file {rel}") -> None:
    """Every file of a manifest is there with its size (and digest when recorded);
    ``describe`` names a file in the error, ``remedy`` says what to delete."""
    for rel, entry in files.items():
        path = root / rel
        if not path.is_file():
            raise DarsError(f"{root}: {describe(rel)} is missing; {remedy}")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise DarsError(f"{root}: {describe(rel)} has {size} bytes, the manifest says "
                            f"{entry.get('size')} (truncated or replaced); {remedy}")
        if "blake2b" in entry and digest(path.read_bytes()) != entry["blake2b"]:
            raise DarsError(f"{root}: {describe(rel)} changed after it was written (digest "
                            f"mismatch); {remedy}")
