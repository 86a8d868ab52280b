"""The supported datasets by name: the generic ones and those whose files fix their facts.

Kept apart from :mod:`dars.data.definitions` (the definition type) so that the dataset modules
import the type and this module imports them, without a cycle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dars.core.errors import DarsError
from dars.data.cityscapes import CITYSCAPES
from dars.data.definitions import DatasetDefinition
from dars.data.voc import VOC

_REGISTRY: dict[str, DatasetDefinition] = {
    d.name: d for d in (DatasetDefinition(name="demo"), DatasetDefinition(name="folder"),
                        CITYSCAPES, VOC)
}


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
