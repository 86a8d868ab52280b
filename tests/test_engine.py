import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_datasets import write_mask
from tqdm import tqdm

from dars.core.errors import DarsError
from dars.core.options import EvaluateOptions, InferOptions, TrainOptions
from dars.data import dataset as dataset_module
from dars.engine.evaluate import best_validation, confusion_matrix, evaluate, iou_from_confusion
from dars.engine.infer import infer
from dars.engine.train import Trainer, plan_schedule, validates
from dars.models import checkpoint, load_model
from dars.store.probstore import ProbStore, partial_path


def test_schedule_places_each_round_after_the_previous_ones() -> None:
    """continue: round k starts at epoch sum(epochs before k) of a schedule ending with k."""
    plans = [plan_schedule("continue", 0.9, [3, 2, 1], r, ipe) for r, ipe in
             enumerate((2, 10, 10))]
    assert [(p.start_epoch, p.start_iter, p.total_iters) for p in plans] == [
        (0, 0, 6), (3, 30, 50), (5, 50, 60)]
    restart = plan_schedule("restart", 0.9, [3, 2], 1, 10)
    assert (restart.start_iter, restart.total_iters) == (0, 20)
    with pytest.raises(DarsError, match="round 2 is not configured"):
        plan_schedule("continue", 0.9, [3, 2], 2, 10)


def test_schedule_factor_is_the_released_formula_in_the_released_order() -> None:
    # tool/train_func.py: current_iter = epoch * len(loader) + i + 1, max_iter = epochs * len,
    # set after step i (lines 129, 159-165): step i runs at the value of current_iter - 1
    p = plan_schedule("continue", 0.9, [4, 4], 1, 5)
    assert p.factor(0) == 0.0  # the resumed optimizer's lr: round 0 set it to 0 at its end
    assert p.factor(1) == pytest.approx((1 - (4 * 5 + 1) / 40) ** 0.9)
    assert p.factor(19) == pytest.approx((1 - 39 / 40) ** 0.9)  # the last step
    assert p.factor(20) == 0.0 and p.factor(25) == 0.0  # what the last step sets, and beyond
    assert plan_schedule("continue", 0.9, [4, 4], 0, 5).factor(0) == 1.0  # base lr at step 1


def test_confusion_and_iou_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 500)
    t[::7] = 255
    p = rng.integers(0, 4, 500)
    cm = confusion_matrix(torch.from_numpy(t), torch.from_numpy(p), 4).numpy()
    ref = np.zeros((4, 4), int)
    for a, b in zip(t, p, strict=True):
        if a != 255:
            ref[a, b] += 1
    assert (cm == ref).all()
    iou = iou_from_confusion(ref)
    for c in range(4):
        assert iou[c] == pytest.approx(ref[c, c] / (ref[c].sum() + ref[:, c].sum() - ref[c, c]))
    assert np.isnan(iou_from_confusion(np.diag([3, 0]))[1])


def _train(cfg: dict, tmp: Path, round_index: int = 0, **kw) -> Path:
    out = tmp / f"r{round_index}" / "model.pt"
    Trainer(TrainOptions.from_config(cfg, round_index), tmp / f"r{round_index}" / "state",
            **kw).run(
        out, tmp / f"r{round_index}" / "log.csv")
    return out


