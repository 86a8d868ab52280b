"""The method comparison (paper Tables 4-5): tables, KL property, and the workflow's sharing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, copy_run, job_counts, shared_tiny_run, snakemake

from dars.cli import main as dars_main
from dars.compare import branches, markdown_table, parse_variant, table4, table5
from dars.compare import pseudo_per_class as per_class_table
from dars.errors import DarsError
from dars.probstore import ProbStoreWriter
from dars.pseudo.stage import PseudoLabelOptions, pseudo_label

# ----------------------------------------------------------------------------- variants


def test_parse_variant() -> None:
    v = parse_variant("cbst+ts")
    assert (v.method, v.tempered) == ("cbst", True)
    assert parse_variant("dars").tempered is False
    for bad in ("dars+TS", "ts", "st+ts+ts", "focal"):
        with pytest.raises(DarsError, match="unknown comparison method"):
            parse_variant(bad)


def test_branches_share_the_first_round_of_progressive_methods() -> None:
    rows = branches(["st", "dars"], ["dars"], rounds=2)
    assert rows == [("st", 1), ("dars", 1), ("dars", 2)]
    assert branches(["st"], ["st"], rounds=1) == [("st", 1)]  # nothing progressive to add


# ----------------------------------------------------------------------------- tables

NAMES = ["road", "car", "bike"]


def _write_branch_round(rd: Path, miou: float, iou: list[float], kept: list[int],
                        target: list[int], kl: float, tail: float | None = None) -> None:
    rd.mkdir(parents=True)
    (rd / "metrics.json").write_text(json.dumps({"miou": miou, "tail_miou": tail}))
    pd.DataFrame({"class": range(3), "name": NAMES, "iou": iou}).to_csv(rd / "metrics.csv",
                                                                        index=False)
    kept_a, target_a = np.asarray(kept), np.asarray(target)
    pd.DataFrame({"class": range(3), "name": NAMES, "labeled_ratio": target_a / target_a.sum(),
                  "pseudo_ratio": kept_a / kept_a.sum(), "target": target_a, "kept": kept_a,
                  "shortfall": target_a - kept_a}).to_csv(rd / "pseudo_stats.csv", index=False)
    (rd / "pseudo_summary.json").write_text(json.dumps({
        "alpha": 0.2, "temperature": 1.0, "kept_fraction": kept_a.sum() / 1000,
        "kl_labeled_pseudo": kl, "pixel_precision": 0.9}))


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "round0").mkdir(parents=True)
    (run / "round0" / "metrics.json").write_text(json.dumps({"miou": 0.40, "tail_miou": 0.1}))
    pd.DataFrame({"class": range(3), "name": NAMES, "iou": [0.8, 0.3, 0.1]}).to_csv(
        run / "round0" / "metrics.csv", index=False)
    target = [120, 50, 30]
    for seed, (m_st, m_dars) in enumerate([(0.41, 0.45), (0.43, 0.47)]):
        b = run / "compare"
        _write_branch_round(b / "st" / f"seed{seed}" / "round1", m_st, [0.8, 0.3, 0.13],
                            kept=[190, 10, 0], target=target, kl=0.9, tail=0.15)
        _write_branch_round(b / "dars" / f"seed{seed}" / "round1", m_dars, [0.8, 0.4, 0.2],
                            kept=[120, 50, 15], target=target, kl=0.02, tail=0.3)
    return run


def test_table4_means_over_seeds_and_gain(fake_run: Path) -> None:
    t4 = table4(fake_run, [("st", 1), ("dars", 1)], seeds=[0, 1]).set_index("method")
    assert list(t4.index) == ["baseline (round 0)", "st", "dars"]
    assert t4.loc["dars", "mIoU"] == pytest.approx(0.46)
    assert t4.loc["dars", "mIoU std"] == pytest.approx(np.std([0.45, 0.47], ddof=1))
    assert t4.loc["dars", "gain"] == pytest.approx(0.06)
    assert t4.loc["st", "bike"] == pytest.approx(0.13) and t4.loc["dars", "tail mIoU"] == 0.3
    assert np.isnan(t4.loc["baseline (round 0)", "mIoU std"])  # one value: no std


def test_table5_shows_the_per_class_shortfall(fake_run: Path) -> None:
    rows = [("st", 1), ("dars", 1)]
    per_class = per_class_table(fake_run, rows, seeds=[0, 1])
    t5 = table5(fake_run, rows, [0, 1], per_class).set_index("method")
    assert t5.loc["dars", "KL(labeled||pseudo)"] == pytest.approx(0.02)
    # bike: n_j = 30, DARS kept 15 (the teacher predicted too few) -> 50 % short, shown
    assert t5.loc["dars", "short bike"] == pytest.approx(0.5)
    assert t5.loc["st", "short road"] == pytest.approx((120 - 190) / 120)  # excess: negative
    assert t5.loc["st", "short bike"] == pytest.approx(1.0)
    md = markdown_table(t5.reset_index(), {"short bike": "{:+.1%}"})
    assert "| dars |" in md and "+50.0%" in md and md.splitlines()[1].startswith("|---|")


def test_markdown_table_prints_nan_as_dash() -> None:
    md = markdown_table(pd.DataFrame({"m": ["a"], "x": [float("nan")], "y": [0.5]}))
    assert md.splitlines()[2] == "| a | – | 0.500 |"


# ----------------------------------------------------------------------------- KL property


def _biased_store(path: Path, seed: int, images: int = 12, side: int = 48) -> Path:
    """An over-confident teacher whose predictions over-represent the head class.

    Predicted shares 0.6/0.2/0.1/0.06/0.04 against labeled 0.4/0.25/0.15/0.12/0.08, so every
    class is predicted at least alpha * P * r_j times for alpha < 0.5; 70 % of head-class
    and 20 % of other pixels have confidence exactly 1.0 (the ties DARS samples among).
    """
    rng = np.random.default_rng(seed)
    c = 5
    writer = ProbStoreWriter(path, [f"u{i:03d}" for i in range(images)], [(side, side)] * images,
                             [f"c{j}" for j in range(c)])
    for i in range(images):
        pred = rng.choice(c, size=(side, side), p=[0.6, 0.2, 0.1, 0.06, 0.04])
        conf = rng.uniform(0.35, 0.999, size=pred.shape)
        ties = rng.random(pred.shape) < np.where(pred == 0, 0.7, 0.2)
        conf[ties] = 1.0
        probs = np.repeat(((1 - conf) / (c - 1))[None], c, axis=0)
        np.put_along_axis(probs, pred[None], conf[None], axis=0)
        writer.write(i, probs.astype(np.float16))
    writer.finalize()
    return path


@pytest.mark.parametrize(("alpha", "seed"), [(0.1, 0), (0.2, 1), (0.4, 2)])
def test_dars_kl_is_a_tenth_of_st_where_every_class_is_predicted_enough(
        tmp_path: Path, alpha: float, seed: int) -> None:
    store = _biased_store(tmp_path / "probs.zarr", seed)
    hist = tmp_path / "label_histogram.csv"
    ratio = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    pd.DataFrame({"class": range(5), "name": [f"c{j}" for j in range(5)],
                  "pixels": (ratio * 1e5).astype(int), "ratio": ratio}).to_csv(hist, index=False)
    kl = {}
    for method in ("st", "dars"):
        stats = tmp_path / f"{method}.csv"
        summary = pseudo_label(store, hist, tmp_path / method,
                               PseudoLabelOptions(alpha=alpha, method=method, seed=seed),
                               stats_out=stats)
        kl[method] = summary["kl_labeled_pseudo"]
        if method == "dars":  # the premise: the teacher supplies n_j of every class
            assert (pd.read_csv(stats)["selected"] >= pd.read_csv(stats)["target"]).all()
    assert kl["dars"] <= kl["st"] / 10, kl


@pytest.mark.slow
def test_demo_teacher_kl_dars_is_a_tenth_of_st(tmp_path: Path) -> None:
    """The demo's real round-1 teacher (tests/fixtures/demo_teacher.pt, the baseline of
    `make demo`) predicts every class at least n_j times at alpha 0.2, so DARS matches the
    labeled distribution and ST, following the teacher's bias, does not."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"]["root"] = str(tmp_path / "demo")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    run = ["--config", str(config_file)]
    assert dars_main(["build-demo", *run, "--out", str(tmp_path / "demo")]) == 0
    hist = tmp_path / "label_histogram.csv"
    assert dars_main(["histogram", *run, "--out", str(hist)]) == 0
    store = tmp_path / "probs.zarr"
    assert dars_main(["infer", *run, "--model", str(REPO / "tests" / "fixtures" /
                                                    "demo_teacher.pt"), "--out", str(store)]) == 0
    kl, stats = {}, {}
    for method in ("st", "dars"):
        stats[method] = tmp_path / f"{method}.csv"
        kl[method] = pseudo_label(store, hist, tmp_path / method,
                                  PseudoLabelOptions(alpha=0.2, method=method),
                                  stats_out=stats[method])["kl_labeled_pseudo"]
    dars = pd.read_csv(stats["dars"])
    assert (dars["selected"] >= dars["target"]).all(), dars  # every class predicted enough
    assert kl["dars"] <= kl["st"] / 10, kl
    assert kl["st"] > 0.1  # the teacher's bias is real: ST's pseudo labels are skewed


