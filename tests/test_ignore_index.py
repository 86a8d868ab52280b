"""A dataset whose masks use 9 for "no label" runs through one student round.

Masks are read with ``dataset.ignore_index`` mapped to the pipeline's own IGNORE (255), so the
label histogram, the loss, the pseudo labels (written with 255) and the metrics all leave those
pixels out -- before this, a dataset with ignore 9 failed at the first student, whose pseudo
labels (255) were read as an unknown class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from conftest import CLASSES, write_folder_dataset
from PIL import Image

from dars.cli import main
from dars.core.constants import IGNORE
from dars.pseudo.thresholds import PseudoLabelOptions

PSEUDO_OPTIONS = PseudoLabelOptions(alpha=0.5).to_json()  # dars pseudo-label --options-json
IGNORE_9 = 9


def _mark_ignore(root: Path) -> int:
    """Set the top-left 4x4 block of every mask to 9; return the pixels marked per mask."""
    for path in (root / "masks").glob("*.png"):
        mask = np.array(Image.open(path))
        mask[:4, :4] = IGNORE_9
        Image.fromarray(mask, mode="L").save(path)
    return 16


def test_ignore_9_through_a_student_round(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "data")
    marked = _mark_ignore(root)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "dataset": {"name": "folder", "root": str(root), "ignore_index": IGNORE_9},
        "model": {"name": "tiny", "width": 8},
        "train": {"epochs": 3, "batch_size": 4, "lr": 0.05, "crop_size": 16},
        "rounds": [{"alpha": 0.5, "epochs": 1}],
    }))
    out = tmp_path / "out"
    common = ["--config", str(cfg)]

    def run(*args: str, config: bool = True) -> None:
        argv = [args[0], *(common if config else []), *args[1:]]
        assert main(argv) == 0, args

    run("histogram", "--out", str(out / "hist.csv"))
    hist = pd.read_csv(out / "hist.csv")
    labeled_pixels = 4 * 16 * 16  # 4 labeled masks of 16 x 16
    assert hist["pixels"].sum() == labeled_pixels - 4 * marked  # the 9s are not a class
    run("train", "--round", "0", "--out", str(out / "r0.pt"), "--log-csv",
        str(out / "r0.csv"), "--state-dir", str(out / "s0"))
    run("infer", "--model", str(out / "r0.pt"), "--out", str(out / "probs.zarr"))
    run("pseudo-label", "--options-json", PSEUDO_OPTIONS, "--store", str(out / "probs.zarr"),
        "--label-hist", str(out / "hist.csv"), "--labels-out", str(out / "pseudo"),
        "--summary-out", str(out / "pseudo.json"), config=False)
    labels = [np.array(Image.open(p)) for p in sorted((out / "pseudo").glob("*.png"))]
    assert len(labels) == 4
    values = set(np.unique(np.concatenate([x.ravel() for x in labels])).tolist())
    assert IGNORE in values and values <= set(range(len(CLASSES))) | {IGNORE}
    run("train", "--round", "1", "--init", str(out / "r0.pt"), "--pseudo", str(out / "pseudo"),
        "--out", str(out / "r1.pt"), "--log-csv", str(out / "r1.csv"),
        "--state-dir", str(out / "s1"))
    losses = pd.read_csv(out / "r1.csv")[["loss_labeled", "loss_pseudo"]].to_numpy()
    assert np.isfinite(losses).all()
    run("evaluate", "--model", str(out / "r1.pt"), "--round", "1", "--metrics",
        str(out / "m.csv"), "--summary", str(out / "m.json"))
    metrics = pd.read_csv(out / "m.csv")
    val_pixels = 4 * 16 * 16  # img008..img011
    assert metrics["gt_pixels"].sum() == val_pixels - 4 * marked
    assert 0 <= json.loads((out / "m.json").read_text())["miou"] <= 1
