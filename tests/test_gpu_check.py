"""benchmarks/gpu_check.py --dry on the CPU: the GPU check (the real Trainer, the loader beside it,
inference, DDP) keeps running between GPU loans."""

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
    assert {"machine", "sizes", "config", "cuda_tests", "train", "checkpoint", "inference",
            "loader", "ddp", "figures", "forbidden_imports", "seconds_total"} <= report.keys()
    assert report["dry"] is True and report["machine"]["torch"]
    # with the carried wheels (jsonschema) the GPU machine lacks only snakemake
    assert report["forbidden_imports"] == []
    # pytest -m cuda ran on the marked files (all skipped on a CPU)
    tests = report["cuda_tests"]
    assert "tests/test_cuda.py" in tests["files"] and tests["returncode"] == 0
    assert tests["skipped"] >= 1 and tests["failed"] == tests["errors"] == 0
    # the real Trainer: round 0 and the config's last (student) round, fp32 and bf16 +
    # channels_last, at the sizes' batch (students: two forwards of half the batch each)
    sizes, train = report["sizes"], report["train"]
    assert report["config"]["path"] == "config/cityscapes_1-8_crop713.yaml"
    assert sizes["student_round"] == 2 and sizes["train_batch"] == 4
    for name, round_index, forwards in (("round0", 0, 1), ("student", 2, 2)):
        for key in ("fp32", "bf16_channels_last"):
            run = train[name][key]
            assert run["status"] == "ran" and run["round"] == round_index, (name, key, run)
            assert run["forwards_per_step"] == forwards and run["batch"] == 4
            assert run["timed_steps"] == sizes["student_steps" if round_index else "steps"]
            assert 0 <= run["loader_wait_fraction"] < 1 and run["oom_at_batch"] is None
            assert run["channels_last"] is False  # CPU: the switches are CUDA-only
        assert train[name]["speedup"] > 0
    assert train["student"]["fp32"]["scale_range"] == [0.5, 3.0]
    # one checkpoint saved and resumed, both timed
    ckpt = report["checkpoint"]
    assert ckpt["round"] == 0 and ckpt["save_s"] > 0 and ckpt["resume_s"] > 0 and ckpt["mib"] > 0
    # DDP ran (gloo, 2 processes) and every headline figure is a positive finite number
    assert report["ddp"]["status"] == "ran" and report["ddp"]["world_size"] == 2
    expected = {f"trainer_{name}_{what}_{key}" for name in ("round0", "student")
                for what in ("steps_s", "img_s", "compute_img_s", "peak_gib")
                for key in ("fp32", "bf16_cl")}
    expected |= {"trainer_round0_speedup_bf16_cl", "trainer_student_speedup_bf16_cl",
                 "checkpoint_save_s", "checkpoint_resume_s", "infer_mpx_s_fp32",
                 "infer_mpx_s_bf16", "sliding_mpx_s_fp32", "sliding_mpx_s_bf16",
                 "infer_peak_gib_fp32", "infer_peak_gib_bf16", "ddp_img_s",
                 "ddp_scaling_efficiency", "loader_samples_s_r01", "loader_samples_s_r2",
                 "loader_over_train"}
    assert report["figures"].keys() == expected
    for name, value in report["figures"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, name
    # the loader beside the Trainer's rate of the round that uses each scale range
    loader = report["loader"]
    assert loader["workers"] >= 1 and loader["batch"] == 4
    assert loader["over_train"] == min(loader["over_train_round0"],
                                       loader["over_train_student"])
    # inference with flip (the released protocol) at the sizes' batch
    infer = report["inference"]["fp32"]
    assert infer["flip"] is True and infer["batch"] == sizes["infer_batch"] == 2
    assert "wrote" in proc.stdout
