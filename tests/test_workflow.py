"""The workflow's DAG, its caching behaviour, and one end-to-end run on the tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import REPO, copy_run, planned_jobs, shared_tiny_run, snakemake

from dars.data.demo import DEMO_CLASSES

WIDER = "beta_min: 0.2, beta_max: 0.5, epochs: 1"  # round 2's other keys, as in .test/
ROUND2_ALPHA = f"rounds=[{{alpha: 0.2, epochs: 1}}, {{alpha: 0.4, {WIDER}}}]"
ROUND1_ALPHA = f"rounds=[{{alpha: 0.3, epochs: 1}}, {{alpha: 0.5, {WIDER}}}]"


def test_demo_dag_has_every_stage_per_round(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, configfile=REPO / "config" / "config.yaml")
    assert jobs == {
        "build_demo", "label_histogram", "train_baseline",
        "infer_probabilities:1", "infer_probabilities:2",
        "pseudo_label:1", "pseudo_label:2", "train_student:1", "train_student:2",
        "evaluate:0", "evaluate:1", "evaluate:2", "summary", "report", "all",
    }


def test_bad_config_stops_before_any_job(tmp_path: Path) -> None:
    proc = snakemake(tmp_path, "-n", "--config", "rounds=[{alpha: 1.5}]", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr  # snakemake 9.27 prints a WorkflowError on stdout
    assert "config key rounds.0.alpha: 1.5 is greater than the maximum of 1" in out
    proc = snakemake(tmp_path, "-n", "--config", "pseudo_labell={}", check=False)
    assert "pseudo_labell (unknown key)" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole workflow on .test/config.yaml, once per session (~1-2 min; shared with the
    report, sharding and SLURM tests)."""
    return shared_tiny_run(tmp_path_factory)


@pytest.mark.slow
def test_end_to_end_outputs(tiny_run: Path) -> None:
    res = tiny_run / "results" / "tiny"
    summary = pd.read_csv(res / "summary.csv")
    assert summary["round"].tolist() == [0, 1, 2]
    assert summary["miou"].between(0, 1).all()
    assert summary.loc[1:, "kl_labeled_pseudo"].notna().all()
    assert summary.loc[1:, "alpha"].tolist() == [0.2, 0.5]
    for r in (1, 2):
        thresholds = pd.read_csv(res / f"round{r}" / "thresholds.csv")
        assert thresholds["name"].tolist() == DEMO_CLASSES
        pseudo = json.loads((res / f"round{r}" / "pseudo_summary.json").read_text())
        assert 0 < pseudo["kept_fraction"] <= 1
        labels = sorted((res / f"round{r}" / "pseudo_labels").glob("*.png"))
        unlabeled = (tiny_run / "data" / "tiny" / "splits" / "unlabeled.txt").read_text()
        assert len(labels) == len([u for u in unlabeled.split("\n") if u.strip()])
    # nothing partial or temporary is left behind
    leftovers = [p for p in res.rglob("*") if ".partial" in p.name or ".tmp" in p.name]
    assert leftovers == []


@pytest.mark.slow
def test_rerun_does_nothing(tiny_run: Path) -> None:
    assert planned_jobs(tiny_run) == set()


@pytest.mark.slow
def test_round2_alpha_change_reruns_only_round2_thresholding_and_after(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", ROUND2_ALPHA)
    assert jobs == {"pseudo_label:2", "train_student:2", "evaluate:2", "summary", "report", "all"}


@pytest.mark.slow
def test_round1_alpha_change_keeps_teacher_inference_and_histogram(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", ROUND1_ALPHA)
    assert jobs == {
        "pseudo_label:1", "train_student:1", "evaluate:1",
        "infer_probabilities:2", "pseudo_label:2", "train_student:2", "evaluate:2",
        "summary", "report", "all",
    }


@pytest.mark.slow
def test_method_change_reruns_thresholding_of_every_round(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", "pseudo_label={method: cbst}")
    assert "train_baseline" not in jobs and "infer_probabilities:1" not in jobs
    assert "label_histogram" not in jobs
    assert {"pseudo_label:1", "pseudo_label:2", "train_student:1"} <= jobs


@pytest.mark.slow
def test_every_method_runs_round1_end_to_end_from_the_cached_teacher(tiny_run: Path,
                                                                     tmp_path: Path) -> None:
    """st, cbst and da (dars is the default run) threshold the cached round-1 store and train
    a student; the baseline and its inference are never redone."""
    run = copy_run(tiny_run, tmp_path / "run")
    res = run / "results" / "tiny"
    cached = {p: p.stat().st_mtime_ns for p in (res / "round0" / "model.pt",
                                                res / "round1" / "probs.zarr" / "zarr.json")}
    for method in ("st", "cbst", "da"):
        config = ("--config", f"pseudo_label={{method: {method}}}")
        snakemake(run, "results/tiny/round1/metrics.json", *config)
        summary = json.loads((res / "round1" / "pseudo_summary.json").read_text())
        assert summary["method"] == method
        if method in ("st", "cbst"):  # alpha of all / of each class, ties at t kept on top
            assert summary["kept_fraction"] >= 0.2 - 1e-3
        assert 0 <= json.loads((res / "round1" / "metrics.json").read_text())["miou"] <= 1
        # the method's round 1 is now current: only round 2 and the tables are left
        assert "pseudo_label:1" not in planned_jobs(run, *config)
    assert {p: p.stat().st_mtime_ns for p in cached} == cached


@pytest.mark.slow
def test_forcerun_one_stage(tiny_run: Path) -> None:
    """Redo one stage of one round: only that job (the target file's producer) runs."""
    jobs = planned_jobs(tiny_run, "-f", "results/tiny/round2/thresholds.csv")
    assert jobs == {"pseudo_label:2"}


@pytest.mark.slow
def test_until_stops_after_the_changed_stage(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", ROUND2_ALPHA, "--until", "pseudo_label")
    assert jobs == {"pseudo_label:2"}
