"""The method comparison (paper Tables 4-5): names, intervals, tables, the labeled-only control,
the KL property, and the workflow's sharing of teachers."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from workflow_helpers import REPO, copy_run, job_counts, shared_tiny_run, snakemake

from dars.cli import main as dars_main
from dars.compare.control import write_blank_labels
from dars.compare.runs import (
    LABELED_ONLY,
    VARIANT,
    Comparison,
    RunTable,
    Variant,
    branches,
    comparison_keys,
    parse_variant,
)
from dars.compare.stage import COMPARE_FILES
from dars.compare.statistics import t_interval, t_quantile
from dars.compare.tables import (
    BASELINE,
    collect_runs,
    differences,
    pseudo_per_class,
    table4,
    table4_markdown,
    table5,
    table5_markdown,
    tail_differences_markdown,
)
from dars.core import config as dars_config
from dars.core.errors import DarsError
from dars.engine.train import seg_loss
from dars.pseudo.stage import PseudoLabelOptions, pseudo_label
from dars.pseudo.thresholds import METHODS, SAMPLINGS
from dars.store.probstore import ProbStoreWriter

# ----------------------------------------------------------------------------- names


def test_parse_variant() -> None:
    v = parse_variant("cbst+ts")
    assert (v.method, v.tempered) == ("cbst", True)
    assert parse_variant("dars").tempered is False
    assert parse_variant("labeled-only") == Variant(LABELED_ONLY, tempered=False)
    assert parse_variant("dars@0.45") == Variant("dars", tempered=False, alpha=0.45)
    assert parse_variant("cbst+ts@1") == Variant("cbst", tempered=True, alpha=1.0)
    for bad in ("dars+TS", "ts", "st+ts+ts", "focal", "labeled-only+ts", "labeled",
                "dars@0", "dars@0.0", "dars@1.5", "dars@.5", "dars@", "dars@0.45+ts",
                "labeled-only@0.2"):
        with pytest.raises(DarsError, match="unknown comparison method"):
            parse_variant(bad)


def test_method_names_have_one_source() -> None:
    """The schema repeats the names (JSON schema cannot import Python): it must agree."""
    schema = dars_config.schema()
    assert schema["properties"]["pseudo_label"]["properties"]["method"]["enum"] == list(METHODS)
    sampling = schema["properties"]["pseudo_label"]["properties"]["sampling"]
    assert sampling["enum"] == list(SAMPLINGS)
    assert schema["$defs"]["variant"]["pattern"] == f"^({VARIANT.pattern})$"
    names = ["labeled-only", "labeled-only+ts", "st", "st+ts", "dars+ts", "da", "cbst+ts",
             "focal", "dars+TS", "st+ts+ts", "", "dars@0.45", "cbst+ts@1", "dars@0",
             "dars@1.5", "dars@0.45+ts", "labeled-only@0.2"]
    for name in names:
        try:
            parse_variant(name)
            python_ok = True
        except DarsError:
            python_ok = False
        try:
            dars_config.validate({"compare": {"methods": [name]}})
            schema_ok = True
        except DarsError:
            schema_ok = False
        assert python_ok == schema_ok, name


def test_branches_share_the_first_round_of_progressive_methods() -> None:
    rows = branches(["st", "dars"], ["dars"], rounds=2)
    assert rows == [("st", 1), ("dars", 1), ("dars", 2)]
    assert branches(["st"], ["st"], rounds=1) == [("st", 1)]  # nothing progressive to add


def test_the_run_table_shares_each_teachers_model_and_stores() -> None:
    """The teacher of the run's seed is the run itself; a branch starts from its teacher's
    round 0 and thresholds, in round 1, its teacher's store at the branch's T."""
    config = dars_config.validate({"run": "r", "seed": 1, "rounds": [{"alpha": 0.2}] * 2,
                                   "compare": {"methods": ["st", "dars+ts"],
                                               "progressive": ["dars+ts"],
                                               "teacher_seeds": [1, 2], "seeds": [0]}})
    runs = RunTable(config)
    assert (runs.teacher(1), runs.teacher(2)) == ("r", "r/compare/teacher2")
    assert runs.round_dir("r/compare/teacher2/st/seed0", 0) == "results/r/compare/teacher2/round0"
    assert runs.round_dir("r/compare/teacher1/st/seed0", 0) == "results/r/round0"
    assert runs.store("r/compare/teacher1/st/seed0", 1) == "results/r/round1/probs.zarr"
    assert runs.store("r/compare/teacher2/dars+ts/seed0", 1) == (
        "results/r/compare/teacher2/round1/probs_ts.zarr")
    assert runs.store("r/compare/teacher2/dars+ts/seed0", 2) == (
        "results/r/compare/teacher2/dars+ts/seed0/round2/probs.zarr")
    assert runs["r/compare/teacher2/dars+ts/seed0"].temperature == "auto"  # compare's default
    assert runs["r/compare/teacher2/st/seed0"].seed == 0  # the student seed
    assert runs["r/compare/teacher2"].seed == 2  # the teacher's
    assert runs.comparison.folders[:2] == ("results/r/round0", "results/r/compare/teacher2/round0")
    # the run itself at a fitted T: its teacher's untempered rows read a store at T = 1
    auto = RunTable({**config, "pseudo_label": {**config["pseudo_label"], "temperature": "auto"}})
    assert auto.store("r/compare/teacher1/st/seed0", 1) == "results/r/round1/probs_t1.zarr"
    assert auto.store("r/compare/teacher2/st/seed0", 1) == (
        "results/r/compare/teacher2/round1/probs.zarr")


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(("df", "printed"), [(1, 12.7062), (2, 4.3027), (5, 2.5706),
                                             (10, 2.2281), (30, 2.0423)])
def test_t_quantile_matches_the_printed_tables(df: int, printed: float) -> None:
    """t(0.975, df) as published (e.g. NIST/SEMATECH e-Handbook, Table 1.4.2.7.2)."""
    assert t_quantile(0.975, df) == pytest.approx(printed, abs=5e-5)  # 4 decimals printed


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(p: float) -> None:
    """df = 1 is Cauchy, tan(pi (p - 1/2)); df = 2 has t = (2p - 1) / sqrt(2 p (1 - p))."""
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(1 - p, 2) == pytest.approx(-t_quantile(p, 2), rel=1e-12)


def test_t_quantile_tends_to_the_normal() -> None:
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)


def test_t_interval_by_hand() -> None:
    # mean 0.42, s = 0.02 / sqrt(2), half width = 12.706 * s / sqrt(2) = 0.12706
    ci = t_interval([0.41, 0.43])
    assert (ci.mean, ci.n) == (pytest.approx(0.42), 2)
    assert (ci.lo, ci.hi) == (pytest.approx(0.42 - 0.12706, abs=1e-5),
                              pytest.approx(0.42 + 0.12706, abs=1e-5))
    assert ci.verdict == "better"  # excludes 0
    assert t_interval([-0.01, 0.02]).verdict == "not distinguishable"
    assert t_interval([-0.1, -0.11, -0.12]).verdict == "worse"
    one = t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.lo) and one.verdict == "n=1, no interval"
    assert math.isnan(t_interval([0.1, math.nan]).mean)  # never a mean of a subset


# ----------------------------------------------------------------------------- tables

NAMES = ["road", "car", "bike"]
TEACHERS, SEEDS = (0, 1, 2), (0, 1)
# mIoU of each (teacher, seed): the baseline per teacher, students per teacher and seed
BASE = {0: 0.40, 1: 0.42, 2: 0.38}
LO = {(t, k): BASE[t] + 0.01 + (0.01 if k else 0.0) for t in TEACHERS for k in SEEDS}
ST = {key: v + (0.01 if key[1] == 0 else -0.01) for key, v in LO.items()}  # = LO on average
DARS = {key: v + (0.02 if key[1] == 0 else 0.03) for key, v in ST.items()}  # +0.025 over ST


def _run_record(row: str, method: str, t: int, k: int | None, miou: float, **pseudo) -> dict:
    return {"row": row, "method": method, "rounds": 0 if k is None else 1, "teacher": t,
            "seed": k, "miou": miou, "tail_miou": miou / 2,
            **{f"iou:{n}": miou * f for n, f in zip(NAMES, (2.0, 1.0, 0.5), strict=True)},
            **pseudo}


@pytest.fixture
def runs() -> pd.DataFrame:
    """Synthetic runs.csv rows: 3 teachers x 2 student seeds of labeled-only, st and dars."""
    recs = [_run_record(BASELINE, "baseline", t, None, BASE[t]) for t in TEACHERS]
    control = dict(kept_fraction=0.0, kl=math.nan, temperature=math.nan, precision=math.nan,
                   **{f"short:{n}": 1.0 for n in NAMES})
    recs += [_run_record(LABELED_ONLY, LABELED_ONLY, t, k, v, alpha=0.2, **control)
             for (t, k), v in LO.items()]
    for method, values, kept, kl in (("st", ST, 0.2, 0.9), ("dars", DARS, 0.18, 0.02)):
        for (t, k), v in values.items():
            recs.append(_run_record(method, method, t, k, v, alpha=0.2, temperature=1.0,
                                    kept_fraction=kept, kl=kl + 0.01 * k, precision=0.9,
                                    **{f"short:{n}": x for n, x in
                                       zip(NAMES, (-0.5, 0.2, 0.5), strict=True)}))
    df = pd.DataFrame(recs)
    df["seed"] = df["seed"].astype("Int64")
    return df


def test_table4_means_and_intervals_over_teacher_and_student_runs(runs: pd.DataFrame) -> None:
    t4 = table4(runs).set_index("method")
    assert list(t4.index) == [BASELINE, LABELED_ONLY, "st", "dars"]
    assert t4.loc[BASELINE, "runs"] == 3 and t4.loc["dars", "runs"] == 6
    # baseline over its 3 teachers: mean 0.40, s = 0.02, half = 4.303 * 0.02 / sqrt(3)
    assert t4.loc[BASELINE, "mIoU"] == pytest.approx(0.40)
    half = 4.303 * 0.02 / math.sqrt(3)
    assert t4.loc[BASELINE, "mIoU lo"] == pytest.approx(0.40 - half, abs=1e-5)
    assert t4.loc[BASELINE, "mIoU hi"] == pytest.approx(0.40 + half, abs=1e-5)
    dars = np.array(list(DARS.values()))
    half = 2.571 * dars.std(ddof=1) / math.sqrt(6)
    assert t4.loc["dars", "mIoU"] == pytest.approx(dars.mean())
    assert t4.loc["dars", "mIoU hi"] - t4.loc["dars", "mIoU"] == pytest.approx(half, abs=1e-5)
    assert t4.loc["dars", "bike"] == pytest.approx(dars.mean() * 0.5)
    assert t4.loc["st", "tail mIoU"] == pytest.approx(np.mean(list(ST.values())) / 2)


def test_paired_differences_on_the_same_teacher_and_seed(runs: pd.DataFrame) -> None:
    d = differences(runs).set_index(["method", "reference"])
    # dars - st per pair: 0.02, 0.03 for each teacher: mean 0.025, s = sqrt(6 * 0.005^2 / 5)
    half = 2.571 * math.sqrt(6 * 0.005 ** 2 / 5) / math.sqrt(6)
    row = d.loc[("dars", "st")]
    assert (row["vs"], row["n"]) == ("st", 6)
    assert row["difference"] == pytest.approx(0.025)
    assert (row["lo"], row["hi"]) == (pytest.approx(0.025 - half, abs=1e-5),
                                      pytest.approx(0.025 + half, abs=1e-5))
    assert row["verdict"] == "better"
    # st - labeled-only: +0.01, -0.01 per teacher -> mean 0, not distinguishable
    row = d.loc[("st", LABELED_ONLY)]
    assert row["difference"] == pytest.approx(0.0, abs=1e-12)
    assert row["verdict"] == "not distinguishable"
    assert d.loc[(LABELED_ONLY, "st"), "difference"] == pytest.approx(0.0, abs=1e-12)
    # gain over each run's own teacher: labeled-only is 0.01 / 0.02 above it
    row = d.loc[(LABELED_ONLY, "baseline")]
    assert row["difference"] == pytest.approx(0.015) and row["verdict"] == "better"
    assert ("st", "st") not in d.index and (LABELED_ONLY, LABELED_ONLY) not in d.index


def test_tail_differences_are_paired_like_miou(runs: pd.DataFrame) -> None:
    """tail mIoU is miou / 2 in the synthetic runs: dars - st = 0.0125, half the mIoU gap."""
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in tail_differences_markdown(runs).splitlines()[2:]]
    cells = {(r[0], r[1]): r[2] for r in rows}
    half = 2.571 * math.sqrt(6 * 0.0025 ** 2 / 5) / math.sqrt(6)
    lo, hi = 100 * (0.0125 - half), 100 * (0.0125 + half)
    assert cells[("dars", "st")] == f"{1.25:+.1f} [{lo:.1f}, {hi:.1f}] better"
    assert cells[("st", LABELED_ONLY)].endswith("not distinguishable")


def test_progressive_rows_are_paired_with_the_reference_of_the_same_rounds(
        runs: pd.DataFrame) -> None:
    more = runs[runs["method"].isin(["st", "dars"])].assign(rounds=2)
    more["row"] = more["method"] + " + IT (2 rounds)"
    more.loc[more["method"] == "dars", "miou"] += 0.1
    d = differences(pd.concat([runs, more], ignore_index=True)).set_index(["method", "reference"])
    assert d.loc[("dars + IT (2 rounds)", "st"), "vs"] == "st + IT (2 rounds)"
    assert d.loc[("dars + IT (2 rounds)", "st"), "difference"] == pytest.approx(0.125)
    # there is no labeled-only + IT: the 1-round control is the reference
    assert d.loc[("st + IT (2 rounds)", LABELED_ONLY), "vs"] == LABELED_ONLY


def test_single_run_says_so(runs: pd.DataFrame) -> None:
    one = runs[(runs["teacher"] == 0) & (runs["seed"].isna() | (runs["seed"] == 0))]
    t4, d = table4(one), differences(one)
    md = table4_markdown(t4, d)
    assert "(n=1, no interval)" in md and "better" not in md
    assert math.isnan(t4.set_index("method").loc["dars", "mIoU lo"])


def test_markdown_tables_show_intervals_verdicts_and_the_control(runs: pd.DataFrame) -> None:
    md = table4_markdown(table4(runs), differences(runs))
    head, _, *body = md.strip().splitlines()
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "method", "runs", *NAMES, "tail mIoU", "mIoU [95% CI]", "gain vs baseline", "vs ST",
        "vs labeled-only"]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
             for r in body}
    assert cells["dars"][-2] == "+2.5 [1.9, 3.1] better"  # 2.5 ± 0.575 points
    assert cells["st"][-1].endswith("not distinguishable")
    assert cells["st"][-2] == "reference" and cells[LABELED_ONLY][-1] == "reference"
    assert cells[BASELINE][-3:] == ["–", "–", "–"]
    t5 = table5_markdown(table5(runs))
    control = next(r for r in t5.splitlines() if r.startswith(f"| {LABELED_ONLY}"))
    cells = [c.strip() for c in control.strip("|").split("|")]
    assert cells[5:8] == ["0.000", "–", "–"]  # kept fraction, KL, precision
    assert cells[-3:] == ["+100.0%"] * 3  # every class short of all its n_j
    # st: KL 0.90 / 0.91 per teacher: mean 0.905, half width 2.571 * 0.005477 / sqrt(6)
    assert "| 0.905 [0.899, 0.911] |" in re.sub(r" +", " ", t5)


# ----------------------------------------------------------------------------- from files


def _write_eval(rd: Path, miou: float, iou: list[float], tail: float | None = None) -> None:
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "metrics.json").write_text(json.dumps({"miou": miou, "tail_miou": tail}))
    pd.DataFrame({"class": range(3), "name": NAMES, "iou": iou}).to_csv(rd / "metrics.csv",
                                                                        index=False)


def _write_branch_round(rd: Path, miou: float, iou: list[float], kept: list[int],
                        target: list[int], kl: float, tail: float | None = None) -> None:
    _write_eval(rd, miou, iou, tail)
    kept_a, target_a = np.asarray(kept), np.asarray(target)
    pd.DataFrame({"class": range(3), "name": NAMES, "labeled_ratio": target_a / target_a.sum(),
                  "pseudo_ratio": kept_a / kept_a.sum(), "target": target_a, "kept": kept_a,
                  "shortfall": target_a - kept_a}).to_csv(rd / "pseudo_stats.csv", index=False)
    (rd / "pseudo_summary.json").write_text(json.dumps({
        "alpha": 0.2, "temperature": 1.0, "kept_fraction": kept_a.sum() / 1000,
        "kl_labeled_pseudo": kl, "pixel_precision": 0.9}))


def _tiny_store(path: Path, images: int = 3) -> Path:
    writer = ProbStoreWriter(path, [f"u{i}" for i in range(images)],
                             [(6 + i, 8) for i in range(images)], NAMES)
    rng = np.random.default_rng(0)
    for i in range(images):
        p = rng.dirichlet(np.ones(3), size=(6 + i, 8)).transpose(2, 0, 1)
        q = p.astype(np.float16)
        writer.write_prediction(i, q.argmax(0), q.max(0))
    writer.finalize()
    return path


def fake_comparison(run: Path) -> Comparison:
    """st and dars on teachers 1 and 2 x student seeds 0 and 1, one round, each run's round
    folder anywhere under ``run`` (the tables read the folders they are handed)."""
    keys = comparison_keys(branches(["st", "dars"], [], 1), [1, 2], [0, 1])
    return Comparison(methods=("st", "dars"), progressive=(), seeds=(0, 1),
                      teacher_seeds=(1, 2), run_seed=1, rounds=1,
                      folders=tuple(str(run / f"{m}-t{t}-s{k}") for m, _, t, k in keys))


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    """A finished comparison on disk (:func:`fake_comparison`), with the run's histogram and
    the first teacher's store."""
    run = tmp_path / "run"
    folders = iter(fake_comparison(run).folders)
    _write_eval(Path(next(folders)), 0.40, [0.8, 0.3, 0.1], tail=0.1)
    _write_eval(Path(next(folders)), 0.42, [0.8, 0.35, 0.11], tail=0.1)
    pd.DataFrame({"class": range(3), "name": NAMES, "pixels": [120, 50, 30],
                  "ratio": [0.6, 0.25, 0.15]}).to_csv(run / "label_histogram.csv", index=False)
    _tiny_store(run / "round1" / "probs.zarr")
    target = [120, 50, 30]
    for m, (iou, kept, kl, tail) in (("st", ([0.8, 0.3, 0.13], [190, 10, 0], 0.9, 0.15)),
                                     ("dars", ([0.8, 0.4, 0.2], [120, 50, 15], 0.02, 0.3))):
        for t in (1, 2):
            for seed in (0, 1):
                miou = {"st": 0.41, "dars": 0.45}[m] + 0.02 * seed + t / 100
                _write_branch_round(Path(next(folders)), miou, iou, kept=kept,
                                    target=target, kl=kl, tail=tail)
    return run


