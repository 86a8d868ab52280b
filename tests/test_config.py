import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from dars.core import config
from dars.core.errors import DarsError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_filled_and_nested_defaults_are_independent() -> None:
    a = config.validate({})
    b = config.validate({})
    assert a["rounds"][1] == {"alpha": 0.5, "beta_min": 0.2, "beta_max": 0.5, "epochs": 2,
                              "evaluate_every": None, "evaluate_start": None}
    assert a["dataset"]["splits"]["labeled"] == "splits/labeled.txt"
    a["dataset"]["splits"]["labeled"] = "changed"
    assert b["dataset"]["splits"]["labeled"] == "splits/labeled.txt"
    assert config.validate({})["dataset"]["splits"]["labeled"] == "splits/labeled.txt"


def test_round_items_get_defaults() -> None:
    c = config.validate({"rounds": [{"alpha": 0.3}]})
    assert c["rounds"] == [{"alpha": 0.3, "beta_min": 0.0, "beta_max": 0.0, "epochs": 2,
                            "evaluate_every": None, "evaluate_start": None}]


@pytest.mark.parametrize(
    ("cfg", "culprit"),
    [
        ({"rounds": [{"alpah": 0.2}]}, "rounds.0.alpah (unknown key)"),
        ({"datset": {}}, "datset (unknown key)"),
        ({"rounds": [{"alpha": 0.0}]}, "rounds.0.alpha"),
        ({"rounds": [{"alpha": 1.01}]}, "rounds.0.alpha"),
        ({"rounds": [{"alpha": -0.2}]}, "rounds.0.alpha"),
        ({"rounds": []}, "config key rounds:"),
        ({"rounds": [{"alpha": 0.2, "epochs": -1}]}, "rounds.0.epochs"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"pseudo_label": {"method": "dras"}}, "pseudo_label.method"),
        ({"train": {"scale": [1.0]}}, "train.scale"),
    ],
)
def test_bad_config_names_the_key(cfg: dict, culprit: str) -> None:
    with pytest.raises(DarsError, match="config key") as err:
        config.validate(cfg)
    assert culprit in str(err.value)


def test_alpha_one_is_allowed() -> None:
    assert config.validate({"rounds": [{"alpha": 1.0}]})["rounds"][0]["alpha"] == 1.0


def test_shipped_demo_config_is_valid_and_progressive() -> None:
    c = config.load(REPO / "config" / "config.yaml")
    alphas = [r["alpha"] for r in c["rounds"]]
    assert alphas == sorted(alphas) and len(alphas) == 2
    s_min, s_max = c["train"]["scale"]
    assert config.scale_range(c, 1) == (s_min, s_max)
    lo, hi = config.scale_range(c, 2)
    assert lo == pytest.approx((1 - 0.2) * s_min) and hi == pytest.approx(1.5 * s_max)


