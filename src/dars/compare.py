"""``dars compare``: the paper's ablation (Tables 4 and 5, Figs. 1 and 3) from a run's branches.

The workflow's ``compare`` target thresholds the one round-1 store of the baseline with every
method of ``compare.methods`` and trains a student per method and seed under
``<run>/compare/<method>/seed<k>/round<s>/``; methods in ``compare.progressive`` continue for
every configured round. This module reads those branches and writes:

* ``table4.csv`` / ``.md``: per-class IoU, tail mIoU, mIoU (mean and std over seeds) and the
  gain over the baseline, one row per method and number of rounds;
* ``table5.csv`` / ``.md``: KL(labeled ‖ pseudo) of every method's pseudo labels, the kept
  fraction and the pseudo-label precision, with the per-class shortfall n_j − kept_j (as a
  fraction of n_j) so that a class the teacher cannot supply is shown, not averaged away;
* ``pseudo_per_class.csv``: the long-form per-class numbers behind Table 5;
* ``tables.html``: both tables for the Snakemake report;
* ``class_distribution.png`` (Fig. 1), ``iou.png`` and ``confidence.png`` (Fig. 3: confidence
  histograms of the most and least frequent labeled class, with the ties at 1.0).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dars.atomic import write_csv
from dars.errors import DarsError
from dars.report import (
    class_distribution_plot,
    html_page,
    html_table,
    iou_plot,
    pyplot,
    read_csv,
    read_json,
    save_figure,
    write_text,
)

log = logging.getLogger(__name__)

VARIANT = re.compile(r"(st|cbst|da|dars)(\+ts)?")
COMPARE_FILES = ("table4.csv", "table4.md", "table5.csv", "table5.md", "pseudo_per_class.csv",
                 "tables.html", "class_distribution.png", "iou.png", "confidence.png")


@dataclass(frozen=True)
class Variant:
    """One compared method: a thresholding method, optionally after temperature scaling."""

    method: str
    tempered: bool


def parse_variant(name: str) -> Variant:
    """``"cbst+ts"`` -> Variant("cbst", tempered=True)."""
    match = VARIANT.fullmatch(name)
    if not match:
        raise DarsError(f"unknown comparison method {name!r}: expected st, cbst, da or dars, "
                        "optionally with +ts")
    return Variant(match[1], match[2] is not None)


def branches(methods: Sequence[str], progressive: Sequence[str], rounds: int
             ) -> list[tuple[str, int]]:
    """(method, rounds run) of every table row: each method for 1 round, progressive for all.

    A progressive method's first round *is* its single-round run (same pseudo labels, same
    student), so it is trained once and appears in both rows.
    """
    rows = [(m, 1) for m in methods]
    if rounds > 1:
        rows += [(m, rounds) for m in progressive]
    return rows


def row_label(method: str, rounds: int) -> str:
    return method if rounds == 1 else f"{method} + IT ({rounds} rounds)"


def branch_dir(run_dir: str | Path, method: str, seed: int | str) -> Path:
    """Where one method's branch keeps its rounds (the workflow's rules write there too)."""
    return Path(run_dir) / "compare" / method / f"seed{seed}"


# --------------------------------------------------------------------------- tables


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def table4(run_dir: Path, rows: Sequence[tuple[str, int]], seeds: Sequence[int]) -> pd.DataFrame:
    """Per-class IoU, tail mIoU, mIoU ± std over seeds and gain over the baseline (round 0)."""
    base = read_json(run_dir / "round0" / "metrics.json")
    base_iou = read_csv(run_dir / "round0" / "metrics.csv")
    names = base_iou["name"].astype(str).tolist()

    def record(label: str, metrics: list[dict], per_class: list[np.ndarray]) -> dict:
        miou, std = _mean_std([m["miou"] for m in metrics])
        tails = [m.get("tail_miou") for m in metrics]
        tail = _mean_std(tails)[0] if None not in tails else float("nan")
        return {"method": label, "seeds": len(metrics),
                **dict(zip(names, np.mean(per_class, axis=0), strict=True)),
                "tail mIoU": tail, "mIoU": miou, "mIoU std": std,
                "gain": miou - base["miou"]}

    table = [record("baseline (round 0)", [base], [base_iou["iou"].to_numpy(float)])]
    for method, rounds in rows:
        metrics, per_class = [], []
        for seed in seeds:
            rd = branch_dir(run_dir, method, seed) / f"round{rounds}"
            metrics.append(read_json(rd / "metrics.json"))
            per_class.append(read_csv(rd / "metrics.csv")["iou"].to_numpy(float))
        table.append(record(row_label(method, rounds), metrics, per_class))
    return pd.DataFrame(table)


def pseudo_per_class(run_dir: Path, rows: Sequence[tuple[str, int]], seeds: Sequence[int]
                     ) -> pd.DataFrame:
    """Long form: every round of every branch and seed, per class (targets, kept, shortfall)."""
    frames = []
    for method, rounds in rows:
        for seed in seeds:
            stats = read_csv(branch_dir(run_dir, method, seed) / f"round{rounds}"
                              / "pseudo_stats.csv")
            frames.append(stats.assign(method=row_label(method, rounds), seed=seed,
                                       round=rounds))
    df = pd.concat(frames, ignore_index=True)
    df["shortfall_fraction"] = np.where(df["target"] > 0, df["shortfall"] / df["target"], 0.0)
    first = ["method", "round", "seed"]
    return df[first + [c for c in df.columns if c not in first]]


def table5(run_dir: Path, rows: Sequence[tuple[str, int]], seeds: Sequence[int],
           per_class: pd.DataFrame) -> pd.DataFrame:
    """KL(labeled ‖ pseudo), kept fraction, precision and per-class shortfall per method.

    The numbers describe the pseudo labels each row's student was trained on in its last
    round (round 1 for single-round rows). Shortfall columns are (n_j − kept_j) / n_j, mean
    over seeds: > 0 means class j got fewer pseudo labels than the labeled distribution asks
    for (DARS can only remove pixels, so a class the teacher rarely predicts stays short),
    < 0 means it got more.
    """
    table = []
    for method, rounds in rows:
        summaries = [read_json(branch_dir(run_dir, method, seed) / f"round{rounds}"
                                / "pseudo_summary.json") for seed in seeds]
        label = row_label(method, rounds)
        kl, kl_std = _mean_std([s["kl_labeled_pseudo"] for s in summaries])
        precision = [s.get("pixel_precision") for s in summaries]
        mine = per_class[per_class["method"] == label]
        short = mine.groupby("name", sort=False)["shortfall_fraction"].mean()
        table.append({
            "method": label, "round": rounds, "alpha": summaries[0]["alpha"],
            "temperature": float(np.mean([s["temperature"] for s in summaries])),
            "kept fraction": float(np.mean([s["kept_fraction"] for s in summaries])),
            "KL(labeled||pseudo)": kl, "KL std": kl_std,
            "pixel precision": (float(np.mean(precision)) if None not in precision
                                else float("nan")),
            **{f"short {name}": v for name, v in short.items()},
        })
    return pd.DataFrame(table)


def markdown_table(df: pd.DataFrame, formats: dict[str, str] | None = None,
                   default: str = "{:.3f}") -> str:
    """A GitHub markdown table; NaN prints as "–" (e.g. the std of a single seed)."""
    formats = formats or {}

    def cell(col: str, v: object) -> str:
        if isinstance(v, float | np.floating):
            return "–" if np.isnan(v) else formats.get(col, default).format(v)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---"
                          for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(c, v) for c, v in zip(df.columns, row, strict=True)) + " |"
            for row in df.itertuples(index=False, name=None)]
    return "\n".join([head, rule, *body]) + "\n"


# --------------------------------------------------------------------------- plots


def confidence_plot(hists: dict[str, np.ndarray], names: Sequence[str], classes: Sequence[int],
                    out: Path) -> None:
    """Fig. 3: confidence histograms of some classes, ties at exactly 1.0 drawn separately.

    ``hists`` maps a curve label (e.g. "T = 1") to a (C, NUM_BINS) float16 bit-pattern
    histogram; bins are merged to 40 on [0, 1) and the count at exactly 1.0 is a marker with
    its share of the class's pixels written next to it.
    """
    from dars.pseudo.confidence_hist import NUM_BINS, ONE_BITS

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


# --------------------------------------------------------------------------- the stage


def build_comparison(run_dir: str | Path, methods: Sequence[str], progressive: Sequence[str],
                     seeds: Sequence[int], rounds: int, out_dir: str | Path,
                     temperature: float | None = None, threads: int | None = None
                     ) -> list[Path]:
    """Write every file of :data:`COMPARE_FILES` under ``out_dir``; return their paths.

    ``temperature`` (the T of the "+ts" methods) adds a tempered curve to the confidence plot.
    """
    from dars.probstore import ProbStore
    from dars.pseudo.confidence_hist import store_histogram

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name in [*methods, *progressive]:
        parse_variant(name)
    rows = branches(methods, progressive, rounds)
    out = {name: out_dir / name for name in COMPARE_FILES}

    t4 = table4(run_dir, rows, seeds)
    per_class = pseudo_per_class(run_dir, rows, seeds)
    t5 = table5(run_dir, rows, seeds, per_class)
    for df, name in ((t4, "table4.csv"), (t5, "table5.csv"), (per_class, "pseudo_per_class.csv")):
        write_csv(df, out[name], float_format="%.6g")
    iou_cols = [c for c in t4.columns if c not in ("method", "seeds", "tail mIoU", "mIoU",
                                                   "mIoU std", "gain")]
    pct = {c: "{:.1f}" for c in [*iou_cols, "tail mIoU", "mIoU", "mIoU std", "gain"]}
    t4_pct = t4.copy()
    t4_pct[list(pct)] = t4_pct[list(pct)] * 100
    write_text(out["table4.md"], markdown_table(t4_pct, pct))
    write_text(out["table5.md"], markdown_table(
        t5, {"KL(labeled||pseudo)": "{:.2g}", "KL std": "{:.2g}", "alpha": "{:g}",
             "temperature": "{:.3g}", **{c: "{:+.1%}" for c in t5.columns
                                         if c.startswith("short ")}}))

    write_text(out["tables.html"], html_page(
        "Method comparison",
        html_table(t4, "Table 4: validation IoU per class, tail mIoU and mIoU (mean over "
                   "seeds), gain = mIoU - baseline mIoU"),
        html_table(t5, "Table 5: pseudo labels of each method: KL(labeled || pseudo), kept "
                   "fraction, precision, and per-class shortfall (n_j - kept_j) / n_j")))

    labeled = read_csv(run_dir / "label_histogram.csv")
    names = labeled["name"].astype(str).tolist()
    series = {"labeled set": labeled["ratio"].to_numpy(float)}
    for label in dict.fromkeys(t5["method"]):
        mine = per_class[per_class["method"] == label]
        series[label] = mine.groupby("class")["pseudo_ratio"].mean().reindex(
            range(len(names)), fill_value=0.0).to_numpy(float)
    class_distribution_plot(names, series, "class distribution: labeled set vs pseudo labels",
                            out["class_distribution.png"])
    iou_plot(t4.set_index("method")[iou_cols].T.rename_axis("class"), out["iou.png"])

    store = ProbStore(run_dir / "round1" / "probs.zarr")
    hists = {"T = 1": store_histogram(store, threads=threads)}
    if temperature is not None and temperature != 1.0 and store.has_probs:
        hists[f"T = {temperature:.3g}"] = store_histogram(store, temperature=temperature,
                                                          threads=threads)
    order = np.argsort(-labeled["ratio"].to_numpy(float), kind="stable")
    confidence_plot(hists, names, [int(order[0]), int(order[-1])], out["confidence.png"])
    log.info("comparison of %d rows x %d seeds written to %s", len(rows), len(seeds), out_dir)
    return list(out.values())


def compare_command(args: argparse.Namespace) -> None:
    from dars.pseudo.cli import temperature_arg

    temperature = temperature_arg(args.temperature) if args.temperature else None
    build_comparison(args.run_dir, args.methods, args.progressive, args.seeds, args.rounds,
                     args.out_dir, temperature=temperature, threads=args.threads)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``compare``."""
    p = subparsers.add_parser(
        "compare", help="tables and plots of the method comparison (Table 4/5, Fig. 1/3)",
        description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="results/<run>")
    p.add_argument("--methods", nargs="+", required=True, help="single-round methods")
    p.add_argument("--progressive", nargs="*", default=[], help="methods run for all rounds")
    p.add_argument("--seeds", nargs="+", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True, help="rounds of progressive methods")
    p.add_argument("--temperature", default=None, metavar="T|FILE",
                   help="T of the +ts methods (a number or calibration json), for Fig. 3")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", required=True, help="folder for the tables and plots")
    p.set_defaults(handler=compare_command)
