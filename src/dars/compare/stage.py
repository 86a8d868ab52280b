"""``dars compare``: the tables and figures of a comparison from what the rule passes: the
:class:`~dars.compare.runs.Comparison` (every run's round folder, whose ``metrics.*`` and
``pseudo_*`` are read), the labeled histogram and Fig. 3's stores; nothing else is looked for."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from dars.compare import plots, tables
from dars.compare.runs import Comparison
from dars.core.errors import DarsError
from dars.core.options import temperature_arg
from dars.reporting.render import html_page, html_table, write_text
from dars.store.artifacts import read_csv, write_csv, write_json

log = logging.getLogger(__name__)

COMPARE_FILES = ("runs.csv", "table4.csv", "table4.md", "differences.csv", "table5.csv",
                 "table5.md", "tables.md", "provenance.json", "pseudo_per_class.csv",
                 "tables.html", "class_distribution.png", "iou.png", "confidence.png")


def build_comparison(comparison: Comparison, label_hist: str | Path, store: str | Path,
                     out_dir: str | Path, tempered_store: str | Path | None = None,
                     temperature: float | None = None, threads: int | None = None
                     ) -> list[Path]:
    """Write :data:`COMPARE_FILES` under ``out_dir`` and return their paths; ``store`` is the
    first teacher's round-1 store at T = 1, ``tempered_store`` its store at ``temperature`` (the
    "+ts" methods' T), drawn beside it in Fig. 3."""
    from dars.pseudo.confidence_hist import store_histogram
    from dars.store.probstore import ProbStore

    out_dir = Path(out_dir)
    out = {name: out_dir / name for name in COMPARE_FILES}

    runs = tables.collect_runs(comparison)
    write_csv(runs, out["runs.csv"])  # full precision: everything below derives from it
    write_json(tables.provenance(comparison), out["provenance.json"])
    t4, diffs, t5 = tables.table4(runs), tables.differences(runs), tables.table5(runs)
    per_class = tables.pseudo_per_class(comparison)
    for df, name in ((t4, "table4.csv"), (diffs, "differences.csv"), (t5, "table5.csv"),
                     (per_class, "pseudo_per_class.csv")):
        write_csv(df, out[name], float_format="%.6g")
    write_text(out["table4.md"], tables.table4_markdown(t4, diffs))
    write_text(out["table5.md"], tables.table5_markdown(t5))
    # what `dars compare --markdown` prints for the run's folder
    write_text(out["tables.md"], tables.render_markdown(
        out_dir, f"dars compare --markdown {out_dir.parent}"))
    write_text(out["tables.html"], html_page(
        "Method comparison",
        html_table(t4, "Table 4: validation IoU per class, tail mIoU and mIoU (mean over "
                   "runs, 95 % t interval)"),
        html_table(diffs, "Paired mIoU differences (same teacher and seed), 95 % t interval"),
        html_table(t5, "Table 5: pseudo labels of each method: KL(labeled || pseudo), kept "
                   "fraction, precision, and per-class shortfall (n_j - kept_j) / n_j")))

    labeled = read_csv(label_hist)
    names = labeled["name"].astype(str).tolist()
    plots.class_distribution(labeled, t5, per_class, out["class_distribution.png"])
    plots.iou(t4, names, out["iou.png"])
    hists = {"T = 1": store_histogram(ProbStore(store), threads=threads)}
    if tempered_store is not None and temperature is not None and temperature != 1.0:
        hists[f"T = {temperature:.3g}"] = store_histogram(ProbStore(tempered_store),
                                                         threads=threads)
    order = np.argsort(-labeled["ratio"].to_numpy(float), kind="stable")
    plots.confidence_plot(hists, names, [int(order[0]), int(order[-1])],
                          out["confidence.png"])
    log.info("comparison of %d rows x %d teachers x %d seeds written to %s",
             len(comparison.rows), len(comparison.teacher_seeds), len(comparison.seeds),
             out_dir)
    return list(out.values())


def finished_comparison(results_dir: str | Path) -> Path:
    """The compare folder of ``results/<run>`` (or that folder itself), if it is finished."""
    path = Path(results_dir)
    for candidate in (path / "compare", path):
        if (candidate / "runs.csv").is_file() and (candidate / "provenance.json").is_file():
            return candidate
    raise DarsError(f"no finished comparison in {path} (no compare/runs.csv and "
                    "provenance.json): run `snakemake compare` first")


_BUILD_ARGS = ("comparison_json", "label_hist", "store", "out_dir")


def compare_command(args: argparse.Namespace) -> None:
    if args.markdown:
        sys.stdout.write(tables.render_markdown(finished_comparison(args.markdown),
                                                f"dars compare --markdown {args.markdown}"))
        return
    missing = [f"--{a.replace('_', '-')}" for a in _BUILD_ARGS if getattr(args, a) is None]
    if missing:
        raise DarsError(f"dars compare needs {', '.join(missing)} (or --markdown RESULTS_DIR)")
    build_comparison(Comparison.from_json(args.comparison_json), args.label_hist, args.store,
                     args.out_dir, args.tempered_store, args.temperature, args.threads)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", metavar="RESULTS_DIR",
                   help="print Tables 4 and 5 of a finished comparison in results/<run>; "
                        "nothing is built")
    p.add_argument("--comparison-json", help="the rule's dars.compare.runs.Comparison")
    p.add_argument("--label-hist", help="label_histogram.csv of the run")
    p.add_argument("--store", help="the first teacher's round-1 store at T = 1 (Fig. 3)")
    p.add_argument("--tempered-store", help="its store at the +ts methods' T (Fig. 3)")
    p.add_argument("--temperature", type=temperature_arg, default=None, metavar="T|FILE",
                   help="T of the +ts methods (a number or calibration json), for Fig. 3")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", help="folder for the tables and plots")
