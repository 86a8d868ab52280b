"""The per-run table a user reads first (``dars summary`` prints it, the report shows it)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dars.store.artifacts import read_json, write_csv

_METRICS = ("round", "miou", "epoch", "best_miou", "best_epoch", "tail_miou", "pixel_accuracy")
_PSEUDO = ("alpha", "kept_fraction", "kl_labeled_pseudo", "mean_precision")


def round_table(metrics: Sequence[str | os.PathLike[str]],
                pseudo_summaries: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Evaluation and pseudo-label summaries joined by round (every column, for the csv);
    ``pseudo_summaries[k]`` belongs to round k + 1 (round 0, the baseline, has none)."""
    df = pd.DataFrame([{k: read_json(m).get(k) for k in _METRICS} for m in metrics])
    df = df.set_index("round")
    for r, p in enumerate(pseudo_summaries, start=1):
        s = read_json(p)
        for key in _PSEUDO:
            df.loc[r, key] = s.get(key)
    return df.sort_index().reset_index()


def summarise(metrics: Sequence[str], pseudo_summaries: Sequence[str], out: Path) -> str:
    """Write :func:`round_table` as csv and return its non-empty columns as a text table."""
    df = round_table(metrics, pseudo_summaries)
    write_csv(df, out)
    return df.dropna(axis=1, how="all").to_string(index=False,
                                                  float_format=lambda v: f"{v:.4f}")
