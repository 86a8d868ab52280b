"""``dars compare``: the paper's ablation (Tables 4 and 5, Figs. 1 and 3) from a run's branches.

The workflow's ``compare`` target trains one baseline per teacher seed of
``compare.teacher_seeds`` (the teacher whose seed is the run's ``seed`` *is* the run's baseline;
the others live under ``<run>/compare/teacher<t>/``), thresholds each teacher's round-1 store with
every method of ``compare.methods`` and trains a student per method and student seed under
``<run>/compare/teacher<t>/<method>/seed<k>/round<s>/``; methods in ``compare.progressive``
continue for every configured round. ``labeled-only`` is the control: the same student round
(init, schedule, steps, batch composition, augmentation) whose pseudo-labeled half is all ignore
(:func:`write_blank_labels`), so it adds zero loss and only the extra labeled steps remain.

This module reads those branches into ``runs.csv`` (one row per teacher, student seed and table
row: the raw numbers) and derives everything else from it:

* ``table4.csv``: per-class IoU, tail mIoU and mIoU (mean and 95 % Student-t interval over all
  (teacher, student) runs), one row per method and number of rounds;
* ``differences.csv``: paired differences of mIoU -- each row minus its own teacher's baseline,
  and minus ST and minus labeled-only on the same teacher and student seed -- with 95 % t
  intervals and a verdict ("better" / "worse" only when the interval excludes 0);
* ``table5.csv``: KL(labeled || pseudo) of every method's pseudo labels (mean, 95 % interval),
  the kept fraction, the pseudo-label precision, and the per-class shortfall (n_j - kept_j) / n_j
  so that a class the teacher cannot supply is shown, not averaged away;
* ``table4.md`` / ``table5.md`` and ``tables.md`` (both, under a line naming the command, the
  commit, the machine and the seeds: what ``dars compare --markdown RESULTS_DIR`` prints, to be
  pasted verbatim); ``provenance.json`` holds those facts;
* ``pseudo_per_class.csv``: the long-form per-class numbers behind Table 5;
* ``tables.html``: both tables for the Snakemake report;
* ``class_distribution.png`` (Fig. 1), ``iou.png`` and ``confidence.png`` (Fig. 3: confidence
  histograms of the most and least frequent labeled class of the first teacher, with the ties
  at 1.0).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from dars.core.errors import DarsError
from dars.core.options import temperature_arg
from dars.pseudo.thresholds import METHODS, check_alpha, round_half_up
from dars.reporting.render import (
    class_distribution_plot,
    html_page,
    html_table,
    iou_plot,
    pyplot,
    save_figure,
    write_text,
)
from dars.store.artifacts import atomic_path, read_csv, read_json, write_csv, write_json

log = logging.getLogger(__name__)

# The names of the compared methods. The thresholding methods are dars.pseudo.thresholds.METHODS
# (the one list; the schema's pseudo_label.method enum and $defs.variant pattern are tested
# against it and against VARIANT); "+ts" = temperature scaling first; "@<alpha>" = round 1 at
# that alpha instead of the round's (e.g. DARS keeping as much as CBST does, to tell the amount
# of pseudo labels from their class balance); labeled-only = the control.
TEMPERED = "+ts"
AT_ALPHA = "@"
LABELED_ONLY = "labeled-only"
THRESHOLDED = re.compile(rf"({'|'.join(METHODS)})({re.escape(TEMPERED)})?"
                         rf"(?:{AT_ALPHA}(0\.[0-9]*[1-9]|1))?")
VARIANT = re.compile(rf"{THRESHOLDED.pattern}|{LABELED_ONLY}")
BASELINE = "baseline (round 0)"
REFERENCES = ("st", LABELED_ONLY)  # the paired differences of every row against these
LEVEL = 0.95  # of every interval
COMPARE_FILES = ("runs.csv", "table4.csv", "table4.md", "differences.csv", "table5.csv",
                 "table5.md", "tables.md", "provenance.json", "pseudo_per_class.csv",
                 "tables.html", "class_distribution.png", "iou.png", "confidence.png")


@dataclass(frozen=True)
class Variant:
    """One compared method: a thresholding method, optionally after temperature scaling and at
    its own round-1 alpha (None = the round's), or the labeled-only control (no pseudo labels)."""

    method: str
    tempered: bool
    alpha: float | None = None


def parse_variant(name: str) -> Variant:
    """``"cbst+ts"`` -> Variant("cbst", tempered=True); ``"dars@0.45"`` -> Variant("dars",
    False, alpha=0.45); ``"labeled-only"`` -> the control."""
    if name == LABELED_ONLY:
        return Variant(LABELED_ONLY, tempered=False)
    match = THRESHOLDED.fullmatch(name)
    if not match:
        raise DarsError(f"unknown comparison method {name!r}: expected {', '.join(METHODS)} "
                        f"(optionally with {TEMPERED}, then {AT_ALPHA}<alpha in (0, 1]>) "
                        f"or {LABELED_ONLY}")
    return Variant(match[1], match[2] is not None, float(match[3]) if match[3] else None)


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


def resolve_teacher_seeds(teacher_seeds: Sequence[int] | None, run_seed: int) -> list[int]:
    """``compare.teacher_seeds``; unset (null) means the run's own baseline only."""
    return list(teacher_seeds) if teacher_seeds else [int(run_seed)]


def separate_teacher_dir(run_dir: str | Path, teacher: int | str) -> Path:
    """Where a teacher other than the run's own baseline is trained (round0/, round1/probs.zarr)."""
    return Path(run_dir) / "compare" / f"teacher{teacher}"


def teacher_dir(run_dir: str | Path, teacher: int, run_seed: int) -> Path:
    """The teacher of seed ``teacher``: the run itself for the run's seed (its baseline and
    round-1 store are the same training, so they are reused), else a separate one."""
    return Path(run_dir) if int(teacher) == int(run_seed) else separate_teacher_dir(run_dir,
                                                                                  teacher)


#: A teacher's round-1 stores, one per temperature (inference applies T): at T = 1 the
#: teacher's ``round1/probs.zarr`` (for the run's own teacher only while the run itself is at
#: T = 1, else ``round1/probs_t1.zarr``); the "+ts" methods of every teacher share
#: ``compare/teacher<t>/round1/probs_ts.zarr``, inferred at compare.temperature.
UNTEMPERED_STORE, RUN_T1_STORE, TEMPERED_STORE = "probs.zarr", "probs_t1.zarr", "probs_ts.zarr"


def round1_store(run_dir: str | Path, teacher: int, run_seed: int, tempered: bool,
                 run_at_t1: bool = True) -> Path:
    """The round-1 store of ``teacher`` that a branch thresholds (see :data:`TEMPERED_STORE`)."""
    if tempered:
        return separate_teacher_dir(run_dir, teacher) / "round1" / TEMPERED_STORE
    own = teacher_dir(run_dir, teacher, run_seed) / "round1"
    return own / (UNTEMPERED_STORE if run_at_t1 or int(teacher) != int(run_seed)
                  else RUN_T1_STORE)


def branch_dir(run_dir: str | Path, teacher: int | str, method: str, seed: int | str) -> Path:
    """Where one (teacher, method, student seed) branch keeps its rounds (the rules write there)."""
    return Path(run_dir) / "compare" / f"teacher{teacher}" / method / f"seed{seed}"


@dataclass(frozen=True)
class Comparison:
    """What ``compare:`` asks for, plus the run's seed (whose teacher is the run's baseline)."""

    methods: tuple[str, ...]
    progressive: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_seeds: tuple[int, ...]
    run_seed: int
    rounds: int

    def __post_init__(self) -> None:
        for name in (*self.methods, *self.progressive):
            parse_variant(name)

    @property
    def rows(self) -> list[tuple[str, int]]:
        return branches(self.methods, self.progressive, self.rounds)


# --------------------------------------------------------------------------- the control


def write_blank_labels(store_path: str | os.PathLike[str], label_hist: str | os.PathLike[str],
                       labels_out: str | os.PathLike[str], stats_out: str | os.PathLike[str],
                       summary_out: str | os.PathLike[str], alpha: float) -> dict:
    """The labeled-only control's pseudo labels: one all-ignore PNG per unlabeled image.

    The student then runs exactly like every other branch (same batches, augmentation and
    steps; the pseudo half is forwarded) but its pseudo loss is 0, so the trainer needs no
    special case. The store gives the image ids and sizes only. ``pseudo_stats.csv`` and
    ``pseudo_summary.json`` have the pseudo-label stage's columns: kept 0 of the n_j =
    round(alpha * P * r_j) the round would ask for (shortfall n_j), no KL, no precision.
    """
    from PIL import Image

    from dars.core.constants import IGNORE
    from dars.pseudo.stage import read_label_histogram
    from dars.store.probstore import ProbStore

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


# --------------------------------------------------------------------------- intervals


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (scipy is not a dependency)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) of Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on :func:`t_cdf`; p in (0, 1))."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise DarsError(f"t quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its Student-t interval (NaN bounds when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def verdict(self) -> str:
        """For a difference: a sign is claimed only when the interval excludes 0."""
        if self.n < 2:
            return "n=1, no interval"
        if self.lo > 0:
            return "better"
        if self.hi < 0:
            return "worse"
        return "not distinguishable"


def t_interval(values: Sequence[float] | pd.Series, level: float = LEVEL) -> Interval:
    """mean ± t_{(1+level)/2, n-1} · s / √n, the runs treated as independent draws.

    A missing value (NaN: e.g. no precision without true masks) makes everything NaN.
    """
    x = np.asarray(values, float)
    if x.size == 0 or np.isnan(x).any():
        return Interval(math.nan, math.nan, math.nan, int(x.size))
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile((1 + level) / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size))


