"""Determinism: two runs of the same demo config with the same seed on the CPU are identical.

The first run is the kill suite's uninterrupted reference (kill_helpers.reference_run, shared
when both modules run in one session); the second is a fresh run in another directory. Pseudo
labels are compared byte for byte, metrics and tables exactly, weights and stored
probabilities bit for bit. What is and is not deterministic on a GPU: docs/RELIABILITY.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kill_helpers import (
    RUN,
    TARGET,
    read_json,
    reference_run,
    run_snakemake,
    store_arrays,
    write_config,
)

from dars.engine import checkpoint

TIMING = ["images_per_s", "seconds"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = reference_run(tmp_path_factory.getbasetemp())
    second = tmp_path_factory.mktemp("second")
    write_config(second)
    run_snakemake(second, TARGET)
    return first / "results" / RUN, second / "results" / RUN


def _csv(a: Path, b: Path) -> None:
    da, db = pd.read_csv(a), pd.read_csv(b)
    drop = [c for c in TIMING if c in da.columns]
    pd.testing.assert_frame_equal(da.drop(columns=drop), db.drop(columns=drop), check_exact=True)


@pytest.mark.slow
def test_same_seed_gives_identical_pseudo_labels(two_runs: tuple[Path, Path]) -> None:
    a, b = (r / "round1" for r in two_runs)
    names = sorted(p.name for p in (a / "pseudo_labels").glob("*.png"))
    assert names and names == sorted(p.name for p in (b / "pseudo_labels").glob("*.png"))
    different = [n for n in names if (a / "pseudo_labels" / n).read_bytes()
                 != (b / "pseudo_labels" / n).read_bytes()]
    assert different == []
    for name in ("thresholds.csv", "pseudo_stats.csv"):
        _csv(a / name, b / name)
    assert read_json(a / "pseudo_summary.json") == read_json(b / "pseudo_summary.json")


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    for r in (0, 1):
        _csv(a / f"round{r}" / "metrics.csv", b / f"round{r}" / "metrics.csv")
        assert read_json(a / f"round{r}" / "metrics.json") == \
            read_json(b / f"round{r}" / "metrics.json")
    _csv(a / "summary.csv", b / "summary.csv")
    _csv(a / "label_histogram.csv", b / "label_histogram.csv")


@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_probabilities(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    for r in (0, 1):
        sa = checkpoint.load(a / f"round{r}" / "model.pt")["model"]
        sb = checkpoint.load(b / f"round{r}" / "model.pt")["model"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        _csv(a / f"round{r}" / "train_log.csv", b / f"round{r}" / "train_log.csv")
    pa, pb = (store_arrays(r / "round1" / "probs.zarr") for r in two_runs)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
