"""GPU check (issue 15, item 3): the CUDA tests and the paper model's speed, in one JSON.

On a CUDA machine, in about 5 minutes (budget: 8 on one H200), this

1. runs the CUDA-marked tests (``pytest -m cuda`` on the test files that carry the marker);
2. times PSPNet-ResNet50 (deep stem, 19 classes, random init) training steps at crop 713 on
   one fixed random batch, fp32 vs bf16 autocast + channels_last (same steps, same data, same
   initial weights; warm-up steps untimed; ``torch.cuda.synchronize`` around the timing);
3. times sliding-window inference on 1024x2048 random images through what ``dars infer``
   runs, ``predict_labels`` (PNG decode one batch ahead, windows of 713 at stride 2/3 with flip
   as released, argmax and float16 confidence on the GPU, only those to the CPU), and through
   ``sliding_scores`` on GPU-resident images (the network alone, no flip), fp32 and bf16;
3b. times the training input: the training loader (decode, released augmentation at crop 713,
   scale ranges [0.5, 2.0] and [0.5, 3.0]) on 1024x2048 PNGs with every core but one as
   workers, beside the bf16 training rate (``loader_over_train`` < 1: the GPU waits);
4. records peak GPU memory (``torch.cuda.max_memory_allocated``) of every measurement;
5. with two or more GPUs, times 2-GPU DDP training (NCCL, SyncBN, via
   ``dars.engine.distributed`` as ``torchrun`` would), else records why it was skipped;

and writes one JSON (default ``benchmarks/gpu_check.json``): ``machine``, ``sizes``,
``cuda_tests``, ``train``, ``inference``, ``ddp``, ``figures`` (the headline numbers, flat),
``loader``, ``forbidden_imports`` and ``seconds_total``.

``--dry`` runs the same code paths on the CPU at toy sizes (the tiny model, crop 33, 2 images,
1-2 steps, DDP over gloo) in seconds; tests/test_gpu_check.py runs it so the script cannot
rot. Peak memory on the CPU is the process's maximum RSS.

Only torch, torchvision, numpy, pandas, pillow, pyyaml, tqdm, pytest and opencv-python-headless
(the project's image decoding and augmentation; carry its wheel if the machine lacks it) are
assumed on the GPU machine, so nothing here imports a module that needs zarr, jsonschema or
snakemake (the JSON lists any that got imported anyway). The training step is therefore
written out here (CE + 0.4 x aux CE, SGD with the 10x head group) instead of importing
``dars.engine.train``, whose config import needs jsonschema.

    PYTHONPATH=src python benchmarks/gpu_check.py              # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --dry --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dars.atomic import write_json
from dars.constants import IGNORE
from dars.data.splits import Sample
from dars.engine import distributed
from dars.engine.predict import PredictOptions, bf16_autocast, predict_labels
from dars.engine.sliding import sliding_scores
from dars.models import build_model
from dars.models.backbone import lr_groups

REPO = Path(__file__).resolve().parents[1]
PSPNET_R50 = {"name": "pspnet", "backbone": "resnet50", "deep_stem": True}
NUM_CLASSES = 19
AUX_WEIGHT = 0.4  # train.aux_weight of the PSPNet configs (dars.engine.train needs jsonschema)
STRIDE_RATIO = 2 / 3
FORBIDDEN = ("zarr", "jsonschema", "snakemake", "hypothesis")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and time caps of one check; the caps bound every timed loop."""

    model: dict[str, Any]
    crop: int
    batch: int  # training images per step and per GPU
    warmup: int
    steps: int
    image_hw: tuple[int, int]  # inference image size
    images: int  # inference images (predict_labels)
    infer_batch: int
    repeats: int  # sliding_scores repetitions on GPU-resident images
    step_cap_s: float  # timed seconds per training measurement before it stops early
    tests_timeout_s: float
    loader_samples: int  # samples the training loader delivers per scale range


FULL = Sizes(model=PSPNET_R50, crop=713, batch=8, warmup=5, steps=20, image_hw=(1024, 2048),
             images=8, infer_batch=4, repeats=4, step_cap_s=45.0, tests_timeout_s=150.0,
             loader_samples=320)