# --------------------------------------------------------------------------- the runs


def _prefixed(df: pd.DataFrame, prefix: str) -> list[str]:
    """Class names of the ``<prefix><name>`` columns of runs.csv, in order."""
    return [c[len(prefix):] for c in df.columns if c.startswith(prefix)]


def _evaluation(rd: Path) -> tuple[list[str], dict]:
    metrics = read_json(rd / "metrics.json")
    per_class = read_csv(rd / "metrics.csv")
    names = per_class["name"].astype(str).tolist()
    tail = metrics.get("tail_miou")
    return names, {"miou": metrics["miou"], "tail_miou": math.nan if tail is None else tail,
                   **{f"iou:{n}": v for n, v in zip(names, per_class["iou"].astype(float),
                                                    strict=True)}}


def _pseudo(rd: Path) -> dict:
    summary = read_json(rd / "pseudo_summary.json")
    stats = read_csv(rd / "pseudo_stats.csv")
    target = stats["target"].to_numpy(float)
    short = np.where(target > 0, stats["shortfall"].to_numpy(float) / np.maximum(target, 1), 0.0)

    def number(key: str) -> float:
        value = summary.get(key)
        return math.nan if value is None else float(value)

    return {"alpha": number("alpha"), "temperature": number("temperature"),
            "kept_fraction": number("kept_fraction"), "kl": number("kl_labeled_pseudo"),
            "precision": number("pixel_precision"),
            **{f"short:{n}": v for n, v in zip(stats["name"].astype(str), short, strict=True)}}


