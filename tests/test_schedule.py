"""The lr schedule of every paper config against the authors' released formula.

The expected values are re-stated here from the released code and yaml files (see
docs/METHOD.md, "The released lr schedule"), not computed by :mod:`dars.engine.train`:
tool/train_func.py sets after every step ``lr = base_lr * (1 - current_iter / max_iter) **
power`` with ``current_iter = epoch * len(loader) + i + 1`` and ``max_iter = epochs *
len(loader)``, where ``loader`` is that round's own loader (drop_last) and a student file's
``epochs`` is cumulative (400 = resume the 200-epoch checkpoint at ``start_epoch`` 200); the
next step runs at it.

Each paper config is built into real :class:`Trainer` objects -- rounds 0, 1, 2, each student
started from the previous round's checkpoint -- over a folder dataset with the splits' real
image counts (hard links of one tiny image), with the tiny model in place of the backbone
(the lr does not depend on it; head layers at 10x are tested in test_training_engine.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dars.core import config as config_mod
from dars.core.options import TrainOptions
from dars.engine.train import Trainer
from dars.models import checkpoint

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Released:
    """What the authors' train_*_round{0,1,2}.yaml files fix for one setting."""

    base_lr: float
    cumulative_epochs: tuple[int, int, int]  # TRAIN.epochs of round 0, 1, 2
    labeled: int  # lines of the labeled split
    unlabeled: int  # lines of train_unlabeled_list
    round0_batch: int
    student_labeled_batch: int  # TRAIN.batch_size of the student files
    student_unlabeled_batch: int  # TRAIN.unlabelled_batch_size
    round0_list: int | None = None  # lines of round 0's list when it is a *_match_len list
    power: float = 0.9


CS8 = dict(labeled=372, unlabeled=2603)
CS4 = dict(labeled=744, unlabeled=2231)
PSP_CS = dict(base_lr=0.01, cumulative_epochs=(200, 400, 600), round0_batch=16,
              student_labeled_batch=8, student_unlabeled_batch=8)
RELEASED = {
    "cityscapes_1-8_crop361": Released(**PSP_CS, **CS8),
    "cityscapes_1-4_crop361": Released(**PSP_CS, **CS4),
    "cityscapes_1-8_crop713": Released(**PSP_CS, **CS8),
    "cityscapes_1-4_crop713": Released(**PSP_CS, **CS4),
    # train_deeplabv2_*_round0: cs_split8_labeled_match_len (2603 lines), batch 16, lr 0.002;
    # rounds 1-2: batch_size 4 + unlabelled_batch_size 4, epochs 400 / 600
    "cityscapes_1-8_crop361_deeplabv2": Released(
        base_lr=0.002, cumulative_epochs=(200, 400, 600), **CS8, round0_list=2603,
        round0_batch=16, student_labeled_batch=4, student_unlabeled_batch=4),
    # voc2012/train_psp50_voc_split1464_crop321_round{0,1,2}: epochs 50 / 100 / 150
    "voc_1464": Released(base_lr=0.01, cumulative_epochs=(50, 100, 150), labeled=1464,
                         unlabeled=9118, round0_batch=16, student_labeled_batch=8,
                         student_unlabeled_batch=8),
}


def loader_len(r: Released, round_index: int) -> int:
    """len(loader) of a round (drop_last): round 0 over its list, a student over the pool."""
    if round_index == 0:
        return (r.round0_list or r.labeled) // r.round0_batch
    return r.unlabeled // r.student_unlabeled_batch


def poly(r: Released, round_index: int, current_iter: int) -> float:
    """tool/train_func.py:159: ``poly_learning_rate(base_lr, current_iter, max_iter, power)``
    with ``max_iter = epochs * len(train_labelled_loader)`` of the round's file."""
    max_iter = r.cumulative_epochs[round_index] * loader_len(r, round_index)
    return r.base_lr * (1 - current_iter / max_iter) ** r.power


def released_lr(r: Released, round_index: int, epoch: int, i: int) -> float:
    """The lr step i of ``epoch`` (absolute) runs at in round ``round_index``.

    tool/train_func.py sets the lr *after* ``optimizer.step()`` (lines 129, 159-165), from
    that step's ``current_iter = epoch * len(loader) + i + 1``: a step runs at the value the
    step before set. A round's first step runs at the optimizer's own lr: ``base_lr`` as
    created (tool/train.py:198) in round 0; in a student, the lr its resumed checkpoint's
    optimizer holds (tool/train.py:248), set after the previous round's last step.
    """
    start, _ = released_epochs(r, round_index)
    if (epoch, i) == (start, 0):
        if round_index == 0:
            return r.base_lr
        previous = round_index - 1
        return poly(r, previous, r.cumulative_epochs[previous] * loader_len(r, previous))
    return poly(r, round_index, epoch * loader_len(r, round_index) + i)


