"""HTML tables and matplotlib figures (Agg backend, no display) of the report and comparison."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dars.store.artifacts import atomic_path

_CSS = """<style>
body{font-family:system-ui,sans-serif;font-size:14px;margin:8px}
table{border-collapse:collapse;margin:0 0 16px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2} td.l,th.l{text-align:left}
caption{text-align:left;font-weight:bold;padding:4px 0}
pre{background:#f7f7f7;padding:8px}
</style>"""


def html_table(df: pd.DataFrame, caption: str, index: bool = False) -> str:
    """``df`` as an HTML table with a caption; floats to 4 significant digits, text escaped."""
    table = df.to_html(index=index, na_rep="–", border=0, float_format=lambda v: (
        ("∞" if v > 0 else "-∞") if np.isinf(v) else f"{v:.4g}"))
    head, rest = table.split(">", 1)
    return f"{head}><caption>{html.escape(caption)}</caption>{rest}"


def html_page(title: str, *parts: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title>{_CSS}</head><body>{''.join(parts)}</body></html>\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # text stays text in SVG (searchable, smaller); fixed ids keep reruns byte-identical
    plt.rcParams.update({"svg.hashsalt": "dars", "svg.fonttype": "none", "font.size": 9})
    return plt


def save_figure(fig, path: Path) -> None:  # noqa: ANN001
    suffix = path.suffix
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=suffix.lstrip("."), bbox_inches="tight", dpi=110,
                    metadata={"Date": None} if suffix == ".svg" else None)
    pyplot().close(fig)


def class_distribution_plot(names: Sequence[str], series: dict[str, np.ndarray], title: str,
                            out: Path) -> None:
    """Class shares of several label sets (``series``: legend label -> fractions) side by side
    on a log scale; a class a set lacks gets a "0" over a floor-height bar, to stay visible."""
    plt = pyplot()
    positive = np.concatenate([v[v > 0] for v in series.values()])
    floor = 10 ** np.floor(np.log10(positive.min() / 2)) if positive.size else 1e-6
    x = np.arange(len(names))
    k = len(series)
    w = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(5.0, (0.3 + 0.15 * k) * len(names) + 2), 3.4))
    for i, (label, values) in enumerate(series.items()):
        xs = x - 0.4 + w * (i + 0.5)
        ax.bar(xs, np.maximum(values, floor), w, label=label)
        for xi, v in zip(xs, values, strict=True):
            if v == 0:
                ax.text(xi, floor * 1.3, "0", ha="center", va="bottom", fontsize=7,
                        color="#a04000")
    ax.set_yscale("log")
    ax.set_ylim(floor, 1.5)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("fraction of labeled pixels")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7, ncol=min(k, 4))
    save_figure(fig, out)


def iou_plot(iou: pd.DataFrame, out: Path) -> None:
    """Per-class IoU, one bar per round."""
    plt = pyplot()
    x = np.arange(len(iou))
    k = len(iou.columns)
    w = 0.8 / max(k, 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(iou) + 2), 3.4))
    for i, col in enumerate(iou.columns):
        ax.bar(x - 0.4 + w * (i + 0.5), np.nan_to_num(iou[col].to_numpy(float)), w, label=col)
    ax.set_xticks(x, iou.index.astype(str), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU (val)")
    ax.legend(frameon=False, ncol=min(k, 4))
    save_figure(fig, out)
