"""``dars merge-pseudo-shards``: join the outputs of N ``pseudo-label --shard i/N`` jobs.

Every shard computed the same thresholds (from the summed confidence histograms of all shards)
and labelled its own contiguous range of images, so the merged directory holds exactly the
PNGs one unsharded job writes. The diagnostics are re-assembled from the shards': per-class
kept counts add up, ratios, shortfall and KL are recomputed from the sums, and per-class
precision is combined through the correct/evaluated counts (``evaluated`` and ``correct``
columns when the stats have them, else precision x kept, which is exact when the true masks have
no ignore pixels, as in the demo -- the only dataset whose unlabeled masks are known).

The ranges every sharded stage cuts the images into are :mod:`dars.sharding`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dars.atomic import (
    MANIFEST,
    atomic_path,
    check_files,
    read_manifest,
    write_csv,
    write_json,
    write_manifest,
)
from dars.errors import DarsError

log = logging.getLogger(__name__)

# Columns that come from the shared thresholds and so must agree across shards.
_SHARED_THRESHOLD_COLUMNS = ("class", "name", "target", "threshold", "selected", "tied", "keep")
_SHARED_STATS_COLUMNS = ("class", "name", "labeled_ratio", "target", "threshold", "selected",
                         "keep")


def _read_csvs(paths: Sequence[str | os.PathLike[str]]) -> list[pd.DataFrame]:
    try:
        return [pd.read_csv(p) for p in paths]
    except (OSError, ValueError) as exc:
        raise DarsError(f"cannot read shard table: {exc}") from exc


def _check_shared(frames: list[pd.DataFrame], columns: Sequence[str], what: str) -> None:
    first = frames[0]
    for i, df in enumerate(frames[1:], start=1):
        cols = [c for c in columns if c in first.columns]
        if len(df) != len(first) or not df[cols].equals(first[cols]):
            raise DarsError(f"{what} of shard {i} differs from shard 0 in {cols}: the shards "
                            "were not computed from the same confidence histograms")


def link_or_copy_tree(sources: Sequence[Path], out: Path) -> dict[str, dict]:
    """Hard-link (or copy) every label file of the ``sources`` trees into ``out``, each
    shard checked against its manifest first; return the merged manifest entries.

    Refuses two shards writing the same file (the shard ranges must be disjoint).
    """
    merged: dict[str, dict] = {}
    for src in sources:
        if not src.is_dir():
            raise DarsError(f"shard label directory not found: {src}")
        remedy = f"delete {src} and rerun its pseudo_label_shard job"
        files = read_manifest(src, remedy)
        check_files(src, files, remedy)
        merged.update(files)
        for path in sorted(src.rglob("*")):
            if path.is_dir() or path.name.startswith(".snakemake") or path.name == MANIFEST:
                continue  # Snakemake's .snakemake_timestamp marker of directory outputs
            dest = out / path.relative_to(src)
            if dest.exists():
                raise DarsError(f"{path.relative_to(src)} is in two shards")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
    return merged


def merge_tables(thresholds: list[pd.DataFrame], stats: list[pd.DataFrame]
                 ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Merged thresholds and stats tables, plus per-class correct and evaluated counts."""
    _check_shared(thresholds, _SHARED_THRESHOLD_COLUMNS, "thresholds.csv")
    _check_shared(stats, _SHARED_STATS_COLUMNS, "pseudo_stats.csv")
    kept = sum(df["kept"].to_numpy(np.int64) for df in stats)
    if "evaluated" in stats[0].columns and "correct" in stats[0].columns:
        evaluated = sum(df["evaluated"].to_numpy(np.int64) for df in stats)
        correct = sum(df["correct"].to_numpy(np.int64) for df in stats)
    else:
        evaluated = sum(np.where(df["precision"].notna(), df["kept"], 0).astype(np.int64)
                        for df in stats)
        correct = sum(np.rint(df["precision"].fillna(0).to_numpy() * df["kept"].to_numpy())
                      .astype(np.int64) for df in stats)
    merged_thresholds = thresholds[0].assign(kept=kept)
    total = int(kept.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(evaluated > 0, correct / evaluated, np.nan)
    any_precision = any(df["precision"].notna().any() for df in stats)
    merged_stats = stats[0].assign(
        pseudo_ratio=kept / total if total else np.zeros(len(kept)),
        kept=kept,
        shortfall=stats[0]["target"].to_numpy(np.int64) - kept,
        precision=precision if any_precision else np.nan,
    )
    if "evaluated" in merged_stats.columns:
        merged_stats = merged_stats.assign(evaluated=evaluated, correct=correct)
    return merged_thresholds, merged_stats, correct, evaluated


def merge_summaries(summaries: list[dict], stats: pd.DataFrame, correct: np.ndarray,
                    evaluated: np.ndarray) -> dict:
    """One summary as an unsharded job would write it (timings: summed over the shards)."""
    from dars.pseudo.stage import kl_divergence

    first = summaries[0]
    for key in ("method", "sampling", "alpha", "temperature", "seed", "num_classes",
                "store_pixels"):
        if any(s.get(key) != first.get(key) for s in summaries):
            raise DarsError(f"pseudo-label shards disagree on {key}")
    kept = stats["kept"].to_numpy(np.int64)
    pixels = sum(int(s["num_pixels"]) for s in summaries)
    with_precision = first.get("pixel_precision") is not None
    has = evaluated > 0
    timings: dict[str, float] = {}
    for s in summaries:
        for k, v in (s.get("timings_s") or {}).items():
            timings[k] = round(timings.get(k, 0.0) + float(v), 4)
    merged = {
        **first,
        "shard": None,
        "shards": len(summaries),
        "num_images": sum(int(s["num_images"]) for s in summaries),
        "num_pixels": pixels,
        "kept_pixels": int(kept.sum()),
        "kept_fraction": int(kept.sum()) / pixels if pixels else 0.0,
        "kl_labeled_pseudo": kl_divergence(stats["labeled_ratio"].to_numpy(), kept),
        "mean_precision": (float((correct[has] / evaluated[has]).mean())
                           if with_precision and has.any() else None),
        "pixel_precision": (float(correct.sum() / evaluated.sum())
                            if with_precision and evaluated.sum() else None),
        "timings_s": timings,
    }
    merged.pop("mpx_s", None)
    return merged


def merge_pseudo_shards(labels: Sequence[str | os.PathLike[str]],
                        thresholds: Sequence[str | os.PathLike[str]],
                        stats: Sequence[str | os.PathLike[str]],
                        summaries: Sequence[str | os.PathLike[str]], *,
                        labels_out: str | os.PathLike[str],
                        thresholds_out: str | os.PathLike[str],
                        stats_out: str | os.PathLike[str],
                        summary_out: str | os.PathLike[str]) -> dict:
    """Merge shard outputs (given in shard order) into the unsharded stage's four outputs."""
    n = len(labels)
    if not n or not len(thresholds) == len(stats) == len(summaries) == n:
        raise DarsError(f"need the same number (>= 1) of label dirs, thresholds, stats and "
                        f"summaries, got {n}, {len(thresholds)}, {len(stats)}, {len(summaries)}")
    try:
        shard_summaries = [json.loads(Path(p).read_text()) for p in summaries]
    except (OSError, ValueError) as exc:
        raise DarsError(f"cannot read shard summary: {exc}") from exc
    merged_thresholds, merged_stats, correct, evaluated = merge_tables(
        _read_csvs(thresholds), _read_csvs(stats))
    summary = merge_summaries(shard_summaries, merged_stats, correct, evaluated)
    with atomic_path(labels_out) as tmp:
        tmp.mkdir()
        manifest = link_or_copy_tree([Path(p) for p in labels], tmp)
        files = len(manifest)
        if files != summary["num_images"]:
            raise DarsError(f"shards hold {files} label files but report "
                            f"{summary['num_images']} images")
        write_manifest(tmp, manifest)
    write_csv(merged_thresholds, thresholds_out)
    write_csv(merged_stats, stats_out)
    write_json(summary, summary_out)
    log.info("merged %d shards: %d pseudo-label images, kept fraction %.4f", n, files,
             summary["kept_fraction"])
    return summary


def merge_command(args: argparse.Namespace) -> None:
    merge_pseudo_shards(args.labels, args.thresholds, args.stats, args.summaries,
                        labels_out=args.labels_out, thresholds_out=args.thresholds_out,
                        stats_out=args.stats_out, summary_out=args.summary_out)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``merge-pseudo-shards``."""
    p = subparsers.add_parser(
        "merge-pseudo-shards", help="join the outputs of `pseudo-label --shard i/N` jobs",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", nargs="+", required=True, help="label directory per shard")
    p.add_argument("--thresholds", nargs="+", required=True, help="thresholds.csv per shard")
    p.add_argument("--stats", nargs="+", required=True, help="pseudo_stats.csv per shard")
    p.add_argument("--summaries", nargs="+", required=True, help="summary.json per shard")
    p.add_argument("--labels-out", required=True)
    p.add_argument("--thresholds-out", required=True)
    p.add_argument("--stats-out", required=True)
    p.add_argument("--summary-out", required=True)
    p.set_defaults(handler=merge_command)
