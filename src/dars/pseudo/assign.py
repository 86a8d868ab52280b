"""Pass 2: turn images' predictions and confidences into pseudo labels (255 = ignore).

Randomness is a pure function of (seed, image id, pixel): pixel i (raster order over the
image's own h x w) of an image with key k gets the 24-bit uniform ``fmix32((i * PHI) ^ k) >> 8``
(MurmurHash3's finaliser of a Weyl sequence, as in SplitMix). An image therefore gets the same
labels whatever the shard count, block, processing order or number of workers.

Labelling is one compiled pass (numba) over a block of images: per pixel two table lookups,
the hash, two comparisons written without branches, and the count. The numpy formulation it
replaced made ~20 passes over each piece of a block (6-12 ns a pixel on the benchmark
machine); this one costs ~5 ns and holds no GIL, so one worker labels a block while another
writes PNGs (benchmarks/RESULTS.md). numba compiles it on a machine's first run (~1 s) and
caches the machine code beside this file (or in ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numba
import numpy as np

from dars.constants import IGNORE, ONE_BITS, PAD
from dars.errors import DarsError
from dars.pseudo.thresholds import NONE_BITS, Thresholds

_INVALID_CLASS = 0xFFFF  # threshold-table entry of classes C..254: above every other entry
_UNIFORM_BITS = 24  # a keep probability p is exact to 2^-24, as with float32 uniforms
_SEED_LIMIT = 1 << 64
_LANES = 4  # counters per class in the kernel: a run of one class spreads over four of them
# the kernel's integer constants, typed so numba keeps every step in uint64
_PHI = np.uint64(0x9E3779B9)  # 2^32 / golden ratio: the Weyl step between pixels' counters
_M1, _M2 = np.uint64(0x85EBCA6B), np.uint64(0xC2B2AE35)  # fmix32's multipliers
_LOW32, _FF, _ONE = np.uint64(0xFFFFFFFF), np.uint64(0xFF), np.uint64(1)
_S8, _S13, _S16, _S63 = (np.uint64(s) for s in (32 - _UNIFORM_BITS, 13, 16, 63))
_ONE_BITS = np.uint64(ONE_BITS)


class InvalidPixels(DarsError):
    """A pixel no label can come from; ``image`` is its image's index in the block."""

    def __init__(self, message: str, image: int) -> None:
        super().__init__(message)
        self.image = image


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


@numba.njit(inline="always")
def _uniform_bits(index: np.uint64, key: np.uint64) -> np.uint64:
    """The 24-bit uniform of raster index ``index`` under ``key``: MurmurHash3's 32-bit
    finaliser (a bijection with full avalanche) of ``(index * PHI) ^ key``, top bits kept."""
    x = ((index * _PHI) & _LOW32) ^ key
    x ^= x >> _S16
    x = (x * _M1) & _LOW32
    x ^= x >> _S13
    x = (x * _M2) & _LOW32
    x ^= x >> _S16
    return x >> _S8


@numba.njit(cache=True, nogil=True)
def _uniforms_kernel(key: np.uint64, out: np.ndarray) -> None:
    for i in range(out.size):
        out[i] = _uniform_bits(np.uint64(i), key)


def image_uniforms(key: int, shape: tuple[int, int]) -> np.ndarray:
    """The uniforms in [0, 1) that :func:`assign_labels` draws for an image of ``shape``.

    For tests and for anyone re-deriving a label: pixel (y, x) is kept when its uniform is
    below its keep probability.
    """
    h, w = shape
    bits = np.empty(h * w, np.uint64)
    _uniforms_kernel(np.uint64(key), bits)
    return (bits / 2.0**_UNIFORM_BITS).reshape(h, w)