def collect_runs(run_dir: str | Path, comparison: Comparison) -> pd.DataFrame:
    """One row per teacher (its baseline) and per (table row, teacher, student seed).

    Columns: row (the table label), method, rounds, teacher, seed (none for baselines),
    miou, tail_miou, ``iou:<class>``, and for students alpha, temperature, kept_fraction, kl,
    precision and ``short:<class>`` (the shortfall fraction of the last round's pseudo labels).
    """
    run_dir = Path(run_dir)
    records, classes = [], None
    for t in comparison.teacher_seeds:
        rd = teacher_dir(run_dir, t, comparison.run_seed) / "round0"
        classes, metrics = _evaluation(rd)
        records.append({"row": BASELINE, "method": "baseline", "rounds": 0, "teacher": t,
                        "seed": None, **metrics})
    for method, rounds in comparison.rows:
        for t in comparison.teacher_seeds:
            for k in comparison.seeds:
                rd = branch_dir(run_dir, t, method, k) / f"round{rounds}"
                names, metrics = _evaluation(rd)
                if names != classes:
                    raise DarsError(f"{rd}/metrics.csv has classes {names}, the baseline "
                                    f"{classes}")
                records.append({"row": row_label(method, rounds), "method": method,
                                "rounds": rounds, "teacher": t, "seed": k, **metrics,
                                **_pseudo(rd)})
    runs = pd.DataFrame(records)
    runs["seed"] = runs["seed"].astype("Int64")
    return runs


