"""Benchmark of the training input (issue 20): samples/s per core at paper scale, and the loader.

On a synthetic Cityscapes-shaped sample (1024 x 2048 RGB PNG and 19-class mask PNG, written to a
temporary folder), with the released augmentation (rotation +-10 deg p 0.5, 5 x 5 blur p 0.5,
flip p 0.5), for crops 713 and 361 and the scale ranges of rounds 0-1 ([0.5, 2.0]) and round 2
([0.5, 3.0]), one thread:

- ``ours``: ``SegmentationDataset`` with :func:`dars.data.transforms.train_transform` (decode,
  augment on uint8, normalise the crop); ``fused``: the same with ``train.augment: fused``
  (one warp of only the crop; ``ratio_fused`` = fused / released);
- ``released``: the same draws through the re-statement of the authors' transform in
  tests/test_transforms.py (cv2 on uint8, every step on the whole image), decoded the
  authors' way (``cv2.imread``) and normalised after the crop -- the reference;
- ``torchvision``: the same whole-image steps with ``torchvision.transforms.v2`` on uint8
  tensors (augmentation only, to say which library is faster for the same work).

Ours and the reference alternate sample by sample, so load on a shared machine hits both alike;
``ratio`` = ours / released (in samples/s). Before that, the DataLoader (the training loader,
batch 8) at crop 713, scale [0.5, 3.0] with 1, 2 and all cores' workers: samples/s and the
peak RSS of its largest worker.
The last line of output is one JSON object.

    .venv/bin/python benchmarks/bench_loader.py            # ~3 min on an idle 2-core machine
    .venv/bin/python benchmarks/bench_loader.py --samples 4 --loader-samples 16   # quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from dars.data.dataset import DatasetSpec, SegmentationDataset, to_tensor
from dars.data.transforms import MEAN_COLOUR, Draw, train_transform
from dars.engine import distributed
from dars.engine.loader import train_loader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_transforms import released  # noqa: E402  (the re-statement the test checks against)

log = logging.getLogger("bench_loader")
H, W, CLASSES, IGNORE = 1024, 2048, 19, 255
SCALES = {"r01": (0.5, 2.0), "r2": (0.5, 3.0)}
CROPS = (713, 361)


def write_dataset(root: Path, images: int, h: int = H, w: int = W) -> DatasetSpec:
    """Street-like PNGs: smooth colour fields with fine texture (compresses like a photo) and a
    blocky 19-class mask with some ignore, listed in a split file; their dataset."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = []
    for i in range(images):
        coarse = rng.integers(0, 256, (max(h // 16, 1), max(w // 16, 1), 3), dtype=np.uint8)
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 12, (h, w, 3), dtype=np.uint8))
        mask = rng.integers(0, CLASSES, (max(h // 32, 1), max(w // 32, 1)), dtype=np.uint8)
        mask[rng.random(mask.shape) < 0.1] = IGNORE
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{i}.png")
        lines.append(f"images/{i}.png masks/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    splits = {"labeled": "train.txt", "unlabeled": "train.txt", "val": "train.txt"}
    return DatasetSpec(root, [f"c{k}" for k in range(CLASSES)], IGNORE, splits)


def torchvision_v2(image: np.ndarray, mask: np.ndarray, d: Draw, crop: int) -> None:
    """The released whole-image steps with torchvision.transforms.v2 on uint8 tensors."""
    from torchvision.transforms.v2 import InterpolationMode as I  # noqa: N814
    from torchvision.transforms.v2 import functional as TF  # noqa: N812

    x, y = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask)[None]
    size = [round(H * d.scale), round(W * d.scale)]
    x = TF.resize(x, size, I.BILINEAR, antialias=False)
    y = TF.resize(y, size, I.NEAREST)
    if d.angle is not None:
        x = TF.rotate(x, d.angle, I.BILINEAR, fill=list(MEAN_COLOUR))
        y = TF.rotate(y, d.angle, I.NEAREST, fill=[IGNORE])
    if d.blur:
        x = TF.gaussian_blur(x, [5, 5], [1.1, 1.1])
    if d.flip:
        x, y = TF.horizontal_flip(x), TF.horizontal_flip(y)
    ph, pw = max(crop - size[0], 0), max(crop - size[1], 0)
    borders = [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2]
    x, y = TF.pad(x, borders, fill=list(MEAN_COLOUR)), TF.pad(y, borders, fill=IGNORE)
    x[:, :crop, :crop].float(), y[:, :crop, :crop].long()


def per_core(spec: DatasetSpec, samples: int, crop: int,
             scale: tuple[float, float]) -> dict[str, float]:
    """ms per sample of ours, the released re-statement and torchvision v2, one thread."""
    transform = train_transform(scale, crop, True, IGNORE, rotate=10, blur=True)
    ours = SegmentationDataset(spec, spec.samples("labeled"), transform)
    fused = SegmentationDataset(spec, spec.samples("labeled"), train_transform(
        scale, crop, True, IGNORE, rotate=10, blur=True, fused=True))
    rng = np.random.default_rng(1)
    times = {"ours": 0.0, "fused": 0.0, "released": 0.0, "torchvision": 0.0}
    for i in range(samples):
        index, seed = i % len(ours), int(rng.integers(2**62))
        t = time.perf_counter()
        fused[(index, seed)]
        t0 = time.perf_counter()
        times["fused"] += t0 - t
        ours[(index, seed)]
        t1 = time.perf_counter()
        sample = ours.samples[index]
        image = cv2.cvtColor(cv2.imread(str(sample.image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
        d = transform.draw(np.random.default_rng(seed))
        x, y = released(image, mask, d, crop)
        to_tensor(x), torch.from_numpy(y.astype(np.int64))
        t2 = time.perf_counter()
        torchvision_v2(image, mask, d, crop)
        t3 = time.perf_counter()
        times["ours"] += t1 - t0
        times["released"] += t2 - t1
        times["torchvision"] += t3 - t2
    return {k: 1000 * v / samples for k, v in times.items()}


class WithRss(Dataset):
    """The dataset's items with the worker's id and peak RSS (KiB) so far."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        item = self.dataset[key]
        info = get_worker_info()
        return (*item, info.id if info else -1,
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def loader_rate(spec: DatasetSpec, workers: int, samples: int, batch: int, crop: int,
                scale: tuple[float, float]) -> tuple[float, float]:
    """(samples/s over ``samples`` samples, worker start included; peak RSS of the largest
    worker in MiB, which counts the pages it shares with the main process)."""
    transform = train_transform(scale, crop, True, IGNORE, rotate=10, blur=True)
    pool = spec.samples("labeled")
    data = SegmentationDataset(spec, (pool * (samples // len(pool) + 1))[:samples], transform)
    loader = train_loader(WithRss(data), batch, workers, distributed.World(), seed=0)
    seen, peak = 0, 0
    t0 = time.perf_counter()
    for x, _, _, _, rss in loader:
        seen += len(x)
        peak = max(peak, int(rss.max()))
    return seen / (time.perf_counter() - t0), peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12,
                        help="timed samples per crop and scale range")
    parser.add_argument("--loader-samples", type=int, default=48,
                        help="timed samples per worker count")
    parser.add_argument("--batch", type=int, default=8, help="loader batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cores = len(os.sched_getaffinity(0))
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "load_average_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = write_dataset(root, 8)
        # the loader first: a worker forked later would count the pages of the
        # whole-image references in its RSS
        for workers in sorted({1, 2, cores}):
            rate, rss = loader_rate(spec, workers, args.loader_samples, args.batch, 713,
                                    SCALES["r2"])
            results[f"loader_w{workers}_samples_s"] = round(rate, 2)
            results[f"loader_w{workers}_peak_rss_mib"] = round(rss, 1)
            log.info("loader, crop 713, scale [0.5, 3.0], %d workers: %.2f samples/s, peak "
                     "RSS of a worker %.0f MiB", workers, rate, rss)
        for crop in CROPS:
            for name, scale in SCALES.items():
                ms = per_core(spec, args.samples, crop, scale)
                key = f"crop{crop}_{name}"
                results[f"{key}_samples_s_ours"] = round(1000 / ms["ours"], 2)
                results[f"{key}_samples_s_released"] = round(1000 / ms["released"], 2)
                results[f"{key}_samples_s_torchvision"] = round(1000 / ms["torchvision"], 2)
                results[f"{key}_ratio"] = round(ms["released"] / ms["ours"], 2)
                results[f"{key}_samples_s_fused"] = round(1000 / ms["fused"], 2)
                results[f"{key}_ratio_fused"] = round(ms["released"] / ms["fused"], 2)
                log.info("crop %d scale %s: ours %.0f ms, released %.0f ms (%.2fx), fused "
                         "%.0f ms (%.2fx), torchvision v2 augmentation only %.0f ms", crop,
                         scale, ms["ours"], ms["released"], ms["released"] / ms["ours"],
                         ms["fused"], ms["released"] / ms["fused"], ms["torchvision"])
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
