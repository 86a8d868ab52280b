"""shards: N > 1 -- pseudo-labeling as map-reduce jobs, with labels identical to shards: 1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import REPO, copy_run, job_counts, planned_jobs, shared_tiny_run, snakemake

from dars.errors import DarsError
from dars.shards import merge_tables

# Only the pseudo-label rules may run: the copied round-2 store stays what it was even though
# round 1's labels are rewritten (they are identical, but a directory has no checksum).
SHARD_RULES = ("--allowed-rules", "confidence_histogram", "pseudo_label_shard", "pseudo_label")
ROUND2_ALPHA = ("rounds=[{alpha: 0.2, epochs: 1},"
                " {alpha: 0.4, beta_min: 0.2, beta_max: 0.5, epochs: 1}]")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_run(tmp_path_factory)


def test_sharded_dag_maps_and_reduces_every_round(tmp_path: Path) -> None:
    demo = REPO / "config" / "config.yaml"
    counts = job_counts(tmp_path, "--config", "shards=3", configfile=demo)
    assert counts["confidence_histogram"] == 6  # 3 per round, 2 rounds
    assert counts["pseudo_label_shard"] == 6
    assert counts["pseudo_label"] == 2  # the merge, under the unsharded rule's name and outputs
    # every label-writing shard sums all three histograms of its own round
    proc = snakemake(tmp_path, "-n", "--config", "shards=3", configfile=demo)
    text = proc.stdout + proc.stderr
    shard_inputs = re.findall(r"rule pseudo_label_shard:\n    input: ([^\n]+)", text)
    assert len(shard_inputs) == 6
    for line in shard_inputs:
        r = re.search(r"round(\d)/probs.zarr", line).group(1)
        parts = re.findall(r"round(\d)/shards/confidence_(\d).npz", line)
        assert sorted(parts) == [(r, "0"), (r, "1"), (r, "2")]
    assert "confidence_histogram" not in job_counts(tmp_path, configfile=demo)


def _stats(kept: list[int], precision: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"class": [0, 1], "name": ["a", "b"], "labeled_ratio": [0.5, 0.5],
                         "pseudo_ratio": 0.0, "target": [10, 10], "threshold": [0.5, 0.9],
                         "selected": [12, 8], "keep": [0.8, 1.0], "kept": kept,
                         "shortfall": 0, "precision": precision})


def _thresholds(kept: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"class": [0, 1], "name": ["a", "b"], "target": [10, 10],
                         "threshold": [0.5, 0.9], "selected": [12, 8], "tied": [1, 0],
                         "keep": [0.8, 1.0], "kept": kept})


def test_merge_adds_counts_and_recomputes_ratios() -> None:
    thresholds, stats, correct, evaluated = merge_tables(
        [_thresholds([6, 1]), _thresholds([4, 7])],
        [_stats([6, 1], [0.5, 1.0]), _stats([4, 7], [0.25, np.nan])])
    assert thresholds["kept"].tolist() == [10, 8]
    assert stats["shortfall"].tolist() == [0, 2]
    np.testing.assert_allclose(stats["pseudo_ratio"], [10 / 18, 8 / 18])
    # precision = sum(correct) / sum(evaluated) with correct = precision x kept per shard
    assert correct.tolist() == [4, 1] and evaluated.tolist() == [10, 1]
    np.testing.assert_allclose(stats["precision"], [0.4, 1.0])


def test_merge_refuses_shards_with_different_thresholds() -> None:
    other = _thresholds([4, 7]).assign(threshold=[0.6, 0.9])
    with pytest.raises(DarsError, match="not computed from the same confidence histograms"):
        merge_tables([_thresholds([6, 1]), other], [_stats([6, 1], [1, 1])] * 2)


@pytest.mark.slow
def test_three_shards_give_byte_identical_pseudo_labels(tiny_run: Path, tmp_path: Path) -> None:
    work = copy_run(tiny_run, tmp_path / "sharded")
    targets = [f"results/tiny/round{r}/pseudo_labels" for r in (1, 2)]
    snakemake(work, *targets, "--config", "shards=3", *SHARD_RULES)
    for r in (1, 2):
        one, three = tiny_run / f"results/tiny/round{r}", work / f"results/tiny/round{r}"
        pngs = sorted(p.name for p in (one / "pseudo_labels").glob("*.png"))
        assert pngs and pngs == sorted(p.name for p in (three / "pseudo_labels").glob("*.png"))
        for name in pngs:
            assert (one / "pseudo_labels" / name).read_bytes() == \
                (three / "pseudo_labels" / name).read_bytes(), name
        # each shard wrote its own disjoint part of the images
        parts = [sorted(p.name for p in (three / "shards" / f"labels_{i}").glob("*.png"))
                 for i in range(3)]
        assert all(parts) and sorted(sum(parts, [])) == pngs
        for table in ("thresholds.csv", "pseudo_stats.csv"):
            assert (one / table).read_text() == (three / table).read_text(), table
        s1 = json.loads((one / "pseudo_summary.json").read_text())
        s3 = json.loads((three / "pseudo_summary.json").read_text())
        assert s3["shards"] == 3
        for key in ("num_images", "num_pixels", "kept_pixels", "kept_fraction",
                    "kl_labeled_pseudo", "mean_precision", "pixel_precision"):
            assert s3[key] == pytest.approx(s1[key], rel=1e-12), key
    # precise reruns in sharded mode: round 2's alpha reaches only its label shards and merge
    jobs = planned_jobs(work, *targets, "--config", "shards=3", ROUND2_ALPHA, *SHARD_RULES)
    assert jobs == {"pseudo_label_shard:2", "pseudo_label:2"}
