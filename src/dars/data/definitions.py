"""Dataset definitions: what each supported dataset fixes (classes, ignore value, label ids).

A definition is the one place where a dataset's facts live -- class names, the mask value that
means "no label", how raw label files map to training ids, where split discovery looks for
files. Stages ask the definition (via :class:`dars.data.dataset.DatasetSpec`) instead of
branching on ``dataset.name``, so adding a dataset is adding one definition.

``label_maps`` are keyed by mask-file suffix because in the datasets we support the file name
states which id space the file is in (Cityscapes' ``*_gtFine_labelIds.png`` always holds the 34
raw label ids); :func:`dars.data.io.read_mask` applies them wherever a mask is read, so the
label histogram, training, evaluation and pseudo-label precision all see training ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dars.errors import DarsError


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
    """Default ``dars split`` discovery pattern for images (see :mod:`dars.split`)."""
    mask_pattern: str | None = None
    label_maps: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Mask-file suffix → uint8 look-up table (256 entries) from stored values to training ids."""
    mask_fallbacks: tuple[tuple[str, str], ...] = ()
    """(listed suffix, substitute suffix): read the substitute when the listed mask is absent."""

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


_REGISTRY: dict[str, DatasetDefinition] = {}


def register_dataset(definition: DatasetDefinition) -> DatasetDefinition:
    """Add a definition; label maps must be 256-entry uint8 tables (masks are 8-bit PNGs)."""
    for suffix, lut in definition.label_maps.items():
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(f"label map {suffix!r} of {definition.name} must be uint8[256]")
    _REGISTRY[definition.name] = definition
    return definition


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def get_definition(name: str) -> DatasetDefinition:
    """The registered definition; an unknown name lists the known ones."""
    if name not in _REGISTRY:
        raise DarsError(f"dataset.name {name!r} is not defined; known: {dataset_names()}")
    return _REGISTRY[name]


def label_map_for(path: Path) -> np.ndarray | None:
    """The look-up table for a mask file whose name marks a raw id space, else None."""
    for definition in _REGISTRY.values():
        for suffix, lut in definition.label_maps.items():
            if path.name.endswith(suffix):
                return lut
    return None


register_dataset(DatasetDefinition(name="demo"))
register_dataset(DatasetDefinition(name="folder"))

from dars.data import cityscapes as _cityscapes  # noqa: E402,F401  (registers cityscapes)
from dars.data import voc as _voc  # noqa: E402,F401  (registers voc)
