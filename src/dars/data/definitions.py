"""Dataset definitions: what each supported dataset fixes (class names, the "no label" value,
raw label ids -> training ids, where ``dars split`` looks), so no stage branches on
``dataset.name``. ``label_maps`` are keyed by mask-file suffix, which states the id space
(Cityscapes' ``*_gtFine_labelIds.png``); :func:`dars.data.images.read_mask` applies them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dars.core.constants import IGNORE
from dars.core.errors import DarsError


@dataclass(frozen=True, eq=False)
class DatasetDefinition:
    """Facts about one kind of dataset; empty/None fields are taken from the config. Compared
    by identity (``eq=False``): the label tables are arrays, which have no truth value."""

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

    def resolve_mask(self, path: Path) -> Path:
        """The listed mask, or a substitute in another id space: the official DARS Cityscapes
        splits list ``*_gtFine_labelTrainIds.png``, which only cityscapesScripts makes, so the
        downloaded ``*_gtFine_labelIds.png`` are read (and mapped) instead."""
        if path.is_file():
            return path
        for listed, substitute in self.mask_fallbacks:
            if path.name.endswith(listed):
                alt = path.with_name(path.name[: -len(listed)] + substitute)
                if alt.is_file():
                    return alt
        return path


# Cityscapes (gtFine), as downloaded: leftImg8bit/{train,val}/<city>/<frame>_leftImg8bit.png,
# gtFine/.../<frame>_gtFine_labelIds.png (34 raw ids) and, after cityscapesScripts,
# <frame>_gtFine_labelTrainIds.png. Every raw id without a training id becomes 255.
#: labelId of each training id 0..18 (cityscapesScripts labels.py, column "id")
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
_CITYSCAPES_LUT = np.full(256, IGNORE, np.uint8)
_CITYSCAPES_LUT[list(CITYSCAPES_LABEL_IDS)] = np.arange(len(CITYSCAPES_LABEL_IDS))

CITYSCAPES = DatasetDefinition(
    name="cityscapes",
    classes=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
             "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
             "bus", "train", "motorcycle", "bicycle"),
    ignore_index=IGNORE,
    image_pattern="leftImg8bit/train/{city}/{frame}_leftImg8bit.png",
    mask_pattern="gtFine/train/{city}/{frame}_gtFine_labelTrainIds.png",
    label_maps={"_gtFine_labelIds.png": _CITYSCAPES_LUT},
    mask_fallbacks=(("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"),),
)

# PASCAL VOC 2012 with the SBD-augmented masks: JPEGImages/<id>.jpg and
# SegmentationClassAug/<id>.png (palette or grey PNGs whose values already are class indices,
# 255 = boundary), so no table is needed. Image sizes vary (about 500x375).
VOC = DatasetDefinition(
    name="voc",
    classes=("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
             "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
             "pottedplant", "sheep", "sofa", "train", "tvmonitor"),
    ignore_index=IGNORE,
    image_pattern="JPEGImages/{id}.jpg",
    mask_pattern="SegmentationClassAug/{id}.png",
)

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
