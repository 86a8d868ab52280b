# Paths, round numbers, each stage's options and job resources.
# Rules pass a stage's options (dars.core.options: exactly the config values its outputs depend on,
# built by `from_config`) as JSON through `params:`, which is what makes reruns precise: a
# change to round k's alpha reaches only round k's pseudo labels and what follows them, and a
# key a stage does not read reruns nothing of it. Resources, workers, threads, GPU count and
# shard count are *not* params: moving a run to a bigger machine reruns nothing.

import os
from dataclasses import replace
from pathlib import Path

from dars.compare.runs import LABELED_ONLY, STORE_SUFFIXES, RunTable, store_name
from dars.compare.stage import COMPARE_FILES
from dars.core.options import (
    CalibrateOptions,
    DatasetOptions,
    EvaluateOptions,
    InferOptions,
    TrainOptions,
)
from dars.data.demo import DemoOptions
from dars.jobs.gpu_slots import default_workers
from dars.pseudo.thresholds import PseudoLabelOptions
from dars.reporting.run_report import PER_ROUND_REPORTS, ReportOptions, report_files

# Every run directory of the config -- the main run and the comparison's teachers and
# branches -- with its options (dars.compare.runs). The rules are generic over the run
# ({run}: its directory under results/ and logs/) and look it up here, as the files it shares
# with its teacher (RUNS.round_dir, RUNS.store).
RUNS = RunTable(config)
RUN = config["run"]
RESULTS = f"{RUNS.root}/{RUN}"  # the main run's folder
LOGS = f"logs/{RUN}"
RUN_DIR = f"{RUNS.root}/{{run}}"
RUN_LOGS = "logs/{run}"
REPORT = f"{RESULTS}/report"
DATA = config["dataset"]["root"]
STUDENT_ROUNDS = list(range(1, len(config["rounds"]) + 1))
ALL_ROUNDS = [0] + STUDENT_ROUNDS
SHARDS = config["shards"]
GPUS = config["gpus"]
GPU_RULES = (
    "train_baseline",
    "train_student",
    "infer_probabilities",
    "infer_probabilities_shard",
    "evaluate",
    "calibrate",
)
SINGLE_GPU_RULES = ("evaluate", "calibrate")  # one process: at most one GPU
TRAIN_RULES = ("train_baseline", "train_student")


# The --options-json of the stages whose options are the same for every job of the run.
DEMO_OPTIONS = DemoOptions.from_config(config).to_json()
DATASET_OPTIONS = DatasetOptions.from_config(config).to_json()
INFER_OPTIONS = InferOptions.from_config(config).to_json()
EVALUATE_OPTIONS = EvaluateOptions.from_config(config).to_json()
CALIBRATE_OPTIONS = CalibrateOptions.from_config(config).to_json()


def train_options(run, r):
    """--options-json of training round r of `run`, at the run's seed (the comparison's
    teacher and student seeds)."""
    options = TrainOptions.from_config(config, int(r))
    return replace(options, seed=RUNS[run].seed).to_json()


def previous_round(wc):
    """The folder of the round before round wc.s of the job's run: its teacher's round 0 for
    round 1 (a branch has none of its own)."""
    return RUNS.round_dir(wc.run, int(wc.s) - 1)


def shard_files(pattern):
    """Input function: `pattern` (with the job's wildcards and {i}) for every shard."""
    return lambda wc: expand(pattern, **dict(wc.items()), i=range(SHARDS))


def job_resources(name):
    """cpus_per_task, mem_mb, runtime (and gpu for GPU rules) of a rule, from config resources.

    `gpu` is what `--resources gpu=N` caps locally and what the slurm executor turns into
    --gpus; evaluate and calibrate run in one process, so they take at most one GPU.
    """
    kind = "gpu_rules" if name in GPU_RULES else "cpu_rules"
    res = {**config["resources"][kind], **config["resources"]["rules"].get(name, {})}
    if name in GPU_RULES:
        res["gpu"] = min(GPUS, 1) if name in SINGLE_GPU_RULES else GPUS
    # resources, not params: they change speed or what is logged, not the weights
    if name in TRAIN_RULES:
        workers = config["train"]["num_workers"]
        res["workers"] = (
            default_workers(res["cpus_per_task"], res["gpu"])
            if workers is None
            else workers
        )
        res["tensorboard"] = int(config["train"]["tensorboard"])
    return res


def threads_of(name):
    return job_resources(name)["cpus_per_task"]


def report_outputs(kind, caption, category, subcategory=None, labels=""):
    """The report folder's files of one kind (dars.reporting.run_report.report_files), marked
    for report().

    Per-round kinds get "{s}" in subcategory replaced by the round number.
    """
    files = report_files(len(STUDENT_ROUNDS))[kind]
    rounds = STUDENT_ROUNDS if kind in PER_ROUND_REPORTS else [None]
    marked = []
    for name, s in zip(files, rounds, strict=True):
        labels_ = (
            {"figure": labels} if s is None else {"figure": labels, "round": str(s)}
        )
        sub = subcategory.format(s=s) if subcategory and s is not None else subcategory
        path = f"{REPORT}/{name}"
        marked.append(report(path, caption, category, subcategory=sub, labels=labels_))
    return marked


def calibration_file(temperature):
    """Input function: the temperature.json (rule calibrate) of the model before round wc.s of
    the job's run, when `temperature` (a function of the wildcards) is "auto"."""
    return lambda wc: (
        [f"{previous_round(wc)}/temperature.json"] if temperature(wc) == "auto" else []
    )


def split_files(*splits):
    """The split files (labeled, unlabeled, val) a rule reads, as inputs.

    Editing a split file then reruns exactly the rules that read it. The demo's split files
    are generated inside its root, an output of build_demo, which covers them.
    """
    if config["dataset"]["name"] == "demo":
        return []
    files = []
    for split in splits:
        rel = Path(config["dataset"]["splits"][split])
        found = [c for c in (Path(DATA) / rel, rel) if c.is_file()]
        files.append(
            str(found[0] if found else Path(DATA) / rel)
        )  # missing: Snakemake says so
    return files


def temperature_param(temperature):
    """params: --temperature of a job whose input `temperature` is the calibration json when
    `temperature` (a function of the wildcards) is "auto"."""
    return lambda wc, input: input.temperature or temperature(wc)


def store_temperature(wc):
    """The T the store being inferred is at: its run's own, 1 or compare.temperature."""
    return RUNS.store_temperature(wc.run, wc.at)


def run_temperature(wc):
    """The T of the job's run: that of its own stores and pseudo labels."""
    return RUNS[wc.run].temperature


def pseudo_options(wc):
    """params: --options-json of thresholding round wc.s of the job's run: everything its
    pseudo labels depend on (its method, sampling seed and, "dars@0.45", round-1 alpha).
    """
    run = RUNS[wc.run]
    return PseudoLabelOptions.from_config(
        config, int(wc.s), run.method, run.sampling_seed, RUNS.alpha(wc.run, wc.s)
    ).to_json()