def test_json_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("run: a\nseed: 3\n")
    c = config.load(f, '{"seed": 5}')
    assert (c["run"], c["seed"]) == ("a", 5)


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(DarsError, match="config file not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(DarsError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(DarsError, match="not valid JSON"):
        config.load(None, "{nope")


# -- the paper's configs -------------------------------------------------------------------------
CITYSCAPES_HEAD = {"road", "sidewalk", "building", "vegetation", "sky", "car"}
# The authors' released settings (docs/METHOD.md, "Released settings"): file: (alphas of
# rounds 1/2, scale range of rounds 0-1, scale range of round 2, epochs per round, crop, lr).
PAPER = {
    "cityscapes_1-8_crop361": ((0.20, 0.50), (0.25, 1.0), (0.2, 1.5), 200, 361, 0.01),
    "cityscapes_1-4_crop361": ((0.40, 0.60), (0.25, 1.0), (0.2, 1.5), 200, 361, 0.01),
    "cityscapes_1-8_crop713": ((0.40, 0.65), (0.5, 2.0), (0.5, 3.0), 200, 713, 0.01),
    "cityscapes_1-4_crop713": ((0.40, 0.65), (0.5, 2.0), (0.4, 2.5), 200, 713, 0.01),
    "cityscapes_1-8_crop361_deeplabv2": ((0.20, 0.45), (0.25, 1.0), (0.25, 1.0), 200, 361, 0.002),
    "voc_1464": ((0.40, 0.50), (0.5, 1.5), (0.5, 2.0), 50, 321, 0.01),
}
GPU_RULES = ("train_baseline", "train_student", "infer_probabilities", "evaluate")
#: GPUs of the released runs (train_gpu in the authors' round-0 yaml files; SyncBN on)
RELEASED_GPUS = {"cityscapes_1-8_crop361": 2, "cityscapes_1-4_crop361": 2,
                 "cityscapes_1-8_crop713": 4, "cityscapes_1-4_crop713": 8,
                 "cityscapes_1-8_crop361_deeplabv2": 2, "voc_1464": 4}


def test_every_paper_config_has_the_authors_settings() -> None:
    """A new paper config must come with its row of the authors' table (and be checked)."""
    files = {p.stem for pattern in ("cityscapes_*.yaml", "voc_*.yaml")
             for p in (REPO / "config").glob(pattern)}
    assert files == set(PAPER)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_matches_the_released_settings(name: str) -> None:
    from dars.data.definitions import CITYSCAPES

    alphas, first, second, epochs, crop, lr = PAPER[name]
    c = config.load(REPO / "config" / f"{name}.yaml")
    assert tuple(r["alpha"] for r in c["rounds"]) == alphas
    assert config.scale_range(c, 0) == config.scale_range(c, 1) == pytest.approx(first)
    assert config.scale_range(c, 2) == pytest.approx(second)
    assert config.epochs_per_round(c) == [epochs] * 3
    t = c["train"]
    assert (t["crop_size"], t["lr"], t["batch_size"], c["seed"]) == (crop, lr, 16, 1)
    assert (t["momentum"], t["weight_decay"], t["poly_power"], t["head_lr_mult"]) == (
        0.9, 1e-4, 0.9, 10)
    assert (t["rotate"], t["blur"], t["flip"], t["schedule"]) == (10, True, True, "continue")
    e = c["evaluate"]
    assert (e["mode"], e["crop_size"], e["flip"]) == ("sliding", crop, True)
    assert e["stride_ratio"] == pytest.approx(2 / 3)
    for split in c["dataset"]["splits"].values():
        assert (REPO / split).is_file(), split
    if c["dataset"]["name"] == "cityscapes":
        assert len(e["tail_classes"]) == 13
        assert set(e["tail_classes"]) == set(CITYSCAPES.classes) - CITYSCAPES_HEAD


@dataclass(frozen=True)
class PlannedJob:
    """One job of a dry run (`snakemake -n -p`) as Snakemake prints it."""

    rule: str
    round: int | None
    resources: dict[str, str]
    shell: str

    def option(self, flag: str, count: int) -> tuple[float, ...]:
        """The ``count`` numbers after ``flag`` in the job's shell command."""
        m = re.search(rf"{flag}((?: [-\d.e]+){{{count}}})(?: |$)", self.shell)
        assert m, f"{flag} not in {self.rule}'s command"
        return tuple(float(v) for v in m.group(1).split())

    def options(self) -> dict:
        """The job's ``--options-json`` (its stage options' params)."""
        m = re.search(r"--options-json '(\{.*?\})'", self.shell)
        assert m, f"--options-json not in {self.rule}'s command"
        return json.loads(m.group(1))


def dry_run_jobs(workdir: Path, configfile: Path, *args: str) -> list[PlannedJob]:
    """Every job Snakemake plans for ``configfile``, with its resources and shell command."""
    from workflow_helpers import snakemake

    out = snakemake(workdir, "-n", "-p", *args, configfile=configfile).stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        wc = re.search(r"^\s+wildcards: .*\b(?:r|s)=(\d+)", block, flags=re.M)
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.append(PlannedJob(m.group(1), int(wc.group(1)) if wc else None, resources,
                               shell.group(1) if shell else ""))
    return jobs


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_dag_has_two_progressive_rounds_on_the_released_gpus(
        name: str, tmp_path: Path) -> None:
    """The planned jobs, not just the config, carry the table's alphas and scale ranges;
    training and inference ask for the released GPU count, evaluation for one (and training
    for more time than inference)."""
    alphas, first, second, _, _, _ = PAPER[name]
    configfile = REPO / "config" / f"{name}.yaml"
    c = config.load(configfile)
    # the dataset root and the split files (config/splits/, found from the working directory
    # as in a run from the repository) are the stages' inputs
    (tmp_path / "data").mkdir()
    (tmp_path / "config").symlink_to(REPO / "config")
    jobs = dry_run_jobs(tmp_path, configfile, "--config",
                        f"dataset={{name: {c['dataset']['name']}, root: {tmp_path / 'data'}}}")
    counts = Counter(job.rule for job in jobs)
    assert {rule: counts[rule] for rule in (*GPU_RULES, "pseudo_label")} == {
        "train_baseline": 1, "train_student": 2, "infer_probabilities": 2, "evaluate": 3,
        "pseudo_label": 2}

    by_round = {(job.rule, job.round): job for job in jobs}
    assert [by_round["pseudo_label", s].options()["alpha"] for s in (1, 2)] == list(alphas)
    assert by_round["train_baseline", None].options()["scale_range"] == pytest.approx(first)
    assert by_round["train_student", 1].options()["scale_range"] == pytest.approx(first)
    s_min, s_max = c["train"]["scale"]
    r2 = c["rounds"][1]
    widened = ((1 - r2["beta_min"]) * s_min, (1 + r2["beta_max"]) * s_max)
    assert widened == pytest.approx(second)
    assert by_round["train_student", 2].options()["scale_range"] == pytest.approx(widened)

    gpu_jobs = [job for job in jobs if job.rule in GPU_RULES]
    assert {job.rule: job.resources["gpu"] for job in gpu_jobs} == {
        **{rule: str(RELEASED_GPUS[name]) for rule in GPU_RULES}, "evaluate": "1"}
    assert {(job.resources["cpus_per_task"], job.resources["mem_mb"]) for job in gpu_jobs} == {
        ("8", "64000")}
    runtime = {job.rule: int(job.resources["runtime"]) for job in gpu_jobs}  # minutes
    assert runtime["train_student"] >= 24 * 60
    assert max(runtime["infer_probabilities"], runtime["evaluate"]) < runtime["train_baseline"]


def test_tensorboard_reaches_the_training_jobs_as_an_argument(tmp_path: Path) -> None:
    """train.tensorboard is a resource of the training jobs (a flag of `dars train`), not a
    param: every training job gets it, and its options stay the same."""
    configfile = REPO / "config" / "config.yaml"
    off = {job.rule: job for job in dry_run_jobs(tmp_path, configfile)}
    on = {job.rule: job for job in dry_run_jobs(tmp_path, configfile, "--config",
                                                "train={tensorboard: true}")}
    for rule in ("train_baseline", "train_student"):
        assert "--tensorboard 0" in off[rule].shell and "--tensorboard 1" in on[rule].shell
        assert on[rule].options() == off[rule].options()
