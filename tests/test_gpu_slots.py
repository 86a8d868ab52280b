"""dars gpu-run: each job gets its own GPUs (file locks), torchrun for several, none for 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dars.core.errors import DarsError
from dars.jobs.gpu_slots import (
    acquire,
    gpu_pool,
    launch_command,
    lock_dir,
    split_threads,
    try_acquire,
)


def _run_wrapper(pool: str, locks: Path, gpus: int, script: str,
                 ddp: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": pool, "DARS_GPU_LOCK_DIR": str(locks)}
    cmd = [sys.executable, "-m", "dars.jobs.gpu_slots", "--gpus", str(gpus),
           *(["--ddp"] if ddp else []), "--", "sh", "-c", script]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_pool_comes_from_cuda_visible_devices() -> None:
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "2, 5,7"}) == ["2", "5", "7"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_lock_dir_is_per_machine_or_per_slurm_allocation() -> None:
    assert lock_dir({}).name == "dars-gpu-locks-local"
    assert lock_dir({"SLURM_JOB_ID": "42"}).name == "dars-gpu-locks-slurm-42"
    assert lock_dir({"DARS_GPU_LOCK_DIR": "/x/y"}) == Path("/x/y")


def test_concurrent_jobs_get_disjoint_gpus(tmp_path: Path) -> None:
    """Three 1-GPU jobs on a 3-GPU pool run at once, each on a different device."""
    script = 'echo "$CUDA_VISIBLE_DEVICES"; sleep 1.5'
    procs = [_run_wrapper("0,1,2", tmp_path, 1, script) for _ in range(3)]
    seen = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(seen) == ["0", "1", "2"], [p.stderr for p in procs]
    # the locks died with the jobs: all three devices are free again
    ids, fds = try_acquire(["0", "1", "2"], 3, tmp_path)
    assert ids == ["0", "1", "2"]
    for fd in fds:
        os.close(fd)


def test_busy_gpu_makes_the_next_job_wait(tmp_path: Path) -> None:
    started = tmp_path / "first-holds-gpu-7"
    first = _run_wrapper("7", tmp_path, 1, f"touch {started}; sleep 2; date +%s.%N")
    deadline = time.monotonic() + 60
    while not started.exists():  # the first job runs, so it holds GPU 7's lock
        assert time.monotonic() < deadline and first.poll() is None, "first job never started"
        time.sleep(0.01)
    second = _run_wrapper("7", tmp_path, 1, "date +%s.%N")
    end_first = float(first.communicate(timeout=60)[0])
    out, err = second.communicate(timeout=60)
    assert float(out) >= end_first
    assert "waiting for 1 free GPU(s) among 7" in err


def test_two_gpu_job_gets_two_devices_and_zero_hides_all(tmp_path: Path) -> None:
    two = _run_wrapper("3,4,5", tmp_path, 2, 'echo "$CUDA_VISIBLE_DEVICES"')
    assert two.communicate(timeout=60)[0].strip() == "3,4"
    none = _run_wrapper("3,4,5", tmp_path, 0, 'echo "[$CUDA_VISIBLE_DEVICES]"')
    out, err = none.communicate(timeout=60)
    assert out.strip() == "[]" and "asks for none (config `gpus: 0`)" in err


def test_more_gpus_than_visible_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DarsError, match="needs 3 GPU.*only 2 are visible"):
        acquire(["0", "1"], 3, tmp_path)
    proc = _run_wrapper("0", tmp_path, 2, "true")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "error: job needs 2 GPU(s)" in err


def test_ddp_launch_uses_torchrun_and_shares_the_threads() -> None:
    cmd = ["dars", "train", "--round", "1", "--threads", "8"]
    assert launch_command(cmd, 1, ddp=True) == cmd
    assert launch_command(cmd, 4, ddp=False) == cmd
    assert launch_command(cmd, 4, ddp=True) == [
        "torchrun", "--standalone", "--nproc_per_node=4", "--no-python",
        "dars", "train", "--round", "1", "--threads", "2"]
    assert split_threads(["x", "--threads=3"], 4) == ["x", "--threads=1"]
    with pytest.raises(DarsError, match="no command"):
        launch_command([], 1, ddp=False)
