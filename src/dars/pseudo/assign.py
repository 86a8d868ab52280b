"""Pass 2: turn an image's prediction and confidence into pseudo labels (255 = ignore).

Randomness is a pure function of (seed, image id, pixel): pixel i (raster order over the
image's own h x w) of an image with key k gets the 24-bit uniform ``fmix32((i * PHI) ^ k) >> 8``
(MurmurHash3's finaliser of a Weyl sequence, as in SplitMix). An image therefore gets the same
labels whatever order, grouping or machine processes it. In numpy the hash is eight in-place
uint32 passes (multiplication wraps modulo 2^32, which is the hash's own arithmetic).

Sampling ``exact`` ranks an image's selected pixels of each class by the same hash at its full
32 bits (:func:`image_hashes`; the uniform is its top 24) and keeps the k smallest.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dars.core.constants import ONE_BITS, PAD
from dars.core.errors import DarsError
from dars.pseudo.thresholds import NONE_BITS, Thresholds, exact_keep_count

_UNIFORM_BITS = 24  # a keep probability p is exact to 2^-24, as with float32 uniforms
_SEED_LIMIT = 1 << 64
_CHUNK = 1 << 16  # pixels per slice of pass 2: its uint32 temporaries (256 KiB) stay in cache
_PHI = np.uint32(0x9E3779B9)  # 2^32 / golden ratio: the Weyl step between pixels' counters
_M1, _M2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)  # fmix32's multipliers


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


def _hash32(key: int, start: int, stop: int) -> np.ndarray:
    """The full 32-bit hashes (uint32) of raster indices start..stop-1 under ``key``.

    Distinct for every pixel of an image (fewer than 2^32): i -> i * PHI is a bijection modulo
    2^32 (PHI is odd), and so are the xor with the key and fmix32.
    """
    x = np.arange(start, stop, dtype=np.uint32)
    x *= _PHI
    x ^= np.uint32(key)
    x ^= x >> 16
    x *= _M1
    x ^= x >> 13
    x *= _M2
    x ^= x >> 16
    return x


def _uniform_bits(key: int, start: int, stop: int) -> np.ndarray:
    """The 24-bit uniforms (uint32) of raster indices start..stop-1 under ``key``."""
    x = _hash32(key, start, stop)
    x >>= 32 - _UNIFORM_BITS
    return x


def image_hashes(key: int, shape: tuple[int, int]) -> np.ndarray:
    """The 32-bit hashes (uint32) whose order sampling ``exact`` keeps pixels in (for tests)."""
    h, w = shape
    return _hash32(key, 0, h * w).reshape(h, w)


def image_uniforms(key: int, shape: tuple[int, int]) -> np.ndarray:
    """The uniforms in [0, 1) that :func:`assign_labels` draws for an image of ``shape``
    (pixel (y, x) is kept when its uniform is below its keep probability)."""
    h, w = shape
    return (_uniform_bits(key, 0, h * w) / 2.0**_UNIFORM_BITS).reshape(h, w)


def _lut(values: np.ndarray, fill: int, dtype: type) -> np.ndarray:
    """A 256-entry table indexed by predicted class (every uint8 has an entry)."""
    table = np.full(PAD + 1, fill, dtype)
    table[:len(values)] = values
    return table


def _keep_limits(p: np.ndarray) -> np.ndarray:
    """Keep probabilities as 24-bit integer limits (keep when uniform < limit), by class."""
    return _lut(np.round(np.asarray(p, np.float64) * 2**_UNIFORM_BITS), 0, np.uint32)


def _check(pred: np.ndarray, bits: np.ndarray, num_classes: int) -> None:
    """A prediction outside 0..C-1 (PAD aside) or a confidence outside [0, 1] is an error."""
    if not pred.size:
        return
    if bits.max() > ONE_BITS:
        raise DarsError("confidences are NaN, infinite or outside [0, 1]")
    if pred.max() >= num_classes:
        wrong = pred[(pred >= num_classes) & (pred != PAD)]
        if wrong.size:
            raise DarsError(f"prediction holds class {int(wrong.max())}, outside "
                            f"0..{num_classes - 1}")


class LabelRule:
    """The keep rule of one set of thresholds, as the 256-entry tables (indexed by predicted
    class) that pass 2 looks every pixel up in; built once for all images of a stage."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.num_classes = thresholds.num_classes
        self._threshold = _lut(thresholds.threshold_bits, NONE_BITS, np.uint16)
        self._above = _keep_limits(thresholds.keep_above)
        self._at = _keep_limits(thresholds.keep_at)
        self._ties_apart = not np.array_equal(self._above, self._at)
        self._exact = (thresholds.sampling == "exact" and thresholds.method == "dars"
                       and bool(np.any(thresholds.keep_above < 1)))
        self._share = np.asarray(thresholds.keep_above, np.float64)

    def labels(self, prediction: np.ndarray, confidence: np.ndarray, key: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """One image's pseudo labels (uint8, IGNORE where none is kept, and for PAD) and the
        number kept of each class 0..C-1.

        A pixel predicted j is selected when its confidence is >= t_j and kept with
        ``keep_above[j]`` (``keep_at[j]`` when tied at t_j) against its uniform
        (:func:`image_uniforms`); sampling ``exact`` keeps a fixed number instead
        (:meth:`_exact_kept`). Comparisons are on float16 bit patterns and 24-bit integers, so
        no float rounding decides a label; slices of _CHUNK pixels keep the temporaries in
        cache (a third faster than whole 2-Mpx images).
        """
        if prediction.shape != confidence.shape or prediction.ndim != 2:
            raise DarsError(f"prediction {prediction.shape} and confidence {confidence.shape} "
                            "must be equal 2-D shapes")
        pred = np.ascontiguousarray(prediction, dtype=np.uint8).reshape(-1)
        bits = np.ascontiguousarray(confidence, dtype=np.float16).reshape(-1).view(np.uint16)
        _check(pred, bits, self.num_classes)
        if self._exact:
            kept = self._exact_kept(pred, bits, key)
            counts = np.bincount(pred[kept], minlength=PAD + 1)[:self.num_classes]
            out = np.bitwise_or(pred, np.subtract(kept.view(np.uint8), 1))
            return out.reshape(prediction.shape), counts.astype(np.int64)
        out = np.empty_like(pred)
        counts = np.zeros(PAD + 1, np.int64)
        for start in range(0, pred.size, _CHUNK):
            part = slice(start, start + _CHUNK)
            kept = self._kept(pred[part], bits[part], key, start)
            # IGNORE where the pixel is not kept (p | 255 = 255), p where it is
            np.bitwise_or(pred[part], np.subtract(kept.view(np.uint8), 1), out=out[part])
            counts += np.bincount(out[part], minlength=PAD + 1)  # half the cost of pred[kept]
        return out.reshape(prediction.shape), counts[:self.num_classes]

    def _kept(self, pred: np.ndarray, bits: np.ndarray, key: int, start: int) -> np.ndarray:
        """Which of the flat pixels start.. of an image keep their label."""
        threshold = self._threshold.take(pred)
        limit = self._above.take(pred)
        if self._ties_apart:  # ties sampled apart from the pixels above t_j
            limit = np.where(bits == threshold, self._at.take(pred), limit)
        kept = bits >= threshold
        kept &= _uniform_bits(key, start, start + pred.size) < limit
        return kept

    def _exact_kept(self, pred: np.ndarray, bits: np.ndarray, key: int) -> np.ndarray:
        """Sampling ``exact``: which flat pixels of a whole image keep their label.

        Of the image's m_j pixels of class j selected (confidence >= t_j), exactly
        k_j = :func:`~dars.pseudo.thresholds.exact_keep_count` (m_j, s_j) are kept, as the
        released code removes m_j - k_j of them at a ``torch.randperm``; here the k_j whose
        32-bit hash (:func:`image_hashes`) is smallest, found by partition (no full sort).
        Why that is a uniformly random subset of exactly k_j: the hashes of an image's pixels
        are distinct (no tie to break) and, as values of a pseudo-random function of (key,
        pixel), exchangeable, so every order of a class's pixels by hash is equally likely and
        its k_j smallest are a uniform k_j-subset, the distribution randperm gives. They depend
        on (seed, image id, pixel) only, so no block size, order or thread count changes a
        label.
        """
        selected = bits >= self._threshold.take(pred)
        m = np.bincount(pred[selected], minlength=PAD + 1)[:self.num_classes]
        k = exact_keep_count(m, self._share)
        sampled = np.zeros(PAD + 1, bool)
        sampled[:self.num_classes] = k < m
        where = np.flatnonzero(selected & sampled.take(pred))
        if where.size:
            cls = pred[where]
            hashes = _hash32(key, 0, pred.size)[where].astype(np.int64)
            ends = np.cumsum(np.bincount(cls, minlength=PAD + 1))
            grouped = hashes[np.argsort(cls, kind="stable")]  # class by class (a radix sort)
            limit = np.full(PAD + 1, -1, np.int64)  # keep a pixel whose hash <= its class's
            for j in np.flatnonzero(sampled):
                if k[j]:  # the k-th smallest hash of the class: O(m) by partition
                    part = grouped[ends[j] - m[j]:ends[j]]
                    limit[j] = np.partition(part, k[j] - 1)[k[j] - 1]
            selected[where] = hashes <= limit.take(cls)  # hashes are distinct: exactly k
        return selected


def assign_labels(prediction: np.ndarray, confidence: np.ndarray, thresholds: Thresholds,
                  key: int) -> np.ndarray:
    """The pseudo labels of one image under ``thresholds`` (:meth:`LabelRule.labels`)."""
    return LabelRule(thresholds).labels(prediction, confidence, key)[0]