# The tiny model keeps the dry run to seconds on a shared 2-core machine (PSPNet-R50 at crop 33
# took minutes there); every code path but the model is the same.
DRY = Sizes(model={"name": "tiny", "width": 8}, crop=33, batch=2, warmup=1, steps=2,
            image_hw=(48, 96), images=2, infer_batch=2, repeats=1, step_cap_s=30.0,
            tests_timeout_s=120.0, loader_samples=8)


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
    x = torch.randn(sizes.batch, 3, sizes.crop, sizes.crop, generator=g)
    y = torch.randint(0, NUM_CLASSES, (sizes.batch, sizes.crop, sizes.crop), generator=g)
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
    result = {"images_per_s": steps * sizes.batch / seconds, "step_ms": 1e3 * seconds / steps,
              "timed_steps": steps, "warmup_steps": sizes.warmup, "batch": sizes.batch,
              "crop": sizes.crop, "peak_memory_gib": peak_gib(dev),
              "autocast_bf16": fast and dev.type == "cuda"}
    return result


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
        for _, prediction, _, _ in predict_labels(model, samples, idx, sizes.infer_batch,
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


def measure_loader(sizes: Sizes, train_images_per_s: float) -> dict[str, Any]:
    """samples/s of the training loader at crop ``sizes.crop`` for both released scale
    ranges, with every core but one as workers (the default of a 1-GPU job), and the slower
    one over the model's training rate: below 1 the GPU waits for its input."""
    import bench_loader  # next to this script: its synthetic street scenes

    workers = max(len(os.sched_getaffinity(0)) - 1, 1)
    result: dict[str, Any] = {"workers": workers, "batch": sizes.batch, "crop": sizes.crop}
    with tempfile.TemporaryDirectory() as tmp:
        spec = bench_loader.write_dataset(Path(tmp), 8, *sizes.image_hw)
        for name, scale in bench_loader.SCALES.items():
            rate, rss = bench_loader.loader_rate(spec, workers, sizes.loader_samples,
                                                 sizes.batch, sizes.crop, scale)
            result[name] = {"scale": list(scale), "samples_per_s": rate,
                            "peak_rss_mib_per_worker": rss}
    result["over_train"] = min(result[k]["samples_per_s"] for k in bench_loader.SCALES
                               ) / train_images_per_s
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
            "images_per_s": steps * sizes.batch * world.size / seconds,
            "step_ms": 1e3 * seconds / steps, "timed_steps": steps, "world_size": world.size,
            "per_gpu_batch": sizes.batch, "backend": torch.distributed.get_backend(),
            "sync_batchnorm": any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules()),
            "peak_memory_gib_rank0": peak_gib(dev), "autocast_bf16": fast}))
    distributed.teardown(world)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_ddp(dev: torch.device, sizes: Sizes, dry: bool, single: float) -> dict[str, Any]:
    """2-process DDP images/s and its scaling over one process of the same per-GPU batch
    (``single``: the bf16 + channels_last figure on CUDA). On CPU (dry) it runs over gloo."""
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
    return {"status": "ran", **result, "single_images_per_s": single,
            "speedup_vs_1": result["images_per_s"] / single,
            "scaling_efficiency": result["images_per_s"] / (2 * single)}