def test_collect_runs_reads_every_teacher_and_seed(fake_run: Path) -> None:
    runs = collect_runs(fake_comparison(fake_run))
    assert len(runs) == 2 + 2 * 2 * 2
    base = runs[runs["method"] == "baseline"].set_index("teacher")["miou"]
    assert base.to_dict() == {1: 0.40, 2: 0.42}
    t4 = table4(runs).set_index("method")
    assert t4.loc["dars", "mIoU"] == pytest.approx(np.mean([0.46, 0.48, 0.47, 0.49]))
    gain = differences(runs).set_index(["method", "reference"]).loc[("dars", "baseline")]
    # each run minus its own teacher: 0.46 - 0.40, 0.48 - 0.40, 0.47 - 0.42, 0.49 - 0.42
    assert gain["difference"] == pytest.approx(np.mean([0.06, 0.08, 0.05, 0.07]))
    t5 = table5(runs).set_index("method")
    assert t5.loc["dars", "KL(labeled||pseudo)"] == pytest.approx(0.02)
    # bike: n_j = 30, DARS kept 15 (the teacher predicted too few) -> 50 % short, shown
    assert t5.loc["dars", "short bike"] == pytest.approx(0.5)
    assert t5.loc["st", "short road"] == pytest.approx((120 - 190) / 120)  # excess: negative
    assert t5.loc["st", "short bike"] == pytest.approx(1.0)
    per_class = pseudo_per_class(fake_comparison(fake_run))
    assert set(per_class["teacher"]) == {1, 2} and len(per_class) == 8 * 3


