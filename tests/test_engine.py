from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dars.engine import checkpoint
from dars.engine.evaluate import confusion_matrix, evaluate, iou_from_confusion
from dars.engine.infer import infer
from dars.engine.train import Trainer, plan_schedule, poly_lr
from dars.errors import DarsError
from dars.probstore import ProbStore, partial_path

TRAIN = {"batch_size": 4, "schedule": "continue"}


def test_schedule_continue_spans_all_rounds() -> None:
    # 10 labeled -> 2 it/epoch; 20 unlabeled with half-batch 2 -> 10 it/epoch
    plans = [plan_schedule(TRAIN, [3, 2, 1], r, 10, 20) for r in range(3)]
    assert [(p.epochs, p.iters_per_epoch, p.start_iter) for p in plans] == [
        (3, 2, 0), (2, 10, 6), (1, 10, 26)]
    assert {p.total_iters for p in plans} == {36}


def test_schedule_restart_is_per_round() -> None:
    p = plan_schedule({**TRAIN, "schedule": "restart"}, [3, 2], 1, 10, 20)
    assert (p.start_iter, p.total_iters) == (0, 20)
    with pytest.raises(DarsError, match="round 2 is not configured"):
        plan_schedule(TRAIN, [3, 2], 2, 10, 20)


def test_poly_lr() -> None:
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0


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
    Trainer(cfg, round_index, tmp / f"r{round_index}" / "state", **kw).run(
        out, tmp / f"r{round_index}" / "log.csv")
    return out


def test_full_round_trip_learns(folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["epochs"] = 40
    teacher = _train(folder_config, tmp_path)
    log = pd.read_csv(tmp_path / "r0" / "log.csv")
    assert len(log) == 40 and log["loss_labeled"].iloc[-1] < 0.5 * log["loss_labeled"].iloc[0]
    summary = evaluate(folder_config, teacher, tmp_path / "m.csv", tmp_path / "m.json", 0)
    assert summary["miou"] > 0.6  # colour-coded classes: far above chance (1/3)

    store = tmp_path / "probs.zarr"
    infer(folder_config, teacher, store)
    s = ProbStore(store)
    assert s.image_ids == ["img004", "img005", "img006", "img007"] and s.num_classes == 3
    assert not partial_path(store).exists()

    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for b in s.blocks():
        for i, pred in zip(b.indices, b.prediction, strict=True):
            from dars.data.io import write_mask
            write_mask(pseudo / f"{s.image_ids[i]}.png", pred)
    student = _train(folder_config, tmp_path, 1, init=teacher, pseudo_dir=pseudo)
    state = checkpoint.load(student)
    assert state["round"] == 1 and state["epoch"] == 1
    log1 = pd.read_csv(tmp_path / "r1" / "log.csv")
    assert log1["loss_pseudo"].notna().all()


def test_resume_continues_identically(folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["epochs"] = 4
    full = checkpoint.load(_train(folder_config, tmp_path / "a"))
    # an interrupted job: the same job's state after 2 of 4 epochs, then a rerun
    folder_config_2 = {**folder_config, "train": {**folder_config["train"]}}
    Trainer(folder_config_2, 0, tmp_path / "b" / "r0" / "state", epochs_per_round=[4, 1])
    trainer = Trainer(folder_config, 0, tmp_path / "b" / "r0" / "state")
    trainer.schedule = trainer.schedule.__class__(2, *list(trainer.schedule.__dict__.values())[1:])
    trainer.run(tmp_path / "b" / "partial.pt", tmp_path / "b" / "log.csv")
    resumed = Trainer(folder_config, 0, tmp_path / "b" / "r0" / "state")
    assert resumed.epoch == 2
    resumed.run(tmp_path / "b" / "model.pt", tmp_path / "b" / "log.csv")
    final = checkpoint.load(tmp_path / "b" / "model.pt")
    for k, v in full["model"].items():
        assert torch.equal(v, final["model"][k]), k


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
        checkpoint.load_model(tmp_path / "other.pt", 3)
    with pytest.raises(DarsError, match="predicts 3 classes but the dataset has 4"):
        checkpoint.load_model(teacher, 4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DarsError, match="cannot load checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
