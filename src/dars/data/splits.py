"""Split files, ``image_relpath label_relpath`` per line (the official DARS format); shared
between people and clusters, so an absolute path or ``..`` is refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dars.core.errors import DarsError


@dataclass(frozen=True)
class Sample:
    """One image of a split; ``mask`` is None for unlabeled lists without masks."""

    id: str  # the file name without extension (unique in Cityscapes, VOC and the demo)
    image: Path
    mask: Path | None


def _safe_join(root: Path, rel: str, split_file: Path, lineno: int) -> Path:
    rel_path = PurePosixPath(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        raise DarsError(f"{split_file}:{lineno}: path {rel!r} must be relative to the dataset root "
                        "without '..'")
    return root / rel_path


def locate_split(root: Path, split_file: str | Path) -> Path:
    """The split file: absolute, or relative to the dataset root, else to the working directory
    (where the official splits ship, ``config/splits/``)."""
    split_path = Path(split_file)
    candidates = [split_path] if split_path.is_absolute() else [root / split_path, split_path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DarsError(f"split file not found: {' or '.join(str(c) for c in candidates)}")


def read_split(root: str | Path, split_file: str | Path, require_masks: bool = True,
               resolve_mask: Callable[[Path], Path] | None = None) -> list[Sample]:
    """Parse a split file, checking that every listed file exists; ``resolve_mask`` may
    substitute a listed mask (:meth:`dars.data.definitions.DatasetDefinition.resolve_mask`)."""
    root = Path(root)
    if not root.is_dir():
        raise DarsError(f"dataset root not found: {root}")
    split_path = locate_split(root, split_file)
    samples: list[Sample] = []
    for lineno, line in enumerate(split_path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or (require_masks and len(parts) != 2):
            raise DarsError(f"{split_path}:{lineno}: expected 'image_relpath label_relpath', "
                            f"got {line!r}")
        image = _safe_join(root, parts[0], split_path, lineno)
        mask = _safe_join(root, parts[1], split_path, lineno) if len(parts) == 2 else None
        if mask is not None and resolve_mask is not None:
            mask = resolve_mask(mask)
        for f in (image, mask):
            if f is not None and not f.is_file():
                raise DarsError(f"{split_path}:{lineno}: file not found: {f}")
        samples.append(Sample(PurePosixPath(parts[0]).stem, image, mask))
    if not samples:
        raise DarsError(f"split file {split_path} lists no images")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DarsError(f"split file {split_path} lists image id {dup!r} twice")
    return samples
