"""Pass 1 counted from a store's images, when its per-chunk rows are missing or short
(:meth:`dars.store.probstore.ProbStore.histogram`)."""

from __future__ import annotations

from typing import NoReturn

import numpy as np

from dars.core.constants import NUM_BINS, ONE_BITS, PAD
from dars.core.errors import DarsError
from dars.stats.counting import confidence_histogram
from dars.store.probstore import Block, ProbStore

_BLOCK_BYTES = 1 << 22  # bytes of store data read per block in the streaming passes


def images_per_block(store: ProbStore) -> int:
    """How many images to read at once: whole chunk files, about _BLOCK_BYTES of data."""
    height, width = store.arrays["confidence"].shape[1:]
    chunks = _BLOCK_BYTES // max(1, height * width * 3 * store.per_chunk)
    return store.per_chunk * max(1, chunks)


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


def store_histogram(store: ProbStore, threads: int | None = None) -> np.ndarray:
    """Pass 1 over a store, a block at a time: (C, NUM_BINS) counts of every image; a block must
    count exactly its real pixels, so padding predicted as a class (or vice versa) is caught."""
    c = store.num_classes
    hist = np.zeros((c, NUM_BINS), np.int64)
    for block in store.blocks(block=images_per_block(store)):
        pred, conf = block.prediction, block.confidence
        try:
            part = confidence_histogram(pred, conf, c, threads)
        except DarsError:
            raise_problem(store, block, pred, conf)
        if int(part.sum()) != int(np.prod(store.shapes[block.indices], axis=1).sum()):
            raise_problem(store, block, pred, conf)
        hist += part
    return hist