def read_runs(path: Path) -> pd.DataFrame:
    runs = read_csv(path)
    missing = {"row", "method", "rounds", "teacher", "seed", "miou"} - set(runs.columns)
    if missing:
        raise DarsError(f"{path}: not a runs table of `dars compare` (missing {sorted(missing)})")
    runs["seed"] = runs["seed"].astype("Int64")
    return runs


# --------------------------------------------------------------------------- tables


def _mean(values: pd.Series) -> float:
    """Mean over runs; NaN when any run lacks the value (never a mean of a subset)."""
    return t_interval(values).mean


def table4(runs: pd.DataFrame) -> pd.DataFrame:
    """Per table row: per-class IoU and tail mIoU (means over runs), mIoU with its interval.

    The baseline row is over teachers (one baseline each); the others over all (teacher,
    student seed) runs.
    """
    names = _prefixed(runs, "iou:")
    rows = []
    for label, g in runs.groupby("row", sort=False):
        ci = t_interval(g["miou"])
        rows.append({"method": label, "variant": g["method"].iloc[0],
                     "rounds": int(g["rounds"].iloc[0]), "runs": ci.n,
                     **{n: g[f"iou:{n}"].mean() for n in names},
                     "tail mIoU": _mean(g["tail_miou"]), "mIoU": ci.mean, "mIoU lo": ci.lo,
                     "mIoU hi": ci.hi})
    return pd.DataFrame(rows)


def _difference(label: str, reference: str, vs: str, values: pd.Series) -> dict:
    ci = t_interval(values)
    return {"method": label, "reference": reference, "vs": vs, "n": ci.n,
            "difference": ci.mean, "lo": ci.lo, "hi": ci.hi, "verdict": ci.verdict}


