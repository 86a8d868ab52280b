"""Pass 2: turn one image's prediction and confidence into pseudo labels (255 = ignore).

Randomness is a pure function of (seed, image id, pixel): pixel i (raster order over the
image's own h x w) of an image with key k gets the 24-bit uniform ``fmix32((i * PHI) ^ k) >> 8``
(MurmurHash3's finaliser of a Weyl sequence, as in SplitMix). An image therefore gets the same
labels whatever the shard count, block, processing order or number of workers, and a block's
uniforms are computed in one vectorised pass -- a seeded numpy Generator per image cost 40 us of
set-up alone, more than labelling a 64 x 64 image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from dars.constants import IGNORE, ONE_BITS, PAD
from dars.errors import DarsError
from dars.pseudo.thresholds import NONE_BITS, Thresholds

_INVALID_CLASS = 0xFFFF  # threshold-table entry of classes C..254: above every other entry
_CHUNK = 1 << 18  # pixels per vectorised step: the temporaries stay in cache
_PHI = np.uint32(0x9E3779B9)  # 2^32 / golden ratio: the Weyl step between pixels' counters
_UNIFORM_BITS = 24  # a keep probability p is exact to 2^-24, as with float32 uniforms
_SEED_LIMIT = 1 << 64
# assign_block writes (keep - 1) | class: a dropped pixel becomes all ones, which is IGNORE
assert IGNORE == 0xFF


def image_key(seed: int, image_id: str) -> int:
    """The 32-bit key of one image's uniforms: blake2b of the id, keyed with the seed.

    Stable across runs, platforms and Pythons (Python's ``hash`` of a str is salted per
    process); distinct seeds or ids give unrelated keys.
    """
    if (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
            or not 0 <= seed < _SEED_LIMIT):
        raise DarsError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=4,
                             key=int(seed).to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little")


def _uniform_bits(counters: np.ndarray) -> np.ndarray:
    """24-bit uniforms from uint32 counters: MurmurHash3's 32-bit finaliser (a bijection with
    full avalanche), top bits kept. ``counters`` is left as it is."""
    x = counters >> 16
    x ^= counters
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> 13
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> 16
    x >>= 32 - _UNIFORM_BITS
    return x


def image_uniforms(key: int, shape: tuple[int, int]) -> np.ndarray:
    """The uniforms in [0, 1) that :func:`assign_labels` draws for an image of ``shape``.

    For tests and for anyone re-deriving a label: pixel (y, x) is kept when its uniform is
    below its keep probability.
    """
    h, w = shape
    x = np.arange(h * w, dtype=np.uint32) * _PHI ^ np.uint32(key)
    return (_uniform_bits(x) / 2.0**_UNIFORM_BITS).reshape(h, w)


def _counters(keys: Sequence[int], shapes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, H * W) uint32 ``(i * PHI) ^ key`` of every pixel, i its raster index in its image.

    Padding gets values too; they are never used (padding selects nothing).
    """
    ws = shapes[:, 1].astype(np.uint32)
    if np.all(ws == width):  # no padding on the right: i is the position in the padded image
        index = np.arange(height * width, dtype=np.uint32)[None, :]
    else:
        rows = np.arange(height, dtype=np.uint32)[None, :, None]
        cols = np.arange(width, dtype=np.uint32)[None, None, :]
        index = (rows * ws[:, None, None] + cols).reshape(len(ws), -1)
    return index * _PHI ^ np.asarray(keys, np.uint32)[:, None]


def _probability_table(p: np.ndarray) -> np.ndarray:
    """Keep probabilities as 24-bit integer limits (keep when uniform < limit), by class."""
    return _lut(np.round(np.asarray(p, np.float64) * 2**_UNIFORM_BITS), 0, np.uint32)


