"""The whole Snakemake workflow on a tiny fake Cityscapes tree, from a paper config.

test_datasets.py runs every stage through the CLI on the Cityscapes and VOC layouts (VOC's
palette masks of odd and varying sizes included); this module checks what only a workflow run
shows: that a paper config (config/cityscapes_1-8_crop361.yaml) changed only in where the data
is, the model and the sizes, runs the baseline and both progressive rounds on the real on-disk
layout -- raw ``*_gtFine_labelIds.png`` reached through the official ``labelTrainIds`` split
lines, split files kept outside the dataset -- writes every round's outputs, and reruns exactly
what a change touches. (A second, VOC, workflow run repeated test_datasets' checks at twice the
cost and was dropped to keep `make test` within its time budget.)

Cost: 13 jobs, each a fresh process that mostly imports torch (about 2 min on 2 cores).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fake_datasets import cityscapes_split_lines, write_cityscapes, write_split
from PIL import Image
from workflow_helpers import REPO, planned_jobs, snakemake

from dars.core import config
from dars.core.options import DatasetOptions
from dars.data.dataset import DatasetSpec, dataset_spec
from dars.data.definitions import CITYSCAPES
from dars.data.images import image_size
from dars.store.probstore import ProbStore

ROUNDS = (0, 1, 2)
STUDENT_ROUNDS = (1, 2)
CITYSCAPES_SIZE = (48, 96)
# Round 0 gets a few steps at a higher lr: DARS only keeps pixels predicted as classes of the
# labeled set, and a teacher after one step predicts none of them (every pseudo label would be
# ignore, and the student's pseudo loss undefined).
BASELINE = {"epochs": 10, "lr": 0.05}


def tiny_paper_config(name: str, root: Path, splits: dict[str, str], crop: int,
                      out: Path) -> Path:
    """config/<name>.yaml for a CPU run on a fake tree: everything else stays as released.

    Only what cannot run on CPU in seconds changes: a tiny model instead of PSPNet (no
    pretrained weights), a short baseline, one epoch per student round, small crops and batches,
    prediction at the fake images' native size (base_size 1024 would blow 48 x 96 images up to
    512 x 1024, a thousand windows each), no GPU. The alphas, betas, scale ranges,
    augmentation, sliding-window protocol with flip, tail classes and job resources are the
    paper's.
    """
    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    cfg["dataset"].update(root=str(root), splits=splits)
    cfg["model"] = {"name": "tiny", "width": 8}
    cfg["train"].update(**BASELINE, batch_size=4, crop_size=crop, num_workers=0)
    for section in ("infer", "evaluate"):
        cfg[section].update(crop_size=crop, batch_size=4, base_size=None)
    cfg["rounds"] = [{**r, "epochs": 1} for r in cfg["rounds"]]
    cfg["gpus"] = 0
    config.validate(copy.deepcopy(cfg))  # fail here, not in the middle of a Snakemake run
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def fake_cityscapes(tmp: Path) -> tuple[Path, dict[str, str]]:
    """12 train frames of CITYSCAPES_SIZE in two cities (4 labeled, 8 unlabeled), 4 val frames.

    The split files live outside the dataset root and are given as absolute paths, as a user
    with their own split of the real data would do.
    """
    root = write_cityscapes(tmp / "cityscapes",
                            {"train": {"aachen": 6, "bochum": 6},
                             "val": {"frankfurt": 2, "ulm": 2}}, size=CITYSCAPES_SIZE)
    train = cityscapes_split_lines(root, "train")
    labeled = train[::3]
    lines = {"labeled": labeled, "unlabeled": [line for line in train if line not in labeled],
             "val": cityscapes_split_lines(root, "val")}
    (tmp / "splits").mkdir()
    return root, {k: str(write_split(tmp / "splits" / f"{k}.txt", v)) for k, v in lines.items()}


@dataclass(frozen=True)
class PaperRun:
    """A finished workflow run and what it was run with."""

    workdir: Path
    cfg: dict
    spec: DatasetSpec
    seconds: float

    @property
    def results(self) -> Path:
        return self.workdir / "results" / self.cfg["run"]


# paper config: (writer of its fake dataset, crop size that fits the fake images)
FAKE_DATA: dict[str, tuple[Callable[[Path], tuple[Path, dict[str, str]]], int]] = {
    "cityscapes_1-8_crop361": (fake_cityscapes, 32),
}


def run_paper_config(name: str, tmp: Path) -> PaperRun:
    """Write the fake tree for ``name``'s dataset and run the whole workflow on it."""
    write_data, crop = FAKE_DATA[name]
    root, splits = write_data(tmp)
    configfile = tiny_paper_config(name, root, splits, crop, out=tmp / "config.yaml")
    workdir = tmp / "work"
    workdir.mkdir()
    start = time.perf_counter()
    snakemake(workdir, configfile=configfile, timeout=600)
    seconds = time.perf_counter() - start
    cfg = config.load(configfile)
    return PaperRun(workdir, cfg, dataset_spec(DatasetOptions.from_config(cfg)), seconds)


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PaperRun]:
    """The workflow of every paper config in FAKE_DATA, run once; the tests below only read
    the runs (or dry-run changes of them)."""
    return {name: run_paper_config(name, tmp_path_factory.mktemp(name)) for name in FAKE_DATA}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAKE_DATA))
