"""Reading images and index masks with checks that name the offending file; writing PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.data.definitions import label_map_for


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3); a corrupt or unreadable file is a DarsError naming it.
    PNGs go through OpenCV, as the authors' (twice as fast as Pillow on Cityscapes), other
    formats through Pillow, which refuses a truncated JPEG (OpenCV would fill it with grey)."""
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
    """Index mask (H, W) uint8 in [0, num_classes) or :data:`IGNORE`: ``ignore_index`` and raw
    id spaces (:mod:`dars.data.definitions`) are mapped here, so no later stage knows them. An
    RGB mask is refused: its colours are not class indices and would silently corrupt training."""
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


#: A palette that shows index i as grey level i: a palette mask looks like a greyscale one.
_GREY = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))


def png_bytes(array: np.ndarray) -> bytes:
    """PNG (Pillow, zlib level 1) of a uint8 index mask (H, W) or RGB image (H, W, 3). A mask is
    a grey-palette image: Pillow tries five row filters on a greyscale one (4x slower on 2-Mpx
    label maps), none on a palette one, whose indices every reader takes as the mask."""
    if array.dtype != np.uint8 or not (array.ndim == 2 or array.ndim == 3
                                       and array.shape[2] == 3):
        raise DarsError(f"a PNG is written from uint8 (H, W) or (H, W, 3), got {array.dtype} "
                        f"{array.shape}")
    image = Image.fromarray(array, "RGB" if array.ndim == 3 else "P")
    if array.ndim == 2:
        image.putpalette(_GREY)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
