"""Training engine additions: augmentations, head lr groups under poly decay, a PSPNet step on
CPU, DDP in a gloo world of one, sliding-window prediction."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from workflow_helpers import BIN

from dars.core.options import EvaluateOptions, TrainOptions
from dars.data.splits import Sample
from dars.engine.evaluate import evaluate
from dars.engine.predict import size_batches
from dars.engine.train import Trainer
from dars.models import checkpoint


# -- training --------------------------------------------------------------------------------
def test_pspnet_steps_move_the_head_at_ten_times_lr(folder_config: dict,
                                                    tmp_path: Path) -> None:
    folder_config["model"] = {**folder_config["model"], "name": "pspnet"}
    folder_config["train"].update(batch_size=2, lr=0.002, epochs=4)  # 2 steps an epoch
    trainer = Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "state")
    assert not trainer.bf16 and not trainer.channels_last  # CUDA-only speed-ups, off on CPU
    trainer.net.train()
    x, y, _ = next(iter(trainer.labeled))
    groups = trainer.optimizer.param_groups
    for i in range(3):
        # released: set after step i - 1, lr = base * (1 - i / (epochs * len(loader))) ** 0.9
        # (step 0 at base), head at 10x
        factor = (1 - i / 8) ** 0.9
        lrs = [g["lr"] for g in groups]
        assert lrs == pytest.approx([0.002 * factor, 0.02 * factor]), i
        before = [[p.detach().clone() for p in g["params"]] for g in groups]
        trainer._step((x, y), it=i)
        if i:
            continue
        # The first step (momentum buffer = its own update) moves every parameter of a group by
        # -lr * (grad + weight_decay * p): the least-squares lr of each group's move is its lr
        # (a statement about the update, whatever the step does to the loss).
        for g, old, lr in zip(groups, before, lrs, strict=True):
            pairs = [(p, o) for p, o in zip(g["params"], old, strict=True) if p.grad is not None]
            moved = torch.cat([(p.detach() - o).flatten() for p, o in pairs]).double()
            direction = torch.cat([(p.grad + g["weight_decay"] * o).flatten()
                                   for p, o in pairs]).double()
            fitted = -(moved @ direction) / (direction @ direction)
            assert fitted.item() == pytest.approx(lr, rel=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_world_of_one_trains_like_a_single_process(folder_config: dict, folder_dataset: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A teacher and a student (two forwards per step) under DDP (gloo, one process) end
    bit-identical to plain runs: same sampler order, same seeds, all-reduce of one rank."""
    folder_config["train"]["epochs"] = 2
    pseudo = folder_dataset / "masks"  # <id>.png for every image: stands in for pseudo labels

    def rounds(out: Path, ddp: bool) -> Path:
        for r in (0, 1):
            if ddp:
                monkeypatch.setenv("MASTER_PORT", str(_free_port()))
            init = {"init": out / "r0.pt", "pseudo_dir": pseudo} if r else {}
            trainer = Trainer(TrainOptions.from_config(folder_config, r), out / f"s{r}", **init)
            assert isinstance(trainer.net, nn.parallel.DistributedDataParallel) == ddp
            trainer.run(out / f"r{r}.pt", out / f"r{r}.csv")
            assert not dist.is_initialized()
        return out / "r1.pt"

    single = rounds(tmp_path / "single", ddp=False)
    for key, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    ddp = rounds(tmp_path / "ddp", ddp=True)
    a, b = checkpoint.load(single)["model"], checkpoint.load(ddp)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_workers_leave_the_weights_unchanged(folder_config: dict, folder_dataset: Path,
                                                    tmp_path: Path) -> None:
    """A teacher and a student trained with 2 persistent loader workers (the student's two
    halves get one each) over two epochs end bit-identical to runs without."""
    folder_config["train"].update(epochs=2, rotate=10, blur=True)
    pseudo = folder_dataset / "masks"  # <id>.png for every image: stands in for pseudo labels

    def rounds(out: Path, workers: int) -> dict[str, torch.Tensor]:
        for r in (0, 1):
            init = {"init": out / "r0.pt", "pseudo_dir": pseudo} if r else {}
            trainer = Trainer(TrainOptions.from_config(folder_config, r), out / f"s{r}",
                              num_workers=workers, **init)
            trainer.run(out / f"r{r}.pt", out / f"r{r}.csv")
        return checkpoint.load(out / "r1.pt")["model"]

    a, b = rounds(tmp_path / "inline", 0), rounds(tmp_path / "workers", 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_processes_train_pspnet_without_aux_head_at_aux_weight_0(
        folder_config: dict, tmp_path: Path) -> None:
    """``aux_weight: 0`` builds no aux head: a head computed but left out of the loss has
    parameters without gradients, which DDP (no find_unused_parameters) rejects at the second
    step. Two gloo processes on CPU, two steps (batch 4 = 2 per process)."""
    folder_config["model"] = {"name": "pspnet"}
    folder_config["train"].update(aux_weight=0.0, epochs=2, batch_size=4)
    out = tmp_path / "model.pt"
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python",
         str(BIN / "dars"), "train", "--config-json", json.dumps(folder_config), "--out",
         str(out), "--log-csv", str(tmp_path / "log.csv"), "--state-dir",
         str(tmp_path / "state"), "--threads", "1"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 1 of 2" in proc.stderr
    state = checkpoint.load(out)
    assert state["model_config"]["aux_head"] is False and state["epoch"] == 2
    assert not any(k.startswith("aux.") for k in state["model"])


# -- sliding window --------------------------------------------------------------------------
def test_sliding_evaluation_equals_whole_when_the_crop_covers_the_image(
        folder_config: dict, tmp_path: Path) -> None:
    folder_config["train"]["epochs"] = 3
    model = tmp_path / "m.pt"
    Trainer(TrainOptions.from_config(folder_config, 0), tmp_path / "s").run(model,
                                                                            tmp_path / "log.csv")
    whole = evaluate(EvaluateOptions.from_config(folder_config), model, tmp_path / "w.csv",
                     tmp_path / "w.json", 0)
    folder_config["evaluate"].update(mode="sliding", crop_size=16)
    sliding = evaluate(EvaluateOptions.from_config(folder_config), model, tmp_path / "s.csv",
                       tmp_path / "s.json", 0)
    assert sliding == whole


def test_prediction_batches_images_by_size(tmp_path: Path) -> None:
    from PIL import Image

    sizes = [(5, 7), (6, 7), (5, 7), (5, 7), (6, 7)]
    samples = []
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f"{i}.png")
        samples.append(Sample(str(i), tmp_path / f"{i}.png", None))
    batches = list(size_batches(samples, range(5), batch=2))
    assert batches == [[0, 2], [3], [1, 4]]
