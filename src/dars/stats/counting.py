"""Per-class histograms of float16 confidence bit patterns: the exact, streaming count.

Non-negative float16 values sort like their uint16 bit patterns, and every confidence in [0, 1]
is one of the ``NUM_BINS`` patterns 0x0000 .. 0x3C00, so counting patterns loses nothing, in
O(C x NUM_BINS) memory (the authors' code sorted every confidence). Invalid input is counted
(an overflow row and column) rather than tested, so validation costs almost nothing.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dars.core.constants import NUM_BINS, ONE_BITS, PAD
from dars.core.errors import DarsError

_INVALID = NUM_BINS  # working column collecting NaN, inf, negative and > 1 confidences
_CHUNK = 1 << 18  # pixels per bincount call: the int64 keys (2 MiB) stay in cache


def available_threads() -> int:
    """CPU cores this process may use (respects taskset / cgroup affinity, unlike cpu_count)."""
    return len(os.sched_getaffinity(0))


def _working_histogram(pred: np.ndarray, bits: np.ndarray, num_classes: int, low: int,
                       threads: int | None) -> np.ndarray:
    """(C + 1) x width counts of flat arrays over ``threads`` threads: column k counts pattern
    ``low - 1 + k`` (column 0 also all below, the last all above 1.0), row C predictions >= C.
    Skipping patterns below ``low`` makes the per-chunk table 3-4x smaller, cheap to sum."""
    width = _INVALID - low + 2
    size = (num_classes + 1) * width + low - 1
    starts = range(0, pred.size, _CHUNK)
    workers = max(1, min(threads or available_threads(), len(starts)))

    def count(first: int) -> np.ndarray:
        acc = np.zeros(size, np.int64)
        for s in starts[first::workers]:
            key = np.minimum(pred[s:s + _CHUNK], num_classes).astype(np.intp)
            key *= width
            key += np.clip(bits[s:s + _CHUNK], low - 1, _INVALID)
            acc += np.bincount(key, minlength=size)
        return acc

    if workers == 1:
        acc = count(0)
    else:
        with ThreadPoolExecutor(workers) as pool:
            acc = sum(pool.map(count, range(workers)))
    return acc[low - 1:].reshape(num_classes + 1, width)


def confidence_histogram(prediction: np.ndarray, confidence: np.ndarray, num_classes: int,
                         threads: int | None = None) -> np.ndarray:
    """(C, NUM_BINS) int64 counts of the confidences' bit patterns per predicted class, PAD
    skipped; a prediction in [C, 254] or a confidence outside [0, 1] (a foreign store or a
    diverged teacher) is a DarsError."""
    if prediction.shape != confidence.shape:
        raise DarsError(f"prediction shape {prediction.shape} != confidence shape "
                        f"{confidence.shape}")
    if prediction.dtype != np.uint8 or confidence.dtype != np.float16:
        raise DarsError(f"expected uint8 predictions and float16 confidences, got "
                        f"{prediction.dtype} and {confidence.dtype}")
    if not 1 <= num_classes < PAD:
        raise DarsError(f"number of classes must be in [1, {PAD - 1}], got {num_classes}")
    pred = np.ascontiguousarray(prediction).reshape(-1)
    bits = np.ascontiguousarray(confidence).reshape(-1).view(np.uint16)
    # a pattern safely below any max-softmax confidence (>= 1/C): 1 % under 1/C covers float32
    # and float16 rounding (float16 steps are <= 0.1 %)
    low = int(np.float16(0.99 / num_classes).view(np.uint16))
    work = _working_histogram(pred, bits, num_classes, low, threads)
    if work[:num_classes, 0].any():  # confidences below 1/C: count every pattern
        low = 1
        work = _working_histogram(pred, bits, num_classes, low, threads)
    invalid_pred = int(work[num_classes].sum()) - int(np.count_nonzero(pred == PAD))
    if invalid_pred:
        raise DarsError(f"{invalid_pred} pixels predict a class outside 0..{num_classes - 1} "
                        f"(and are not padding {PAD})")
    invalid_conf = int(work[:num_classes, -1].sum())
    if invalid_conf:
        raise DarsError(f"{invalid_conf} confidences are NaN, infinite or outside [0, 1]")
    hist = np.zeros((num_classes, NUM_BINS), np.int64)
    hist[:, low - 1:] = work[:num_classes, :-1]
    return hist


def valid_histogram(prediction: np.ndarray, confidence: np.ndarray, num_classes: int,
                    threads: int | None = None) -> np.ndarray:
    """:func:`confidence_histogram` of the valid pixels only, never raising: a store's rows,
    short when pixels are invalid (:meth:`dars.store.probstore.ProbStore.histogram`)."""
    try:
        return confidence_histogram(prediction, confidence, num_classes, threads)
    except DarsError:
        bits = np.ascontiguousarray(confidence, np.float16).view(np.uint16)
        valid = (prediction < num_classes) & (bits <= ONE_BITS)
        return confidence_histogram(prediction[valid], confidence[valid], num_classes, threads)
