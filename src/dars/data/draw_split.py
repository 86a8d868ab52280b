"""``dars split``: a seeded labeled/unlabeled split of a dataset's training images, found with a
pattern such as ``leftImg8bit/train/{city}/{frame}_leftImg8bit.png`` (a ``{field}`` matches part
of one path component), masks with one reusing its fields. Images of the val split or without a
mask (VOC has many) are never drawn. The output is sorted, in the official line format, so a
split is a reviewable artifact."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from dars.core.errors import DarsError
from dars.core.options import DatasetOptions
from dars.data.dataset import dataset_spec
from dars.data.splits import locate_split, read_split
from dars.store.artifacts import atomic_path

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (image_relpath, mask_relpath), POSIX, relative to the dataset root

_FIELD = re.compile(r"\{(\w+)\}")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex for a pattern; a field used twice must match the same text both times."""
    regex, seen = "", set()
    for i, part in enumerate(_FIELD.split(pattern)):  # text, field name, text, ...
        if i % 2 == 0:
            regex += re.escape(part)
        else:
            regex += f"(?P={part})" if part in seen else f"(?P<{part}>[^/]+?)"
            seen.add(part)
    return re.compile(regex + r"\Z")


def discover_pairs(root: Path, image_pattern: str, mask_pattern: str,
                   mask_exists: Callable[[Path], bool] = Path.is_file) -> list[Pair]:
    """All (image, mask) pairs under ``root`` matching the patterns, sorted by image path."""
    missing = set(_FIELD.findall(mask_pattern)) - set(_FIELD.findall(image_pattern))
    if missing:
        raise DarsError(f"dataset.mask_pattern uses {sorted(missing)}, which "
                        f"dataset.image_pattern {image_pattern!r} does not define")
    regex = _pattern_regex(image_pattern)
    pairs = []
    for path in sorted(root.glob(_FIELD.sub("*", image_pattern))):
        rel = path.relative_to(root).as_posix()
        match = regex.match(rel)
        if match is None:
            continue
        mask = mask_pattern.format(**match.groupdict())
        if mask_exists(root / mask):
            pairs.append((rel, mask))
    return pairs


def labeled_count(spec: str, total: int) -> int:
    """Labeled images for ``--labeled``: a count ("1464") or a fraction ("1/8", "0.125"),
    rounded to the nearest image as the official splits do (2975/8 → 372)."""
    try:
        count = int(spec) if spec.isdigit() else round(Fraction(spec) * total)
    except (ValueError, ZeroDivisionError) as exc:
        raise DarsError(f"--labeled {spec!r}: give a count (1464) or a fraction (1/8)") from exc
    if not 0 < count < total:
        raise DarsError(f"--labeled {spec!r} gives {count} labeled of {total} images; need "
                        "at least one labeled and one unlabeled image")
    return count


def write_split(path: Path, pairs: list[Pair]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{image} {mask}\n" for image, mask in pairs))


def make_split(dataset: DatasetOptions, labeled: str, seed: int, out_labeled: Path,
               out_unlabeled: Path, image_pattern: str | None = None,
               mask_pattern: str | None = None) -> tuple[int, int]:
    """Discover the dataset's training pairs, split and write them. The patterns (None: the
    dataset's defaults) say where to look, not what a split is, so they are arguments, not
    options (``dataset.image_pattern``/``mask_pattern``)."""
    spec = dataset_spec(dataset)
    definition = spec.definition
    image_pattern = image_pattern or definition.image_pattern
    mask_pattern = mask_pattern or definition.mask_pattern
    if not image_pattern or not mask_pattern:
        raise DarsError(f"dataset {dataset.name!r} has no default file patterns; set "
                        "dataset.image_pattern and dataset.mask_pattern")
    pairs = discover_pairs(spec.root, image_pattern, mask_pattern,
                           lambda p: definition.resolve_mask(p).is_file())
    try:
        val_file = locate_split(spec.root, spec.splits["val"])
    except DarsError:
        log.info("no val split %s found: nothing excluded", spec.splits["val"])
    else:
        val = {s.image for s in read_split(spec.root, val_file, require_masks=False,
                                           resolve_mask=definition.resolve_mask)}
        pairs = [p for p in pairs if spec.root / p[0] not in val]
        log.info("excluded the images of val split %s", val_file)
    if not pairs:
        raise DarsError(f"no image under {spec.root} matches {image_pattern!r} with a mask "
                        f"at {mask_pattern!r}")
    count = labeled_count(labeled, len(pairs))
    drawn = set(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False))
    chosen = [p for i, p in enumerate(pairs) if i in drawn]
    rest = [p for i, p in enumerate(pairs) if i not in drawn]
    write_split(out_labeled, chosen)
    write_split(out_unlabeled, rest)
    log.info("%d labeled → %s, %d unlabeled → %s (seed %d)", len(chosen), out_labeled,
             len(rest), out_unlabeled, seed)
    return len(chosen), len(rest)