def figures(report: dict[str, Any]) -> dict[str, float]:
    """The headline numbers, flat (every one a positive float)."""
    train, infer = report["train"], report["inference"]
    out = {
        "train_img_s_fp32": train["fp32"]["images_per_s"],
        "train_img_s_bf16_cl": train["bf16_channels_last"]["images_per_s"],
        "train_speedup_bf16_cl": train["speedup"],
        "train_peak_gib_fp32": train["fp32"]["peak_memory_gib"],
        "train_peak_gib_bf16_cl": train["bf16_channels_last"]["peak_memory_gib"],
        "infer_mpx_s_fp32": infer["fp32"]["predict_mpx_per_s"],
        "infer_mpx_s_bf16": infer["bf16"]["predict_mpx_per_s"],
        "sliding_mpx_s_fp32": infer["fp32"]["sliding_mpx_per_s"],
        "sliding_mpx_s_bf16": infer["bf16"]["sliding_mpx_per_s"],
        "infer_peak_gib_fp32": infer["fp32"]["predict_peak_memory_gib"],
        "infer_peak_gib_bf16": infer["bf16"]["predict_peak_memory_gib"],
        **{f"loader_samples_s_{k}": v["samples_per_s"] for k, v in report["loader"].items()
           if isinstance(v, dict)},
        "loader_over_train": report["loader"]["over_train"],
    }
    if report["ddp"]["status"] == "ran":
        out["ddp_img_s"] = report["ddp"]["images_per_s"]
        out["ddp_scaling_efficiency"] = report["ddp"]["scaling_efficiency"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, toy sizes (the test's mode)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_check.json")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    sizes = DRY if args.dry else FULL
    dev = torch.device("cpu") if args.dry else torch.device("cuda")
    if not args.dry and not torch.cuda.is_available():
        print("error: no CUDA device; use --dry for the CPU check", file=sys.stderr)
        return 2
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does for a fixed crop size
    report: dict[str, Any] = {"dry": args.dry, "machine": machine_info(dev),
                              "num_classes": NUM_CLASSES, "sizes": asdict(sizes)}
    say(f"{report['machine']['gpus'] or 'CPU'}, torch {torch.__version__}, "
        f"{'dry' if args.dry else 'full'} sizes")

    if args.skip_tests:
        report["cuda_tests"] = {"skipped": "--skip-tests"}
    else:
        say("pytest -m cuda ...")
        report["cuda_tests"] = run_cuda_tests(sizes)
        say(f"cuda tests: {report['cuda_tests']['passed']} passed, "
            f"{report['cuda_tests']['failed']} failed, {report['cuda_tests']['skipped']} "
            f"skipped, rc {report['cuda_tests']['returncode']}")

    train = {}
    for key, fast in (("fp32", False), ("bf16_channels_last", True)):
        say(f"training {key}: batch {sizes.batch}, crop {sizes.crop} ...")
        train[key] = measure_train(dev, sizes, fast)
        say(f"training {key}: {train[key]['images_per_s']:.2f} img/s, "
            f"peak {train[key]['peak_memory_gib']:.2f} GiB")
    train["speedup"] = (train["bf16_channels_last"]["images_per_s"]
                        / train["fp32"]["images_per_s"])
    report["train"] = train

    inference = {}
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_random_images(Path(tmp), sizes)
        for key, fast in (("fp32", False), ("bf16", True)):
            say(f"inference {key}: {len(samples)} images of {sizes.image_hw} ...")
            inference[key] = measure_inference(dev, sizes, samples, fast)
            say(f"inference {key}: predict_labels {inference[key]['predict_mpx_per_s']:.2f}"
                f" Mpx/s, sliding_scores {inference[key]['sliding_mpx_per_s']:.2f} Mpx/s")
    inference["speedup"] = (inference["bf16"]["predict_mpx_per_s"]
                            / inference["fp32"]["predict_mpx_per_s"])
    report["inference"] = inference

    fast_key = "bf16_channels_last" if dev.type == "cuda" else "fp32"
    report["loader"] = measure_loader(sizes, train[fast_key]["images_per_s"])
    say(f"loader: {json.dumps(report['loader'])}")

    say("DDP ...")
    report["ddp"] = measure_ddp(dev, sizes, args.dry, train[fast_key]["images_per_s"])
    say(f"DDP: {report['ddp'].get('images_per_s', report['ddp'].get('reason'))}")

    report["figures"] = figures(report)
    report["forbidden_imports"] = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    report["seconds_total"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    say(f"wrote {args.out} in {report['seconds_total']:.0f} s: "
        + json.dumps({k: round(v, 3) for k, v in report["figures"].items()}))
    # pytest's 5 = nothing collected; a timeout (None) or a failure fails the check
    return 0 if report["cuda_tests"].get("returncode", 0) in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())