# ----------------------------------------------------------------------------- workflow

COMPARE_SMALL = "compare={methods: [st, dars+ts], progressive: [dars], seeds: [0, 1]}"


def test_compare_dag_trains_and_infers_the_baseline_once(tmp_path: Path) -> None:
    counts = job_counts(tmp_path, "compare", "--config", COMPARE_SMALL)
    assert counts["train_baseline"] == 1 and counts["infer_probabilities"] == 1
    assert counts["calibrate"] == 1  # T of the +ts method, fitted once on the baseline
    # (st, dars+ts, dars) x 2 seeds for round 1, plus dars round 2 x 2 seeds; evaluated:
    # the last round of each table row (dars round 1 is not a row: dars is only progressive)
    assert counts["compare_pseudo_label"] == 8 and counts["compare_train_student"] == 8
    assert counts["compare_infer_probabilities"] == 2 and counts["compare_evaluate"] == 6
    assert "train_student" not in counts  # the main run's students are not needed


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_run(tmp_path_factory)


@pytest.mark.slow
def test_compare_on_a_finished_run_reuses_its_baseline_and_writes_tables(
        tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    config = ["--config", "compare={methods: [st, cbst+ts], progressive: [st], seeds: [0]}"]
    counts = job_counts(run, "compare", *config)
    for shared in ("train_baseline", "infer_probabilities", "build_demo", "label_histogram"):
        assert shared not in counts, counts
    baseline = run / "results" / "tiny" / "round0" / "model.pt"
    before = baseline.stat().st_mtime_ns
    snakemake(run, "compare", *config)
    assert baseline.stat().st_mtime_ns == before
    out = run / "results" / "tiny" / "compare"
    t4 = pd.read_csv(out / "table4.csv")
    assert t4["method"].tolist() == ["baseline (round 0)", "st", "cbst+ts", "st + IT (2 rounds)"]
    assert t4["mIoU"].between(0, 1).all()
    t5 = pd.read_csv(out / "table5.csv").set_index("method")
    calibrated = json.loads((run / "results" / "tiny" / "round0" / "temperature.json")
                            .read_text())["temperature"]
    assert t5.loc["cbst+ts", "temperature"] == pytest.approx(calibrated)
    assert t5.loc["st", "temperature"] == 1.0
    assert {f"short {n}" for n in ("background", "trouser")} <= set(t5.columns)
    for name in ("class_distribution.png", "iou.png", "confidence.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "Table 5" in (out / "tables.html").read_text()
    # the report of the compare target has the comparison section with every figure embedded
    snakemake(run, "--report", str(tmp_path / "report.html"), "compare", *config)
    text = (tmp_path / "report.html").read_text()
    categories = json.loads(re.search(r"^\s*var categories = (\{.*\});\s*$", text,
                                      re.M).group(1))
    shown = {Path(f).name for files in categories["5. Method comparison"].values() for f in files}
    assert shown == {"tables.html", "class_distribution.png", "iou.png", "confidence.png"}
    assert all(f"results/tiny/compare/{name}" in text for name in shown)
    # a second call has nothing to do
    assert job_counts(run, "compare", *config) == {}
    shutil.rmtree(run)
