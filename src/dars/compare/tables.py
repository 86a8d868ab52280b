"""The comparison's tables: ``runs.csv`` (one row per run, the raw numbers) and what derives
from it -- Table 4, the paired mIoU differences, Table 5 (with per-class shortfall, so a class
the teacher cannot supply is shown, not averaged away) and their markdown under a
:func:`provenance` line, which ``dars compare --markdown RESULTS_DIR`` prints."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from dars.compare.runs import BASELINE_METHOD, LABELED_ONLY, Comparison, row_label
from dars.compare.statistics import t_interval
from dars.core.errors import DarsError
from dars.store.artifacts import read_csv, read_json

BASELINE = "baseline (round 0)"  # the teachers' row
REFERENCES = ("st", LABELED_ONLY)  # the paired differences of every row against these

def _prefixed(df: pd.DataFrame, prefix: str) -> list[str]:
    """Class names of the ``<prefix><name>`` columns of runs.csv, in order."""
    return [c[len(prefix):] for c in df.columns if c.startswith(prefix)]


def _number(summary: dict, key: str) -> float:
    value = summary.get(key)
    return math.nan if value is None else float(value)


def _evaluation(rd: Path) -> tuple[list[str], dict]:
    metrics = read_json(rd / "metrics.json")
    per_class = read_csv(rd / "metrics.csv")
    names = per_class["name"].astype(str).tolist()
    return names, {"miou": metrics["miou"], "tail_miou": _number(metrics, "tail_miou"),
                   **{f"iou:{n}": v for n, v in zip(names, per_class["iou"].astype(float),
                                                    strict=True)}}


def _pseudo(rd: Path) -> dict:
    summary = read_json(rd / "pseudo_summary.json")
    stats = read_csv(rd / "pseudo_stats.csv")
    target = stats["target"].to_numpy(float)
    short = np.where(target > 0, stats["shortfall"].to_numpy(float) / np.maximum(target, 1), 0.0)
    return {"alpha": _number(summary, "alpha"), "temperature": _number(summary, "temperature"),
            "kept_fraction": _number(summary, "kept_fraction"),
            "kl": _number(summary, "kl_labeled_pseudo"),
            "precision": _number(summary, "pixel_precision"),
            **{f"short:{n}": v for n, v in zip(stats["name"].astype(str), short, strict=True)}}


def collect_runs(comparison: Comparison) -> pd.DataFrame:
    """One row per teacher (its baseline) and per (table row, teacher, student seed): row (the
    label), method, rounds, teacher, seed, miou, tail_miou, ``iou:<class>``, and for students
    alpha, temperature, kept_fraction, kl, precision, ``short:<class>`` (last-round shortfall)."""
    records, classes = [], None
    for method, rounds, t, k, folder in comparison.runs():
        rd = Path(folder)
        names, metrics = _evaluation(rd)
        if method == BASELINE_METHOD:
            classes = names
            records.append({"row": BASELINE, "method": method, "rounds": 0, "teacher": t,
                            "seed": None, **metrics})
            continue
        if names != classes:
            raise DarsError(f"{rd}/metrics.csv has classes {names}, the baseline {classes}")
        records.append({"row": row_label(method, rounds), "method": method, "rounds": rounds,
                        "teacher": t, "seed": k, **metrics, **_pseudo(rd)})
    runs = pd.DataFrame(records)
    runs["seed"] = runs["seed"].astype("Int64")
    return runs


def _mean(values: pd.Series) -> float:
    """Mean over runs; NaN when any run lacks the value (never a mean of a subset)."""
    return t_interval(values).mean


def table4(runs: pd.DataFrame) -> pd.DataFrame:
    """Per table row: per-class IoU and tail mIoU (means over runs), mIoU with its interval;
    the baseline row is over teachers, the others over all (teacher, student seed) runs."""
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
    """Paired differences of ``metric`` for every student row: vs its own teacher's baseline,
    and vs st and labeled-only (when compared) on the same teacher and student seed, with the
    same number of rounds when compared (dars + IT vs st + IT), else the 1-round row."""
    students = runs[runs["method"] != BASELINE_METHOD]
    base = runs[runs["method"] == BASELINE_METHOD][["teacher", metric]]
    present = set(zip(students["method"], students["rounds"], strict=True))
    out = []
    for (label, method, rounds), g in students.groupby(["row", "method", "rounds"], sort=False):
        paired = g.merge(base, on="teacher", suffixes=("", "_ref"))
        out.append(_difference(label, BASELINE_METHOD, BASELINE,
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
    """The pseudo labels each student row trained on in its last round (:data:`TABLE5_NOTE`);
    DARS can only remove pixels, so a class the teacher rarely predicts stays short."""
    names = _prefixed(runs, "short:")
    rows = []
    for label, g in runs[runs["method"] != BASELINE_METHOD].groupby("row", sort=False):
        kl = t_interval(g["kl"])
        rows.append({"method": label, "round": int(g["rounds"].iloc[0]), "runs": len(g),
                     "alpha": g["alpha"].iloc[0], "temperature": _mean(g["temperature"]),
                     "kept fraction": _mean(g["kept_fraction"]),
                     "KL(labeled||pseudo)": kl.mean, "KL lo": kl.lo, "KL hi": kl.hi,
                     "pixel precision": _mean(g["precision"]),
                     **{f"short {n}": g[f"short:{n}"].mean() for n in names}})
    return pd.DataFrame(rows)


def pseudo_per_class(comparison: Comparison) -> pd.DataFrame:
    """Long form: the last round of every branch, teacher and seed, per class."""
    frames = [read_csv(Path(folder) / "pseudo_stats.csv").assign(
        method=row_label(method, rounds), teacher=t, seed=k, round=rounds)
        for method, rounds, t, k, folder in comparison.runs() if method != BASELINE_METHOD]
    df = pd.concat(frames, ignore_index=True)
    df["shortfall_fraction"] = np.where(df["target"] > 0, df["shortfall"] / df["target"], 0.0)
    first = ["method", "round", "teacher", "seed"]
    return df[first + [c for c in df.columns if c not in first]]


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
        for ref, column in ((BASELINE_METHOD, "gain vs baseline"),
                            *((x, f"vs {x.upper() if x == 'st' else x}") for x in refs)):
            if r["variant"] == ref:
                row[column] = "reference" if ref != BASELINE_METHOD else "–"
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
    return markdown_table(pd.DataFrame([{
        "method": r["method"], "round": str(r["round"]), "runs": str(r["runs"]),
        "alpha": _fmt(r["alpha"], "{:g}"), "T": _fmt(r["temperature"], "{:.3g}"),
        "kept fraction": _fmt(r["kept fraction"], "{:.3f}"),
        "KL(labeled‖pseudo) [95% CI]": _with_interval(
            r["KL(labeled||pseudo)"], r["KL lo"], r["KL hi"], int(r["runs"]), "{:.3g}"),
        "pixel precision": _fmt(r["pixel precision"], "{:.3f}"),
        **{c: _fmt(r[c], "{:+.1%}") for c in t5.columns if c.startswith("short ")}}
        for _, r in t5.iterrows()]))


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
    """Tables 4 and 5 as markdown under :func:`header_line`, from runs.csv and provenance.json."""
    path = compare_dir / "runs.csv"
    runs = read_csv(path)
    missing = {"row", "method", "rounds", "teacher", "seed", "miou"} - set(runs.columns)
    if missing:
        raise DarsError(f"{path}: not a runs table of `dars compare` (missing {sorted(missing)})")
    runs["seed"] = runs["seed"].astype("Int64")
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
