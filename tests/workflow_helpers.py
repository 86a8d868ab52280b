"""Run Snakemake on the repo's workflow in a scratch directory and read what it plans."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _command(workdir: Path, *args: str, configfile: Path = REPO / ".test" / "config.yaml"
             ) -> list[str]:
    return [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(configfile), "--cores", "2", *args]


def snakemake(workdir: Path, *args: str, configfile: Path = REPO / ".test" / "config.yaml",
              check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``snakemake`` with the repo's Snakefile, run in ``workdir`` with ``configfile``."""
    proc = subprocess.run(_command(workdir, *args, configfile=configfile), capture_output=True,
                          text=True, env=_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path, *args: str, **kw) -> set[str]:
    """``rule`` or ``rule:<round>`` of every job a run would execute.

    Read from ``--detailed-summary``, Snakemake's table of every output file with the rule
    that makes it and its plan ("update pending" when its job would run: missing, outdated,
    changed params or code, forced), not from the dry run's human-readable text. The round is
    that of the run's ``results/<run>/round<k>/`` folder the output is in. The target rule
    ``all`` makes no file, so it is not listed; ``--until`` / ``--omit-from`` are not applied
    to the table (it plans the whole DAG).
    """
    proc = snakemake(workdir, "--detailed-summary", *args, **kw)
    jobs = set()
    for row in csv.DictReader(io.StringIO(proc.stdout), delimiter="\t"):
        if row["plan"] != "update pending":
            continue
        found = re.match(r"results/[^/]+/round(\d+)/", row["output_file"])
        jobs.add(f"{row['rule']}:{found.group(1)}" if found else row["rule"])
    return jobs


class Background:
    """A whole workflow run that later tests share, started as soon as the tests are collected
    (conftest.py), so that it overlaps the tests before it: on 2 cores the suite otherwise
    leaves about half of one core idle. :meth:`wait` returns its directory once it finished."""

    def __init__(self, cmd: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.log = workdir.parent / f"{workdir.name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                         env=env or _env(), start_new_session=True)

    def wait(self, timeout: int = 900) -> Path:
        if self.proc.wait(timeout=timeout) != 0:
            raise AssertionError(f"{' '.join(self.proc.args)} failed "
                                 f"({self.proc.returncode}):\n{self.log.read_text()[-5000:]}")
        return self.workdir

    def stop(self) -> None:
        """End it if it still runs (the session ended without needing it)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()


_SHARED_RUNS: dict[str, Path] = {}
BACKGROUND: dict[str, Background] = {}


def start_tiny_run(base: Path) -> None:
    """Start the run :func:`shared_tiny_run` returns, in the background, under ``base``."""
    workdir = base / "tiny"
    workdir.mkdir(parents=True)
    BACKGROUND["tiny"] = Background(_command(workdir), workdir)


def shared_tiny_run(factory) -> Path:  # noqa: ANN001 -- pytest.TempPathFactory
    """The whole workflow on .test/config.yaml, run once per test session (~1 min).

    Every test module that needs a finished tiny run uses this one; tests must not change it
    (copy it first, e.g. with :func:`copy_run`). Started early by conftest.py when any
    collected test needs it; run here otherwise.
    """
    if "tiny" not in _SHARED_RUNS:
        if "tiny" not in BACKGROUND:
            start_tiny_run(factory.mktemp("background"))
        _SHARED_RUNS["tiny"] = BACKGROUND.pop("tiny").wait()
    return _SHARED_RUNS["tiny"]


def copy_run(src: Path, dest: Path) -> Path:
    """Copy a run directory keeping mtimes and Snakemake's metadata (nothing looks outdated)."""
    import shutil

    shutil.copytree(src, dest, symlinks=True)
    return dest


def job_counts(workdir: Path, *args: str, **kw) -> dict[str, int]:
    """Dry run; the "Job stats" table as {rule: count} (without the total)."""
    proc = snakemake(workdir, "-n", *args, **kw)
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("total", None)
    return counts


def stage_counts(workdir: Path, *args: str, **kw) -> dict[str, int]:
    """Dry run with -p; how many jobs run each `dars` command (the stage), whatever the rule.

    ``dars train`` counts as ``train --round 0`` (a baseline) or ``train`` (a student); a
    sharded inference step as ``infer --init-store``, ``infer --shard`` or ``infer --finalize``.
    """
    proc = snakemake(workdir, "-n", "-p", *args, **kw)
    counts: dict[str, int] = {}
    for line in re.findall(r"^Shell command: (.*)$", proc.stdout + proc.stderr, re.M):
        command = re.search(r"(?<![\w.])dars ([a-z-]+)", line)
        if command is None:  # a target rule (all, compare): no command
            continue
        stage = command[1]
        if stage == "train" and " --round 0 " in line:
            stage = "train --round 0"
        elif flag := re.search(r" (--init-store|--shard|--finalize)\b", line):
            stage = f"{stage} {flag[1]}"
        counts[stage] = counts.get(stage, 0) + 1
    return counts
