"""The workflow's DAG, its caching behaviour, and one end-to-end run on the tiny config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import REPO, copy_run, planned_jobs, shared_tiny_run, snakemake

from dars.core import config
from dars.core.options import DatasetOptions, EvaluateOptions, InferOptions, TrainOptions
from dars.data.demo import DEMO_CLASSES, DemoOptions
from dars.reporting.run_report import ReportOptions

WIDER = "beta_min: 0.2, beta_max: 0.5, epochs: 4"  # round 2's other keys, as in .test/
ROUND2_ALPHA = f"rounds=[{{alpha: 0.2, epochs: 4}}, {{alpha: 0.4, {WIDER}}}]"
ROUND1_ALPHA = f"rounds=[{{alpha: 0.3, epochs: 4}}, {{alpha: 0.5, {WIDER}}}]"


def test_demo_dag_has_every_stage_per_round(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, configfile=REPO / "config" / "config.yaml")
    assert jobs == {
        "build_demo", "label_histogram", "train_baseline:0",
        "infer_probabilities:1", "infer_probabilities:2",
        "pseudo_label:1", "pseudo_label:2", "train_student:1", "train_student:2",
        "evaluate:0", "evaluate:1", "evaluate:2", "summary", "report",
    }


def test_bad_config_stops_before_any_job(tmp_path: Path) -> None:
    proc = snakemake(tmp_path, "-n", "--config", "rounds=[{alpha: 1.5}]", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr  # snakemake 9.27 prints a WorkflowError on stdout
    assert "config key rounds.0.alpha: 1.5 is greater than the maximum of 1" in out
    proc = snakemake(tmp_path, "-n", "--config", "pseudo_labell={}", check=False)
    assert "pseudo_labell (unknown key)" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# the options type of each rule's --options-json (rule -> type, built with the job's round)
RULE_OPTIONS = {"build_demo": DemoOptions, "label_histogram": DatasetOptions,
                "infer_probabilities": InferOptions, "evaluate": EvaluateOptions,
                "train_baseline": TrainOptions, "train_student": TrainOptions,
                "report": ReportOptions}


def test_rule_params_are_the_stage_options_of_the_config(tmp_path: Path) -> None:
    """Each job's --options-json is its stage's options built from the validated config, and
    rebuilds to equal options (what the stage then runs on)."""
    out = snakemake(tmp_path, "-n", "-p").stdout
    cfg = config.load(REPO / ".test" / "config.yaml")
    seen = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        if rule is None or rule[1] not in RULE_OPTIONS:
            continue
        cls = RULE_OPTIONS[rule[1]]
        wildcard = re.search(r"^\s+wildcards: .*\b(?:r|s)=(\d+)", block, flags=re.M)
        expected = (cls.from_config(cfg, int(wildcard[1]) if wildcard else 0)
                    if cls is TrainOptions else cls.from_config(cfg))
        params = re.search(r"--options-json '(\{.*?\})'", block)[1]
        assert cls.from_json(params) == expected, rule[1]
        seen.add(rule[1])
    assert seen == set(RULE_OPTIONS)


def test_training_workers_default_to_the_job_cores(tmp_path: Path) -> None:
    """train.num_workers unset: a training job on 2 GPUs with 10 cores gets 8 workers (one
    core per rank's own process), shared by its ranks inside `dars train`."""
    out = snakemake(tmp_path, "-n", "-p", "--config", "gpus=2",
                    "resources={gpu_rules: {cpus_per_task: 10}}").stdout
    workers = [re.search(r"--workers (\d+) ", line)[1] for line in out.splitlines()
               if "dars train" in line]
    assert workers == ["8"] * 3  # round 0 and the two students


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


# lr / base of the last step of each epoch of the 3 rounds of .test/config.yaml (4 epochs each,
# schedule continue), as a run of it logged them with the lr set in the released order (after
# the step, docs/METHOD.md); the lr the last step of a round sets, 0, is the next round's first
RELEASED_LR_AT_EPOCH_ENDS = [[0.849, 0.616, 0.372, 0.107], [0.421, 0.294, 0.162, 0.011],
                             [0.292, 0.204, 0.112, 0.008]]


def released_lr_factor(epoch: int, i: int, loader_len: int, epochs: int, power: float) -> float:
    """tool/train_func.py: lr = base * (1 - current_iter / max_iter) ** power, set after the
    step (lines 129, 159-165), so step i (not a round's first) runs at the value of the step
    before, current_iter = epoch * len(loader) + i."""
    previous_iter = epoch * loader_len + i
    max_iter = epochs * loader_len
    return (1 - previous_iter / max_iter) ** power


@pytest.mark.slow
def test_every_round_anneals_to_zero_as_released(tiny_run: Path) -> None:
    """The black-box check: the lr each round logs at its epochs' ends, against the issue's
    numbers and a re-statement of the released formula (round k: start epoch 4k of 4(k+1))."""
    res = tiny_run / "results" / "tiny"
    for k, expected in enumerate(RELEASED_LR_AT_EPOCH_ENDS):
        log = pd.read_csv(res / f"round{k}" / "train_log.csv")
        ratio = (log["lr"] / 0.05).tolist()
        assert ratio == pytest.approx(expected, abs=0.03), k
        steps = int(log["iteration"].iloc[0]) // (4 * k + 1)  # len(loader) of round k
        assert steps == (3 if k == 0 else 18)  # 24 labeled / 8; 72 unlabeled / (8 / 2)
        formula = [released_lr_factor(4 * k + e, steps - 1, steps, 4 * (k + 1), 0.9)
                   for e in range(4)]
        assert ratio == pytest.approx(formula, abs=1e-6), k


@pytest.mark.slow
def test_rerun_does_nothing(tiny_run: Path) -> None:
    assert planned_jobs(tiny_run) == set()


@pytest.mark.slow
def test_round2_alpha_change_reruns_only_round2_thresholding_and_after(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", ROUND2_ALPHA)
    assert jobs == {"pseudo_label:2", "train_student:2", "evaluate:2", "summary", "report"}


@pytest.mark.slow
def test_keys_a_stage_does_not_read_rerun_nothing_of_it(tiny_run: Path) -> None:
    """An evaluation key reaches the evaluations only (no training, inference or thresholding
    reads it); DataLoader workers reach no stage (the report redraws: it shows the config)."""
    jobs = planned_jobs(tiny_run, "--config", "evaluate={batch_size: 7}")
    assert jobs == {"evaluate:0", "evaluate:1", "evaluate:2", "summary", "report"}
    assert planned_jobs(tiny_run, "--config", "train={num_workers: 2}") == {"report"}


@pytest.mark.slow
def test_round1_alpha_change_keeps_teacher_inference_and_histogram(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", ROUND1_ALPHA)
    assert jobs == {
        "pseudo_label:1", "train_student:1", "evaluate:1",
        "infer_probabilities:2", "pseudo_label:2", "train_student:2", "evaluate:2",
        "summary", "report",
    }


@pytest.mark.slow
def test_method_change_reruns_thresholding_of_every_round(tiny_run: Path) -> None:
    jobs = planned_jobs(tiny_run, "--config", "pseudo_label={method: cbst}")
    assert "train_baseline:0" not in jobs and "infer_probabilities:1" not in jobs
    assert "label_histogram" not in jobs
    assert {"pseudo_label:1", "pseudo_label:2", "train_student:1"} <= jobs


@pytest.mark.slow
def test_every_method_thresholds_the_cached_round1_store(tiny_run: Path) -> None:
    """st, cbst and da (dars is the default run) rerun round 1 from the cached teacher and
    store: the dry run plans that round's thresholding with the method and what follows, never
    the baseline or its inference. (What each method computes is tested on stores directly in
    test_pseudo_stage.py / test_pseudo_thresholds.py.)"""
    for method in ("st", "cbst", "da"):
        proc = snakemake(tiny_run, "-n", "-p", "results/tiny/round1/metrics.json",
                         "--config", f"pseudo_label={{method: {method}}}")
        text = proc.stdout + proc.stderr
        jobs = {m.group(1) for m in re.finditer(r"^(?:local)?rule (\w+):", text, flags=re.M)}
        assert jobs == {"pseudo_label", "train_student", "evaluate"}, method
        assert f'"method": "{method}"' in text and "results/tiny/round1/probs.zarr" in text


@pytest.mark.slow
def test_forcerun_one_stage(tiny_run: Path) -> None:
    """Redo one stage of one round: only that job (the target file's producer) runs."""
    jobs = planned_jobs(tiny_run, "-f", "results/tiny/round2/thresholds.csv")
    assert jobs == {"pseudo_label:2"}


@pytest.mark.slow
def test_until_stops_after_the_changed_stage(tiny_run: Path, tmp_path: Path) -> None:
    """Run it (the summary table plans the whole DAG, ignoring --until): round 2's new alpha
    redoes its thresholding and stops there; what is left is what follows it."""
    run = copy_run(tiny_run, tmp_path / "run")
    round2 = run / "results" / "tiny" / "round2"
    before = {name: (round2 / name).stat().st_mtime_ns
              for name in ("thresholds.csv", "model.pt", "metrics.json")}
    snakemake(run, "--config", ROUND2_ALPHA, "--until", "pseudo_label")
    after = {name: (round2 / name).stat().st_mtime_ns for name in before}
    assert after["thresholds.csv"] != before["thresholds.csv"]
    assert after["model.pt"] == before["model.pt"]
    assert after["metrics.json"] == before["metrics.json"]
    assert planned_jobs(run, "--config", ROUND2_ALPHA) == {
        "train_student:2", "evaluate:2", "summary", "report"}


def test_slurm_profile_sends_every_gpu_job_to_the_gpu_partition(tmp_path: Path) -> None:
    """Every rule that asks for the `gpu` resource -- those of every run, the comparison's
    included, and their shard steps -- has a set-resources entry in profiles/slurm (else SLURM
    would queue it on the CPU partition)."""
    import yaml

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    routed = set(profile["set-resources"])
    gpu_rules = set()
    for extra in ((), ("--config", "shards=2")):
        proc = snakemake(tmp_path, "-n", "compare", "all", *extra,
                         configfile=REPO / "config" / "config.yaml")
        for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
            rule = re.match(r"(?:local)?rule (\w+):", block)
            if rule and re.search(r"^\s+resources:.*\bgpu=", block, flags=re.M):
                gpu_rules.add(rule.group(1))
    assert {"train_baseline", "train_student", "infer_probabilities_shard"} <= gpu_rules
    assert gpu_rules - routed == set()


def test_schema_names_every_rule_whose_resources_can_be_set(tmp_path: Path) -> None:
    """resources.rules is keyed by rule name: the schema's list is the workflow's rules
    (sharded steps and the comparison's included), less the two targets."""
    from dars.core import config

    proc = snakemake(tmp_path, "--list-rules", "--config", "shards=2",
                     configfile=REPO / "config" / "config.yaml")
    rules = set(proc.stdout.split()) - {"all", "compare"}
    schema = config.schema()["properties"]["resources"]["properties"]["rules"]
    assert set(schema["propertyNames"]["enum"]) == rules
