"""Pass 2: turn an image's prediction and confidence into pseudo labels (255 = ignore).

Randomness is a pure function of (seed, image id, pixel), so no order, grouping or machine
changes a label: pixel i (raster order over the image's own h x w) of an image with key k gets
the 24-bit uniform ``fmix32((i * PHI) ^ k) >> 8`` (MurmurHash3's finaliser of a Weyl sequence,
as in SplitMix; numpy's uint32 products wrap modulo 2^32, the hash's own arithmetic).
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
    """The 32-bit key of one image's uniforms: blake2b of the id, keyed with the seed (stable
    across runs, platforms and Pythons, unlike the per-process salted ``hash`` of a str)."""
    if (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
            or not 0 <= seed < _SEED_LIMIT):
        raise DarsError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=4,
                             key=int(seed).to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little")


def _hash32(key: int, start: int, stop: int) -> np.ndarray:
    """The 32-bit hashes (uint32) of raster indices start..stop-1 under ``key``: distinct for
    i < 2^32, as i * PHI (PHI odd), the xor with the key and fmix32 are bijections mod 2^32."""
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
    """The uniforms in [0, 1) that :func:`assign_labels` draws for an image of ``shape``."""
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
        number kept of each class 0..C-1, by the rule of :mod:`dars.pseudo.thresholds` on
        float16 bit patterns and 24-bit integers (no float rounding decides a label), in slices
        of _CHUNK pixels (a third faster than whole 2-Mpx images)."""
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
        """Sampling ``exact``: which flat pixels of a whole image keep their label: of the m_j
        selected of class j, the k_j = ``exact_keep_count(m_j, s_j)`` of smallest hash
        (:func:`image_hashes`). The released code removes m_j - k_j at a ``torch.randperm``: the
        same distribution, as distinct, exchangeable hashes make the k_j smallest a uniform
        k_j-subset."""
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
