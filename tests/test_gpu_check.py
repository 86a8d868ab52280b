"""benchmarks/gpu_check.py --dry on the CPU: the GPU check keeps running between GPU loans."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {"machine", "sizes", "cuda_tests", "train", "inference", "loader", "ddp", "figures",
            "forbidden_imports", "seconds_total"} <= report.keys()
    assert report["dry"] is True and report["machine"]["torch"]
    # the GPU machine has no zarr/jsonschema/snakemake: nothing on the script's path imports them
    assert report["forbidden_imports"] == []
    # pytest -m cuda ran on the marked files (all skipped on a CPU)
    tests = report["cuda_tests"]
    assert "tests/test_cuda.py" in tests["files"] and tests["returncode"] == 0
    assert tests["skipped"] >= 1 and tests["failed"] == tests["errors"] == 0
    # DDP ran (gloo, 2 processes) and every headline figure is a positive finite number
    assert report["ddp"]["status"] == "ran" and report["ddp"]["world_size"] == 2
    expected = {"train_img_s_fp32", "train_img_s_bf16_cl", "train_speedup_bf16_cl",
                "train_peak_gib_fp32", "train_peak_gib_bf16_cl", "infer_mpx_s_fp32",
                "infer_mpx_s_bf16", "sliding_mpx_s_fp32", "sliding_mpx_s_bf16",
                "infer_peak_gib_fp32", "infer_peak_gib_bf16", "ddp_img_s",
                "ddp_scaling_efficiency", "loader_samples_s_r01", "loader_samples_s_r2",
                "loader_over_train"}
    assert report["figures"].keys() == expected
    for name, value in report["figures"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, name
    train = report["train"]
    assert train["fp32"]["timed_steps"] == train["bf16_channels_last"]["timed_steps"] >= 1
    assert report["inference"]["fp32"]["flip"] is True  # the released protocol
    assert report["loader"]["workers"] >= 1
    assert "wrote" in proc.stdout
