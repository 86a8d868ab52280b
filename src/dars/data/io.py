"""Reading images and index masks with checks that name the offending file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from isal import isal_zlib
from PIL import Image, UnidentifiedImageError

from dars.constants import IGNORE
from dars.data.registry import label_map_for
from dars.errors import DarsError


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3); a corrupt or unreadable file is a DarsError naming it."""
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


def png_bytes(array: np.ndarray, level: int = 0) -> bytes:
    """PNG of a uint8 (H, W) index mask or (H, W, 3) RGB image: 8-bit greyscale or RGB.

    Written here rather than by Pillow, which reads every PNG in this project: the
    pseudo-label stage writes one PNG per unlabeled image, and Pillow's encoder (zlib, with
    each row's filter chosen by trying all five) was its largest cost -- about 150 us of
    overhead per 64 x 64 mask and 27 ns a pixel on 1024 x 2048 ones, against 12 us and 3 ns
    here (benchmarks/RESULTS.md). The file is the plainest valid PNG: signature, IHDR, one
    IDAT of rows with filter type 0 deflated by ISA-L, IEND. ``level`` is ISA-L's 0-3, fastest
    to smallest: 0 is twice as fast as 1 on small masks for files ~15 % larger.
    """
    if array.dtype != np.uint8 or not (array.ndim == 2 or array.ndim == 3
                                       and array.shape[2] == 3):
        raise DarsError(f"a PNG is written from uint8 (H, W) or (H, W, 3), got {array.dtype} "
                        f"{array.shape}")
    h, w = array.shape[:2]
    rows = np.zeros((h, 1 + array[0].size if h else 1), np.uint8)  # column 0: filter type 0
    rows[:, 1:] = array.reshape(h, -1)
    header = struct.pack(">IIBBBBB", w, h, 8, 0 if array.ndim == 2 else 2, 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", isal_zlib.compress(rows, level)), _PNG_END))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    """length, tag, data, crc32 of tag + data (PNG spec, section 5.3)."""
    crc = isal_zlib.crc32(data, isal_zlib.crc32(tag))
    return b"".join((struct.pack(">I", len(data)), tag, data, struct.pack(">I", crc)))


_PNG_END = _png_chunk(b"IEND", b"")
