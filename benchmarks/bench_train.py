"""Benchmark of the training engine (issue 5): PSPNet-ResNet50 images/s, fp32 vs bf16+channels_last.

Times, in one process and on the same random batch, the engine's training step (forward with
the aux head, CE + 0.4 x aux CE, backward, SGD with the 10x head group) and inference (eval
forward + softmax) in two settings:

- ``fp32``: full precision, contiguous (NCHW) tensors;
- ``fast``: bf16 autocast + channels_last, which the engine enables on CUDA
  (``train.bf16``/``train.channels_last``, ``infer``/``evaluate`` ``bf16``).

The fast setting is forced here on any device, so a CPU run measures whether it would pay off
there too. The last line of output is one JSON object with ``train_img_s_fp32``,
``train_img_s_fast``, ``speedup``, ``infer_img_s_fp32``, ``infer_img_s_fast``,
``infer_speedup`` and ``device``.

    .venv/bin/python benchmarks/bench_train.py                  # CUDA: batch 16, crop 361
    .venv/bin/python benchmarks/bench_train.py --batch 2 --crop 97 --steps 3   # CPU check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import time
from collections.abc import Callable

import torch

from dars.engine.train import seg_loss
from dars.models import build_model
from dars.models.backbone import lr_groups

log = logging.getLogger("bench_train")
NUM_CLASSES = 19
MODEL = {"name": "pspnet", "backbone": "resnet50", "deep_stem": True}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_s(fn: Callable[[], None], images: int, steps: int, warmup: int,
                  device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return images * steps / (time.perf_counter() - t0)


def measure(device: torch.device, fast: bool, batch: int, crop: int, steps: int,
            warmup: int) -> tuple[float, float]:
    """(train images/s, inference images/s) of a fresh PSPNet-R50 in one precision setting."""
    torch.manual_seed(0)
    model = build_model(MODEL, NUM_CLASSES).to(device)
    layout = torch.channels_last if fast else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.SGD([{"params": p, "lr": 0.01 * m} for p, m in lr_groups(model, 10)],
                                lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, crop, crop, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, NUM_CLASSES, (batch, crop, crop), device=device)

    def precision() -> contextlib.AbstractContextManager:
        if fast:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step() -> None:
        with precision():
            loss = seg_loss(model(x), y, 255, aux_weight=0.4)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.inference_mode()
    def infer_step() -> None:
        with precision():
            model(x)["out"].float().softmax(1)

    model.train()
    train = _images_per_s(train_step, batch, steps, warmup, device)
    model.eval()
    infer = _images_per_s(infer_step, batch, steps, warmup, device)
    return train, infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--crop", type=int, default=361, help="square crop side")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per setting")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available()
                                                      else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop: let cuDNN pick the fastest kernels
        desc = torch.cuda.get_device_name(device)
    else:
        desc = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    log.info("PSPNet-ResNet50 (deep stem), %d classes, batch %d, crop %d, %d steps after %d "
             "warm-up, on %s", NUM_CLASSES, args.batch, args.crop, args.steps, args.warmup, desc)
    results = {}
    for fast in (False, True):
        key = "fast" if fast else "fp32"
        train, infer = measure(device, fast, args.batch, args.crop, args.steps, args.warmup)
        results[f"train_img_s_{key}"], results[f"infer_img_s_{key}"] = train, infer
        log.info("%-4s train %.2f img/s, inference %.2f img/s", key, train, infer)
    results.update(
        speedup=results["train_img_s_fast"] / results["train_img_s_fp32"],
        infer_speedup=results["infer_img_s_fast"] / results["infer_img_s_fp32"],
        device=desc, batch=args.batch, crop=args.crop, steps=args.steps)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