def differences(runs: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """Paired differences of ``metric`` for every student row.

    * vs the baseline: each run minus the baseline of its own teacher;
    * vs st and vs labeled-only (when in the comparison): each run minus the reference run on
      the same teacher and student seed, the reference having the same number of rounds when
      the comparison has it (e.g. dars + IT vs st + IT), else its 1-round row.
    """
    students = runs[runs["method"] != "baseline"]
    base = runs[runs["method"] == "baseline"][["teacher", metric]]
    present = set(zip(students["method"], students["rounds"], strict=True))
    out = []
    for (label, method, rounds), g in students.groupby(["row", "method", "rounds"], sort=False):
        paired = g.merge(base, on="teacher", suffixes=("", "_ref"))
        out.append(_difference(label, "baseline", BASELINE,
                               paired[metric] - paired[f"{metric}_ref"]))
        for ref in REFERENCES:
            ref_rounds = next((r for r in (rounds, 1) if (ref, r) in present), None)
            if ref_rounds is None or (ref, ref_rounds) == (method, rounds):
                continue
            other = students[(students["method"] == ref) & (students["rounds"] == ref_rounds)]
            paired = g.merge(other[["teacher", "seed", metric]], on=["teacher", "seed"],
                             suffixes=("", "_ref"))
            out.append(_difference(label, ref, row_label(ref, ref_rounds),
                                   paired[metric] - paired[f"{metric}_ref"]))
    return pd.DataFrame(out, columns=["method", "reference", "vs", "n", "difference", "lo",
                                      "hi", "verdict"])


def table5(runs: pd.DataFrame) -> pd.DataFrame:
    """KL(labeled ‖ pseudo) (mean and interval), kept fraction, precision and per-class
    shortfall of every student row.

    The numbers describe the pseudo labels each row's student was trained on in its last
    round (round 1 for single-round rows). Shortfall columns are (n_j − kept_j) / n_j, mean
    over runs: > 0 means class j got fewer pseudo labels than the labeled distribution asks
    for (DARS can only remove pixels, so a class the teacher rarely predicts stays short),
    < 0 means it got more; the labeled-only control keeps nothing (+100 %, no KL).
    """
    names = _prefixed(runs, "short:")
    rows = []
    for label, g in runs[runs["method"] != "baseline"].groupby("row", sort=False):
        kl = t_interval(g["kl"])
        rows.append({"method": label, "round": int(g["rounds"].iloc[0]), "runs": len(g),
                     "alpha": g["alpha"].iloc[0], "temperature": _mean(g["temperature"]),
                     "kept fraction": _mean(g["kept_fraction"]),
                     "KL(labeled||pseudo)": kl.mean, "KL lo": kl.lo, "KL hi": kl.hi,
                     "pixel precision": _mean(g["precision"]),
                     **{f"short {n}": g[f"short:{n}"].mean() for n in names}})
    return pd.DataFrame(rows)


def pseudo_per_class(run_dir: Path, comparison: Comparison) -> pd.DataFrame:
    """Long form: the last round of every branch, teacher and seed, per class."""
    frames = []
    for method, rounds in comparison.rows:
        for t in comparison.teacher_seeds:
            for k in comparison.seeds:
                stats = read_csv(branch_dir(run_dir, t, method, k) / f"round{rounds}"
                                 / "pseudo_stats.csv")
                frames.append(stats.assign(method=row_label(method, rounds), teacher=t,
                                           seed=k, round=rounds))
    df = pd.concat(frames, ignore_index=True)
    df["shortfall_fraction"] = np.where(df["target"] > 0, df["shortfall"] / df["target"], 0.0)
    first = ["method", "round", "teacher", "seed"]
    return df[first + [c for c in df.columns if c not in first]]


# --------------------------------------------------------------------------- markdown


def _nan(v: object) -> bool:
    return v is None or (isinstance(v, float | np.floating) and math.isnan(v))


def _with_interval(mean: float, lo: float, hi: float, n: int, fmt: str,
                   bounds: str | None = None) -> str:
    """"mean [lo, hi]", or the mean and "(n=1, no interval)"; ``bounds`` formats lo and hi."""
    if _nan(mean):
        return "–"
    mean, lo, hi = (round(v, 9) + 0.0 for v in (mean, lo, hi))  # no "-0.0" from rounding
    if n < 2:
        return f"{fmt.format(mean)} (n=1, no interval)"
    bounds = bounds or fmt
    return f"{fmt.format(mean)} [{bounds.format(lo)}, {bounds.format(hi)}]"


def _difference_cell(d: pd.Series) -> str:
    """"+1.2 [0.3, 2.1] better", in IoU points."""
    cell = _with_interval(100 * d["difference"], 100 * d["lo"], 100 * d["hi"], int(d["n"]),
                          "{:+.1f}", "{:.1f}")
    return cell if int(d["n"]) < 2 or cell == "–" else f"{cell} {d['verdict']}"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table of already formatted cells (tabulate, no number re-parsing)."""
    align = ["left" if c in ("method", "variant") else "right" for c in df.columns]
    return df.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def _fmt(v: object, fmt: str) -> str:
    return "–" if _nan(v) else fmt.format(v)


def table4_markdown(t4: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """Table 4 in IoU points: class IoU, tail mIoU, mIoU [95 % CI], gain and paired differences."""
    names = [c for c in t4.columns if c not in ("method", "variant", "rounds", "runs",
                                                "tail mIoU", "mIoU", "mIoU lo", "mIoU hi")]
    refs = [r for r in REFERENCES if r in set(t4["variant"])]
    by = {(d["method"], d["reference"]): d for _, d in diffs.iterrows()}
    rows = []
    for _, r in t4.iterrows():
        row = {"method": r["method"], "runs": str(r["runs"]),
               **{n: _fmt(100 * r[n], "{:.1f}") for n in names},
               "tail mIoU": _fmt(100 * r["tail mIoU"], "{:.1f}"),
               "mIoU [95% CI]": _with_interval(100 * r["mIoU"], 100 * r["mIoU lo"],
                                               100 * r["mIoU hi"], int(r["runs"]), "{:.1f}")}
        for ref, column in (("baseline", "gain vs baseline"),
                            *((x, f"vs {x.upper() if x == 'st' else x}") for x in refs)):
            if r["variant"] == ref:
                row[column] = "reference" if ref != "baseline" else "–"
            else:
                d = by.get((r["method"], ref))
                row[column] = "–" if d is None else _difference_cell(d)
        rows.append(row)
    return markdown_table(pd.DataFrame(rows))


def tail_differences_markdown(runs: pd.DataFrame) -> str:
    """Paired differences of tail mIoU (vs the baseline, ST, labeled-only), in IoU points."""
    rows = [{"method": d["method"], "vs": d["vs"], "tail mIoU difference [95% CI]":
             _difference_cell(d)} for _, d in differences(runs, "tail_miou").iterrows()]
    return markdown_table(pd.DataFrame(rows, columns=["method", "vs",
                                                      "tail mIoU difference [95% CI]"]))


def table5_markdown(t5: pd.DataFrame) -> str:
    """Table 5: pseudo labels of each row (KL with its interval, shortfall in %)."""
    rows = []
    for _, r in t5.iterrows():
        rows.append({
            "method": r["method"], "round": str(r["round"]), "runs": str(r["runs"]),
            "alpha": _fmt(r["alpha"], "{:g}"), "T": _fmt(r["temperature"], "{:.3g}"),
            "kept fraction": _fmt(r["kept fraction"], "{:.3f}"),
            "KL(labeled‖pseudo) [95% CI]": _with_interval(
                r["KL(labeled||pseudo)"], r["KL lo"], r["KL hi"], int(r["runs"]), "{:.3g}"),
            "pixel precision": _fmt(r["pixel precision"], "{:.3f}"),
            **{c: _fmt(r[c], "{:+.1%}") for c in t5.columns if c.startswith("short ")}})
    return markdown_table(pd.DataFrame(rows))


def _commit() -> str:
    """The checkout the dars package runs from (``git describe``), or why it is unknown."""
    try:
        proc = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "describe",
                               "--always", "--dirty", "--abbrev=12"], capture_output=True,
                              text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return proc.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def provenance(comparison: Comparison) -> dict:
    """Where and from what the tables were built (printed above them)."""
    return {"commit": _commit(), "built": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "run_seed": comparison.run_seed,
            "teacher_seeds": list(comparison.teacher_seeds), "seeds": list(comparison.seeds),
            "methods": list(comparison.methods), "progressive": list(comparison.progressive),
            "rounds": comparison.rounds}


def header_line(prov: dict, command: str) -> str:
    runs = len(prov["teacher_seeds"]) * len(prov["seeds"])
    return (f"Generated by `{command}` (tables built {prov['built']} at commit {prov['commit']}"
            f" on {prov['platform']}, {prov['cpus']} CPUs, {prov['cpu']}); teacher seeds "
            f"{', '.join(map(str, prov['teacher_seeds']))} × student seeds "
            f"{', '.join(map(str, prov['seeds']))} = {runs} run(s) per method (the teacher of "
            f"seed {prov['run_seed']}, when listed, is the run's own baseline).")


TABLE4_NOTE = (
    "IoU in points (×100). mIoU: mean over the runs (the baseline row: over teachers) with a "
    "95 % Student-t interval, mean ± t(0.975, n−1)·s/√n, the runs treated as independent. "
    "gain vs baseline: each run minus its own teacher's baseline; vs ST / vs labeled-only: "
    "paired on the same teacher and student seed (against the reference with the same number "
    "of rounds when present, else its 1-round row), mean and 95 % t interval. A method is "
    "called better or worse only when its interval excludes 0, else \"not distinguishable\".")
TABLE5_NOTE = (
    "The pseudo labels each row's student trained on (last round); mean over runs, KL with a "
    "95 % Student-t interval. short <class>: (n_j − kept_j)/n_j, > 0 = fewer pseudo labels "
    "than the labeled distribution asks for. labeled-only keeps none (its pseudo half is all "
    "ignore), so it has no KL, temperature or precision.")


def render_markdown(compare_dir: Path, command: str) -> str:
    """Tables 4 and 5 (with intervals, paired differences and the control row) as markdown,
    under the header line, from a finished comparison's runs.csv and provenance.json."""
    runs = read_runs(compare_dir / "runs.csv")
    prov = read_json(compare_dir / "provenance.json")
    tail = []
    if runs["tail_miou"].notna().any():
        tail = ["Paired differences of tail mIoU (same pairing and verdict rule as Table 4).", "",
                tail_differences_markdown(runs), ""]
    return "\n".join([
        header_line(prov, command), "",
        "Table 4: validation IoU per class, tail mIoU, mIoU, gain and paired differences.", "",
        table4_markdown(table4(runs), differences(runs)), TABLE4_NOTE, "", *tail,
        "Table 5: the pseudo labels of each method.", "",
        table5_markdown(table5(runs)), TABLE5_NOTE, ""])


# --------------------------------------------------------------------------- plots


def confidence_plot(hists: dict[str, np.ndarray], names: Sequence[str], classes: Sequence[int],
                    out: Path) -> None:
    """Fig. 3: confidence histograms of some classes, ties at exactly 1.0 drawn separately.

    ``hists`` maps a curve label (e.g. "T = 1") to a (C, NUM_BINS) float16 bit-pattern
    histogram; bins are merged to 40 on [0, 1) and the count at exactly 1.0 is a marker with
    its share of the class's pixels written next to it.
    """
    from dars.core.constants import NUM_BINS, ONE_BITS

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


def build_comparison(run_dir: str | Path, comparison: Comparison, out_dir: str | Path,
                     temperature: float | None = None, threads: int | None = None
                     ) -> list[Path]:
    """Write every file of :data:`COMPARE_FILES` under ``out_dir``; return their paths.

    ``temperature`` (the T of the "+ts" methods) adds a tempered curve to the confidence plot.
    """
    from dars.pseudo.confidence_hist import store_histogram
    from dars.store.probstore import ProbStore

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out = {name: out_dir / name for name in COMPARE_FILES}

    runs = collect_runs(run_dir, comparison)
    write_csv(runs, out["runs.csv"])  # full precision: everything below derives from it
    write_json(provenance(comparison), out["provenance.json"])
    t4, diffs, t5 = table4(runs), differences(runs), table5(runs)
    per_class = pseudo_per_class(run_dir, comparison)
    for df, name in ((t4, "table4.csv"), (diffs, "differences.csv"), (t5, "table5.csv"),
                     (per_class, "pseudo_per_class.csv")):
        write_csv(df, out[name], float_format="%.6g")
    write_text(out["table4.md"], table4_markdown(t4, diffs))
    write_text(out["table5.md"], table5_markdown(t5))
    write_text(out["tables.md"], render_markdown(out_dir, f"dars compare --markdown {run_dir}"))

    write_text(out["tables.html"], html_page(
        "Method comparison",
        html_table(t4, "Table 4: validation IoU per class, tail mIoU and mIoU (mean over "
                   "runs, 95 % t interval)"),
        html_table(diffs, "Paired mIoU differences (same teacher and seed), 95 % t interval"),
        html_table(t5, "Table 5: pseudo labels of each method: KL(labeled || pseudo), kept "
                   "fraction, precision, and per-class shortfall (n_j - kept_j) / n_j")))

    labeled = read_csv(run_dir / "label_histogram.csv")
    names = labeled["name"].astype(str).tolist()
    series = {"labeled set": labeled["ratio"].to_numpy(float)}
    for label in dict.fromkeys(t5["method"]):
        mine = per_class[per_class["method"] == label]
        if mine["kept"].sum() == 0:  # the control: no pseudo label to draw
            continue
        series[label] = mine.groupby("class")["pseudo_ratio"].mean().reindex(
            range(len(names)), fill_value=0.0).to_numpy(float)
    class_distribution_plot(names, series, "class distribution: labeled set vs pseudo labels",
                            out["class_distribution.png"])
    iou_plot(t4.set_index("method")[names].T.rename_axis("class"), out["iou.png"])

    first, seed = comparison.teacher_seeds[0], comparison.run_seed
    untempered = round1_store(run_dir, first, seed, tempered=False)
    if (untempered.parent / RUN_T1_STORE).exists():  # the run itself is at another T
        untempered = untempered.parent / RUN_T1_STORE
    hists = {"T = 1": store_histogram(ProbStore(untempered), threads=threads)}
    if temperature is not None and temperature != 1.0:  # the "+ts" methods' own store
        tempered = ProbStore(round1_store(run_dir, first, seed, tempered=True))
        hists[f"T = {temperature:.3g}"] = store_histogram(tempered, threads=threads)
    order = np.argsort(-labeled["ratio"].to_numpy(float), kind="stable")
    confidence_plot(hists, names, [int(order[0]), int(order[-1])], out["confidence.png"])
    log.info("comparison of %d rows x %d teachers x %d seeds written to %s",
             len(comparison.rows), len(comparison.teacher_seeds), len(comparison.seeds), out_dir)
    return list(out.values())


def finished_comparison(results_dir: str | Path) -> Path:
    """The compare folder of ``results/<run>`` (or that folder itself), if it is finished."""
    path = Path(results_dir)
    for candidate in (path / "compare", path):
        if (candidate / "runs.csv").is_file() and (candidate / "provenance.json").is_file():
            return candidate
    raise DarsError(f"no finished comparison in {path} (no compare/runs.csv and "
                    "provenance.json): run `snakemake compare` first")


_BUILD_ARGS = ("run_dir", "methods", "seeds", "rounds", "out_dir")


def compare_command(args: argparse.Namespace) -> None:
    if args.markdown:
        sys.stdout.write(render_markdown(finished_comparison(args.markdown),
                                         f"dars compare --markdown {args.markdown}"))
        return
    missing = [f"--{a.replace('_', '-')}" for a in _BUILD_ARGS if getattr(args, a) is None]
    if missing:
        raise DarsError(f"dars compare needs {', '.join(missing)} (or --markdown RESULTS_DIR)")
    run_seed = args.run_seed if args.run_seed is not None else (args.teacher_seeds or [0])[0]
    comparison = Comparison(tuple(args.methods), tuple(args.progressive), tuple(args.seeds),
                            tuple(resolve_teacher_seeds(args.teacher_seeds, run_seed)),
                            run_seed, args.rounds)
    build_comparison(args.run_dir, comparison, args.out_dir, temperature=args.temperature,
                     threads=args.threads)


def blank_labels_command(args: argparse.Namespace) -> None:
    write_blank_labels(args.store, args.label_hist, args.labels_out, args.stats_out,
                       args.summary_out, args.alpha)


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dars compare``."""
    p.add_argument("--markdown", metavar="RESULTS_DIR",
                   help="print Tables 4 and 5 (markdown, with the command, commit, machine and "
                        "seeds) of a finished comparison in results/<run>; nothing is built")
    p.add_argument("--run-dir", help="results/<run>")
    p.add_argument("--methods", nargs="+", help="single-round methods")
    p.add_argument("--progressive", nargs="*", default=[], help="methods run for all rounds")
    p.add_argument("--seeds", nargs="+", type=int, help="student (and sampling) seeds")
    p.add_argument("--teacher-seeds", nargs="+", type=int, default=None,
                   help="baseline seeds (default: the run seed)")
    p.add_argument("--run-seed", type=int, default=None,
                   help="the run's seed: its teacher is results/<run>/round0 itself "
                        "(default: the first teacher seed)")
    p.add_argument("--rounds", type=int, help="rounds of progressive methods")
    p.add_argument("--temperature", type=temperature_arg, default=None, metavar="T|FILE",
                   help="T of the +ts methods (a number or calibration json), for Fig. 3")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", help="folder for the tables and plots")


def add_blank_labels_arguments(b: argparse.ArgumentParser) -> None:
    """The arguments of ``dars blank-labels``."""
    b.add_argument("--store", required=True, help="probs.zarr giving the unlabeled images")
    b.add_argument("--label-hist", required=True, help="label_histogram.csv")
    b.add_argument("--alpha", type=float, required=True,
                   help="the round's alpha (for the n_j the stats compare against)")
    b.add_argument("--labels-out", required=True, help="directory of <image_id>.png")
    b.add_argument("--stats-out", required=True, help="pseudo_stats.csv")
    b.add_argument("--summary-out", required=True, help="pseudo_summary.json")
