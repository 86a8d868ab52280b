"""Teacher (round 0) and student (rounds >= 1) training with SGD + poly lr.

A student round k starts from round k-1's last state; an epoch is one pass over the unlabeled
pool. Validation (``train.evaluate_every``) never changes the weights handed on: the last ones.
``state_dir/last.pt`` is saved after every epoch and the data are seeded per sample
(:mod:`dars.engine.loader`), so a killed job resumes at its last epoch with the same weights on
any number of GPUs and workers. SIGTERM (SLURM's pre-emption) saves the position after the
current step with every rank's RNG and exits 143; the rerun replays the epoch's data up to there
without training and continues bit for bit (docs/RELIABILITY.md)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.core.options import TrainOptions
from dars.data.dataset import DatasetSpec, SegmentationDataset, dataset_spec
from dars.data.splits import Sample
from dars.data.transforms import train_transform
from dars.engine import distributed
from dars.engine.evaluate import iou_from_confusion, val_confusion
from dars.engine.loader import sample_seed, split_workers, train_loader
from dars.engine.precision import use_bf16
from dars.engine.predict import bf16_autocast
from dars.models import build_model, checkpoint
from dars.models.backbone import load_pretrained, lr_groups
from dars.store.artifacts import write_csv

log = logging.getLogger(__name__)

EXIT_TERMINATED = 128 + signal.SIGTERM  # the shell's status for "terminated by SIGTERM"


@dataclass(frozen=True)
class RoundSchedule:
    """Where a round sits in the released poly schedule (iterations are optimizer steps).

    The authors' tool/train_func.py sets ``lr = base * (1 - current_iter / max_iter) ** power``
    over *that round's own* loader *after* step i's ``optimizer.step()`` (train_func.py:129,
    159-165): step i runs at the lr of ``current_iter - 1``, a round's first step at its
    optimizer's starting lr (base when fresh, 0 when a student resumes the previous round's
    optimizer). ``train.schedule: continue`` starts a student at ``start_epoch`` = the epochs of
    the rounds before, so every round anneals to 0; ``restart`` starts each round at 0."""

    epochs: int
    iters_per_epoch: int
    start_epoch: int
    power: float

    @property
    def total_iters(self) -> int:
        """``max_iter`` of the released code: the schedule's length in this round's steps."""
        return (self.start_epoch + self.epochs) * self.iters_per_epoch

    @property
    def start_iter(self) -> int:
        return self.start_epoch * self.iters_per_epoch

    def factor(self, step: int) -> float:
        """lr / base lr of this round's ``step``-th optimizer step (0-based): the value set
        after the step before it; 0 after the end."""
        if step == 0 and self.start_iter:  # the resumed optimizer's lr: 0 where its round ended
            return 0.0
        current = self.start_iter + step
        return max(0.0, 1 - current / self.total_iters) ** self.power


def plan_schedule(schedule: str, power: float, epochs_per_round: list[int], round_index: int,
                  iters_per_epoch: int) -> RoundSchedule:
    """Schedule from the epochs of rounds 0..``round_index`` alone (later ones never change it)."""
    if round_index >= len(epochs_per_round):
        raise DarsError(f"round {round_index} is not configured (epochs given for rounds "
                        f"0..{len(epochs_per_round) - 1})")
    start = sum(epochs_per_round[:round_index]) if schedule == "continue" else 0
    return RoundSchedule(epochs_per_round[round_index], iters_per_epoch, start, power)


def validates(epoch: int, start: int, every: int) -> bool:
    """Whether epoch ``epoch`` (1-based, in the round) is validated: after ``start``, every
    ``every`` epochs (0 = never), the condition of the released tool/train.py:350-351."""
    return every > 0 and epoch > start and (epoch - start) % every == 0


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    """Mean CE over the non-ignored pixels, 0 when there are none: an all-ignore pseudo-labeled
    batch (a weak teacher) must add no gradient, not torch's NaN ("loss became nan")."""
    total = F.cross_entropy(logits, target, ignore_index=ignore, reduction="sum")
    return total / (target != ignore).sum().clamp_min(1)


