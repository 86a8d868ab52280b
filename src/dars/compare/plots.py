"""The comparison's figures: Fig. 1, the IoU per class of every row, and Fig. 3."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dars.core.constants import NUM_BINS, ONE_BITS
from dars.reporting.render import class_distribution_plot, iou_plot, pyplot, save_figure


def class_distribution(labeled: pd.DataFrame, t5: pd.DataFrame, per_class: pd.DataFrame,
                       out: Path) -> None:
    """Fig. 1: the labeled set's class ratios and the mean pseudo-label ratios of every row
    that keeps pseudo labels (the control keeps none)."""
    names = labeled["name"].astype(str).tolist()
    series = {"labeled set": labeled["ratio"].to_numpy(float)}
    for label in dict.fromkeys(t5["method"]):
        mine = per_class[per_class["method"] == label]
        if mine["kept"].sum() == 0:
            continue
        series[label] = mine.groupby("class")["pseudo_ratio"].mean().reindex(
            range(len(names)), fill_value=0.0).to_numpy(float)
    class_distribution_plot(names, series, "class distribution: labeled set vs pseudo labels",
                            out)


def iou(t4: pd.DataFrame, names: Sequence[str], out: Path) -> None:
    """The per-class IoU of every row of Table 4."""
    iou_plot(t4.set_index("method")[list(names)].T.rename_axis("class"), out)


def confidence_plot(hists: dict[str, np.ndarray], names: Sequence[str], classes: Sequence[int],
                    out: Path) -> None:
    """Fig. 3: confidence histograms of ``classes`` in 40 bins on [0, 1), and the ties at exactly
    1.0 (what DARS's sampling resolves) as a marker labelled with their share of the pixels.

    ``hists``: curve label (e.g. "T = 1") -> (C, NUM_BINS) float16 bit-pattern histogram."""
    plt = pyplot()
    values = np.arange(NUM_BINS, dtype=np.uint16).view(np.float16).astype(float)
    edges = np.linspace(0, 1, 41)
    which = np.clip(np.digitize(values, edges) - 1, 0, 39)
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.2), squeeze=False)
    for ax, c in zip(axes[0], classes, strict=True):
        for (label, hist), color in zip(hists.items(), ("#4c72b0", "#dd8452", "#55a868"),
                                        strict=False):
            row = hist[c].astype(float)
            total = row.sum()
            if total == 0:
                ax.text(0.5, 0.5, "never predicted", transform=ax.transAxes, ha="center")
                continue
            below = np.bincount(which[:ONE_BITS], weights=row[:ONE_BITS], minlength=40) / total
            ax.stairs(below, edges, label=label, color=color)
            ones = row[ONE_BITS] / total
            if ones > 0:
                ax.plot([1.0], [ones], "o", color=color)
                ax.annotate(f"{ones:.0%} at exactly 1.0", (1.0, ones), xytext=(-4, 4),
                            textcoords="offset points", ha="right", fontsize=7, color=color)
        ax.set_yscale("log")
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("confidence (max softmax)")
        ax.set_title(f"{names[c]} (predicted pixels)")
    axes[0][0].set_ylabel("fraction of the pixels predicted as the class")
    axes[0][0].legend(frameon=False, fontsize=7)
    save_figure(fig, out)
