"""The PNG writer of the project: label masks (pseudo labels, the demo's masks) and RGB images.

Pillow reads the masks and OpenCV the images (:mod:`dars.data.io`); writing is done directly
because the pseudo-label stage writes one PNG per unlabeled image and Pillow's encoder was its
largest cost (see :func:`png_bytes`). Kept apart from :mod:`dars.data.io` so that reading data
(all a GPU job needs) does not import ISA-L.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
from isal import isal_zlib

from dars.errors import DarsError


def png_bytes(array: np.ndarray, level: int = 0) -> bytes:
    """PNG of a uint8 (H, W) index mask or (H, W, 3) RGB image: 8-bit greyscale or RGB.

    Written here rather than by Pillow, which reads the masks in this project: the
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
    rows = np.empty((h, 1 + array[0].size if h else 1), np.uint8)
    rows[:, 0] = 0  # filter type 0 (None) on every row
    rows[:, 1:] = array.reshape(h, -1)
    data = isal_zlib.compress(rows, level)
    return b"".join((_head(w, h, array.ndim == 3), _png_chunk(b"IDAT", data), _PNG_END))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LENGTH, _LENGTH_TAG = struct.Struct(">I").pack, struct.Struct(">I4s").pack


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    """length, tag, data, crc32 of tag + data (PNG spec, section 5.3)."""
    crc = isal_zlib.crc32(data, isal_zlib.crc32(tag))
    return b"".join((_LENGTH_TAG(len(data), tag), data, _LENGTH(crc)))


@functools.lru_cache(maxsize=256)
def _head(width: int, height: int, rgb: bool) -> bytes:
    """Signature and IHDR of an 8-bit greyscale (or RGB) image: the same for every label of a
    dataset's image size, so made once per size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header)


_PNG_END = _png_chunk(b"IEND", b"")
