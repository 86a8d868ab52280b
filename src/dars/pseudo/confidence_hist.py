"""Pass 1 over a store: its confidence histogram, and per-shard partial histograms.

A store written by :class:`dars.probstore.ProbStoreWriter` carries the histogram of every
chunk, counted as inference wrote it (:meth:`dars.probstore.ProbStore.histogram`); this module
counts the images themselves (:func:`store_histogram`) -- for a store without them, one whose
counts do not cover its pixels (invalid values: the count names the image), a shard of images,
or confidences re-scaled to another temperature for analysis. :func:`save_partial` and
:func:`load_partials` carry shard histograms between jobs with enough metadata to refuse
mismatched parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import numpy as np

from dars.atomic import atomic_path
from dars.constants import NUM_BINS, ONE_BITS, PAD
from dars.errors import DarsError
from dars.probstore import Block, ProbStore
from dars.pseudo.counting import confidence_histogram

log = logging.getLogger(__name__)

_CHUNK = 1 << 18  # pixels per bincount call: the int64 keys (2 MiB) stay in cache
_BLOCK_BYTES = 1 << 22  # bytes of store data read per block in the streaming passes
_PARTIAL_VERSION = 1


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


def store_histogram(store: ProbStore, indices: Sequence[int] | None = None,
                    temperature: float | None = None, threads: int | None = None
                    ) -> np.ndarray:
    """Pass 1 over a store (or the images ``indices`` of one shard): (C, NUM_BINS) counts.

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
    for block in read_ahead(store.blocks(indices, block=per_block, probs=relative != 1.0)):
        pred, conf = block_predictions(block, relative)
        try:
            part = confidence_histogram(pred, conf, c, threads)
        except DarsError:
            raise_problem(store, block, pred, conf)
        if int(part.sum()) != int(np.prod(store.shapes[block.indices], axis=1).sum()):
            raise_problem(store, block, pred, conf)
        hist += part
    return hist


def store_fingerprint(store: ProbStore) -> str:
    """Identity of a store's contents layout (image ids, sizes, classes, T) for partial
    files."""
    ident = {"image_ids": store.image_ids, "shapes": np.asarray(store.shapes).tolist(),
             "class_names": store.class_names, "temperature": store.temperature}
    return hashlib.blake2b(json.dumps(ident).encode(), digest_size=16).hexdigest()


def save_partial(path: str | os.PathLike[str], hist: np.ndarray, store: ProbStore,
                 shard: tuple[int, int]) -> None:
    """Write one shard's histogram as .npz, atomically, with what it was computed from."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, version=_PARTIAL_VERSION, hist=hist, store=store_fingerprint(store),
                 num_classes=store.num_classes, temperature=store.temperature,
                 shard_index=shard[0], shard_count=shard[1])


def load_partials(paths: Sequence[str | os.PathLike[str]], store: ProbStore) -> np.ndarray:
    """Sum shard histograms after checking they are the complete set for this store (and its
    T).

    Refuses a part computed from another store, class count or temperature, a duplicate or
    missing shard, and a total that does not cover every pixel of the store.
    """
    if not paths:
        raise DarsError("no confidence histogram files given")
    fingerprint = store_fingerprint(store)
    hist = np.zeros((store.num_classes, NUM_BINS), np.int64)
    seen: dict[int, Path] = {}
    counts: set[int] = set()
    for p in map(Path, paths):
        try:
            with np.load(p, allow_pickle=False) as data:
                meta = {k: data[k][()] for k in data.files if k != "hist"}
                part = data["hist"]
        except (OSError, ValueError, KeyError) as exc:
            raise DarsError(f"{p}: not a readable confidence histogram ({exc})") from exc
        if meta.get("version") != _PARTIAL_VERSION:
            raise DarsError(f"{p}: not a dars confidence histogram (version missing)")
        if str(meta["store"]) != fingerprint:
            raise DarsError(f"{p}: computed from another probability store than {store.path}")
        if int(meta["num_classes"]) != store.num_classes or part.shape != hist.shape:
            raise DarsError(f"{p}: {int(meta['num_classes'])} classes, the store "
                            f"{store.path} has {store.num_classes}")
        if float(meta["temperature"]) != store.temperature:
            raise DarsError(f"{p}: computed from a store at temperature "
                            f"{float(meta['temperature'])}, {store.path} is at "
                            f"{store.temperature}")
        index, count = int(meta["shard_index"]), int(meta["shard_count"])
        if index in seen:
            raise DarsError(f"{p}: shard {index}/{count} also given as {seen[index]}")
        seen[index] = p
        counts.add(count)
        hist += part
    if len(counts) != 1 or len(seen) != next(iter(counts)):
        raise DarsError(f"confidence histograms {[str(p) for p in paths]}: shards "
                        f"{sorted(seen)} of {sorted(counts)} given, need every shard of one split")
    if int(hist.sum()) != store.num_pixels:
        raise DarsError(f"confidence histograms count {int(hist.sum())} pixels but "
                        f"{store.path} has {store.num_pixels}")
    log.info("combined %d confidence histogram(s) over %d pixels", len(seen), store.num_pixels)
    return hist
