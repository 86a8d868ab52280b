"""PASCAL VOC 2012 with the SBD-augmented masks (``SegmentationClassAug``): 21 classes.

Layout under the dataset root::

    JPEGImages/<id>.jpg
    SegmentationClassAug/<id>.png   (10,582 train_aug masks + val; 0..20, 255 = boundary)
    SegmentationClass/<id>.png      (the 2,913 original palette masks, optional)

Masks are palette or grayscale PNGs whose pixel values already are class indices;
:func:`dars.data.images.read_mask` reads palette PNGs as indices, so no table is needed. Image sizes
vary (about 500x375); every stage handles that (see :mod:`dars.engine.predict`).
"""

from __future__ import annotations

from dars.core.constants import IGNORE
from dars.data.definitions import DatasetDefinition

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

VOC = DatasetDefinition(
    name="voc",
    classes=CLASSES,
    ignore_index=IGNORE,
    image_pattern="JPEGImages/{id}.jpg",
    mask_pattern="SegmentationClassAug/{id}.png",
)