def test_full_round_trip_learns(folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["epochs"] = 40
    teacher = _train(folder_config, tmp_path)
    log = pd.read_csv(tmp_path / "r0" / "log.csv")
    assert len(log) == 40 and np.isfinite(log["loss_labeled"]).all()
    summary = evaluate(EvaluateOptions.from_config(folder_config), teacher, tmp_path / "m.csv",
                       tmp_path / "m.json", 0)
    assert summary["miou"] > 0.6  # colour-coded classes: far above chance (1/3)

    store = tmp_path / "probs.zarr"
    infer(InferOptions.from_config(folder_config), teacher, store)
    s = ProbStore(store)
    assert s.image_ids == ["img004", "img005", "img006", "img007"] and s.num_classes == 3
    assert not partial_path(store).exists()

    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for b in s.blocks():
        for i, pred in zip(b.indices, b.prediction, strict=True):
            write_mask(pseudo / f"{s.image_ids[i]}.png", pred)
    student = _train(folder_config, tmp_path, 1, init=teacher, pseudo_dir=pseudo)
    state = checkpoint.load(student)
    assert state["round"] == 1 and state["epoch"] == 1
    log1 = pd.read_csv(tmp_path / "r1" / "log.csv")
    assert log1["loss_pseudo"].notna().all()


def test_a_student_never_reads_the_masks_the_unlabeled_split_lists(
        folder_config: dict, folder_dataset: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The unlabeled split lists true masks (for pseudo-label precision); the student's
    pseudo-labeled half reads the pseudo labels in their place, never those masks."""
    teacher = _train(folder_config, tmp_path)
    unlabeled = [f"img{i:03d}" for i in range(4, 8)]
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for image_id in unlabeled:
        write_mask(pseudo / f"{image_id}.png", np.zeros((16, 16), np.uint8))
    read = []
    real = dataset_module.read_mask
    monkeypatch.setattr(dataset_module, "read_mask",
                        lambda path, *a: read.append(Path(path)) or real(path, *a))
    _train(folder_config, tmp_path, 1, init=teacher, pseudo_dir=pseudo)
    assert {p.stem for p in read if p.parent == pseudo} == set(unlabeled)  # the spy sees reads
    assert not {folder_dataset / "masks" / f"{i}.png" for i in unlabeled} & set(read)


def test_resume_continues_identically(folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["epochs"] = 4
    full = checkpoint.load(_train(folder_config, tmp_path / "a"))
    # an interrupted job: 2 of its 4 epochs done (each saves last.pt), then a rerun
    trainer = Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "b" / "r0" / "state")
    with tqdm(disable=True) as bar:
        trainer._epoch(bar)
        trainer._epoch(bar)
    resumed = Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "b" / "r0" / "state")
    assert resumed.epoch == 2
    next_step = 2 * resumed.schedule.iters_per_epoch
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(
        folder_config["train"]["lr"] * resumed.schedule.factor(next_step))
    resumed.run(tmp_path / "b" / "model.pt", tmp_path / "b" / "log.csv")
    final = checkpoint.load(tmp_path / "b" / "model.pt")
    for k, v in full["model"].items():
        assert torch.equal(v, final["model"][k]), k
    steps = 4 * resumed.schedule.iters_per_epoch
    assert final["scheduler"]["last_epoch"] == full["scheduler"]["last_epoch"] == steps


def test_nan_loss_stops_with_hint(folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["lr"] = 1e30
    with pytest.raises(DarsError, match=r"loss became .* at iteration \d+.*lower train.lr"):
        _train(folder_config, tmp_path)
    assert not (tmp_path / "r0" / "model.pt").exists()


def test_checkpoint_of_other_architecture_is_refused(folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["epochs"] = 1
    teacher = _train(folder_config, tmp_path)
    state = checkpoint.load(teacher)
    state["model_config"] = {**state["model_config"], "width": 16}
    checkpoint.save(tmp_path / "other.pt", state)
    with pytest.raises(DarsError, match="does not fit model 'tiny'"):
        load_model(tmp_path / "other.pt", 3)
    with pytest.raises(DarsError, match="predicts 3 classes but the dataset has 4"):
        load_model(teacher, 4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DarsError, match="cannot load checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")


# (file epochs, evaluate_start, evaluate_freq, start_epoch) of released train_*_round{0,1,2}.yaml
RELEASED_VALIDATION = {
    "cityscapes_1-8_crop361": [(200, 80, 20, 0), (400, 280, 20, 200), (600, 480, 20, 400)],
    "cityscapes_1-8_crop713": [(200, 80, 20, 0), (400, 280, 20, 200), (600, 400, 20, 400)],
    "cityscapes_1-4_crop713": [(200, 80, 20, 0), (400, 280, 20, 200), (600, 400, 20, 400)],
    "cityscapes_1-8_crop361_deeplabv2": [(200, 80, 20, 0), (400, 280, 20, 200),
                                         (600, 480, 20, 400)],
    "voc_1464": [(50, 44, 2, 0), (100, 94, 2, 50), (150, 120, 5, 100)],
}


@pytest.mark.parametrize("name", sorted(RELEASED_VALIDATION))
def test_paper_configs_validate_at_the_released_epochs(name: str) -> None:
    """tool/train.py:310-351: ``for epoch in range(start_epoch, epochs)``, ``epoch_log = epoch +
    1`` validated when ``epoch_log > evaluate_start`` and ``(epoch_log - evaluate_start) %
    evaluate_freq == 0``, in the file's cumulative epochs."""
    from dars.core import config as config_mod

    cfg = config_mod.load(Path(__file__).resolve().parents[1] / "config" / f"{name}.yaml")
    for k, (epochs, start, freq, start_epoch) in enumerate(RELEASED_VALIDATION[name]):
        released = [e + 1 for e in range(start_epoch, epochs)
                    if e + 1 > start and (e + 1 - start) % freq == 0]
        options = TrainOptions.from_config(cfg, k)
        ours = [start_epoch + e for e in range(1, options.epochs_per_round[k] + 1)
                if validates(e, options.evaluate_start, options.evaluate_every)]
        assert ours == released, k
        assert options.validation == EvaluateOptions.from_config(cfg)


def test_validation_during_training_keeps_the_last_state_and_reports_the_best(
        folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"].update(epochs=3, evaluate_every=1, evaluate_start=1)
    teacher = _train(folder_config, tmp_path)
    log = pd.read_csv(tmp_path / "r0" / "log.csv")
    assert log["val_miou"].isna().tolist() == [True, False, False]  # epochs 2, 3
    summary = evaluate(EvaluateOptions.from_config(folder_config), teacher, tmp_path / "m.csv",
                       tmp_path / "m.json", 0)
    # model.pt is the last state: its evaluation is the last validation
    assert summary["epoch"] == 3 and summary["miou"] == pytest.approx(log["val_miou"].iloc[2])
    best = log["val_miou"].idxmax()
    assert summary["best_miou"] == pytest.approx(log["val_miou"][best])
    assert summary["best_epoch"] == log["epoch"][best]
    assert json.loads((tmp_path / "m.json").read_text())["best_epoch"] == summary["best_epoch"]


def test_best_validation_prefers_the_earlier_epoch_on_a_tie() -> None:
    history = [{"epoch": 1, "val_miou": float("nan")}, {"epoch": 2, "val_miou": 0.5},
               {"epoch": 3, "val_miou": 0.4}]
    assert best_validation(history, 4, 0.5) == {"best_miou": 0.5, "best_epoch": 2}
    assert best_validation(history, 4, 0.6) == {"best_miou": 0.6, "best_epoch": 4}
    assert best_validation([], 2, 0.3) == {"best_miou": 0.3, "best_epoch": 2}


def test_tensorboard_has_one_scalar_per_epoch_and_tag(folder_config: dict, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder_config["train"].update(epochs=2, evaluate_every=1, tensorboard=True)
    state = tmp_path / "state"
    Trainer(TrainOptions.from_config(folder_config, 0), state, tensorboard=True).run(
        tmp_path / "model.pt", tmp_path / "log.csv")
    log = pd.read_csv(tmp_path / "log.csv")
    board = EventAccumulator(str(state / "tensorboard"))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    classes = ["background", "a", "b"]
    assert tags == {"loss/labeled", "lr", "val/miou", *(f"val_iou/{c}" for c in classes)}
    for tag in tags:  # a teacher has no pseudo half; every class is in the val masks
        assert [e.step for e in board.Scalars(tag)] == [1, 2], tag
    for tag, column in (("loss/labeled", "loss_labeled"), ("lr", "lr"), ("val/miou", "val_miou")):
        assert [e.value for e in board.Scalars(tag)] == pytest.approx(log[column].tolist())
