"""Run the workflow in a scratch directory, find one stage's process, kill it mid-stage.

Used by ``test_kill.py``: :func:`reference_run` is the uninterrupted run every killed stage is
compared with, computed once per test session.

Finding "mid-stage" reliably on a busy 2-core machine: once the stage's process exists it is
*throttled* -- alternately stopped (SIGSTOP) and let run for a few milliseconds -- and the
kill condition (a checkpoint written, some images in the partial store, a temporary directory
of pseudo labels, ...) is checked while it is stopped, so the signal lands in a state that was
observed rather than one that merely was true a moment ago. Only processes in the session of
the Snakemake process the test started are ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from workflow_helpers import BACKGROUND, BIN, REPO, SNAKEFILE, Background

RUN = "kill"
CONFIG = """\
# A small demo run whose stages last long enough to be killed mid-way (tests/test_kill.py).
run: kill
seed: 1
dataset: {name: demo, root: data/kill}
demo: {num_train: 48, num_val: 8, size: 32, labeled_fraction: 0.5, seed: 3}
model: {name: tiny, width: 4}
train: {epochs: 4, batch_size: 8, lr: 0.05, crop_size: 32}
infer: {batch_size: 2, images_per_chunk: 4}  # 6 chunk files: the kill lands between two
evaluate: {batch_size: 1}
rounds:
  - {alpha: 0.5, epochs: 3}
resources:
  gpu_rules: {cpus_per_task: 1}
  cpu_rules: {cpus_per_task: 1}
"""
TARGET = f"results/{RUN}/summary.csv"  # everything but the report


def write_config(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "kill.yaml"
    path.write_text(CONFIG)
    return path


def _cmd(workdir: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
           "--configfile", str(workdir / "kill.yaml"), "--cores", "2", *args]
    return cmd, env


def run_snakemake(workdir: Path, *args: str, check: bool = True,
                  timeout: int = 900) -> subprocess.CompletedProcess[str]:
    cmd, env = _cmd(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen[str]:
    """Snakemake in its own session (so its jobs can be found, and all killed, by session)."""
    cmd, env = _cmd(workdir, *args)
    out = open(workdir / f"snakemake-{time.monotonic_ns()}.out", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


_REFERENCE: dict[str, Path] = {}


def start_reference_run(base: Path) -> None:
    """Start the run :func:`reference_run` returns, in the background, under ``base``: its own
    session, so no kill of the killed run's stages can reach it."""
    workdir = base / "reference"
    write_config(workdir)
    cmd, env = _cmd(workdir, TARGET)
    BACKGROUND["kill reference"] = Background(cmd, workdir, env)


def reference_run(base: Path) -> Path:
    """The uninterrupted run of CONFIG (computed once per session under ``base``, unless
    conftest.py started it early)."""
    if "ref" not in _REFERENCE:
        if "kill reference" not in BACKGROUND:
            start_reference_run(base)
        _REFERENCE["ref"] = BACKGROUND.pop("kill reference").wait()
    return _REFERENCE["ref"]


# ------------------------------------------------------------------------------ processes
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def stage_pid(session: int, command: str, round_: int | None = None) -> int | None:
    """The ``dars <command>`` process (not its shell) in Snakemake's session, if running."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or int(stat[3]) != session or stat[0] == "Z":  # field 6: session id
            continue
        argv = _argv(pid)
        for i, arg in enumerate(argv[:-1]):
            if (arg.endswith("/dars") and argv[i + 1] == command
                    and (round_ is None or _round_of(argv) == round_)):
                return pid
    return None


def _round_of(argv: list[str]) -> int | None:
    if "--round" in argv:
        return int(argv[argv.index("--round") + 1])
    return None


def _wait_stopped(pid: int, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stat = _stat(pid)
        if stat is None or stat[0] in "TZX":
            return stat is not None and stat[0] == "T"
        time.sleep(0.0002)
    return False


@dataclass
class Kill:
    """What happened when a stage was signalled."""

    pid: int
    signal: int
    snakemake_rc: int
    seconds: float  # from Snakemake's start to the signal


def kill_stage(sn: subprocess.Popen[str], command: str, when: Callable[[], bool], *,
               round_: int | None = None, sig: int = signal.SIGKILL, slice_s: float = 0.002,
               whole_run: bool = False, timeout: float = 600) -> Kill:
    """Throttle ``dars <command>`` until ``when()`` holds while it is stopped, then signal it.

    ``whole_run`` sends the signal to Snakemake and every job (a node failure) instead of just
    the stage's process. Waits for Snakemake to exit and returns what happened.
    """
    start = time.monotonic()
    pid = None
    try:
        while True:
            if time.monotonic() - start > timeout:
                raise AssertionError(f"dars {command} was not caught within {timeout} s")
            if sn.poll() is not None:
                raise AssertionError(f"snakemake ended (rc {sn.returncode}) before dars "
                                     f"{command} was caught mid-stage")
            if pid is None:
                pid = stage_pid(sn.pid, command, round_)
                if pid is None:
                    time.sleep(0.01)
                    continue
                # the lowest priority: on a loaded machine the stage must not run on for long
                # between two of our checks (a stage of a few seconds would end uncaught)
                with contextlib.suppress(ProcessLookupError):
                    os.setpriority(os.PRIO_PROCESS, pid, 19)
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pid = None
                continue
            if not _wait_stopped(pid):
                pid = None  # it ended
                continue
            if when():
                seconds = time.monotonic() - start
                if whole_run:
                    os.killpg(sn.pid, sig)
                else:
                    os.kill(pid, sig)
                with contextlib.suppress(ProcessLookupError):  # SIGKILL'd and already reaped
                    os.kill(pid, signal.SIGCONT)
                break
            os.kill(pid, signal.SIGCONT)
            time.sleep(slice_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):  # do not leave our run behind
            os.killpg(sn.pid, signal.SIGKILL)
        sn.wait(timeout=60)
        raise
    sn.wait(timeout=600)
    return Kill(pid, sig, sn.returncode, seconds)


# ------------------------------------------------------------------------------ comparing runs
def store_arrays(path: Path) -> dict[str, np.ndarray]:
    import warnings

    import zarr

    with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp inside the store
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(path), mode="r")
        return {name: group[name][:] for name in group.array_keys()}


def without_timings(obj: object) -> object:
    """A json/csv record without wall-clock fields (they differ between any two runs)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items()
                if k not in ("timings_s", "mpx_s", "seconds", "images_per_s")}
    return obj


def read_json(path: Path) -> object:
    return without_timings(json.loads(path.read_text()))


def repo() -> Path:
    return REPO
