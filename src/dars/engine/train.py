"""Teacher (round 0) and student (rounds >= 1) training with SGD + poly lr.

Round 0 trains on labeled batches. A student round k starts from round k-1's last state and
forwards a labeled half-batch and a pseudo-labeled half-batch separately, summing the two
cross-entropy losses (the authors' recipe); one epoch is one pass over the unlabeled pool.
With ``train.schedule: continue`` one poly schedule spans all rounds and the optimizer state is
carried over, as in the released code; ``restart`` begins a fresh schedule per round.

State is checkpointed atomically after every epoch into ``state_dir/last.pt`` together with the
RNG state, so a killed job resumes at its last finished epoch and ends with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dars.atomic import write_csv
from dars.config import Config, scale_range
from dars.config import epochs_per_round as epochs_per_round_from
from dars.data.dataset import DatasetSpec, SegmentationDataset, dataset_spec
from dars.data.transforms import train_transform
from dars.engine import checkpoint
from dars.errors import DarsError
from dars.models import build_model

log = logging.getLogger(__name__)

AUX_WEIGHT = 0.4


@dataclass(frozen=True)
class RoundSchedule:
    """Where a round sits in the lr schedule (iterations are optimizer steps)."""

    epochs: int
    iters_per_epoch: int
    start_iter: int
    total_iters: int


def plan_schedule(train_config: Config, epochs_per_round: list[int], round_index: int,
                  num_labeled: int, num_unlabeled: int) -> RoundSchedule:
    """Compute the round's iterations and its offset in a shared (continue) or own schedule.

    ``epochs_per_round`` lists round 0's epochs, then each student round's; with ``restart``
    only the entry of ``round_index`` matters (so a prefix up to it suffices).
    """
    if round_index >= len(epochs_per_round):
        raise DarsError(f"round {round_index} is not configured (epochs given for rounds "
                        f"0..{len(epochs_per_round) - 1})")
    bs = train_config["batch_size"]
    iters = [max(num_labeled // bs, 1)] + [max(num_unlabeled // (bs // 2), 1)] * (
        len(epochs_per_round) - 1)
    epochs, ipe = epochs_per_round[round_index], iters[round_index]
    if train_config["schedule"] == "restart":
        return RoundSchedule(epochs, ipe, 0, epochs * ipe)
    lengths = [e * i for e, i in zip(epochs_per_round, iters, strict=True)]
    return RoundSchedule(epochs, ipe, sum(lengths[:round_index]), sum(lengths))


def poly_lr(base: float, it: int, total: int, power: float) -> float:
    return base * (1 - min(it, total) / total) ** power


def seg_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, ignore: int) -> torch.Tensor:
    """CE on the main output plus 0.4 x CE on an auxiliary head when the model has one."""
    loss = F.cross_entropy(outputs["out"], target, ignore_index=ignore)
    if "aux" in outputs:
        loss = loss + AUX_WEIGHT * F.cross_entropy(outputs["aux"], target, ignore_index=ignore)
    return loss


def _loader(dataset: SegmentationDataset, batch: int, workers: int) -> DataLoader:
    if len(dataset) < batch:
        raise DarsError(f"split has {len(dataset)} images, fewer than one batch of {batch}")
    return DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                      num_workers=workers, persistent_workers=False)


def _signature(config: Config, *job: object) -> str:
    """Identity of a training job, so a stale last.pt of a different job is never resumed."""
    keys = {k: config[k] for k in ("dataset", "model", "train", "seed")}
    blob = json.dumps([keys, job], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Trainer:
    """One round of training; construct, then :meth:`run`."""

    def __init__(self, config: Config, round_index: int, state_dir: Path,
                 init: Path | None = None, pseudo_dir: Path | None = None,
                 epochs_per_round: list[int] | None = None,
                 scale: tuple[float, float] | None = None) -> None:
        """``epochs_per_round`` and ``scale`` default to what ``config`` says; the workflow
        passes them explicitly so a rule depends on exactly the values it uses."""
        if round_index > 0 and (init is None or pseudo_dir is None):
            raise DarsError("a student round needs --init (teacher checkpoint) and --pseudo")
        self.config, self.round = config, round_index
        self.spec: DatasetSpec = dataset_spec(config)
        self.tcfg = config["train"]
        self.state_dir = state_dir
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(config["seed"] * 1000 + round_index)

        scale = scale or scale_range(config, round_index)
        epochs_per_round = epochs_per_round or epochs_per_round_from(config)
        transform = train_transform(scale, self.tcfg["crop_size"],
                                    self.tcfg["flip"], self.spec.ignore_index)
        labeled = SegmentationDataset(self.spec, self.spec.samples("labeled"), transform)
        unlabeled = self.spec.samples("unlabeled", require_masks=False)
        half = self.tcfg["batch_size"] // 2 if round_index else self.tcfg["batch_size"]
        self.labeled = _loader(labeled, half, self.tcfg["num_workers"])
        self.pseudo = None
        if round_index:
            pseudo = SegmentationDataset(self.spec, unlabeled, transform, mask_dir=pseudo_dir)
            self.pseudo = _loader(pseudo, half, self.tcfg["num_workers"])
        self.schedule = plan_schedule(self.tcfg, epochs_per_round, round_index, len(labeled),
                                      len(unlabeled))
        self.signature = _signature(config, round_index, epochs_per_round, scale)

        self.model = build_model(config["model"], self.spec.num_classes).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.tcfg["lr"],
                                         momentum=self.tcfg["momentum"],
                                         weight_decay=self.tcfg["weight_decay"])
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        if not self._resume() and init is not None:
            self._start_from_teacher(init)

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_config": self.config["model"],
            "num_classes": self.spec.num_classes,
            "class_names": self.spec.classes,
            "round": self.round,
            "epoch": self.epoch,
            "iteration": self.schedule.start_iter + self.epoch * self.schedule.iters_per_epoch,
            "signature": self.signature,
            "rng": torch.get_rng_state(),
            "history": self.history,
        }

    def _resume(self) -> bool:
        last = self.state_dir / "last.pt"
        if not last.is_file():
            return False
        state = checkpoint.load(last)
        if state.get("signature") != self.signature:
            log.info("ignoring %s: it belongs to a different configuration", last)
            return False
        checkpoint.load_weights(self.model, state, last)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        log.info("resuming round %d from %s at epoch %d", self.round, last, self.epoch)
        return True

    def _start_from_teacher(self, init: Path) -> None:
        state = checkpoint.load(init)
        if state["model_config"] != self.config["model"]:
            raise DarsError(f"teacher {init} was trained with model {state['model_config']}, "
                            f"config asks for {self.config['model']}")
        checkpoint.load_weights(self.model, state, init)
        if self.tcfg["schedule"] == "continue":
            self.optimizer.load_state_dict(state["optimizer"])

    # -- loop --------------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch of (x_l, y_l[, x_u, y_u]); a fresh labeled shuffle each epoch."""
        if self.pseudo is None:
            for x, y, _ in self.labeled:
                yield x, y
            return
        labeled = iter(())
        for xu, yu, _ in self.pseudo:
            try:
                xl, yl, _ = next(labeled)
            except StopIteration:
                labeled = iter(self.labeled)
                xl, yl, _ = next(labeled)
            yield xl, yl, xu, yu

    def _step(self, batch: tuple[torch.Tensor, ...], lr: float, it: int) -> list[float]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ignore = self.spec.ignore_index
        losses = []
        for x, y in zip(batch[::2], batch[1::2], strict=True):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            losses.append(seg_loss(self.model(x), y, ignore))
        total = sum(losses)
        if not torch.isfinite(total):
            raise DarsError(f"loss became {total.item()} at iteration {it} (round {self.round}); "
                            f"lower train.lr (now {self.tcfg['lr']}) — the last good state is "
                            f"kept in {self.state_dir / 'last.pt'}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return [v.item() for v in losses]

    def run(self, out: Path, log_csv: Path) -> None:
        """Train the remaining epochs, checkpointing each, then write model.pt and the log."""
        sched = self.schedule
        self.model.train()
        bar = tqdm(total=sched.epochs * sched.iters_per_epoch,
                   initial=self.epoch * sched.iters_per_epoch,
                   desc=f"round {self.round}", mininterval=2, unit="it")
        while self.epoch < sched.epochs:
            t0, seen, sums, n = time.perf_counter(), 0, [0.0, 0.0], 0
            it = sched.start_iter + self.epoch * sched.iters_per_epoch
            for batch in self._batches():
                lr = poly_lr(self.tcfg["lr"], it, sched.total_iters, self.tcfg["poly_power"])
                for i, v in enumerate(self._step(batch, lr, it)):
                    sums[i] += v
                seen += sum(len(x) for x in batch[::2])
                it, n = it + 1, n + 1
                bar.update()
            seconds = time.perf_counter() - t0
            self.epoch += 1
            self.history.append({
                "round": self.round, "epoch": self.epoch, "iteration": it,
                "loss_labeled": sums[0] / max(n, 1),
                "loss_pseudo": sums[1] / max(n, 1) if self.pseudo is not None else math.nan,
                "lr": lr, "images_per_s": seen / seconds, "seconds": seconds,
            })
            checkpoint.save(self.state_dir / "last.pt", self._state())
            write_csv(pd.DataFrame(self.history), log_csv)
        bar.close()
        final = self._state()
        final.pop("rng")
        checkpoint.save(out, final)
        write_csv(pd.DataFrame(self.history), log_csv)
        log.info("round %d done: %d epochs, last loss %.4f", self.round, self.epoch,
                 self.history[-1]["loss_labeled"] if self.history else math.nan)
