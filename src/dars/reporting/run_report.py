"""``dars report``: the figures and tables of the run's HTML report (``snakemake --report``),
read from a finished run directory into one folder whose file names :func:`report_files`
defines, so the ``report`` rule declares exactly what this writes."""

from __future__ import annotations

import argparse
import html
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from dars.core.config import Config
from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions, Options, options_of
from dars.reporting import render
from dars.reporting.summary import round_table
from dars.store.artifacts import read_csv, read_json

log = logging.getLogger(__name__)

IGNORE_RGB = (255, 255, 255)  # ignore pixels are white in the examples
EXAMPLES = 4
_PER_ROUND_FILES = {"distribution": "class_distribution.svg", "thresholds": "thresholds.html",
                    "examples": "examples.png"}
PER_ROUND_REPORTS = tuple(_PER_ROUND_FILES)  # kinds with one file per student round
_COLUMN_NAMES = {"miou": "mIoU", "best_miou": "best mIoU", "best_epoch": "best epoch",
                 "tail_miou": "tail mIoU", "pixel_accuracy": "pixel accuracy",
                 "kept_fraction": "kept fraction", "kl_labeled_pseudo": "KL(labeled||pseudo)",
                 "mean_precision": "pseudo precision"}


@dataclass(frozen=True)
class ReportOptions(Options):
    """The resolved config: the report shows it whole (runtime keys too, so changing one redraws
    only the report), and its dataset section locates the example images."""

    config_yaml: str

    @classmethod
    def from_config(cls, config: Config) -> ReportOptions:
        return cls(yaml.safe_dump(config, sort_keys=True, allow_unicode=True))

    @property
    def dataset(self) -> DatasetOptions:
        return DatasetOptions.from_config(yaml.safe_load(self.config_yaml))


def report_files(rounds: int) -> dict[str, list[str]]:
    """Output names relative to the report folder, by kind (per-round kinds: one per round)."""
    return {"config": ["config.html"], "metrics": ["metrics.html"], "iou": ["iou.svg"],
            "training": ["training.svg"],
            **{kind: [f"round{s}/{name}" for s in range(1, rounds + 1)]
               for kind, name in _PER_ROUND_FILES.items()}}


def metrics_tables(run_dir: Path, rounds: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(:func:`~dars.reporting.summary.round_table`, per-class IoU with a column per round)."""
    dirs = [run_dir / f"round{r}" for r in range(rounds + 1)]
    summary = round_table([d / "metrics.json" for d in dirs],
                          [d / "pseudo_summary.json" for d in dirs[1:]])
    per_class = {f"round {r}": read_csv(d / "metrics.csv") for r, d in enumerate(dirs)}
    names = per_class["round 0"]["name"].astype(str)
    iou = pd.DataFrame({k: df["iou"].to_numpy(float) for k, df in per_class.items()},
                       index=pd.Index(names, name="class"))
    return summary.dropna(axis=1, how="all").rename(columns=_COLUMN_NAMES), iou


def training_log(run_dir: Path, rounds: int) -> pd.DataFrame:
    """All rounds' per-epoch logs, with ``x`` = epochs since the start of round 0."""
    frames, offset = [], 0
    for r in range(rounds + 1):
        df = read_csv(run_dir / f"round{r}" / "train_log.csv")
        df = df.assign(round=r, x=offset + df["epoch"] - df["epoch"].min() + 1)
        offset = int(df["x"].max()) if len(df) else offset
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def thresholds_table(run_dir: Path, s: int) -> pd.DataFrame:
    """Round s's thresholds joined with the labeled/pseudo class ratios and precision."""
    t = read_csv(run_dir / f"round{s}" / "thresholds.csv")
    st = read_csv(run_dir / f"round{s}" / "pseudo_stats.csv")
    extra = [c for c in ("labeled_ratio", "pseudo_ratio", "shortfall", "precision")
             if c in st.columns]
    df = t.merge(st[["class", *extra]], on="class", how="left")
    return df.drop(columns=[c for c in ("precision",) if c in df and df[c].isna().all()])


def training_plot(log_df: pd.DataFrame, out: Path) -> None:
    """Loss (labeled and pseudo-labeled half) and learning rate per epoch, all rounds."""
    plt = render.pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.5, 5), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, df in log_df.groupby("round"):
        c = colors[int(r) % len(colors)]
        ax1.plot(df["x"], df["loss_labeled"], "-o", ms=3, color=c, label=f"round {r} labeled")
        if df["loss_pseudo"].notna().any():
            ax1.plot(df["x"], df["loss_pseudo"], "--s", ms=3, color=c,
                     label=f"round {r} pseudo")
        ax2.plot(df["x"], df["lr"], "-o", ms=3, color=c, label=f"round {r}")
    ax1.set_ylabel("mean loss per epoch")
    ax1.legend(frameon=False, fontsize=7, ncol=2)
    ax2.set_ylabel("learning rate (end of epoch)")
    ax2.set_xlabel("epoch (cumulative over rounds)")
    ax2.legend(frameon=False, fontsize=7)
    render.save_figure(fig, out)


