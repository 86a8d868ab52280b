"""Soak test (issue 7): inference and thresholding on >= 5,000 demo-size images, flat memory.

Builds the embedded demo dataset with enough unlabeled 64x64 scenes, saves a tiny-model
teacher (width 32, as config/config.yaml; untrained: memory and speed do not depend on the
weights), then runs, each in its own fresh process so peak RSS is that stage's alone:

- ``dars infer`` (the real stage: teacher probabilities into ``probs.zarr``) and
- ``dars pseudo-label`` (the real stage: both passes, thresholds, PNGs, diagnostics)

on a small pool (``--small`` images) and on the full pool (``--images``). Thresholding reads the
store in blocks of about 4 MiB (one chunk file: 256 demo images), so its RSS is bounded by a
block; to show the plateau on longer stores, ``pseudo-label`` also runs on larger ones
(``--large``, by default 11,000 and 22,000 images) assembled from the inferred one (its arrays
repeated under new ids; built in the parent process, not measured). Memory is *flat* when peak
RSS stops growing with the number of images. Each child also samples its RSS every 0.25 s; the
report gives the RSS at 25/50/75/100 % of the run, so growth during a run would show too. The
last line of output is one JSON object with every figure.

    .venv/bin/python benchmarks/soak.py                     # 5,000 images (~5-10 min, 2 cores)
    .venv/bin/python benchmarks/soak.py --images 600 --small 100   # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIZE = 64
LABELED_FRACTION = 0.125


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def child(argv: list[str]) -> None:
    """Run one ``dars`` stage in this process while sampling RSS; print a JSON line."""
    from dars import cli

    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, _rss_mib()))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = cli.main(argv)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    if code:
        raise SystemExit(f"dars {argv[0]} failed with status {code}")

    def at(fraction: float) -> float:
        target = fraction * seconds
        return min(samples, key=lambda s: abs(s[0] - target))[1]

    print(json.dumps({
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_quartiles_mib": [round(at(f), 1) for f in (0.25, 0.5, 0.75, 1.0)],
    }))


def _run_child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", "--", *argv],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"child failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(work: Path, images: int, small: int) -> tuple[Path, Path]:
    """Demo dataset with >= ``images`` unlabeled scenes, split files for both pools, teacher."""
    import torch

    from dars.data.demo import DEMO_CLASSES, DemoOptions, build_demo
    from dars.models import build_model, checkpoint

    root = work / "data"
    if not (root / "splits" / "unlabeled.txt").is_file():
        num_train = math.ceil(images / (1 - LABELED_FRACTION)) + 2
        t0 = time.perf_counter()
        build_demo(root, DemoOptions(num_train=num_train, num_val=1, size=SIZE,
                                     labeled_fraction=LABELED_FRACTION, seed=0, scene="fashion"))
        print(f"built {num_train} demo scenes in {time.perf_counter() - t0:.0f} s", flush=True)
    lines = [ln for ln in (root / "splits" / "unlabeled.txt").read_text().splitlines() if ln]
    assert len(lines) >= images, (len(lines), images)
    for n in (small, images):
        (root / "splits" / f"unlabeled_{n}.txt").write_text("\n".join(lines[:n]) + "\n")
    teacher = work / "teacher.pt"
    model_config = {"name": "tiny", "width": 32, "backbone": None, "deep_stem": False,
                    "pretrained": None}
    torch.manual_seed(0)
    model = build_model(model_config, len(DEMO_CLASSES))
    checkpoint.save(teacher, {"model": model.state_dict(), "optimizer": {},
                              "model_config": model_config, "num_classes": len(DEMO_CLASSES),
                              "class_names": DEMO_CLASSES, "round": 0, "epoch": 0,
                              "iteration": 0, "signature": "soak", "history": []})
    return root, teacher


def _dataset(root: Path, unlabeled: str) -> dict:
    return {"name": "demo", "root": str(root), "classes": [], "ignore_index": 255,
            "image_pattern": None, "mask_pattern": None,
            "splits": {"labeled": "splits/labeled.txt", "unlabeled": f"splits/{unlabeled}.txt",
                       "val": "splits/val.txt"}}


def measure(work: Path, root: Path, teacher: Path, n: int, threads: int) -> dict:
    cfg = json.dumps({"dataset": _dataset(root, f"unlabeled_{n}"),
                      "infer": {"batch_size": 32}})
    store = work / f"probs_{n}.zarr"
    out: dict = {"images": n}
    out["infer"] = _run_child(["infer", "--config-json", cfg, "--model", str(teacher),
                               "--out", str(store), "--threads", str(threads)])
    hist = work / "label_histogram.csv"
    if not hist.exists():
        _run_child(["histogram", "--config-json", cfg, "--out", str(hist)])
    out["threshold"] = threshold(work, store, hist, n, threads)
    out["infer"]["images_per_s"] = round(n / out["infer"]["seconds"], 1)
    return out


def threshold(work: Path, store: Path, hist: Path, n: int, threads: int) -> dict:
    """The pseudo-label stage on ``store`` in a fresh process."""
    labels = work / f"labels_{n}"
    out = _run_child([
        "pseudo-label", "--options-json", json.dumps(
            {"alpha": 0.5, "method": "dars", "sampling": "paper", "seed": 0,
             "fixed_threshold": None}),
        "--store", str(store), "--label-hist", str(hist), "--labels-out", str(labels),
        "--thresholds-out", str(work / f"thresholds_{n}.csv"),
        "--stats-out", str(work / f"stats_{n}.csv"),
        "--summary-out", str(work / f"summary_{n}.json"), "--threads", str(threads)])
    pngs = sum(1 for _ in labels.glob("*.png"))
    assert pngs == n, (pngs, n)
    out["images_per_s"] = round(n / out["seconds"], 1)
    return out


def repeat_store(src: Path, dst: Path, n: int) -> Path:
    """A complete store of ``n`` images cycling the arrays of ``src`` (no probabilities)."""
    import numpy as np

    from dars.store.probstore import ProbStore, ProbStoreWriter

    source = ProbStore(src)
    m = len(source)
    writer = ProbStoreWriter(dst, [f"rep{i:06d}" for i in range(n)],
                             [tuple(source.shapes[i % m]) for i in range(n)],
                             source.class_names)
    group, step = writer.group, 500
    for start in range(0, n, step):
        idx = np.arange(start, min(start + step, n)) % m
        lo = int(idx[0])
        if lo + len(idx) <= m:  # contiguous in the source
            conf = source.group["confidence"][lo:lo + len(idx)]
            pred = source.group["prediction"][lo:lo + len(idx)]
        else:
            conf = np.stack([source.group["confidence"][int(i)] for i in idx])
            pred = np.stack([source.group["prediction"][int(i)] for i in idx])
        stop = start + len(idx)
        group["confidence"][start:stop] = conf
        group["prediction"][start:stop] = pred
        group["written"][start:stop] = 1
    writer.finalize()
    return dst


def main() -> None:
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--") + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="full pool (>= 5000 for #7)")
    parser.add_argument("--small", type=int, default=500, help="small pool, the RSS baseline")
    parser.add_argument("--large", type=int, nargs="*", default=[11000, 22000],
                        help="extra thresholding runs on stores of this many images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep data and stores here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dars-soak-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root, teacher = prepare(work, args.images, args.small)
        runs = [measure(work, root, teacher, n, args.threads) for n in (args.small, args.images)]
        large = []
        for n in args.large:
            store = repeat_store(work / f"probs_{args.images}.zarr", work / f"probs_{n}.zarr", n)
            large.append(threshold(work, store, work / "label_histogram.csv", n, args.threads))
            large[-1]["images"] = n
    small, full = runs
    print(f"{'stage':<10}{'images':>8}{'seconds':>9}{'img/s':>8}{'peak RSS MiB':>14}"
          f"  RSS at 25/50/75/100 % (MiB)")
    for run in runs:
        for stage in ("infer", "threshold"):
            r = run[stage]
            print(f"{stage:<10}{run['images']:>8}{r['seconds']:>9.1f}{r['images_per_s']:>8}"
                  f"{r['peak_rss_mib']:>14.1f}  {r['rss_quartiles_mib']}")
    for r in large:
        print(f"{'threshold':<10}{r['images']:>8}{r['seconds']:>9.1f}{r['images_per_s']:>8}"
              f"{r['peak_rss_mib']:>14.1f}  {r['rss_quartiles_mib']}  (repeated store)")
    result = {
        "images": args.images, "small": args.small, "threads": args.threads,
        "size": SIZE, "cpu": platform.processor() or platform.machine(),
        "load_average_end": round(os.getloadavg()[0], 2),
    }
    for stage in ("infer", "threshold"):
        result[f"{stage}_seconds"] = round(full[stage]["seconds"], 1)
        result[f"{stage}_images_per_s"] = full[stage]["images_per_s"]
        result[f"{stage}_peak_rss_mib"] = round(full[stage]["peak_rss_mib"], 1)
        result[f"{stage}_peak_rss_mib_small"] = round(small[stage]["peak_rss_mib"], 1)
        result[f"{stage}_rss_growth"] = round(full[stage]["peak_rss_mib"]
                                              / small[stage]["peak_rss_mib"], 3)
        result[f"{stage}_rss_quartiles_mib"] = full[stage]["rss_quartiles_mib"]
    for r in large:
        result[f"threshold_peak_rss_mib_{r['images']}"] = round(r["peak_rss_mib"], 1)
        result[f"threshold_images_per_s_{r['images']}"] = r["images_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
