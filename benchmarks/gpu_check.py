"""GPU check (issue 15 item 3, issue 20 item 5): what a GPU user needs first, in one JSON.

On a CUDA machine, in an estimated 6-7.5 minutes (budget: 8 on one H100), this

1. runs the CUDA-marked tests (``pytest -m cuda`` on the test files that carry the marker);
2. times the real ``dars.engine.train.Trainer`` of a paper config (default
   ``config/cityscapes_1-8_crop713.yaml``: PSPNet-ResNet50, crop 713, the released batch 16,
   students 8 labeled + 8 pseudo-labeled, each half its own forward) on a synthetic
   Cityscapes-shaped folder dataset (1024x2048 PNGs, 19 classes, pseudo labels) written to a
   temporary folder: round 0 and a student round (default the last, whose scale range
   [0.5, 3.0] loads slowest), each in fp32 (the released precision) and in bf16 autocast +
   channels_last (``train.bf16`` / ``train.channels_last``), through ``Trainer._step`` (pinned
   copies, the per-step loss sync, the scheduler) with the Trainer's own persistent loaders and
   every core but one as workers; per measurement the steps/s and images/s of the whole loop,
   the time spent waiting for the next batch (``loader_wait_fraction``: > 0 means the model
   waited; a short run under-reads it, since the workers prefetch while the first steps pick
   their cuDNN kernels) and the model's own rate without that wait (``compute_images_per_s``);
   a batch that does not fit is recorded (``oom_at_batch``) and retried at half the batch, a
   measurement that fails otherwise records its error and the others go on;
3. saves one checkpoint of round 0 (``checkpoint.save`` of the Trainer's state, as after each
   epoch) and resumes from it (``Trainer._resume``: weights, optimizer, scheduler position),
   both timed; the student starts from that checkpoint as from a teacher;
4. times the training loader alone (bench_loader: decode, released augmentation, both scale
   ranges) at the Trainer's batch and workers, beside the Trainer's bf16 compute rate
   (``loader_over_train`` < 1: the input cannot keep up and the GPU waits);
5. times sliding-window inference on 1024x2048 images through what ``dars infer`` runs,
   ``predict_labels`` (windows of 713 at stride 2/3 with flip as released, at the config's
   ``infer.batch_size``), and ``sliding_scores`` alone on GPU-resident images, fp32 and bf16;
6. records peak GPU memory (``torch.cuda.max_memory_allocated``) of every measurement;
7. with two or more GPUs, times 2-GPU DDP training (NCCL, SyncBN, via
   ``dars.engine.distributed`` as ``torchrun`` would) of a hand-written step at ``ddp_batch``
   per GPU against one process of the same step, else records why it was skipped;

and writes one JSON (default ``benchmarks/gpu_check.json``): ``machine``, ``sizes``,
``config``, ``cuda_tests``, ``train``, ``checkpoint``, ``loader``, ``inference``, ``ddp``,
``figures`` (the headline numbers, flat), ``forbidden_imports`` and ``seconds_total``. Step
counts and caps are parameters (``--warmup``, ``--steps``, ``--student-steps``,
``--step-cap-s``, ``--train-batch``); every timed loop stops past its cap.

``--dry`` runs the same code paths on the CPU at toy sizes (the tiny model, crop 33, batch 4,
96x48 images, 1-2 steps, DDP over gloo) in seconds; tests/test_gpu_check.py runs it (in
``make test``) so the script cannot rot. Peak memory on the CPU is the process's maximum RSS.

The GPU machine has torch, torchvision, numpy, pandas, pillow, pyyaml, tqdm, pytest and
opencv-python-headless but not jsonschema, which the Trainer's config import needs:
``benchmarks/gpu_wheels.sh`` downloads it and its missing dependencies (referencing,
jsonschema-specifications, rpds-py) as wheels into the git-ignored ``wheels/``, which the run
carries. Nothing here needs snakemake, which the machine cannot have (the JSON lists it under
``forbidden_imports`` if anything imported it). On the device (``carry: ["wheels"]``):

    pip install -q --no-index --find-links wheels jsonschema \
        && PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

and here:

    PYTHONPATH=src python benchmarks/gpu_check.py --dry --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dars.core.constants import IGNORE
from dars.data.splits import Sample
from dars.engine import distributed
from dars.engine.predict import PredictOptions, bf16_autocast, predict_labels
from dars.engine.sliding import sliding_scores
from dars.models import build_model
from dars.models.backbone import lr_groups
from dars.store.artifacts import write_json

REPO = Path(__file__).resolve().parents[1]
PSPNET_R50 = {"name": "pspnet", "backbone": "resnet50", "deep_stem": True}
NUM_CLASSES = 19
AUX_WEIGHT = 0.4  # train.aux_weight of the PSPNet configs (the DDP step's loss)
STRIDE_RATIO = 2 / 3
# what the GPU machine cannot have even with the carried wheels (see gpu_wheels.sh)
FORBIDDEN = ("snakemake",)


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and time caps of one check; the caps bound every timed loop. ``None``
    takes the paper config's value."""

    config: str  # the paper config whose train and infer settings are timed
    model: dict[str, Any] | None  # None: the config's model, randomly initialised
    crop: int | None  # train.crop_size and infer.crop_size
    train_batch: int | None  # train.batch_size (students: half labeled, half pseudo-labeled)
    student_round: int | None  # None: the config's last round
    image_hw: tuple[int, int]  # training and inference image size
    distinct_images: int  # image files written; the splits list them under many ids
    train_images: int  # ids per split (labeled, unlabeled = pseudo-labeled)
    warmup: int  # untimed Trainer steps (worker start, cuDNN's kernel choice)
    steps: int  # timed round-0 Trainer steps per precision
    student_steps: int  # timed student steps per precision
    step_cap_s: float  # timed seconds per training measurement before it stops early
    images: int  # inference images (predict_labels)
    infer_batch: int | None  # infer.batch_size
    repeats: int  # sliding_scores repetitions on GPU-resident images
    tests_timeout_s: float
    loader_samples: int  # samples the training loader delivers per scale range
    ddp_batch: int  # per-GPU batch of the DDP measurement