def palette(num_classes: int) -> np.ndarray:
    """(256, 3) uint8 colours: classes from tab20 (dark shades first), ignore white."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    colors = np.zeros((256, 3), np.uint8)
    for c in range(num_classes):
        colors[c] = np.round(np.asarray(cmap(order[c % 20])[:3]) * 255)
    colors[IGNORE] = IGNORE_RGB
    return colors


def examples_plot(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                  names: Sequence[str], title: str, out: Path) -> None:
    """Rows of image | teacher prediction | pseudo label (ignore in white) with a class key."""
    plt = render.pyplot()
    from matplotlib.patches import Patch

    colors = palette(len(names))
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows)), squeeze=False)
    for i, (image_id, image, pred, label) in enumerate(rows):
        kept = float(np.mean(label != IGNORE))
        for j, (img, head) in enumerate(((image, "image"), (colors[pred], "prediction"),
                                         (colors[label], f"pseudo label ({kept:.0%} kept)"))):
            ax = axes[i, j]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(head if j else f"{image_id}", fontsize=8)
    handles = [Patch(color=colors[c] / 255, label=n) for c, n in enumerate(names)]
    handles.append(Patch(facecolor="white", edgecolor="black", label="ignore (255)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False,
               fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    render.save_figure(fig, out)


def example_rows(dataset: DatasetOptions, run_dir: Path, s: int, count: int = EXAMPLES
                 ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``count`` unlabeled images of round s: (id, image, prediction, pseudo label)."""
    from dars.data.dataset import dataset_spec
    from dars.data.images import read_image
    from dars.store.probstore import ProbStore

    store = ProbStore(run_dir / f"round{s}" / "probs.zarr")
    images = {x.id: x.image for x in dataset_spec(dataset).samples("unlabeled",
                                                                   require_masks=False)}
    rows = []
    for index, image_id in enumerate(store.image_ids[:count]):
        h, w = (int(v) for v in store.shapes[index])
        pred = store.prediction(index)[:h, :w]  # checksum-checked read
        with Image.open(run_dir / f"round{s}" / "pseudo_labels" / f"{image_id}.png") as im:
            label = np.asarray(im)
        if image_id not in images:
            raise DarsError(f"image {image_id!r} of {store.path} is not in the unlabeled split")
        rows.append((image_id, read_image(images[image_id]), pred, label))
    return rows


def build_report(options: ReportOptions, run_dir: str | os.PathLike[str], rounds: int,
                 out_dir: str | os.PathLike[str], examples: int = EXAMPLES) -> list[Path]:
    """Write every file of :func:`report_files` under ``out_dir``; return their paths."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    files = {k: [out_dir / f for f in v] for k, v in report_files(rounds).items()}
    render.write_text(files["config"][0], render.html_page(
        "Run configuration", "<h3>Resolved configuration (defaults filled in)</h3>"
        f"<pre>{html.escape(options.config_yaml)}</pre>"))

    summary, iou = metrics_tables(run_dir, rounds)
    render.write_text(files["metrics"][0], render.html_page(
        "Metrics",
        render.html_table(summary, "Validation mIoU per round (0 = supervised baseline)"),
        render.html_table(iou, "Per-class IoU on the validation split", index=True)))
    render.iou_plot(iou, files["iou"][0])
    training_plot(training_log(run_dir, rounds), files["training"][0])

    for k, s in enumerate(range(1, rounds + 1)):
        stats = read_csv(run_dir / f"round{s}" / "pseudo_stats.csv")
        pseudo = read_json(run_dir / f"round{s}" / "pseudo_summary.json")
        title = (f"round {s}: labeled vs pseudo-label classes (alpha {pseudo.get('alpha')}, "
                 f"KL {pseudo.get('kl_labeled_pseudo', float('nan')):.3g})")
        names = stats["name"].astype(str).tolist()
        render.class_distribution_plot(
            names, {"labeled set": stats["labeled_ratio"].to_numpy(float),
                    "pseudo labels": stats["pseudo_ratio"].to_numpy(float)},
            title, files["distribution"][k])
        render.write_text(files["thresholds"][k], render.html_page(
            f"Round {s} thresholds",
            render.html_table(thresholds_table(run_dir, s), f"Round {s}: per-class thresholds "
                              f"({pseudo.get('method')}, alpha {pseudo.get('alpha')})")))
        examples_plot(example_rows(options.dataset, run_dir, s, examples), names,
                      f"round {s}: teacher prediction and pseudo labels", files["examples"][k])
    written = [p for v in files.values() for p in v]
    log.info("report: %d files in %s", len(written), out_dir)
    return written


def report_command(args: argparse.Namespace) -> None:
    build_report(options_of(args, ReportOptions), args.run_dir, args.rounds, args.out_dir,
                 args.examples)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dars report`` besides its options."""
    p.add_argument("--run-dir", required=True, help="results/<run>")
    p.add_argument("--rounds", type=int, required=True, help="number of student rounds")
    p.add_argument("--out-dir", required=True, help="folder for the report files")
    p.add_argument("--examples", type=int, default=EXAMPLES,
                   help="pseudo-label examples per round")
