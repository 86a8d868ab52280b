"""Cityscapes (gtFine): 19 training classes, raw label ids mapped to training ids on read.

Layout under the dataset root, as downloaded::

    leftImg8bit/{train,val}/<city>/<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<frame>_gtFine_labelIds.png        (34 raw ids)
    gtFine/{train,val}/<city>/<frame>_gtFine_labelTrainIds.png   (optional, cityscapesScripts)

The id → trainId table is the official one (cityscapesScripts ``labels.py``); every id without
a training id (unlabeled, ego vehicle, parking, rail track, guard rail, bridge, tunnel,
polegroup, caravan, trailer, ...) becomes 255.
"""

from __future__ import annotations

import numpy as np

from dars.core.constants import IGNORE
from dars.data.definitions import DatasetDefinition

CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# labelId of each training id 0..18 (cityscapesScripts labels.py, column "id")
LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

def label_id_to_train_id() -> np.ndarray:
    """uint8[256] table: raw Cityscapes label id → training id (255 where none)."""
    lut = np.full(256, IGNORE, np.uint8)
    lut[list(LABEL_IDS)] = np.arange(len(LABEL_IDS), dtype=np.uint8)
    return lut


CITYSCAPES = DatasetDefinition(
    name="cityscapes",
    classes=CLASSES,
    ignore_index=IGNORE,
    image_pattern="leftImg8bit/train/{city}/{frame}_leftImg8bit.png",
    mask_pattern="gtFine/train/{city}/{frame}_gtFine_labelTrainIds.png",
    label_maps={"_gtFine_labelIds.png": label_id_to_train_id()},
    mask_fallbacks=(("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"),),
)