# Estimated, not measured (no GPU lent yet), for one H100 (PSPNet-R50, crop 713, batch 16: at
# most ~1 s per fp32 step, less in bf16; the warm-up steps longer while cuDNN picks kernels):
# cuda tests <= 150 s (capped), data ~15 s, 4 Trainer measurements <= 4 x (build ~3 s + warm-up
# ~25 s + timed <= 20 s, capped), loader alone ~20 s, inference ~60 s: 6-7.5 minutes.
FULL = Sizes(config="config/cityscapes_1-8_crop713.yaml", model=None, crop=None,
             train_batch=None, student_round=None, image_hw=(1024, 2048), distinct_images=8,
             train_images=256, warmup=3, steps=12, student_steps=8, step_cap_s=20.0, images=8,
             infer_batch=None, repeats=4, tests_timeout_s=150.0, loader_samples=192,
             ddp_batch=8)
# The tiny model keeps the dry run to seconds on a shared 2-core machine (PSPNet-R50 at crop 33
# took minutes there); every code path but the model is the same.
DRY = Sizes(config="config/cityscapes_1-8_crop713.yaml", model={"name": "tiny", "width": 8},
            crop=33, train_batch=4, student_round=None, image_hw=(48, 96), distinct_images=2,
            train_images=8, warmup=1, steps=2, student_steps=1, step_cap_s=30.0, images=2,
            infer_batch=2, repeats=1, tests_timeout_s=120.0, loader_samples=8, ddp_batch=2)


def say(message: str) -> None:
    """Progress on stdout, flushed: the device tool returns only the output's tail."""
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev: torch.device) -> float:
    """Peak GPU memory since the last reset; on the CPU, the process's maximum RSS."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def machine_info(dev: torch.device) -> dict[str, Any]:
    cuda = dev.type == "cuda"
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    commit = None  # the device machine's copy of the tree may have no git or no .git
    if shutil.which("git"):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=False).stdout.strip() or None
    return {
        "device": str(dev), "gpus": gpus, "gpu_count": len(gpus),
        "gpu_memory_gib": (torch.cuda.get_device_properties(dev).total_memory / 2**30
                           if cuda else None),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "commit": commit,
    }


def run_cuda_tests(sizes: Sizes) -> dict[str, Any]:
    """``pytest -m cuda`` on the files that use the marker (collecting only those keeps the
    run free of modules the GPU machine lacks); counts parsed from pytest's summary line."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.cuda" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=sizes.tests_timeout_s, check=False)
        output, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, returncode = f"timed out after {exc.timeout} s\n{exc.stdout or ''}", None
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
    for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", output):
        counts["errors" if kind.startswith("error") else kind] = int(n)
    return {"command": " ".join(cmd[1:]), "files": files, "returncode": returncode, **counts,
            "seconds": time.perf_counter() - t0, "tail": output[-1500:]}