@numba.njit(cache=True, nogil=True)
def _label_kernel(pred: np.ndarray, bits: np.ndarray, shapes: np.ndarray, keys: np.ndarray,
                  limits: np.ndarray, keep: np.ndarray, out: np.ndarray, counts: np.ndarray
                  ) -> int:
    """Labels of a padded (B, H, W) block into ``out``, counts by lane * 256 + label into
    ``counts``; returns the index of the first image holding an invalid pixel, or -1.

    ``limits[p]``: t_j's bits for class p (_INVALID_CLASS beyond C); ``keep[2p + tied]``: the
    24-bit keep limit above / at t_j. Branch-free by construction: which pixels survive is
    random, so a branch on it mispredicts about half the time (2x slower). The comparisons
    are written as the sign bit of a uint64 difference of table values -- a form LLVM cannot
    turn back into a branch, as it did with ``a < b`` on values it knew to be small.
    """
    width = pred.shape[2]
    for j in range(pred.shape[0]):
        h, w = shapes[j, 0], shapes[j, 1]
        key = np.uint64(keys[j])
        out[j, h:, :] = IGNORE  # padding, below and right of the image
        out[j, :h, w:] = IGNORE
        p_row, b_row, o_row = pred[j].ravel(), bits[j].ravel(), out[j].ravel()
        bad = np.uint64(0)
        for y in range(h):
            start = y * width
            index = np.uint64(y * w)  # raster index within the image's own h x w
            for x in range(w):
                p = np.intp(p_row[start + x])
                b = np.uint64(b_row[start + x])
                limit = limits[p]
                bad |= np.uint64(limit == _INVALID_CLASS) | np.uint64(b > _ONE_BITS)
                below = (b - limit) >> _S63  # 1: not selected
                draw = (_uniform_bits(index + np.uint64(x), key)
                        - keep[(p << 1) | np.intp(b == limit)]) >> _S63  # 1: kept
                label = np.intp((np.uint64(p) | (below | (draw ^ _ONE)) * _FF) & _FF)
                o_row[start + x] = label
                counts[((x & (_LANES - 1)) << 8) | label] += 1
        if bad:
            return j
    return -1


def _probability_table(p: np.ndarray) -> np.ndarray:
    """Keep probabilities as 24-bit integer limits (keep when uniform < limit), by class."""
    return _lut(np.round(np.asarray(p, np.float64) * 2**_UNIFORM_BITS), 0, np.uint64)


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
    images are grouped. Padding gets IGNORE. A prediction outside 0..C-1 (other than PAD) or
    a confidence that is not a float16 in [0, 1] raises :class:`InvalidPixels`.
    """
    c = thresholds.num_classes
    pred = np.ascontiguousarray(prediction, dtype=np.uint8)
    bits = np.ascontiguousarray(np.asarray(confidence, dtype=np.float16).view(np.uint16))
    limits = _lut(thresholds.threshold_bits, _INVALID_CLASS, np.uint64)
    limits[PAD] = NONE_BITS  # padding: selects nothing
    keep = np.stack([_probability_table(thresholds.keep_above),
                     _probability_table(thresholds.keep_at)], axis=1).reshape(-1)
    out = np.empty(pred.shape, np.uint8)
    counts = np.zeros(_LANES * (PAD + 1), np.int64)
    bad = _label_kernel(pred, bits, np.ascontiguousarray(shapes, dtype=np.int64),
                        np.asarray(keys, np.uint32).reshape(-1), limits, keep, out, counts)
    if bad >= 0:
        h, w = shapes[bad]
        real_pred, real_bits = pred[bad, :h, :w], bits[bad, :h, :w]
        if real_bits.max() > ONE_BITS:
            raise InvalidPixels("confidences are NaN, infinite or outside [0, 1]", bad)
        wrong = int(real_pred[(real_pred >= c) & (real_pred != PAD)].max())
        raise InvalidPixels(f"prediction holds class {wrong}, outside 0..{c - 1}", bad)
    return out, counts.reshape(_LANES, PAD + 1).sum(axis=0)[:c]


def _lut(values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
    """A 256-entry table indexed by predicted class (every uint8 has an entry)."""
    table = np.full(PAD + 1, fill, dtype)
    table[:len(values)] = values
    return table
