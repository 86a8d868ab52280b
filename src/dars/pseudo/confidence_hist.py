"""Pass 1 over a store: its confidence histogram, counted from the images.

A store written by :class:`dars.probstore.ProbStoreWriter` carries the histogram of every
chunk, counted as inference wrote it (:meth:`dars.probstore.ProbStore.histogram`); this module
counts the images themselves (:func:`store_histogram`) -- for a store without them, one whose
counts do not cover its pixels (invalid values: the count names the image), or confidences
re-scaled to another temperature for analysis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import numpy as np

from dars.constants import NUM_BINS, ONE_BITS, PAD
from dars.errors import DarsError
from dars.probstore import Block, ProbStore
from dars.pseudo.counting import confidence_histogram

log = logging.getLogger(__name__)

_CHUNK = 1 << 18  # pixels per bincount call: the int64 keys (2 MiB) stay in cache
_BLOCK_BYTES = 1 << 22  # bytes of store data read per block in the streaming passes


def temper(probs: np.ndarray, padding: np.ndarray, temperature: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and confidence after temperature scaling, from stored float16 probabilities.

    Thresholding uses the confidences inference stored at its T; this re-scaling is only for
    analysis (the confidence plot of a comparison) of a store that kept its probabilities.
    ``probs`` is (N, C, H, W), ``padding`` (N, H, W) is True where the store marks padding.
    ``temperature`` is relative to the store's:
    p_T = p^(1/T) / sum_k p_k^(1/T) = softmax(logit / T), computed in float32 pixel by pixel
    with a fixed class order, so the result of a pixel never depends on how images were
    grouped; both passes call this function, so pass 2 sees exactly the confidences counted
    in pass 1. The confidence is rounded to float16 like the stored one.
    """
    n, c = probs.shape[:2]
    inv_t = np.float32(1.0 / temperature)
    flat = probs.reshape(n, c, -1)
    pred = np.full(padding.shape, PAD, np.uint8).reshape(n, -1)
    conf = np.zeros(padding.shape, np.float16).reshape(n, -1)
    pad = padding.reshape(n, -1)
    for i in range(n):
        for s in range(0, flat.shape[2], _CHUNK):
            q = np.power(flat[i, :, s:s + _CHUNK].astype(np.float32), inv_t)
            total = q[0].copy()
            for k in range(1, c):
                total += q[k]
            with np.errstate(invalid="ignore", divide="ignore"):
                ci = (q.max(axis=0) / total).astype(np.float16)
            pi = q.argmax(axis=0).astype(np.uint8)
            keep = ~pad[i, s:s + _CHUNK]
            pred[i, s:s + _CHUNK] = np.where(keep, pi, PAD)
            conf[i, s:s + _CHUNK] = np.where(keep, ci, np.float16(0))
    return pred.reshape(padding.shape), conf.reshape(padding.shape)


def block_predictions(block: Block, relative: float) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, confidence) of a store block, re-scaled by ``relative`` = T / T_store.

    1 means no scaling: the stored arrays are used as they are (and no probabilities are
    needed).
    """
    if relative == 1.0:
        return block.prediction, block.confidence
    if block.probs is None:
        raise DarsError("temperature scaling needs the stored probabilities")
    return temper(block.probs, block.prediction == PAD, relative)


def read_ahead(blocks: Iterator[Block]) -> Iterator[Block]:
    """Yield ``blocks`` while the next one is read on a background thread.

    Decoding a store block (LZ4, GIL released) then overlaps with the numpy work on the
    previous one, instead of the two alternating on the same cores.
    """
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(next, blocks, None)
        while (block := pending.result()) is not None:
            pending = reader.submit(next, blocks, None)
            yield block


def images_per_block(store: ProbStore, probs: bool = False) -> int:
    """How many images to read at once: whole chunk files, about _BLOCK_BYTES of data."""
    height, width = store.arrays["confidence"].shape[1:]
    per_pixel = 3 + (6 * store.num_classes if probs else 0)
    chunks = _BLOCK_BYTES // max(1, height * width * per_pixel * store.per_chunk)
    return store.per_chunk * max(1, chunks)


def check_temperature(temperature: float) -> None:
    """Temperature must be a positive finite number (T = 1: no scaling)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise DarsError(f"temperature must be a positive number, got {temperature}")


def _image_problem(store: ProbStore, index: int, pred: np.ndarray, conf: np.ndarray) -> str | None:
    """Why one (padded) image of the store is invalid, or None."""
    h, w = (int(v) for v in store.shapes[index])
    real_pred, real_conf = pred[:h, :w], conf[:h, :w]
    outside = np.ones(pred.shape, bool)
    outside[:h, :w] = False
    if np.any(pred[outside] != PAD):
        return "padding outside the image is not marked as padding"
    if np.any(real_pred >= store.num_classes):
        bad = int(real_pred[real_pred >= store.num_classes][0])
        return f"predicts class {bad}, outside 0..{store.num_classes - 1}"
    if np.any(real_conf.view(np.uint16) > ONE_BITS):
        return "confidences are NaN, infinite or outside [0, 1] (check the probabilities)"
    return None


def raise_problem(store: ProbStore, block: Block, pred: np.ndarray, conf: np.ndarray
                  ) -> NoReturn:
    """Raise a DarsError naming the first invalid image of a block known to be invalid."""
    for j, index in enumerate(block.indices):
        problem = _image_problem(store, int(index), pred[j], conf[j])
        if problem:
            raise DarsError(f"{store.path}: image {store.image_ids[int(index)]!r}: {problem}")
    raise DarsError(f"{store.path}: invalid predictions in images "
                    f"{[store.image_ids[int(i)] for i in block.indices]}")


def store_histogram(store: ProbStore, temperature: float | None = None,
                    threads: int | None = None) -> np.ndarray:
    """Pass 1 over a store: (C, NUM_BINS) counts of every image.

    Reads a block of images at a time, so memory is bounded by the block size, not by the
    dataset. Every image is checked: its histogram must count exactly its real pixels, so a
    real pixel predicted as padding (or padding predicted as a class) is caught too.
    ``temperature`` None (or the store's T) counts the stored confidences; another T re-scales
    the stored probabilities (analysis only: thresholding always uses the stored confidences).
    """
    relative = 1.0
    if temperature is not None:
        check_temperature(temperature)
        relative = float(temperature) / store.temperature
    c = store.num_classes
    hist = np.zeros((c, NUM_BINS), np.int64)
    per_block = images_per_block(store, relative != 1.0)
    for block in read_ahead(store.blocks(block=per_block, probs=relative != 1.0)):
        pred, conf = block_predictions(block, relative)
        try:
            part = confidence_histogram(pred, conf, c, threads)
        except DarsError:
            raise_problem(store, block, pred, conf)
        if int(part.sum()) != int(np.prod(store.shapes[block.indices], axis=1).sum()):
            raise_problem(store, block, pred, conf)
        hist += part
    return hist