def seg_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """The engine's loss (CE + 0.4 x aux CE, ignore 255), same compute."""
    loss = F.cross_entropy(outputs["out"].float(), target, ignore_index=IGNORE)
    if "aux" in outputs:
        loss = loss + AUX_WEIGHT * F.cross_entropy(outputs["aux"].float(), target,
                                                   ignore_index=IGNORE)
    return loss


def fresh_model(dev: torch.device, sizes: Sizes, fast: bool) -> torch.nn.Module:
    """The model with the same initial weights every call (seeded), in the fast layout if
    ``fast`` on CUDA -- the engine's channels_last switch."""
    torch.manual_seed(0)
    model = build_model(sizes.model, NUM_CLASSES).to(dev)
    if fast and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def fixed_batch(dev: torch.device, sizes: Sizes, fast: bool, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One random normalised batch and its labels (10 % ignore), the same for every setting."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sizes.ddp_batch, 3, sizes.crop, sizes.crop, generator=g)
    y = torch.randint(0, NUM_CLASSES, (sizes.ddp_batch, sizes.crop, sizes.crop), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.1] = IGNORE
    x = x.to(dev)
    if fast and dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(dev)


def timed(step: Callable[[], None], warmup: int, steps: int, cap_s: float, dev: torch.device
          ) -> tuple[int, float]:
    """(timed steps, seconds) after ``warmup`` untimed steps; stops early past ``cap_s`` (at
    least 2 timed steps), so a slow device cannot blow the script's time budget."""
    for _ in range(warmup):
        step()
    sync(dev)
    t0, done = time.perf_counter(), 0
    while done < steps:
        step()
        done += 1
        if done >= 2 and time.perf_counter() - t0 > cap_s:
            break
    sync(dev)
    return done, time.perf_counter() - t0


def train_step_fn(net: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor,
                  y: torch.Tensor, dev: torch.device, fast: bool) -> Callable[[], None]:
    """One SGD step of ``net`` (the model or its DDP wrapper) on the fixed batch."""
    groups = [{"params": p, "lr": 0.01 * m} for p, m in lr_groups(model, 10)]
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with bf16_autocast(dev, fast):
            loss = seg_loss(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure_train(dev: torch.device, sizes: Sizes, fast: bool) -> dict[str, Any]:
    reset_peak(dev)
    model = fresh_model(dev, sizes, fast).train()
    x, y = fixed_batch(dev, sizes, fast)
    steps, seconds = timed(train_step_fn(model, model, x, y, dev, fast), sizes.warmup,
                           sizes.steps, sizes.step_cap_s, dev)
    result = {"images_per_s": steps * sizes.ddp_batch / seconds, "step_ms": 1e3 * seconds / steps,
              "timed_steps": steps, "warmup_steps": sizes.warmup, "batch": sizes.ddp_batch,
              "crop": sizes.crop, "peak_memory_gib": peak_gib(dev),
              "autocast_bf16": fast and dev.type == "cuda"}
    return result


# -- the real Trainer --------------------------------------------------------------------------
def paper_config(sizes: Sizes) -> dict[str, Any]:
    """The paper config as ``dars.core.config`` reads it (schema defaults filled in)."""
    from dars.core import config

    return config.load(REPO / sizes.config)


def resolve(sizes: Sizes, paper: dict[str, Any]) -> Sizes:
    """``sizes`` with every ``None`` taken from the paper config."""
    model = sizes.model or {k: v for k, v in paper["model"].items() if k != "pretrained"}
    return replace(sizes, model=model, crop=sizes.crop or paper["train"]["crop_size"],
                   train_batch=sizes.train_batch or paper["train"]["batch_size"],
                   student_round=(len(paper["rounds"]) if sizes.student_round is None
                                  else sizes.student_round),
                   infer_batch=sizes.infer_batch or paper["infer"]["batch_size"])


def train_config(paper: dict[str, Any], sizes: Sizes, root: Path, fast: bool, batch: int
                 ) -> dict[str, Any]:
    """The paper config on the synthetic folder dataset at ``root``: its model without
    pretrained weights (random init), no validation, ``batch``, and fp32 or bf16 +
    channels_last; validated as ``dars.core.config`` does."""
    from dars.core import config

    raw = {k: v for k, v in paper.items() if k not in ("dataset", "model")}
    raw["dataset"] = {"name": "folder", "root": str(root)}
    raw["model"] = dict(sizes.model)
    raw["train"] = {**paper["train"], "batch_size": batch, "student_batch_size": None,
                    "crop_size": sizes.crop, "bf16": fast, "channels_last": fast,
                    "evaluate_every": 0}
    raw["rounds"] = [{**r, "evaluate_every": 0} for r in paper["rounds"]]
    return config.validate(raw)


def write_train_dataset(root: Path, sizes: Sizes) -> tuple[Any, Path]:
    """A Cityscapes-shaped folder dataset: ``distinct_images`` street-like 1024x2048 PNGs and
    19-class masks (bench_loader's) listed under ``train_images`` ids per split by symbolic
    links, and the pseudo labels of the unlabeled ids; (the files' DatasetSpec, pseudo dir)."""
    import bench_loader  # next to this script: its synthetic street scenes
    import cv2

    # one OpenCV thread in this process, as the Trainer's loader sets before it forks: a worker
    # forked after OpenCV's thread pool ran here would hang at its first OpenCV call
    cv2.setNumThreads(1)
    spec = bench_loader.write_dataset(root / "files", sizes.distinct_images, *sizes.image_hw)
    pseudo = root / "pseudo"
    for folder in ("images", "masks", "splits", "pseudo"):
        (root / folder).mkdir()
    for split in ("labeled", "unlabeled", "val"):
        lines = []
        for i in range(sizes.train_images):
            name, k = f"{split}{i:04d}.png", i % sizes.distinct_images
            (root / "images" / name).symlink_to(root / "files" / "images" / f"{k}.png")
            (root / "masks" / name).symlink_to(root / "files" / "masks" / f"{k}.png")
            if split == "unlabeled":
                (pseudo / name).symlink_to(root / "files" / "masks" / f"{k}.png")
            lines.append(f"images/{name} masks/{name}")
        (root / "splits" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(spec.classes) + "\n")
    return spec, pseudo


def endless(trainer: Any) -> Iterator[tuple[torch.Tensor, ...]]:
    """The Trainer's batches, epoch after epoch (its loaders' workers persist)."""
    while True:
        yield from trainer._batches()
        trainer.epoch += 1


def run_trainer(cfg: dict[str, Any], round_index: int, state_dir: Path, workers: int,
                warmup: int, steps: int, cap_s: float, dev: torch.device,
                init: Path | None = None, pseudo: Path | None = None
                ) -> tuple[Any, dict[str, Any]]:
    """Build the Trainer of ``round_index`` and time ``steps`` of its ``_step`` on its own
    loaders after ``warmup`` untimed ones; (the Trainer, its figures)."""
    from dars.core.options import TrainOptions
    from dars.engine.train import Trainer

    reset_peak(dev)
    t0 = time.perf_counter()
    trainer = Trainer(TrainOptions.from_config(cfg, round_index), state_dir, init=init,
                      pseudo_dir=pseudo, num_workers=workers)
    build_s = time.perf_counter() - t0
    trainer.net.train()
    batches = endless(trainer)
    it = 0

    def step() -> tuple[float, int]:
        """(seconds waiting for the batch, images); ``_step`` ends in ``.item()``: synced."""
        nonlocal it
        ta = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter() - ta
        trainer._step(batch, it)
        it += 1
        return waited, sum(len(x) for x in batch[::2])

    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        sync(dev)
        warmup_s = time.perf_counter() - t0
        t0, done, images, wait = time.perf_counter(), 0, 0, 0.0
        while done < steps:
            waited, n = step()
            done, images, wait = done + 1, images + n, wait + waited
            if done >= 2 and time.perf_counter() - t0 > cap_s:
                break
        sync(dev)
        seconds = time.perf_counter() - t0
    except BaseException:
        stop_workers(trainer)  # else the traceback keeps them, and the exit waits on them
        raise
    finally:
        batches.close()
    result = {
        "status": "ran", "round": round_index, "batch": images // done,
        "forwards_per_step": 2 if round_index else 1, "crop": trainer.options.crop_size,
        "scale_range": list(trainer.options.scale_range), "workers": workers,
        "timed_steps": done, "warmup_steps": warmup, "steps_per_s": done / seconds,
        "images_per_s": images / seconds, "step_ms": 1e3 * seconds / done,
        "loader_wait_s": wait, "loader_wait_fraction": wait / seconds,
        "compute_images_per_s": images / max(seconds - wait, 1e-9),
        "build_s": build_s, "warmup_s": warmup_s, "peak_memory_gib": peak_gib(dev),
        "bf16": trainer.bf16, "channels_last": trainer.channels_last,
    }
    return trainer, result


def stop_workers(trainer: Any) -> None:
    """Shut down the persistent loader workers of ``trainer`` now (DataLoader keeps them until
    it is freed; a failed measurement's traceback would keep it, and the exit hang on them)."""
    for loader in (trainer.labeled, trainer.pseudo):
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
            loader._iterator = None


def free_trainer(dev: torch.device) -> None:
    """Drop what a finished (or out-of-memory) Trainer left: its workers, its GPU memory."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def measure_trainer(paper: dict[str, Any], sizes: Sizes, root: Path, fast: bool,
                    round_index: int, state_dir: Path, workers: int, dev: torch.device,
                    init: Path | None = None, pseudo: Path | None = None
                    ) -> tuple[Any, dict[str, Any]]:
    """``run_trainer`` at the config's batch; out of GPU memory, once more at half of it
    (recorded as ``oom_at_batch``); (the Trainer or None, its figures)."""
    batch, oom = sizes.train_batch, None
    steps = sizes.student_steps if round_index else sizes.steps
    while True:
        cfg = train_config(paper, sizes, root, fast, batch)
        error = None
        try:
            trainer, result = run_trainer(cfg, round_index, state_dir / f"b{batch}", workers,
                                          sizes.warmup, steps, sizes.step_cap_s, dev, init,
                                          pseudo)
        except torch.cuda.OutOfMemoryError as exc:
            error = str(exc).splitlines()[0][:300]
        except Exception as exc:  # noqa: BLE001 -- recorded; the other measurements go on
            error = "".join(traceback.format_exception(exc))[-1500:]
            free_trainer(dev)
            say(f"round {round_index} {'bf16' if fast else 'fp32'} failed: {error}")
            return None, {"status": "error", "round": round_index, "batch": batch,
                          "error": error}
        if error is None:
            return trainer, {**result, "oom_at_batch": oom}
        free_trainer(dev)
        say(f"round {round_index} {'bf16' if fast else 'fp32'}: out of memory at batch "
            f"{batch}: {error}")
        if oom is not None or batch < 8:  # a student's halves need >= 2 images (BatchNorm)
            return None, {"status": "oom", "round": round_index, "oom_at_batch": [oom, batch],
                          "error": error}
        oom, batch = batch, batch // 2


def measure_checkpoint(trainer: Any, dev: torch.device) -> dict[str, Any]:
    """One save of the Trainer's state as after an epoch (``last.pt``) and the resume from it
    (``Trainer._resume``: weights, optimizer; the scheduler's position is in the state)."""
    from dars.models import checkpoint

    path = trainer.state_dir / "last.pt"
    sync(dev)
    t0 = time.perf_counter()
    checkpoint.save(path, trainer._state())
    save_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = trainer._resume()
    sync(dev)
    resume_s = time.perf_counter() - t0
    assert state and state["epoch"] == trainer.epoch, "the checkpoint did not resume"
    return {"save_s": save_s, "resume_s": resume_s, "mib": path.stat().st_size / 2**20,
            "path": str(path.name), "round": trainer.round}


def measure_training(paper: dict[str, Any], sizes: Sizes, root: Path, pseudo: Path,
                     workers: int, dev: torch.device
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round 0, then the student round (from round 0's checkpoint as teacher), each fp32 and
    bf16 + channels_last; (train section, checkpoint section)."""
    train: dict[str, Any] = {}
    ckpt: dict[str, Any] = {"status": "skipped", "reason": "round 0 did not run"}
    teacher = None
    for round_index, name in ((0, "round0"), (sizes.student_round, "student")):
        section: dict[str, Any] = {}
        for key, fast in (("fp32", False), ("bf16_channels_last", True)):
            if round_index and teacher is None:
                section[key] = {"status": "skipped", "reason": "no round-0 checkpoint"}
                continue
            say(f"Trainer round {round_index} {key}: batch {sizes.train_batch}, crop "
                f"{sizes.crop} ...")
            trainer, result = measure_trainer(
                paper, sizes, root, fast, round_index,
                root.parent / "state" / f"r{round_index}_{key}", workers, dev,
                init=teacher if round_index else None, pseudo=pseudo if round_index else None)
            section[key] = result
            if result["status"] == "ran":
                say(f"Trainer round {round_index} {key}: {result['steps_per_s']:.3f} steps/s, "
                    f"{result['images_per_s']:.2f} img/s (model alone "
                    f"{result['compute_images_per_s']:.2f}), waited "
                    f"{100 * result['loader_wait_fraction']:.0f} %, peak "
                    f"{result['peak_memory_gib']:.2f} GiB")
                if round_index == 0 and teacher is None:
                    ckpt = measure_checkpoint(trainer, dev)
                    teacher = trainer.state_dir / "last.pt"
                    say(f"checkpoint: save {ckpt['save_s']:.2f} s, resume "
                        f"{ckpt['resume_s']:.2f} s, {ckpt['mib']:.0f} MiB")
            del trainer
            free_trainer(dev)
        if all(section[k].get("status") == "ran" for k in ("fp32", "bf16_channels_last")):
            section["speedup"] = (section["bf16_channels_last"]["images_per_s"]
                                  / section["fp32"]["images_per_s"])
        train[name] = section
    return train, ckpt



def write_random_images(folder: Path, sizes: Sizes) -> list[Sample]:
    """Random RGB PNGs (uncompressed, so writing them is quick) as split samples."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(sizes.images):
        path = folder / f"img{i:03d}.png"
        pixels = rng.integers(0, 256, (*sizes.image_hw, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, compress_level=0)
        samples.append(Sample(f"img{i:03d}", path, None))
    return samples


def measure_inference(dev: torch.device, sizes: Sizes, samples: list[Sample], fast: bool
                      ) -> dict[str, Any]:
    """Mpx/s of the workflow's ``predict_labels`` (sliding window with flip, the paper
    configs' batch of 4) over the image files, and of ``sliding_scores`` alone on
    GPU-resident images."""
    model = fresh_model(dev, sizes, fast).eval()
    options = PredictOptions(mode="sliding", crop_size=sizes.crop, stride_ratio=STRIDE_RATIO,
                             flip=True, bf16=fast)
    indices = list(range(len(samples)))
    mpx = len(samples) * math.prod(sizes.image_hw) / 1e6

    def predict(idx: list[int]) -> None:
        for _, prediction, _ in predict_labels(model, samples, idx, sizes.infer_batch,
                                               options):
            assert prediction.shape == sizes.image_hw

    predict(indices[:sizes.infer_batch])  # warm-up: cuDNN picks kernels for the window shapes
    reset_peak(dev)
    sync(dev)
    t0 = time.perf_counter()
    predict(indices)
    sync(dev)
    workflow_s = time.perf_counter() - t0
    workflow_peak = peak_gib(dev)

    x = torch.rand(sizes.infer_batch, 3, *sizes.image_hw, device=dev)
    if fast and dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def windows() -> None:
        with bf16_autocast(dev, fast):
            sliding_scores(model, x, sizes.crop, STRIDE_RATIO, False)

    reset_peak(dev)
    reps, sliding_s = timed(windows, 1, sizes.repeats, sizes.step_cap_s, dev)
    result = {
        "predict_mpx_per_s": mpx / workflow_s, "predict_seconds": workflow_s,
        "predict_peak_memory_gib": workflow_peak, "images": len(samples),
        "image_hw": list(sizes.image_hw), "batch": sizes.infer_batch, "crop": sizes.crop,
        "stride_ratio": STRIDE_RATIO, "flip": True, "sliding_flip": False,
        "sliding_mpx_per_s": reps * x.shape[0] * math.prod(sizes.image_hw) / 1e6 / sliding_s,
        "sliding_peak_memory_gib": peak_gib(dev), "autocast_bf16": fast and dev.type == "cuda",
    }
    return result


def measure_loader(sizes: Sizes, spec: Any, workers: int, train: dict[str, Any]
                   ) -> dict[str, Any]:
    """samples/s of the training loader alone (bench_loader's, on the Trainer's images) at the
    Trainer's crop, batch and workers for both released scale ranges, each over the bf16
    Trainer's own rate without its waits (``compute_images_per_s``) of the round that uses
    that range: below 1 the GPU waits for its input."""
    import bench_loader

    result: dict[str, Any] = {"workers": workers, "batch": sizes.train_batch, "crop": sizes.crop}
    for name, scale in bench_loader.SCALES.items():
        rate, rss = bench_loader.loader_rate(spec, workers, sizes.loader_samples,
                                             sizes.train_batch, sizes.crop, scale)
        result[name] = {"scale": list(scale), "samples_per_s": rate,
                        "peak_rss_mib_per_worker": rss}
    ratios = {}
    for key, section in train.items():
        run = section.get("bf16_channels_last", {})
        if run.get("status") == "ran":
            scale = "r2" if run["scale_range"][1] > 2.0 else "r01"
            ratios[f"over_train_{key}"] = (result[scale]["samples_per_s"]
                                           / run["compute_images_per_s"])
    result.update(ratios)
    result["over_train"] = min(ratios.values()) if ratios else None
    return result


def _ddp_worker(rank: int, world_size: int, port: int, sizes: Sizes, out: str) -> None:
    """One rank of the DDP measurement: joins the group the way ``torchrun`` makes
    ``distributed.setup`` do, wraps the model (SyncBN + DDP on GPUs) and times steps."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    world = distributed.setup()
    dev = world.device
    fast = dev.type == "cuda"
    if fast:
        torch.backends.cudnn.benchmark = True
    reset_peak(dev)
    model = fresh_model(dev, sizes, fast).train()
    net = distributed.wrap(model, world)
    x, y = fixed_batch(dev, sizes, fast, seed=rank)  # each rank its own share of the batch

    step = train_step_fn(net, model, x, y, dev, fast)

    def synced_step() -> None:
        step()
        distributed.barrier(world)

    # no time cap: each rank would stop at its own clock and leave the other waiting in an
    # all-reduce; 20 steps are seconds on GPUs
    steps, seconds = timed(synced_step, sizes.warmup, sizes.steps, math.inf, dev)
    if world.is_main:
        Path(out).write_text(json.dumps({
            "images_per_s": steps * sizes.ddp_batch * world.size / seconds,
            "step_ms": 1e3 * seconds / steps, "timed_steps": steps, "world_size": world.size,
            "per_gpu_batch": sizes.ddp_batch, "backend": torch.distributed.get_backend(),
            "sync_batchnorm": any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules()),
            "peak_memory_gib_rank0": peak_gib(dev), "autocast_bf16": fast}))
    distributed.teardown(world)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_ddp(dev: torch.device, sizes: Sizes, dry: bool) -> dict[str, Any]:
    """2-process DDP images/s and its scaling over one process of the same step at the same
    per-GPU batch (bf16 + channels_last on CUDA). On CPU (dry) it runs over gloo."""
    if dev.type == "cuda" and torch.cuda.device_count() < 2:
        return {"status": "skipped",
                "reason": f"{torch.cuda.device_count()} CUDA device(s); DDP scaling needs 2"}
    if dev.type != "cuda" and not dry:
        return {"status": "skipped", "reason": "no CUDA device"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), sizes, str(out)),
                                    nprocs=2, join=True)
        result = json.loads(out.read_text())
    single = measure_train(dev, sizes, dev.type == "cuda")["images_per_s"]
    return {"status": "ran", **result, "single_images_per_s": single,
            "speedup_vs_1": result["images_per_s"] / single,
            "scaling_efficiency": result["images_per_s"] / (2 * single)}


def figures(report: dict[str, Any]) -> dict[str, float]:
    """The headline numbers, flat (every one a positive float; a measurement that did not run
    has none)."""
    out: dict[str, float] = {}
    for name, section in report["train"].items():
        for key, short in (("fp32", "fp32"), ("bf16_channels_last", "bf16_cl")):
            run = section[key]
            if run.get("status") == "ran":
                out[f"trainer_{name}_steps_s_{short}"] = run["steps_per_s"]
                out[f"trainer_{name}_img_s_{short}"] = run["images_per_s"]
                out[f"trainer_{name}_compute_img_s_{short}"] = run["compute_images_per_s"]
                out[f"trainer_{name}_peak_gib_{short}"] = run["peak_memory_gib"]
        if "speedup" in section:
            out[f"trainer_{name}_speedup_bf16_cl"] = section["speedup"]
    if report["checkpoint"].get("save_s") is not None:
        out["checkpoint_save_s"] = report["checkpoint"]["save_s"]
        out["checkpoint_resume_s"] = report["checkpoint"]["resume_s"]
    infer = report["inference"]
    out.update({
        "infer_mpx_s_fp32": infer["fp32"]["predict_mpx_per_s"],
        "infer_mpx_s_bf16": infer["bf16"]["predict_mpx_per_s"],
        "sliding_mpx_s_fp32": infer["fp32"]["sliding_mpx_per_s"],
        "sliding_mpx_s_bf16": infer["bf16"]["sliding_mpx_per_s"],
        "infer_peak_gib_fp32": infer["fp32"]["predict_peak_memory_gib"],
        "infer_peak_gib_bf16": infer["bf16"]["predict_peak_memory_gib"],
        **{f"loader_samples_s_{k}": v["samples_per_s"] for k, v in report["loader"].items()
           if isinstance(v, dict)},
    })
    if report["loader"]["over_train"] is not None:
        out["loader_over_train"] = report["loader"]["over_train"]
    if report["ddp"]["status"] == "ran":
        out["ddp_img_s"] = report["ddp"]["images_per_s"]
        out["ddp_scaling_efficiency"] = report["ddp"]["scaling_efficiency"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, toy sizes (the test's mode)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_check.json")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    parser.add_argument("--config", help="paper config to time (default: "
                        f"{FULL.config})")
    parser.add_argument("--train-batch", type=int, help="train.batch_size (default: the "
                        "config's; students half labeled, half pseudo-labeled)")
    parser.add_argument("--student-round", type=int, help="default: the config's last")
    parser.add_argument("--warmup", type=int, help="untimed Trainer steps per measurement")
    parser.add_argument("--steps", type=int, help="timed round-0 Trainer steps per precision")
    parser.add_argument("--student-steps", type=int, help="timed student steps per precision")
    parser.add_argument("--step-cap-s", type=float, help="timed seconds per Trainer "
                        "measurement before it stops early (at least 2 steps)")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    sizes = DRY if args.dry else FULL
    sizes = replace(sizes, **{k: v for k, v in (
        ("config", args.config), ("train_batch", args.train_batch),
        ("student_round", args.student_round), ("warmup", args.warmup), ("steps", args.steps),
        ("student_steps", args.student_steps), ("step_cap_s", args.step_cap_s))
        if v is not None})
    dev = torch.device("cpu") if args.dry else torch.device("cuda")
    if not args.dry and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry for the CPU check", file=sys.stderr)
        return 2
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does for a fixed crop size
    paper = paper_config(sizes)
    sizes = resolve(sizes, paper)
    workers = max(len(os.sched_getaffinity(0)) - 1, 1)  # a 1-GPU job's default
    report: dict[str, Any] = {"dry": args.dry, "machine": machine_info(dev),
                              "num_classes": NUM_CLASSES, "sizes": asdict(sizes),
                              "config": {"path": sizes.config, "train": paper["train"],
                                         "infer": paper["infer"], "gpus": paper.get("gpus")}}
    say(f"{report['machine']['gpus'] or 'CPU'}, torch {torch.__version__}, "
        f"{'dry' if args.dry else 'full'} sizes, {sizes.config}")

    if args.skip_tests:
        report["cuda_tests"] = {"skipped": "--skip-tests"}
    else:
        say("pytest -m cuda ...")
        report["cuda_tests"] = run_cuda_tests(sizes)
        say(f"cuda tests: {report['cuda_tests']['passed']} passed, "
            f"{report['cuda_tests']['failed']} failed, {report['cuda_tests']['skipped']} "
            f"skipped, rc {report['cuda_tests']['returncode']}")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        say(f"writing {sizes.distinct_images} images of {sizes.image_hw} as "
            f"{sizes.train_images} ids per split ...")
        spec, pseudo = write_train_dataset(root, sizes)
        report["train"], report["checkpoint"] = measure_training(paper, sizes, root, pseudo,
                                                                 workers, dev)
        say("loader alone ...")
        report["loader"] = measure_loader(sizes, spec, workers, report["train"])
        say(f"loader: {json.dumps(report['loader'])}")

    inference = {}
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_random_images(Path(tmp), sizes)
        for key, fast in (("fp32", False), ("bf16", True)):
            say(f"inference {key}: {len(samples)} images of {sizes.image_hw}, batch "
                f"{sizes.infer_batch} ...")
            inference[key] = measure_inference(dev, sizes, samples, fast)
            say(f"inference {key}: predict_labels {inference[key]['predict_mpx_per_s']:.2f}"
                f" Mpx/s, sliding_scores {inference[key]['sliding_mpx_per_s']:.2f} Mpx/s")
    inference["speedup"] = (inference["bf16"]["predict_mpx_per_s"]
                            / inference["fp32"]["predict_mpx_per_s"])
    report["inference"] = inference

    say("DDP ...")
    report["ddp"] = measure_ddp(dev, sizes, args.dry)
    say(f"DDP: {report['ddp'].get('images_per_s', report['ddp'].get('reason'))}")

    report["figures"] = figures(report)
    report["forbidden_imports"] = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    report["seconds_total"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    say(f"wrote {args.out} in {report['seconds_total']:.0f} s: "
        + json.dumps({k: round(v, 3) for k, v in report["figures"].items()}))
    # pytest's 5 = nothing collected; a failure fails the check, and so does a timeout (None)
    # on the GPU machine; a dry run only checks the plumbing, whose CPU may be loaded
    ok = (0, 5, None) if args.dry else (0, 5)
    return 0 if report["cuda_tests"].get("returncode", 0) in ok else 1


if __name__ == "__main__":
    sys.exit(main())
