"""Dataset definitions: what each supported dataset fixes (classes, ignore value, label ids).

A definition is the one place where a dataset's facts live -- class names, the mask value that
means "no label", how raw label files map to training ids, where split discovery looks for
files. Stages ask the definition (via :class:`dars.data.dataset.DatasetSpec`) instead of
branching on ``dataset.name``, so adding a dataset is adding one definition (to
:mod:`dars.data.registry`).

``label_maps`` are keyed by mask-file suffix because in the datasets we support the file name
states which id space the file is in (Cityscapes' ``*_gtFine_labelIds.png`` always holds the 34
raw label ids); :func:`dars.data.images.read_mask` applies them wherever a mask is read, so the
label histogram, training, evaluation and pseudo-label precision all see training ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, eq=False)
class DatasetDefinition:
    """Facts about one kind of dataset; empty/None fields are taken from the config.

    Definitions are registered singletons, compared by identity (``eq=False``: their label
    tables are arrays, which have no truth value).
    """

    name: str
    classes: tuple[str, ...] = ()
    """Class names in training-id order; empty = ``dataset.classes`` or ``<root>/classes.txt``."""
    ignore_index: int | None = None
    """Mask value meaning "no label" that the data itself uses; None = ``dataset.ignore_index``."""
    image_pattern: str | None = None
    """Default ``dars split`` discovery pattern for images (see :mod:`dars.data.draw_split`)."""
    mask_pattern: str | None = None
    label_maps: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Mask-file suffix → uint8 look-up table (256 entries) from stored values to training ids."""
    mask_fallbacks: tuple[tuple[str, str], ...] = ()
    """(listed suffix, substitute suffix): read the substitute when the listed mask is absent."""

    def __post_init__(self) -> None:
        for suffix, lut in self.label_maps.items():  # masks are 8-bit PNGs
            if lut.shape != (256,) or lut.dtype != np.uint8:
                raise ValueError(f"label map {suffix!r} of {self.name} must be uint8[256]")

    def resolve_mask(self, path: Path) -> Path:
        """The file to read for a listed mask: itself, or a substitute in another id space.

        The official DARS Cityscapes splits list ``*_gtFine_labelTrainIds.png``, which only
        exist after running cityscapesScripts; the raw ``*_gtFine_labelIds.png`` of the
        download are read (and mapped) instead, so the user need not convert anything.
        """
        if path.is_file():
            return path
        for listed, substitute in self.mask_fallbacks:
            if path.name.endswith(listed):
                alt = path.with_name(path.name[: -len(listed)] + substitute)
                if alt.is_file():
                    return alt
        return path
