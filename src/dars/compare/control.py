"""``dars blank-labels``: the labeled-only control, every branch's student round (same init,
schedule, steps, batches, augmentation) with an all-ignore pseudo half (zero loss); what is left
is the effect of the extra labeled steps, which tells whether pseudo labels help at all."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from dars.compare.runs import LABELED_ONLY
from dars.core.constants import IGNORE
from dars.pseudo.stage import read_label_histogram
from dars.pseudo.thresholds import check_alpha, round_half_up
from dars.store.artifacts import atomic_path, write_csv, write_json
from dars.store.probstore import ProbStore

log = logging.getLogger(__name__)

def write_blank_labels(store_path: str | os.PathLike[str], label_hist: str | os.PathLike[str],
                       labels_out: str | os.PathLike[str], stats_out: str | os.PathLike[str],
                       summary_out: str | os.PathLike[str], alpha: float) -> dict:
    """One all-ignore PNG per store image, so the trainer needs no special case, and stats and
    summary in the pseudo-label stage's columns: kept 0 of n_j = round(alpha * P * r_j)."""
    check_alpha(alpha)
    store = ProbStore(store_path)
    names, ratios = read_label_histogram(label_hist, store.num_classes)
    with atomic_path(labels_out) as tmp:
        tmp.mkdir()
        for image_id, (h, w) in zip(store.image_ids, store.shapes.tolist(), strict=True):
            path = tmp.joinpath(*PurePosixPath(f"{image_id}.png").parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((h, w), IGNORE, np.uint8)).save(path, format="PNG")
    target = round_half_up(alpha * store.num_pixels * ratios)
    zeros = np.zeros(len(names), np.int64)
    write_csv(pd.DataFrame({
        "class": np.arange(len(names)), "name": names, "labeled_ratio": ratios,
        "pseudo_ratio": 0.0, "target": target, "threshold": np.inf, "selected": zeros,
        "keep": 0.0, "kept": zeros, "shortfall": target, "precision": np.nan}), stats_out)
    summary = {"method": LABELED_ONLY, "alpha": alpha, "temperature": None,
               "num_classes": store.num_classes, "num_images": len(store),
               "num_pixels": store.num_pixels, "kept_pixels": 0, "kept_fraction": 0.0,
               "target_fraction": float(target.sum() / max(store.num_pixels, 1)),
               "kl_labeled_pseudo": None, "pixel_precision": None, "mean_precision": None}
    write_json(summary, summary_out)
    log.info("labeled-only control: %d all-ignore label images", len(store))
    return summary


def blank_labels_command(args: argparse.Namespace) -> None:
    write_blank_labels(args.store, args.label_hist, args.labels_out, args.stats_out,
                       args.summary_out, args.alpha)


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--store", required=True, help="probs.zarr giving the unlabeled images")
    b.add_argument("--label-hist", required=True, help="label_histogram.csv")
    b.add_argument("--alpha", type=float, required=True,
                   help="the round's alpha (for the n_j the stats compare against)")
    b.add_argument("--labels-out", required=True, help="directory of <image_id>.png")
    b.add_argument("--stats-out", required=True, help="pseudo_stats.csv")
    b.add_argument("--summary-out", required=True, help="pseudo_summary.json")
