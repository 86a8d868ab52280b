"""The per-run table a user reads first: mIoU per round (the last state's, and the best
validation's with its epoch) and the pseudo labels' KL and kept share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dars.store.artifacts import read_json, write_csv


def summarise(metrics: Sequence[str], pseudo_summaries: Sequence[str], out: Path) -> str:
    """Join evaluation and pseudo-label summaries by round; write csv, return a text table.

    ``pseudo_summaries[k]`` belongs to round k + 1 (round 0, the baseline, has no pseudo labels).
    """
    rows = []
    for m in metrics:
        s = read_json(m)
        rows.append({"round": s["round"], "miou": s["miou"], "epoch": s.get("epoch"),
                     "best_miou": s.get("best_miou"), "best_epoch": s.get("best_epoch"),
                     "tail_miou": s.get("tail_miou"), "pixel_accuracy": s["pixel_accuracy"]})
    df = pd.DataFrame(rows).set_index("round")
    for r, p in enumerate(pseudo_summaries, start=1):
        s = read_json(p)
        for key in ("alpha", "kept_fraction", "kl_labeled_pseudo", "mean_precision"):
            df.loc[r, key] = s.get(key)
    df = df.sort_index().reset_index()
    write_csv(df, out)
    shown = df.dropna(axis=1, how="all")
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")