def test_every_round_has_a_model_and_metrics(paper_runs: dict[str, PaperRun], name: str) -> None:
    run = paper_runs[name]
    for r in ROUNDS:
        assert (run.results / f"round{r}" / "model.pt").is_file()
        metrics = json.loads((run.results / f"round{r}" / "metrics.json").read_text())
        assert metrics["round"] == r and 0 <= metrics["miou"] <= 1
        assert metrics["images"] == len(run.spec.samples("val"))
        per_class = pd.read_csv(run.results / f"round{r}" / "metrics.csv")
        assert per_class["name"].tolist() == run.spec.classes
    summary = pd.read_csv(run.results / "summary.csv")
    assert summary["round"].tolist() == list(ROUNDS)
    assert summary.loc[1:, "alpha"].tolist() == [r["alpha"] for r in run.cfg["rounds"]]
    assert (run.results / "report").is_dir()
    print(f"{name}: workflow {run.seconds:.0f} s; mIoU per round "
          f"{summary['miou'].round(3).tolist()}")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAKE_DATA))
def test_pseudo_labels_cover_every_unlabeled_image_at_its_size(paper_runs: dict[str, PaperRun],
                                                              name: str) -> None:
    """One label PNG per unlabeled image, at that image's own size, and a store that kept
    every image's real size."""
    run = paper_runs[name]
    unlabeled = run.spec.samples("unlabeled", require_masks=False)
    sizes = {s.id: image_size(s.image) for s in unlabeled}
    allowed = set(range(run.spec.num_classes)) | {run.spec.ignore_index}
    for s in STUDENT_ROUNDS:
        round_dir = run.results / f"round{s}"
        store = ProbStore(round_dir / "probs.zarr")
        assert dict(zip(store.image_ids, map(tuple, store.shapes.tolist()), strict=True)) == sizes
        labels = {p.stem: p for p in (round_dir / "pseudo_labels").glob("*.png")}
        assert set(labels) == set(sizes)
        for image_id, path in labels.items():
            mask = np.array(Image.open(path))
            assert mask.shape == sizes[image_id], image_id
            assert set(np.unique(mask).tolist()) <= allowed
        kept = json.loads((round_dir / "pseudo_summary.json").read_text())["kept_fraction"]
        assert 0 < kept <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAKE_DATA))
def test_dataset_classes_and_tail_metric(paper_runs: dict[str, PaperRun], name: str) -> None:
    """Cityscapes: 19 train ids (labelIds mapped) and the 13-class tail mIoU."""
    run = paper_runs[name]
    summary = pd.read_csv(run.results / "summary.csv")
    assert run.spec.classes == list(CITYSCAPES.classes)
    assert len(run.cfg["evaluate"]["tail_classes"]) == 13
    for r in ROUNDS:
        tail = json.loads((run.results / f"round{r}" / "metrics.json").read_text())
        assert math.isfinite(tail["tail_miou"]) and 0 <= tail["tail_miou"] <= 1
    assert summary["tail_miou"].notna().all()
    # raw ids without a train id (0, 4, 9, 30 in the fixture) are counted nowhere
    hist = pd.read_csv(run.results / "label_histogram.csv")
    labeled_pixels = len(run.spec.samples("labeled")) * math.prod(CITYSCAPES_SIZE)
    assert len(hist) == 19 and 0 < hist["pixels"].sum() < labeled_pixels


def _jobs(run: PaperRun, *args: str) -> set[str]:
    """Rules a dry run of the finished paper run would execute with ``args``."""
    jobs = planned_jobs(run.workdir, *args, configfile=run.workdir.parent / "config.yaml")
    return {job.split(":")[0] for job in jobs}


@pytest.mark.slow
def test_runtime_keys_rerun_nothing(paper_runs: dict[str, PaperRun]) -> None:
    """What changes only how a stage runs -- DataLoader workers, the patterns `dars split`
    uses, cores/memory/time, GPU count -- reruns no stage of a finished run. Only the report
    is redrawn: its first section shows the resolved configuration, runtime keys included."""
    run = paper_runs["cityscapes_1-8_crop361"]
    for change in ("train={num_workers: 3}",
                   "dataset={image_pattern: 'leftImg8bit/{split}/{city}/{name}.png'}",
                   "resources={gpu_rules: {cpus_per_task: 3, runtime: 99}}", "gpus=1"):
        assert _jobs(run, "--config", change) <= {"report"}, change


@pytest.mark.slow
def test_unlabeled_split_reruns_its_readers_only(paper_runs: dict[str, PaperRun]) -> None:
    """Under the released schedule the teacher never reads the unlabeled split (a round-0 epoch
    is a pass over the labeled set), so editing it reruns inference and the students but not
    the baseline; with `baseline_list: match_unlabeled` (the released DeepLabv2 round 0) the
    baseline declares it as an input."""
    run = paper_runs["cityscapes_1-8_crop361"]
    split = Path(run.cfg["dataset"]["splits"]["unlabeled"])
    original, stat = split.read_text(), split.stat()
    try:
        split.write_text("\n".join(reversed(original.splitlines())) + "\n")
        jobs = _jobs(run)
        assert "train_baseline" not in jobs
        assert {"infer_probabilities", "train_student"} <= jobs
    finally:
        split.write_text(original)
        os.utime(split, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    proc = snakemake(run.workdir, "--detailed-summary", "--config",
                     "train={baseline_list: match_unlabeled}",
                     configfile=run.workdir.parent / "config.yaml")
    teacher = next(line for line in proc.stdout.splitlines()
                   if line.split("\t")[0].endswith("round0/model.pt"))
    assert str(split) in teacher