def test_compare_cli_builds_the_tables_and_prints_them_again(
        fake_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fake_run / "compare"
    assert dars_main(["compare", "--comparison-json", fake_comparison(fake_run).to_json(),
                      "--label-hist", str(fake_run / "label_histogram.csv"), "--store",
                      str(fake_run / "round1" / "probs.zarr"), "--out-dir", str(out)]) == 0
    for name in ("class_distribution.png", "iou.png", "confidence.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert dars_main(["compare", "--markdown", str(fake_run)]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "tables.md").read_text()  # the file is the command's output
    header = printed.splitlines()[0]
    assert header.startswith(f"Generated by `dars compare --markdown {fake_run}`")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["commit"] in header and f"{prov['cpus']} CPUs" in header
    assert "teacher seeds 1, 2 × student seeds 0, 1 = 4 run(s)" in header
    assert "| dars" in printed and "vs ST" in printed and "Table 5" in printed
    diffs = pd.read_csv(out / "differences.csv").set_index(["method", "reference"])
    assert diffs.loc[("dars", "st"), "difference"] == pytest.approx(0.04, rel=1e-5)  # %.6g


def test_compare_cli_refuses_an_unfinished_folder(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert dars_main(["compare", "--markdown", str(tmp_path)]) == 2
    assert "no finished comparison" in capsys.readouterr().err
    assert dars_main(["compare", "--out-dir", str(tmp_path)]) == 2
    assert "needs --comparison-json, --label-hist, --store" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the control


def test_blank_labels_ignore_every_pixel_and_add_zero_loss(tmp_path: Path) -> None:
    store = _tiny_store(tmp_path / "probs.zarr")
    hist = tmp_path / "label_histogram.csv"
    pd.DataFrame({"class": range(3), "name": NAMES, "pixels": [5, 3, 2],
                  "ratio": [0.5, 0.3, 0.2]}).to_csv(hist, index=False)
    labels = tmp_path / "labels"
    assert dars_main(["blank-labels", "--store", str(store), "--label-hist", str(hist),
                      "--alpha", "0.5", "--labels-out", str(labels), "--stats-out",
                      str(tmp_path / "stats.csv"), "--summary-out",
                      str(tmp_path / "summary.json")]) == 0
    for i in range(3):
        mask = np.asarray(Image.open(labels / f"u{i}.png"))
        assert mask.shape == (6 + i, 8) and (mask == 255).all()
        logits = torch.randn(1, 3, *mask.shape, requires_grad=True)
        target = torch.from_numpy(mask.astype(np.int64))[None]
        loss = seg_loss({"out": logits}, target, 255, aux_weight=0.4)
        loss.backward()
        assert loss.item() == 0.0 and not logits.grad.any()
    stats = pd.read_csv(tmp_path / "stats.csv")
    pixels = 6 * 8 + 7 * 8 + 8 * 8
    target = np.floor(0.5 * pixels * np.array([0.5, 0.3, 0.2]) + 0.5)
    assert stats["target"].tolist() == target.tolist()
    assert (stats["kept"] == 0).all() and (stats["shortfall"] == stats["target"]).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kept_fraction"] == 0 and summary["kl_labeled_pseudo"] is None
    with pytest.raises(DarsError, match="alpha"):
        write_blank_labels(store, hist, tmp_path / "x", tmp_path / "s.csv", tmp_path / "j", 0.0)


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
        writer.write_prediction(i, pred, conf.astype(np.float16))
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
TINY = "results/tiny"  # .test/config.yaml: run tiny, seed 1 (the default)


def branch(t: int, method: str, k: int) -> str:
    """Where branch (teacher t, method, student seed k) of the tiny run keeps its rounds."""
    return f"{TINY}/compare/teacher{t}/{method}/seed{k}"


def planned_outputs(workdir: Path, *args: str) -> dict[str, str]:
    """Dry run with --detailed-summary: {output file: rule} of every job it would run."""
    rows = [line.split("\t") for line in snakemake(workdir, "-n", "--detailed-summary",
                                                     *args).stdout.splitlines()]
    start = next(i for i, r in enumerate(rows) if r[0] == "output_file")
    plan = rows[start][:].index("plan")
    return {r[0]: r[2] for r in rows[start + 1:] if len(r) > plan and r[plan] != "no update"}


def train_commands(text: str) -> dict[str, dict]:
    """{--out of every `dars train`: its --options-json and --init} of a dry run with -p."""
    found = {}
    for m in re.finditer(r"dars train --round \d+ --options-json '(\{.*?\})'(?: --init (\S+))?"
                         r".*? --out (\S+)", text):
        found[m[3]] = {"options": json.loads(m[1]), "init": m[2]}
    return found


def test_compare_dag_trains_and_infers_the_baseline_once(tmp_path: Path) -> None:
    plan = planned_outputs(tmp_path, "compare", "--config", COMPARE_SMALL)
    made = {f for f, rule in plan.items() if rule in ("train_baseline", "infer_probabilities",
                                                      "calibrate")}
    # the run's baseline, its store and, for the +ts rows, its T and its store at that T;
    # then round 2 of the progressive dars, inferred by its own round-1 students
    assert made == {f"{TINY}/round0/model.pt", f"{TINY}/round0/train_log.csv",
                    f"{TINY}/round1/probs.zarr", f"{TINY}/round0/temperature.json",
                    f"{TINY}/compare/teacher1/round1/probs_ts.zarr",
                    *(f"{branch(1, 'dars', k)}/round2/probs.zarr" for k in (0, 1))}
    # (st, dars+ts, dars) x 2 seeds for round 1, plus dars round 2 x 2 seeds; evaluated:
    # the baseline and the last round of each table row (dars round 1 is not a row)
    students = {f for f, rule in plan.items() if rule == "train_student" and
                f.endswith("model.pt")}
    assert len(students) == 8 and all(f.startswith(f"{TINY}/compare/") for f in students)
    assert sum(rule == "pseudo_label" for rule in plan.values()) == 8 * 4  # 4 files each
    assert sum(f.endswith("metrics.json") for f in plan) == 1 + 6


DONE_WHEN = ("compare={methods: [labeled-only, st, dars], progressive: [], "
             "teacher_seeds: [0, 1, 2], seeds: [0, 1]}")


def test_compare_dag_trains_one_baseline_per_teacher_seed(tmp_path: Path) -> None:
    """Issue 13's done-when: 3 teachers (seed 1 = the run's own baseline), 2 student seeds
    each, labeled-only as its own branch, and the tables of all of them."""
    plan = planned_outputs(tmp_path, "compare", "--config", DONE_WHEN)
    teachers = {0: f"{TINY}/compare/teacher0", 1: TINY, 2: f"{TINY}/compare/teacher2"}
    baselines = {f: r for f, r in plan.items() if f.endswith("round0/model.pt")}
    assert baselines == {f"{d}/round0/model.pt": "train_baseline" for d in teachers.values()}
    stores = {f for f in plan if f.endswith("probs.zarr")}
    assert stores == {f"{d}/round1/probs.zarr" for d in teachers.values()}
    branches_ = {(t, v, k) for t in teachers for v in (LABELED_ONLY, "st", "dars") for k in (0, 1)}
    students = {f: r for f, r in plan.items() if r == "train_student"
                and f.endswith("model.pt")}
    assert set(students) == {f"{branch(*b)}/round1/model.pt" for b in branches_}
    labels = {f: r for f, r in plan.items() if f.endswith("pseudo_labels")}
    assert labels == {f"{branch(t, v, k)}/round1/pseudo_labels":
                      "blank_labels" if v == LABELED_ONLY else "pseudo_label"
                      for t, v, k in branches_}
    tables = {Path(f).name for f, r in plan.items() if r == "compare_tables"}
    assert {"table4.md", "table5.md", "tables.md", "differences.csv", "runs.csv"} <= tables

    text = snakemake(tmp_path, "-n", "-p", "compare", "--config", DONE_WHEN).stdout
    commands = train_commands(text)
    for t, d in teachers.items():  # each teacher trained with its own seed
        assert commands[f"{d}/round0/model.pt"]["options"]["seed"] == t
    student = commands[f"{branch(2, LABELED_ONLY, 1)}/round1/model.pt"]
    assert student["init"] == f"{teachers[2]}/round0/model.pt"  # teacher 2's baseline
    assert student["options"]["seed"] == 1  # the student seed
    comparison = Comparison.from_json(re.search(r"--comparison-json '(.*?)'", text)[1])
    assert (comparison.teacher_seeds, comparison.run_seed) == ((0, 1, 2), 1)
    assert comparison.folders[:3] == tuple(f"{d}/round0" for d in teachers.values())


def test_a_method_at_its_own_alpha_thresholds_round_1_there(tmp_path: Path) -> None:
    """dars@0.45 keeps 0.45 in round 1 (e.g. as much as CBST keeps) and the round's alpha in
    later progressive rounds; the plain dars branch keeps the round's alpha throughout."""
    config = "compare={methods: [dars, dars@0.45], progressive: [dars@0.45], seeds: [0]}"
    text = snakemake(tmp_path, "-n", "-p", "compare", "--config", config).stdout
    alphas = {m[2]: json.loads(m[1])["alpha"] for m in re.finditer(
        r"dars pseudo-label --options-json '(\{.*?\})' .*?--labels-out (\S+)", text)}
    test_config = yaml.safe_load((REPO / ".test/config.yaml").read_text())
    rounds = [r["alpha"] for r in test_config["rounds"]]
    assert alphas == {f"{branch(1, 'dars', 0)}/round1/pseudo_labels": rounds[0],
                      f"{branch(1, 'dars@0.45', 0)}/round1/pseudo_labels": 0.45,
                      f"{branch(1, 'dars@0.45', 0)}/round2/pseudo_labels": rounds[1]}


def test_a_progressive_branch_resumes_its_own_student_as_released(tmp_path: Path) -> None:
    """docs/METHOD.md, progressive strategy: round 2 of a branch starts from that branch's
    round-1 student (not the teacher, not another branch) and trains on the widened range
    [(1 - beta_min) s_min, (1 + beta_max) s_max], each round E epochs of one continued schedule."""
    text = snakemake(tmp_path, "-n", "-p", "compare", "--config",
                     "compare={methods: [st], progressive: [dars], seeds: [0]}").stdout
    commands = train_commands(text)
    test_config = dars_config.load(REPO / ".test/config.yaml")  # with the schema's defaults
    (s_min, s_max), r2 = test_config["train"]["scale"], test_config["rounds"][1]
    one, two = (f"{branch(1, 'dars', 0)}/round{s}/model.pt" for s in (1, 2))
    assert commands[one]["init"] == f"{TINY}/round0/model.pt"
    assert commands[two]["init"] == one
    assert commands[two]["options"]["scale_range"] == pytest.approx(
        [(1 - r2["beta_min"]) * s_min, (1 + r2["beta_max"]) * s_max])
    assert commands[one]["options"]["scale_range"] == pytest.approx([s_min, s_max])
    assert commands[two]["options"]["schedule"] == test_config["train"]["schedule"] == "continue"
    assert commands[two]["options"]["epochs_per_round"] == [
        test_config["train"]["epochs"], *(r["epochs"] for r in test_config["rounds"])]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_run(tmp_path_factory)


@pytest.mark.slow
def test_compare_on_a_finished_run_reuses_its_baseline_and_writes_tables(
        tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    config = ["--config",
              "compare={methods: [labeled-only, st, cbst+ts], progressive: [st], seeds: [0]}"]
    plan = planned_outputs(run, "compare", *config)
    # nothing of the run is redone; the one file added to its folders is the calibration of its
    # teacher (for the cbst+ts rows), beside the model it calibrates
    assert [f for f in plan if f.startswith((f"{TINY}/round", "data/"))] == [
        f"{TINY}/round0/temperature.json"], plan
    baseline = run / "results" / "tiny" / "round0" / "model.pt"
    before = baseline.stat().st_mtime_ns
    snakemake(run, "compare", *config)
    assert baseline.stat().st_mtime_ns == before
    out = run / "results" / "tiny" / "compare"
    t4 = pd.read_csv(out / "table4.csv")
    assert t4["method"].tolist() == [BASELINE, LABELED_ONLY, "st", "cbst+ts",
                                     "st + IT (2 rounds)"]
    assert t4["mIoU"].between(0, 1).all()
    t5 = pd.read_csv(out / "table5.csv").set_index("method")
    calibrated = json.loads((run / "results" / "tiny" / "round0" / "temperature.json")
                            .read_text())["temperature"]
    # table5.csv prints 6 significant digits: compare at that precision
    assert t5.loc["cbst+ts", "temperature"] == pytest.approx(calibrated, rel=1e-5)
    assert t5.loc["st", "temperature"] == 1.0
    assert t5.loc[LABELED_ONLY, "kept fraction"] == 0  # the control's pseudo half is empty
    assert t5.loc[LABELED_ONLY, "short trouser"] == 1.0
    assert {f"short {n}" for n in ("background", "trouser")} <= set(t5.columns)
    for name in ("class_distribution.png", "iou.png", "confidence.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "Table 5" in (out / "tables.html").read_text()
    md = (out / "tables.md").read_text()
    assert md.startswith("Generated by `dars compare --markdown results/tiny`")
    assert "| labeled-only" in md and "vs labeled-only" in md and "n=1, no interval" in md
    # the report of the compare target has the comparison section with every figure embedded
    snakemake(run, "--report", str(tmp_path / "report.html"), "compare", *config)
    text = (tmp_path / "report.html").read_text()
    categories = json.loads(re.search(r"^\s*var categories = (\{.*\});\s*$", text,
                                      re.M).group(1))
    shown = {Path(f).name for files in categories["5. Method comparison"].values() for f in files}
    assert shown == {"tables.html", "class_distribution.png", "iou.png", "confidence.png"}
    assert all(f"results/tiny/compare/{name}" in text for name in shown)
    # a second call has nothing to do; another method or seed runs only its new branches
    assert job_counts(run, "compare", *config) == {}
    more = "compare={methods: [labeled-only, st, cbst+ts, dars], progressive: [st], seeds: [0, 1]}"
    new = {branch(1, "dars", 0), *(branch(1, m, 1) for m in (LABELED_ONLY, "st", "cbst+ts",
                                                              "dars"))}
    plan = planned_outputs(run, "compare", "--config", more)
    assert {str(Path(f).parents[1]) for f in plan if "/seed" in f} == new
    assert {f for f in plan if "/seed" not in f} == {f"{TINY}/compare/{n}"
                                                     for n in COMPARE_FILES}
    shutil.rmtree(run)
