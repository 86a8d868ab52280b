"""The tiny workflow on a real one-node SLURM cluster, through profiles/slurm.

`make test-slurm` runs this (as root: it installs the Debian SLURM packages when missing and
starts munged, slurmctld and slurmd with scripts/slurm/start.sh, stopping them by PID after).
Elsewhere it skips with the reason, unless DARS_REQUIRE_SLURM=1 (set by `make test-slurm`)
turns the skip into a failure. Takes a few minutes: the slurm executor polls job status.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import BIN, REPO, SNAKEFILE, shared_tiny_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPTS = REPO / "scripts" / "slurm"
PARTITION = "debug"
# Test overrides of the profile's placeholders: the test cluster's one partition for every
# rule, no account (replacing default-resources drops it), no GPU, and jobs that fit the node
# start.sh describes (CPUs = nproc, RealMemory = 4000): a job asking for more than the node has
# would pend forever with reason PartitionConfig.
NODE_CPUS = len(os.sched_getaffinity(0))
SMALL = f"{{cpus_per_task: {min(2, NODE_CPUS)}, mem_mb: 1500, runtime: 20}}"
# A job pending for one of these reasons can never start on the test cluster.
STUCK_REASONS = ("PartitionConfig", "ReqNodeNotAvail", "BadConstraints")
STUCK_AFTER_S = 90
OVERRIDES = [
    "--default-resources", f"slurm_partition={PARTITION}",
    # every rule the profile sends to its GPU partition comes to the test partition instead
    "--set-resources", *(f"{rule}:slurm_partition={PARTITION}" for rule in yaml.safe_load(
        (REPO / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]),
    "--slurm-no-account", "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
    "--config", "gpus=0", f"resources={{gpu_rules: {SMALL}, cpu_rules: {SMALL}}}",
]


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to start munged, slurmctld and slurmd"
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
               if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return (f"SLURM is not installed (missing {', '.join(missing)}): run `make test-slurm` "
                "or apt-get install slurmctld slurmd slurm-client munge")
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and not conf.is_symlink():
        return f"{conf} exists: this machine has a real SLURM set-up, not touching it"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = _unavailable()
    if reason:
        if os.environ.get("DARS_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM test required but cannot run: {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm-state")
    started = subprocess.run([SCRIPTS / "start.sh", state], capture_output=True, text=True)
    print(started.stdout.strip())
    assert started.returncode == 0, started.stdout + started.stderr
    pids = {n: int((state / f"{n}.pid").read_text()) for n in ("slurmctld", "slurmd")}
    try:
        yield state
    finally:
        subprocess.run([SCRIPTS / "stop.sh", state], check=False)
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists(), f"{name} ({pid}) still running"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_run(tmp_path_factory)


def _sbatch_logger(bindir: Path, log: Path) -> None:
    """An `sbatch` first on PATH that records its arguments, then runs the real one."""
    real = shutil.which("sbatch")
    assert real, "sbatch not on PATH"
    bindir.mkdir()
    wrapper = bindir / "sbatch"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec {real} "$@"\n')
    wrapper.chmod(0o755)


def _stuck_jobs() -> str:
    """squeue lines of pending jobs whose reason says they can never start here."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %T %r %C %m"], capture_output=True,
                           text=True).stdout
    return "\n".join(line for line in queue.splitlines()
                     if "PENDING" in line and any(r in line for r in STUCK_REASONS))


def _run_watching_queue(cmd: list[str], env: dict[str, str], out_file: Path,
                        timeout: float = 1800) -> tuple[int, str]:
    """Run snakemake; stop it with a clear failure when a job is stuck in the queue.

    A job the node cannot satisfy pends silently until the workflow's own timeout; naming the
    job, its reason and the node's size at once makes that a one-line diagnosis.
    """
    with out_file.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        start, stuck_since = time.monotonic(), None
        while proc.poll() is None:
            time.sleep(5)
            stuck = _stuck_jobs()
            stuck_since = (stuck_since or time.monotonic()) if stuck else None
            elapsed = time.monotonic() - start
            if (stuck_since and time.monotonic() - stuck_since > STUCK_AFTER_S) or \
                    elapsed > timeout:
                proc.kill()
                proc.wait()
                node = subprocess.run(["sinfo", "-N", "-o", "%N CPUs=%c mem=%m %t"],
                                      capture_output=True, text=True).stdout
                pytest.fail(f"SLURM jobs cannot start (after {elapsed:.0f} s):\n{stuck}\n"
                            f"node: {node}\n{out_file.read_text()[-3000:]}")
    return proc.returncode, out_file.read_text()


def test_tiny_workflow_runs_through_sbatch_and_matches_local(cluster: Path, tiny_run: Path,
                                                             tmp_path: Path) -> None:
    calls = tmp_path / "sbatch_calls.log"
    _sbatch_logger(tmp_path / "bin", calls)
    workdir = tmp_path / "run"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{BIN}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "--profile", str(REPO / "profiles" / "slurm"),
           "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
           "--configfile", str(REPO / ".test" / "config.yaml"), *OVERRIDES]
    start = time.monotonic()
    returncode, out = _run_watching_queue(cmd, env, tmp_path / "snakemake.out")
    seconds = time.monotonic() - start
    print(f"tiny workflow through SLURM: {seconds:.0f} s")
    assert returncode == 0, out[-5000:]

    # every job except the target rule `all` went through sbatch, each exactly once
    stats = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", out, re.S)
    assert stats, out[:3000]
    expected = {}
    for line in stats.group(1).splitlines():
        rule, count = line.split()
        expected[rule] = int(count)
    expected.pop("all")
    submitted = re.findall(r"--comment rule_(\w+?)(?:_wildcards_\S+)? ", calls.read_text())
    assert sorted(submitted) == sorted(r for r, n in expected.items() for _ in range(n))
    assert calls.read_text().count("--executor slurm-jobstep") == len(submitted)
    jobs = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", out)
    assert len(jobs) == len(submitted) and len({j for j, _ in jobs}) == len(jobs)
    for job_id, slurm_log in jobs:  # each ran to the end inside its own SLURM allocation
        assert Path(slurm_log).name == f"{job_id}.log"
        assert "Finished jobid" in Path(slurm_log).read_text(), slurm_log

    # and computed what the local run computed
    local, remote = tiny_run / "results" / "tiny", workdir / "results" / "tiny"
    pd.testing.assert_frame_equal(pd.read_csv(remote / "summary.csv"),
                                  pd.read_csv(local / "summary.csv"))
    for r in (0, 1, 2):
        assert (remote / f"round{r}" / "metrics.csv").read_bytes() == \
            (local / f"round{r}" / "metrics.csv").read_bytes()
    for s in (1, 2):
        assert (remote / f"round{s}" / "thresholds.csv").read_bytes() == \
            (local / f"round{s}" / "thresholds.csv").read_bytes()
        names = sorted(p.name for p in (local / f"round{s}" / "pseudo_labels").glob("*.png"))
        assert names
        for name in names:
            assert (remote / f"round{s}" / "pseudo_labels" / name).read_bytes() == \
                (local / f"round{s}" / "pseudo_labels" / name).read_bytes(), name
