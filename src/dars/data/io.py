"""Reading images and index masks with checks that name the offending file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from dars.constants import IGNORE
from dars.data.registry import label_map_for
from dars.errors import DarsError


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3); a corrupt or unreadable file is a DarsError naming it.

    PNGs (Cityscapes' images) are decoded by OpenCV, as the authors do: twice as fast as
    Pillow on a 1024 x 2048 image (benchmarks/RESULTS.md), the same pixels for 8-bit files,
    and a truncated file is refused. Other formats go through Pillow, which also refuses a
    truncated JPEG (libjpeg under OpenCV would fill the missing part with grey).
    """
    if Path(path).suffix.lower() == ".png":
        image = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            raise DarsError(f"cannot read image {path}: missing, truncated or not a PNG")
        return image
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DarsError(f"cannot read image {path}: {exc}") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(h, w) from the image header without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DarsError(f"cannot read image {path}: {exc}") from exc
    return h, w


def read_mask(path: Path, num_classes: int, ignore_index: int) -> np.ndarray:
    """Index mask (H, W) uint8 with values in [0, num_classes) or :data:`IGNORE`.

    The file's ``ignore_index`` (the dataset's "no label" value) becomes IGNORE here, so no
    later stage needs to know which value a dataset uses.

    Palette ("P") PNGs are read as indices, as VOC stores them. An RGB mask is refused: its
    colours are not class indices and reading them as such silently corrupts training. A file
    whose name marks a raw id space (Cityscapes ``*_gtFine_labelIds.png``) is mapped to training
    ids here, so every stage that reads masks sees the same ids (see
    :mod:`dars.data.definitions`).
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DarsError(f"mask {path} has mode {im.mode}; expected a single-channel "
                                "index mask (L or P)")
            mask = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DarsError(f"cannot read mask {path}: {exc}") from exc
    lut = label_map_for(Path(path))
    if lut is not None:
        if mask.dtype != np.uint8:
            raise DarsError(f"mask {path} is not an 8-bit PNG, but its name marks raw label ids")
        mask = lut[mask]
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = sorted(int(v) for v in np.unique(mask[bad]))[:5]
        raise DarsError(f"mask {path} has values {values} outside [0, {num_classes}) and "
                        f"ignore {ignore_index} (class count in config does not match the data?)")
    return np.where(mask == ignore_index, IGNORE, mask).astype(np.uint8)
