"""The pseudo-label stage: store + label histogram -> pseudo-label PNGs, thresholds, diagnostics.

Ordered so that a failed check leaves nothing behind: validate, pass 1, thresholds, pass 2 into
a temporary folder renamed onto ``labels_out`` once every image succeeded, then diagnostics.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.data.images import png_bytes, read_mask
from dars.pseudo.assign import LabelRule, image_key
from dars.pseudo.confidence_hist import images_per_block, store_histogram
from dars.pseudo.thresholds import PseudoLabelOptions, Thresholds, compute_thresholds
from dars.stats.counting import available_threads
from dars.store.artifacts import (
    atomic_path,
    digest,
    read_csv,
    write_csv,
    write_json,
    write_manifest,
)
from dars.store.probstore import ProbStore

log = logging.getLogger(__name__)

KL_EPSILON = 1e-6  # added to both class distributions before the KL (empty classes stay finite)
_HIST_COLUMNS = ("class", "name", "pixels", "ratio")

TrueMask = Callable[[str], np.ndarray]


@dataclass
class _Pass2Counts:
    """Per-class tallies of the written labels (and of their agreement with true masks)."""

    kept: np.ndarray
    correct: np.ndarray
    evaluated: np.ndarray
    pixels: int = 0
    images: int = 0
    files: dict[str, dict] = field(default_factory=dict)  # manifest entries of the PNGs


def read_label_histogram(path: str | os.PathLike[str], num_classes: int
                         ) -> tuple[list[str], np.ndarray]:
    """Class names and labeled ratios r_j from ``label_histogram.csv``, recomputed from the
    pixel counts (immune to csv rounding); every class 0..C-1 of the store exactly once."""
    df = read_csv(path)
    missing_cols = [c for c in _HIST_COLUMNS if c not in df.columns]
    if missing_cols:
        raise DarsError(f"{path}: missing columns {missing_cols} (need {list(_HIST_COLUMNS)})")
    try:
        classes = df["class"].astype(np.int64).to_numpy()
        pixels = df["pixels"].astype(np.int64).to_numpy()
    except (TypeError, ValueError) as exc:
        raise DarsError(f"{path}: class and pixels must be integers ({exc})") from exc
    expected = set(range(num_classes))
    missing = sorted(expected - set(classes.tolist()))
    extra = sorted(set(classes.tolist()) - expected)
    if missing or extra or len(classes) != num_classes:
        raise DarsError(f"{path}: {len(classes)} rows for the {num_classes} classes of the "
                        f"probability store (missing classes {missing}, unexpected {extra})")
    if np.any(pixels < 0) or pixels.sum() <= 0:
        raise DarsError(f"{path}: pixel counts must be non-negative with a positive total")
    order = np.argsort(classes)
    names = df["name"].astype(str).to_numpy()[order].tolist()
    return names, pixels[order] / pixels.sum()


def mask_reader(masks: Mapping[str, Path], num_classes: int, ignore_index: int) -> TrueMask:
    """The true mask of a store image, from ``masks`` (image id -> the mask the unlabeled split
    lists, read in the dataset's encoding), for pseudo-label precision only."""

    def read(image_id: str) -> np.ndarray:
        if image_id not in masks:
            raise DarsError(f"image {image_id!r} of the probability store is not in the "
                            f"unlabeled split whose masks give the precision: re-run inference "
                            f"on that split")
        return read_mask(masks[image_id], num_classes, ignore_index)

    return read


def _label_name(image_id: str) -> str:
    """An image's label file in the label folder: ids may hold '/' but not escape the folder."""
    name = f"{image_id}.png"
    if image_id and "/" not in image_id:  # the common case, without PurePosixPath's cost
        return name
    rel = PurePosixPath(name)
    if not image_id or rel.is_absolute() or ".." in rel.parts:
        raise DarsError(f"image id {image_id!r} cannot be used as a file name")
    return name


def _write_labels(store: ProbStore, thresholds: Thresholds, options: PseudoLabelOptions,
                  root: Path, true_mask: TrueMask | None, threads: int | None) -> _Pass2Counts:
    """Pass 2: one PNG per image under ``root``, returning per-class tallies. ``threads``
    threads label, encode and write, two per thread in flight (numpy, Pillow's encoder and file
    writes release the GIL; one core's PNG encoding alone falls short of a 50 Mpx/s stage),
    tallied in store order so the manifest does not depend on which thread finished first."""
    c = store.num_classes
    counts = _Pass2Counts(np.zeros(c, np.int64), np.zeros(c, np.int64), np.zeros(c, np.int64))
    rule = LabelRule(thresholds)

    def write(image_id: str, prediction: np.ndarray, confidence: np.ndarray
              ) -> tuple[str, dict, np.ndarray, int, tuple[np.ndarray, np.ndarray] | None]:
        try:
            labels, kept = rule.labels(prediction, confidence, image_key(options.seed, image_id))
        except DarsError as exc:
            raise DarsError(f"{store.path}: image {image_id!r}: {exc}") from None
        data, name = png_bytes(labels), _label_name(image_id)
        if "/" in name:  # ids like city/frame
            (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        precision = (None if true_mask is None
                     else _precision_counts(labels, true_mask(image_id), image_id, c))
        return name, {"size": len(data), "blake2b": digest(data)}, kept, labels.size, precision

    def tally(name: str, entry: dict, kept: np.ndarray, pixels: int,
              precision: tuple[np.ndarray, np.ndarray] | None) -> None:
        counts.files[name] = entry
        counts.kept += kept
        counts.pixels += pixels
        counts.images += 1
        if precision is not None:
            counts.evaluated += precision[0]
            counts.correct += precision[1]

    workers = threads or available_threads()
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future] = deque()
        for block in store.blocks(block=images_per_block(store)):
            for j, index in enumerate(block.indices):
                h, w = (int(v) for v in store.shapes[index])
                pending.append(pool.submit(write, store.image_ids[index],
                                           block.prediction[j, :h, :w],
                                           block.confidence[j, :h, :w]))
                if len(pending) > 2 * workers:
                    tally(*pending.popleft().result())
        while pending:
            tally(*pending.popleft().result())
    return counts


def _precision_counts(labels: np.ndarray, truth: np.ndarray, image_id: str, num_classes: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """An image's pseudo labels scored against its true mask, per class: (evaluated, correct)."""
    if truth.shape != labels.shape:
        raise DarsError(f"true mask of {image_id!r} is {truth.shape}, the image {labels.shape}")
    if np.any((truth >= num_classes) & (truth != IGNORE)):
        raise DarsError(f"true mask of {image_id!r} has values outside 0..{num_classes - 1} "
                        f"and {IGNORE}")
    scored = (labels != IGNORE) & (truth != IGNORE)
    hit = scored & (labels == truth)
    return (np.bincount(labels[scored], minlength=num_classes)[:num_classes],
            np.bincount(labels[hit], minlength=num_classes)[:num_classes])


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = KL_EPSILON) -> float:
    """KL(p || q) of two class distributions (or counts), each normalised, smoothed by ``eps``
    and renormalised: a class the pseudo labels lack dominates it without making it infinite."""
    def smooth(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        x = x / x.sum() if x.sum() > 0 else np.zeros_like(x)
        return (x + eps) / (1 + eps * len(x))

    ps, qs = smooth(p), smooth(q)
    return float(np.sum(ps * np.log(ps / qs)))


def _tables(names: list[str], ratios: np.ndarray, thresholds: Thresholds,
            counts: _Pass2Counts, with_precision: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    kept = counts.kept
    total = int(kept.sum())
    base = pd.DataFrame({
        "class": np.arange(len(names)),
        "name": names,
        "target": thresholds.target,
        "threshold": thresholds.threshold,
        "selected": thresholds.selected,
    })
    thresholds_df = base.assign(tied=thresholds.tied, keep=thresholds.keep, kept=kept)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(counts.evaluated > 0, counts.correct / counts.evaluated, np.nan)
    stats = base.assign(
        labeled_ratio=ratios,
        pseudo_ratio=kept / total if total else np.zeros(len(names)),
        keep=thresholds.keep,
        kept=kept,
        shortfall=thresholds.target - kept,
        precision=precision if with_precision else np.nan,
    )
    order = ["class", "name", "labeled_ratio", "pseudo_ratio", "target", "threshold",
             "selected", "keep", "kept", "shortfall", "precision"]
    return thresholds_df, stats[order]


def pseudo_label(store_path: str | os.PathLike[str], label_hist: str | os.PathLike[str],
                 labels_out: str | os.PathLike[str], options: PseudoLabelOptions, *,
                 thresholds_out: str | os.PathLike[str] | None = None,
                 stats_out: str | os.PathLike[str] | None = None,
                 summary_out: str | os.PathLike[str] | None = None,
                 true_mask: TrueMask | None = None,
                 temperature: float | None = None,
                 threads: int | None = None) -> dict:
    """Run the whole stage and return the summary (also written to ``summary_out``);
    ``temperature``: the T the store must be at (None: any); ``threads``: of pass 2 and of a
    pass 1 that counts the images (None: every core this process may use)."""
    options.check()
    store = ProbStore(store_path)
    store.check_temperature(temperature)  # inference applied T, not this stage
    names, ratios = read_label_histogram(label_hist, store.num_classes)
    for image_id in store.image_ids:
        _label_name(image_id)

    start = time.perf_counter()
    hist, source = store.histogram(), "inference"  # pass 1: the rows inference counted
    if hist is None:  # or else the images themselves
        hist, source = store_histogram(store, threads=threads), "images"
    pass1 = time.perf_counter() - start
    per_image = options.pixels_per_image  # P of n_j: the released VOC count, or the true one
    thresholds = compute_thresholds(hist, ratios, options.alpha, options.method,
                                    num_pixels=store.num_pixels, sampling=options.sampling,
                                    fixed_threshold=options.fixed_threshold,
                                    target_pixels=None if per_image is None
                                    else per_image * len(store.image_ids),
                                    settings=dict(options.settings))
    maths = time.perf_counter() - start - pass1
    log.info("thresholds (%s, alpha %.3g) from %d pixels in %.2f s", options.method,
             options.alpha, store.num_pixels, pass1 + maths)

    start = time.perf_counter()
    with atomic_path(labels_out) as tmp:
        tmp.mkdir()
        counts = _write_labels(store, thresholds, options, tmp, true_mask, threads)
        write_manifest(tmp, counts.files)  # what the student checks before training
    pass2 = time.perf_counter() - start
    log.info("wrote %d pseudo-label images (%d pixels) in %.2f s", counts.images, counts.pixels,
             pass2)

    thresholds_df, stats = _tables(names, ratios, thresholds, counts, true_mask is not None)
    summary = _summary(options, store, hist, thresholds, counts, ratios,
                       true_mask is not None, {"pass1": pass1, "thresholds": maths,
                                               "pass2": pass2}, source)
    missing = [n for n, k, t in zip(store.class_names, counts.kept, thresholds.target,
                                    strict=True) if t > 0 and k == 0]
    if missing:  # the student gets none of these classes: say so
        log.warning("no pseudo label of class(es) %s although the labeled set has them: the "
                    "teacher (almost) never predicts them", ", ".join(missing))
    if thresholds_out is not None:
        write_csv(thresholds_df, thresholds_out)
    if stats_out is not None:
        write_csv(stats, stats_out)
    if summary_out is not None:
        write_json(summary, summary_out)
    return summary


def _rate(pixels: float, seconds: float) -> float | None:
    return round(pixels / 1e6 / seconds, 3) if seconds > 0 else None


def _summary(options: PseudoLabelOptions, store: ProbStore, hist: np.ndarray,
             thresholds: Thresholds, counts: _Pass2Counts, ratios: np.ndarray,
             with_precision: bool, timings: dict[str, float],
             histogram_source: str) -> dict:
    kept = int(counts.kept.sum())
    evaluated = counts.evaluated > 0
    precision = counts.correct[evaluated] / counts.evaluated[evaluated]
    return {
        "method": options.method,
        "sampling": options.sampling,
        "alpha": options.alpha,
        "temperature": store.temperature,
        "seed": options.seed,
        "fixed_threshold": options.fixed_threshold,
        **dict(options.settings),  # the method's own keys (e.g. fixed's tau)
        "pixels_per_image": options.pixels_per_image,
        "num_classes": store.num_classes,
        "num_images": counts.images,
        "num_pixels": counts.pixels,
        "store_pixels": store.num_pixels,
        "kept_pixels": kept,
        "kept_fraction": kept / counts.pixels if counts.pixels else 0.0,
        "target_fraction": float(thresholds.target.sum() / max(store.num_pixels, 1)),
        "ones_fraction": float(hist[:, -1].sum() / max(store.num_pixels, 1)),
        "kl_labeled_pseudo": kl_divergence(ratios, counts.kept),
        "kl_epsilon": KL_EPSILON,
        "mean_precision": float(precision.mean()) if with_precision and precision.size else None,
        "pixel_precision": (float(counts.correct.sum() / counts.evaluated.sum())
                            if with_precision and counts.evaluated.sum() else None),
        "histogram_source": histogram_source,  # inference (the store's rows) or images
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "mpx_s": {
            "thresholds": _rate(store.num_pixels, timings["pass1"] + timings["thresholds"]),
            "labels": _rate(counts.pixels, timings["pass2"]),
        },
    }