def assign_labels(prediction: np.ndarray, confidence: np.ndarray, thresholds: Thresholds,
                  key: int) -> np.ndarray:
    """Pseudo labels of one (unpadded) image as uint8, IGNORE where no label is kept.

    A pixel predicted j is selected when its confidence is >= t_j; a selected pixel is kept
    with ``keep_above[j]`` or, when tied exactly at t_j, ``keep_at[j]``, against its uniform
    from :func:`image_uniforms` (``key`` from :func:`image_key`).
    """
    if prediction.shape != confidence.shape or prediction.ndim != 2:
        raise DarsError(f"prediction {prediction.shape} and confidence {confidence.shape} "
                        "must be equal 2-D shapes")
    labels, _ = assign_block(prediction[None], confidence[None], thresholds, [key],
                             np.asarray([prediction.shape]))
    return labels[0]


def assign_block(prediction: np.ndarray, confidence: np.ndarray, thresholds: Thresholds,
                 keys: Sequence[int], shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`assign_labels` of a block of padded images (B, H, W) at once, with the number of
    labels kept per class 0..C-1.

    Image j's real pixels are ``[:h_j, :w_j]`` (``shapes[j]``) and its uniforms come from
    ``keys[j]`` exactly as :func:`assign_labels` draws them, so labels never depend on how
    images are grouped. Padding (prediction PAD) gets IGNORE. One vectorised pass over the
    block replaces a dozen small numpy calls per image, which is what dominates on datasets of
    small images; it runs in cache-sized pieces (4x faster than whole-block operations).
    """
    c = thresholds.num_classes
    pred = np.ascontiguousarray(prediction, dtype=np.uint8)
    bits = np.ascontiguousarray(confidence, dtype=np.float16).view(np.uint16)
    if bits.size and bits.max() > ONE_BITS:
        raise DarsError("confidences are NaN, infinite or outside [0, 1]")
    table = _lut(thresholds.threshold_bits, _INVALID_CLASS, np.uint16)
    table[PAD] = NONE_BITS  # padding: selects nothing
    counters = above = at = None
    if thresholds.samples:
        counters = _counters(keys, np.asarray(shapes), *pred.shape[1:]).reshape(-1)
        above = _probability_table(thresholds.keep_above)
        if np.any(thresholds.keep_at != thresholds.keep_above):
            at = _probability_table(thresholds.keep_at)
    out = np.empty(pred.shape, np.uint8)
    # Labels are counted in byte pairs (uint16 views): half the bincount work, and a run of one
    # class -- every label map is mostly runs -- serialises increments of one counter.
    pairs = np.zeros(1 << 16, np.int64)
    counts = np.zeros(PAD + 1, np.int64)  # the odd last label, if any
    flat = pred.reshape(-1), bits.reshape(-1), out.reshape(-1)
    for s in range(0, pred.size, _CHUNK):
        p, b, o = (x[s:s + _CHUNK] for x in flat)
        limit = np.take(table, p, mode="wrap")  # the threshold, and the validity check
        if limit.max() == _INVALID_CLASS:
            bad = int(p[(p >= c) & (p != PAD)].max())
            raise DarsError(f"prediction holds class {bad}, outside 0..{c - 1}")
        keep = b >= limit
        if counters is not None:
            prob = np.take(above, p, mode="wrap")
            if at is not None:
                prob = np.where(b == limit, np.take(at, p, mode="wrap"), prob)
            keep &= _uniform_bits(counters[s:s + _CHUNK]) < prob
        np.subtract(keep.view(np.uint8), 1, out=o)  # kept: 0, dropped: 0xFF
        o |= p
        even = o.size & ~1  # chunks start at even offsets, so the uint16 view is aligned
        pairs += np.bincount(o[:even].view(np.uint16), minlength=1 << 16)
        if o.size & 1:
            counts[o[-1]] += 1
    grid = pairs.reshape(PAD + 1, PAD + 1)
    counts += grid.sum(axis=0) + grid.sum(axis=1)  # each byte of a pair is one label
    return out, counts[:c]


def _lut(values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
    """A 256-entry table indexed by predicted class: np.take on uint8 beats fancy indexing, and
    with mode="wrap" (a no-op, a uint8 is always < 256) skips the bounds check (1.3 vs 3 ns)."""
    table = np.full(PAD + 1, fill, dtype)
    table[:len(values)] = values
    return table
