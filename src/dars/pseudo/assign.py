"""Pass 2: turn one image's prediction and confidence into pseudo labels (255 = ignore).

Randomness comes from a generator derived from (seed, image id) alone, so an image gets the
same labels whatever the shard count, processing order or number of workers.
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


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """An independent generator for one image, stable across runs, platforms and Pythons.

    The id is hashed with blake2b (Python's ``hash`` of a str is salted per process) and mixed
    with the seed through numpy's SeedSequence, so distinct (seed, id) pairs give independent
    streams.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DarsError(f"seed must be a non-negative integer, got {seed!r}")
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=16).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *words])))


def assign_labels(prediction: np.ndarray, confidence: np.ndarray, thresholds: Thresholds,
                  rng: np.random.Generator) -> np.ndarray:
    """Pseudo labels of one (unpadded) image as uint8, IGNORE where no label is kept.

    A pixel predicted j is selected when its confidence is >= t_j; a selected pixel is kept
    with ``keep_above[j]`` or, when tied exactly at t_j, ``keep_at[j]``. When some keep
    probability is below 1, one float32 uniform is drawn per pixel in raster order (dense
    draws beat gathering the selected pixels; float32 resolution, 2^-24, biases an expected
    count by less than 1e-7 of it).
    """
    if prediction.shape != confidence.shape or prediction.ndim != 2:
        raise DarsError(f"prediction {prediction.shape} and confidence {confidence.shape} "
                        "must be equal 2-D shapes")
    return assign_block(prediction[None], confidence[None], thresholds, [rng],
                        np.asarray([prediction.shape]))[0]


def assign_block(prediction: np.ndarray, confidence: np.ndarray, thresholds: Thresholds,
                 rngs: Sequence[np.random.Generator], shapes: np.ndarray) -> np.ndarray:
    """:func:`assign_labels` of a block of padded images (B, H, W) at once.

    Image j's real pixels are ``[:h_j, :w_j]`` (``shapes[j]``); its uniforms come from
    ``rngs[j]`` over those pixels in raster order, exactly as :func:`assign_labels` draws
    them, so labels never depend on how images are grouped. Padding (prediction PAD) gets
    IGNORE. One vectorised pass over the block replaces a dozen small numpy calls per image,
    which is what dominates on datasets of small images.
    """
    c = thresholds.num_classes
    pred = np.ascontiguousarray(prediction, dtype=np.uint8)
    bits = np.ascontiguousarray(confidence, dtype=np.float16).view(np.uint16)
    if bits.size and bits.max() > ONE_BITS:
        raise DarsError("confidences are NaN, infinite or outside [0, 1]")
    table = _lut(thresholds.threshold_bits, _INVALID_CLASS, np.uint16)
    table[PAD] = NONE_BITS  # padding: selects nothing
    above = _lut(thresholds.keep_above, 0, np.float32)
    at = (_lut(thresholds.keep_at, 0, np.float32)
          if np.any(thresholds.keep_at != thresholds.keep_above) else None)
    uniform = None
    if thresholds.samples:
        uniform = np.ones(pred.shape, np.float32)  # padding: never kept
        for j, (rng, (h, w)) in enumerate(zip(rngs, shapes, strict=True)):
            uniform[j, :h, :w] = rng.random((int(h), int(w)), dtype=np.float32)
    out = np.empty(pred.shape, np.uint8)
    flat = pred.reshape(-1), bits.reshape(-1), out.reshape(-1)
    for s in range(0, pred.size, _CHUNK):  # cache-sized pieces: 4x faster than whole blocks
        p, b, o = (x[s:s + _CHUNK] for x in flat)
        limit = np.take(table, p)  # one lookup gives the threshold and the validity check
        if limit.max() == _INVALID_CLASS:
            bad = int(p[(p >= c) & (p != PAD)].max())
            raise DarsError(f"prediction holds class {bad}, outside 0..{c - 1}")
        keep = b >= limit
        if uniform is not None:
            prob = np.take(above, p)
            if at is not None:
                prob = np.where(b == limit, np.take(at, p), prob)
            keep &= uniform.reshape(-1)[s:s + _CHUNK] < prob
        o[...] = p
        o[~keep] = IGNORE
    return out


def label_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class 0..C-1 of a label array (IGNORE and padding not counted).

    Counted in cache-sized pieces: ``np.bincount`` widens uint8 to intp, 8 bytes a pixel.
    """
    flat = labels.reshape(-1)
    total = np.zeros(IGNORE + 1, np.int64)
    for s in range(0, flat.size, _CHUNK):
        total += np.bincount(flat[s:s + _CHUNK], minlength=IGNORE + 1)
    return total[:num_classes]


def _lut(values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
    """A 256-entry table indexed by predicted class (np.take on uint8 beats fancy indexing)."""
    table = np.full(PAD + 1, fill, dtype)
    table[:len(values)] = values
    return table
