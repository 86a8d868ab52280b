# Paths, round numbers, each stage's options and job resources.
# Rules pass a stage's options (dars.core.options: exactly the config values its outputs depend on,
# built by `from_config`) as JSON through `params:`, which is what makes reruns precise: a
# change to round k's alpha reaches only round k's pseudo labels and what follows them, and a
# key a stage does not read reruns nothing of it. Resources, workers, threads, GPU count and
# shard count are *not* params: moving a run to a bigger machine reruns nothing.

import os
from dataclasses import replace
from pathlib import Path

from dars.compare import (
    COMPARE_FILES,
    LABELED_ONLY,
    RUN_T1_STORE,
    TEMPERED_STORE,
    THRESHOLDED,
    branch_dir,
    branches,
    parse_variant,
    resolve_teacher_seeds,
    round1_store,
    separate_teacher_dir,
    teacher_dir,
)
from dars.data.demo import DemoOptions
from dars.core.options import (
    CalibrateOptions,
    EvaluateOptions,
    InferOptions,
    TrainOptions,
)
from dars.jobs.gpu_slots import default_workers
from dars.core.options import DatasetOptions
from dars.pseudo.thresholds import PseudoLabelOptions
from dars.reporting.run_report import PER_ROUND_REPORTS, ReportOptions, report_files

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
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


def train_options(r, seed=None):
    """--options-json of training round r, with another `seed` (the comparison's teachers and
    student seeds) if given."""
    options = TrainOptions.from_config(config, int(r))
    return (options if seed is None else replace(options, seed=int(seed))).to_json()


def round_cfg(r):
    """Self-training round r (1-based) as configured."""
    return config["rounds"][int(r) - 1]


def shard_files(pattern):
    """Input function: `pattern` (with {s} and {i}) for every shard of round s."""
    return lambda wc: expand(pattern, s=wc.s, i=range(SHARDS))


def job_resources(name):
    """cpus_per_task, mem_mb, runtime (and gpu for GPU rules) of a rule, from config resources.

    `gpu` is what `--resources gpu=N` caps locally and what the slurm executor turns into
    --gpus; evaluate and calibrate run in one process, so they take at most one GPU.
    """
    kind = "gpu_rules" if name in GPU_RULES else "cpu_rules"
    res = {**config["resources"][kind], **config["resources"]["rules"].get(name, {})}
    if name in GPU_RULES:
        res["gpu"] = min(GPUS, 1) if name in SINGLE_GPU_RULES else GPUS
    if (
        name in TRAIN_RULES
    ):  # resources, not params: they change speed or what is logged, not the weights
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
    """The report folder's files of one kind (see dars.reporting.run_report.report_files), report()-marked.

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


def as_function(value):
    """A value as a function of the wildcards (a function stays itself)."""
    return value if callable(value) else lambda wc: value


def calibration_file(temperature, teacher_dir):
    """Input function: the teacher's temperature.json (rule calibrate) when T is "auto".

    `temperature` and `teacher_dir` (the folder of the teacher's model.pt) are values or
    functions of the wildcards.
    """
    temperature, teacher_dir = as_function(temperature), as_function(teacher_dir)
    return lambda wc: (
        [f"{teacher_dir(wc)}/temperature.json"] if temperature(wc) == "auto" else []
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
    `temperature` (a value or a function of the wildcards) is "auto"."""
    return lambda wc, input: input.temperature or as_function(temperature)(wc)


# --temperature of the main run's inference: the teacher's calibration json (auto) or the T.
infer_temperature = temperature_param(config["pseudo_label"]["temperature"])


def round_alpha(wc):
    return round_cfg(wc.s)["alpha"]


def pseudo_params(method, temperature, seed, alpha=round_alpha):
    """params: of a thresholding job: its options (everything its pseudo labels depend on) for
    --options-json, and the T the store must have been inferred at (inference applies it;
    thresholding checks it): "auto" reads the teacher's calibration json, which the job then
    has as input `temperature`. Each argument is a value or a function of the wildcards.
    """
    return dict(
        opts=lambda wc: PseudoLabelOptions.from_config(
            config,
            int(wc.s),
            as_function(method)(wc),
            int(as_function(seed)(wc)),
            as_function(alpha)(wc),
        ).to_json(),
        temperature=temperature_param(temperature),
        # precision against the unlabeled split's masks, where it lists them (never trained on)
        dataset=DATASET_OPTIONS,
    )


# ---- the comparison branches (compare.smk)

COMPARE = config["compare"]
CMP = f"{RESULTS}/compare"
SEED = config["seed"]
TEACHER_SEEDS = resolve_teacher_seeds(COMPARE["teacher_seeds"], SEED)
# A teacher other than the run's seed: its own baseline, store and calibration live here
# (the teacher of the run's seed is the run's round0/ and round1/probs.zarr, never retrained).
TEACHER = str(separate_teacher_dir(RESULTS, "{t}"))
TEACHER_LOGS = f"{LOGS}/compare/teacher{{t}}"
BRANCH = str(branch_dir(RESULTS, "{t}", "{v}", "{k}"))
CMP_LOGS = f"{LOGS}/compare/teacher{{t}}/{{v}}/seed{{k}}"
CMP_ROWS = branches(COMPARE["methods"], COMPARE["progressive"], len(STUDENT_ROUNDS))


def teacher_root(t):
    """Folder of teacher t (round0/model.pt, round1/probs.zarr): the run's own for its seed."""
    return str(teacher_dir(RESULTS, t, SEED))


def branch_round(wc, r):
    """Folder of round r of branch (t, v, k); round 0 is the branch's teacher."""
    if int(r) == 0:
        return f"{teacher_root(wc.t)}/round0"
    return f"{branch_dir(RESULTS, wc.t, wc.v, wc.k)}/round{r}"


# The run's own round-1 store is at T = 1 unless the run itself scales temperature.
RUN_AT_T1 = config["pseudo_label"]["temperature"] == 1.0


def teacher_store(wc):
    """The round-1 store of teacher wc.t that branch (t, v, k) thresholds: the one inferred at
    the branch's temperature (inference applies T; dars.compare.round1_store)."""
    return str(
        round1_store(RESULTS, wc.t, SEED, parse_variant(wc.v).tempered, RUN_AT_T1)
    )


def branch_store(wc):
    """Round 1 thresholds its teacher's store; later rounds the branch's own."""
    return (
        teacher_store(wc) if int(wc.s) == 1 else f"{branch_round(wc, wc.s)}/probs.zarr"
    )


def branch_alpha(wc):
    """A branch's alpha: its variant's own in round 1 ("dars@0.45"), else the round's."""
    own = parse_variant(wc.v).alpha
    return own if own is not None and int(wc.s) == 1 else round_alpha(wc)


def branch_temperature(wc):
    return COMPARE["temperature"] if parse_variant(wc.v).tempered else 1.0


def compare_inputs(name):
    """One file of the final round of every table row, for every teacher and seed."""
    return [
        f"{branch_dir(RESULTS, t, v, k)}/round{r}/{name}"
        for v, r in CMP_ROWS
        for t in TEACHER_SEEDS
        for k in COMPARE["seeds"]
    ]


CMP_TEMPERED = any(parse_variant(v).tempered for v, _ in CMP_ROWS)
# What the report shows of the comparison, with the caption of each file.
CMP_REPORTED = {
    "tables.html": "compare_tables.rst",
    "class_distribution.png": "compare_distribution.rst",
    "iou.png": "compare_iou.rst",
    "confidence.png": "compare_confidence.rst",
}