def seg_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, ignore: int,
             aux_weight: float) -> torch.Tensor:
    """CE on ``out`` plus ``aux_weight`` x CE on the auxiliary head (PSPNet's: 0.4 as released)."""
    loss = _cross_entropy(outputs["out"], target, ignore)
    if "aux" in outputs and aux_weight:
        loss = loss + aux_weight * _cross_entropy(outputs["aux"], target, ignore)
    return loss


def match_length(samples: list[Sample], length: int) -> list[Sample]:
    """``samples`` repeated (in order) and cut to ``length``: the released ``*_match_len``
    lists, which make a round-0 epoch as long as a pass over the unlabeled pool."""
    return (samples * math.ceil(length / len(samples)))[:length] if samples else []


class EpochBoard:
    """TensorBoard scalars at cumulative epochs (released ``epoch_log``): rounds share one axis."""

    def __init__(self, logdir: Path, classes: list[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise DarsError("train.tensorboard needs the tensorboard package: pip install "
                            "'dars-pipeline[tensorboard]' (or set train.tensorboard: false)"
                            ) from exc
        self.classes = classes
        self.writer = SummaryWriter(str(logdir))

    def write(self, epoch: int, row: dict[str, Any], iou: np.ndarray | None) -> None:
        scalars = {"loss/labeled": row["loss_labeled"], "loss/pseudo": row["loss_pseudo"],
                   "lr": row["lr"]}
        if iou is not None:
            scalars["val/miou"] = row["val_miou"]
            scalars |= {f"val_iou/{name}": v for name, v in zip(self.classes, iou, strict=True)}
        for tag, value in scalars.items():
            if not math.isnan(value):  # a teacher has no pseudo half, a class may be absent
                self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()


class Trainer:
    """One round of training; construct, then :meth:`run`."""

    def __init__(self, options: TrainOptions, state_dir: Path, init: Path | None = None,
                 pseudo_dir: Path | None = None, num_workers: int = 0,
                 tensorboard: bool = False) -> None:
        """``num_workers``: DataLoader workers of the whole job (all ranks); speed, not results."""
        round_index = options.round
        if round_index > 0 and (init is None or pseudo_dir is None):
            raise DarsError("a student round needs --init (teacher checkpoint) and --pseudo")
        self.options, self.round = options, round_index
        self.spec: DatasetSpec = dataset_spec(options.dataset)
        self.state_dir = state_dir
        self.world = distributed.setup()
        self.device = self.world.device
        cuda = self.device.type == "cuda"
        self.bf16 = use_bf16(options.bf16, self.device)
        self.channels_last = options.channels_last and cuda
        if cuda:  # fixed crop size: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        self.seed = options.seed * 1000 + round_index
        torch.manual_seed(self.seed)  # model initialisation, identical on every rank

        transform = train_transform(options.scale_range, options.crop_size, options.flip,
                                    IGNORE, options.rotate, options.blur,
                                    fused=options.augment == "fused")
        labeled_samples = self.spec.samples("labeled")
        unlabeled = (self.spec.samples("unlabeled", require_masks=False)
                     if round_index or options.baseline_list == "match_unlabeled" else [])
        if not round_index and unlabeled:
            labeled_samples = match_length(labeled_samples, len(unlabeled))
        labeled = SegmentationDataset(self.spec, labeled_samples, transform)
        batch = options.student_batch_size or options.batch_size
        half = batch // 2 if round_index else options.batch_size
        if half % self.world.size:
            key = "train.student_batch_size" if round_index else "train.batch_size"
            raise DarsError(f"{key} {batch if round_index else half} does not split evenly "
                            f"over {self.world.size} GPUs"
                            + (" (students: half labeled, half pseudo-labeled)" if round_index
                               else ""))
        workers = split_workers(num_workers, self.world.size, 2 if round_index else 1)
        self.labeled = train_loader(labeled, half, workers[-1], self.world, self.seed)
        self.pseudo = None
        if round_index:
            pseudo = SegmentationDataset(self.spec, unlabeled, transform, mask_dir=pseudo_dir)
            self.pseudo = train_loader(pseudo, half, workers[0], self.world, self.seed)
        self.schedule = plan_schedule(options.schedule, options.poly_power,
                                      list(options.epochs_per_round), round_index,
                                      len(self.pseudo or self.labeled))
        # the job's identity: a stale last.pt of a different job is never resumed
        self.signature = hashlib.sha256(options.to_json().encode()).hexdigest()[:16]

        self.model_config = options.model.params()  # what checkpoints record and compare
        model = build_model(self.model_config, self.spec.num_classes).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.net = distributed.wrap(model, self.world, options.sync_bn)  # what the step calls
        self.model = distributed.unwrap(self.net)  # what checkpoints hold
        groups = lr_groups(self.model, options.head_lr_mult, options.head_lr_stages)
        self.base_lrs = [options.lr * mult for _, mult in groups]
        self.optimizer = torch.optim.SGD(
            [{"params": params, "lr": lr} for (params, _), lr in zip(groups, self.base_lrs,
                                                                     strict=True)],
            lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.step = 0  # steps done in the current epoch, > 0 only when resuming after SIGTERM
        self._partial: dict[str, Any] = {}
        self._rng: list[dict[str, torch.Tensor]] | None = None
        self._stop: int | None = None
        resumed = self._resume()
        if not resumed:
            if init is not None:
                self._start_from_teacher(init)
            else:
                load_pretrained(self.model, self.model_config)
        self.scheduler = self._scheduler(resumed.get("scheduler"))
        self.board = (EpochBoard(state_dir / "tensorboard", self.spec.classes)
                      if tensorboard and self.world.is_main else None)

    def _scheduler(self, saved: dict[str, Any] | None) -> LambdaLR:
        """The poly schedule as a LambdaLR placed after the steps already done; built after any
        optimizer state was loaded, whose groups carry the lr where *that* run stopped."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["initial_lr"] = base
        done = self.epoch * self.schedule.iters_per_epoch + self.step
        scheduler = LambdaLR(self.optimizer, self.schedule.factor, last_epoch=done - 1)
        if saved is not None:
            scheduler.load_state_dict(saved)
        return scheduler

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "model_config": self.model_config,
            "num_classes": self.spec.num_classes, "class_names": self.spec.classes,
            "round": self.round, "epoch": self.epoch, "step": self.step,
            "iteration": (self.schedule.start_iter + self.epoch * self.schedule.iters_per_epoch
                          + self.step),
            "signature": self.signature, "history": self.history,
            "partial": self._partial,  # running sums of an interrupted epoch
            "rng": self._rng,  # every rank's RNG after `step` steps of an interrupted epoch
        }

    def _resume(self) -> dict[str, Any]:
        """Load ``last.pt`` of this job if there is one; its state, or {} to start afresh."""
        last = self.state_dir / "last.pt"
        if not last.is_file():
            return {}
        state = checkpoint.load(last, remedy=f"delete {last} to restart round {self.round} "
                                "from its first epoch")
        if state.get("signature") != self.signature:
            log.info("ignoring %s: it belongs to a different configuration", last)
            return {}
        checkpoint.load_weights(self.model, state, last)
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.step, self._partial = state.get("step", 0), state.get("partial") or {}
        self._rng = state.get("rng")
        if self.step and (self._rng is None or len(self._rng) != self.world.size):
            log.info("%s stopped inside epoch %d on another number of processes: repeating "
                     "that epoch", last, self.epoch + 1)
            self.step, self._partial, self._rng = 0, {}, None
            state.pop("scheduler", None)  # its position is derived from the epoch again
        log.info("resuming round %d from %s at epoch %d, step %d", self.round, last,
                 self.epoch, self.step)
        return state

    def _start_from_teacher(self, init: Path) -> None:
        state = checkpoint.load(init)
        if state["model_config"] != self.model_config:
            raise DarsError(f"teacher {init} was trained with model {state['model_config']}, "
                            f"config asks for {self.model_config}")
        checkpoint.load_weights(self.model, state, init)
        if self.options.schedule == "continue":
            self.optimizer.load_state_dict(state["optimizer"])

    # -- loop --------------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch of (x_l, y_l[, x_u, y_u]). Students cycle the smaller labeled set, pass p of
        epoch e at sampler epoch ``e * passes + p``: passes differ, a resume repeats the order."""
        if self.pseudo is None:
            self.labeled.sampler.set_epoch(self.epoch)
            for x, y, _ in self.labeled:
                yield x, y
            return
        self.pseudo.sampler.set_epoch(self.epoch)
        passes = math.ceil(len(self.pseudo) / len(self.labeled))
        labeled, done = iter(()), 0
        for xu, yu, _ in self.pseudo:
            try:
                xl, yl, _ = next(labeled)
            except StopIteration:
                self.labeled.sampler.set_epoch(self.epoch * passes + done)
                labeled, done = iter(self.labeled), done + 1
                xl, yl, _ = next(labeled)
            yield xl, yl, xu, yu

    def _step(self, batch: tuple[torch.Tensor, ...], it: int) -> list[float]:
        """One optimizer and scheduler step; the labeled and pseudo-labeled halves are forwarded
        separately (BatchNorm statistics per half, as the authors do), their losses summed."""
        losses = []
        with bf16_autocast(self.device, self.bf16):
            for x, y in zip(batch[::2], batch[1::2], strict=True):
                x = x.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(self.device, non_blocking=True)
                losses.append(seg_loss(self.net(x), y, IGNORE, self.options.aux_weight))
        total = sum(losses)
        if not torch.isfinite(distributed.mean(total, self.world)):
            raise DarsError(f"loss became {total.item()} at iteration {it} (round {self.round}); "
                            f"lower train.lr (now {self.options.lr}) — the last good state is "
                            f"kept in {self.state_dir / 'last.pt'}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        return [distributed.mean(v, self.world).item() for v in losses]

    def run(self, out: Path, log_csv: Path) -> None:
        """Train the remaining epochs, checkpointing each, then write model.pt and the log."""
        previous = None
        try:
            with contextlib.suppress(ValueError):  # not the main thread: no graceful stop
                previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            sched, main = self.schedule, self.world.is_main
            self.net.train()
            with tqdm(total=sched.epochs * sched.iters_per_epoch,
                      initial=self.epoch * sched.iters_per_epoch + self.step,
                      desc=f"round {self.round}", mininterval=2, unit="it",
                      disable=not main) as bar:
                while self.epoch < sched.epochs:
                    self._epoch(bar)
                    if self.epoch < sched.epochs and self._stop_requested():
                        self._interrupt(0, {})
            if main:
                checkpoint.save(out, self._state())
                write_csv(pd.DataFrame(self.history), log_csv)
            log.info("round %d done: %d epochs, last loss %.4f", self.round, self.epoch,
                     self.history[-1]["loss_labeled"] if self.history else math.nan)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.board is not None:
                self.board.writer.close()
            distributed.teardown(self.world)

    def _on_sigterm(self, signum: int, _frame: object) -> None:
        self._stop = signum

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGTERM (all ranks must stop after the same step)."""
        if not self.world.distributed:
            return self._stop is not None
        flag = torch.tensor(float(self._stop is not None), device=self.device)
        return bool(distributed.mean(flag, self.world) > 0)

    def _rng_states(self) -> list[dict[str, torch.Tensor]]:
        """This process's RNG states, gathered from every rank (index = rank)."""
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        if not self.world.distributed:
            return [state]
        states: list[Any] = [None] * self.world.size
        dist.all_gather_object(states, {k: v.cpu() for k, v in state.items()})
        return states

    def _restore_rng(self) -> None:
        state = self._rng[self.world.rank]
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _interrupt(self, step: int, partial: dict[str, Any]) -> None:
        """Save the position inside the epoch (after ``step`` steps) and leave with 143."""
        self.step, self._partial, self._rng = step, partial, self._rng_states()
        if self.world.is_main:
            checkpoint.save(self.state_dir / "last.pt", self._state())
            write_csv(pd.DataFrame(self.history), self.state_dir / "train_log.csv")
        distributed.barrier(self.world)
        log.warning("SIGTERM: stopped round %d at epoch %d, step %d of %d; state saved in %s, "
                    "rerun to resume", self.round, self.epoch + 1, step,
                    self.schedule.iters_per_epoch, self.state_dir / "last.pt")
        raise SystemExit(EXIT_TERMINATED)

    def _validate(self) -> np.ndarray | None:
        """Per-class val IoU of the current weights, on the main process as released (else None)."""
        if not self.world.is_main:
            return None
        try:
            cm = val_confusion(self.model, self.spec, self.spec.samples("val"),
                               self.options.validation)
        finally:
            self.net.train()
        iou = iou_from_confusion(cm)
        log.info("round %d epoch %d: val mIoU %.4f", self.round, self.epoch, np.nanmean(iou))
        return iou

    def _epoch(self, bar: tqdm) -> None:
        """One epoch (or its rest after an interrupted one), then its checkpoint."""
        sched, main = self.schedule, self.world.is_main
        torch.manual_seed(sample_seed(self.seed, self.epoch, self.world.rank))
        skip, p = self.step, self._partial
        seen, sums, n = p.get("seen", 0), list(p.get("sums", [0.0, 0.0])), p.get("n", 0)
        t0 = time.perf_counter() - p.get("seconds", 0.0)
        it = sched.start_iter + self.epoch * sched.iters_per_epoch + skip
        lr = math.nan  # the base-group lr of the epoch's last step (as the released log shows)
        for done, batch in enumerate(self._batches(), start=1):
            if done <= skip:  # replay the data order up to the interruption, no training
                if done == skip:
                    self._restore_rng()
                continue
            lr = self.optimizer.param_groups[0]["lr"]  # group 0 is the 1x group
            for i, v in enumerate(self._step(batch, it)):
                sums[i] += v
            seen += sum(len(x) for x in batch[::2]) * self.world.size
            it, n = it + 1, n + 1
            bar.update()
            if done < sched.iters_per_epoch and self._stop_requested():
                self._interrupt(done, {"seen": seen, "sums": sums, "n": n,
                                       "seconds": time.perf_counter() - t0})
        seconds = time.perf_counter() - t0
        self.epoch, self.step, self._partial, self._rng = self.epoch + 1, 0, {}, None
        iou = (self._validate() if validates(self.epoch, self.options.evaluate_start,
                                              self.options.evaluate_every) else None)
        self.history.append({
            "round": self.round, "epoch": self.epoch, "iteration": it,
            "loss_labeled": sums[0] / max(n, 1),
            "loss_pseudo": sums[1] / max(n, 1) if self.pseudo is not None else math.nan,
            "lr": lr, "images_per_s": seen / seconds, "seconds": seconds,
            "val_miou": float(np.nanmean(iou)) if iou is not None else math.nan,
        })
        if main:  # progress so far; ``log_csv`` is an output, written only at the end
            checkpoint.save(self.state_dir / "last.pt", self._state())
            write_csv(pd.DataFrame(self.history), self.state_dir / "train_log.csv")
            if self.board is not None:  # after the checkpoint: a rerun never repeats an epoch
                self.board.write(sched.start_epoch + self.epoch, self.history[-1], iou)
        distributed.barrier(self.world)