def released_epochs(r: Released, round_index: int) -> tuple[int, int]:
    """(start_epoch, epochs) of a round: a student resumes where the previous file ended."""
    start = 0 if round_index == 0 else r.cumulative_epochs[round_index - 1]
    return start, r.cumulative_epochs[round_index]


def _folder_tree(root: Path, labeled: int, unlabeled: int) -> Path:
    """A folder dataset with the given split sizes: hard links of one 8x8 image and mask."""
    root.mkdir(parents=True)
    (root / "images").mkdir()
    (root / "pseudo").mkdir()
    image, mask = root / "one.png", root / "one_mask.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
    lines = {"labeled": [], "unlabeled": [], "val": []}
    for split, n in (("labeled", labeled), ("unlabeled", unlabeled), ("val", 1)):
        for k in range(n):
            name = f"{split}{k:05d}"
            os.link(image, root / "images" / f"{name}.png")
            lines[split].append(f"images/{name}.png one_mask.png")
            if split == "unlabeled":
                os.link(mask, root / "pseudo" / f"{name}.png")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def _config(name: str, root: Path, num_classes: int) -> dict:
    import yaml

    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    cfg["dataset"] = {"name": "folder", "root": str(root),
                      "classes": [f"c{i}" for i in range(num_classes)],
                      "splits": {s: f"{s}.txt" for s in ("labeled", "unlabeled", "val")}}
    cfg["model"] = {"name": "tiny", "width": 4}
    cfg["train"]["num_workers"] = 0
    return config_mod.validate(cfg)


def _lr_at(trainer: Trainer, step: int) -> float:
    """The 1x group's lr the trainer's scheduler sets for its ``step``-th step of the round
    (placed there the way a resumed job is)."""
    ipe = trainer.schedule.iters_per_epoch
    trainer.epoch, trainer.step = divmod(step, ipe)
    trainer.scheduler = trainer._scheduler(None)
    return trainer.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_each_round_follows_the_released_schedule(name: str, tmp_path: Path) -> None:
    r = RELEASED[name]
    cfg = _config(name, _folder_tree(tmp_path / "data", r.labeled, r.unlabeled),
                  21 if name.startswith("voc") else 19)
    teacher = None
    for k in range(3):
        trainer = Trainer(TrainOptions.from_config(cfg, k), tmp_path / f"r{k}" / "state",
                          init=teacher,
                          pseudo_dir=tmp_path / "data" / "pseudo" if k else None)
        (start, end), length = released_epochs(r, k), loader_len(r, k)
        assert trainer.schedule.iters_per_epoch == length, k
        steps = (end - start) * length
        if k:  # the student resumed the teacher's optimizer, momentum buffers included
            momentum = [s["momentum_buffer"] for s in trainer.optimizer.state.values()]
            assert momentum and all(torch.equal(m, torch.ones_like(m)) for m in momentum)
        first = trainer.optimizer.param_groups[0]["lr"]
        assert first == pytest.approx(released_lr(r, k, start, 0), abs=1e-12), k
        assert first == (r.base_lr if k == 0 else 0.0)  # a student's step 1: the lr it resumed
        for step in (1, 2, steps - 1):
            epoch, i = divmod(step, length)
            assert _lr_at(trainer, step) == pytest.approx(
                released_lr(r, k, start + epoch, i), abs=1e-12), (k, step)
        # every round anneals to 0: what its last step sets is 0 (the next round's first lr)
        assert poly(r, k, end * length) == 0.0
        # the start docs/METHOD.md states: (1 / (k + 1)) ** 0.9 of base from a round's second step
        assert _lr_at(trainer, 1) / r.base_lr == pytest.approx((1 / (k + 1)) ** 0.9, rel=2e-3)
        # hand the next round a teacher whose optimizer carries a known momentum
        for group in trainer.optimizer.param_groups:
            for p in group["params"]:
                trainer.optimizer.state[p]["momentum_buffer"] = torch.ones_like(p)
        teacher = tmp_path / f"r{k}" / "model.pt"
        checkpoint.save(teacher, trainer._state())
