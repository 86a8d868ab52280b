"""``dars gpu-run``: give a job its own GPUs, then run it (through torchrun for several).

Snakemake counts a ``gpu`` resource but does not say *which* GPUs a job may use, so two jobs
would both land on GPU 0. This wrapper holds an exclusive ``flock`` on one lock file per device
of the pool and exports just those; locks belong to the process, so they vanish when the job
ends or is killed.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dars.core.errors import DarsError

log = logging.getLogger("dars.jobs.gpu_slots")

LOCK_DIR_ENV = "DARS_GPU_LOCK_DIR"


def gpu_pool(environ: dict[str, str] | None = None) -> list[str]:
    """Device ids a job on this machine may choose from."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def lock_dir(environ: dict[str, str] | None = None) -> Path:
    """One lock directory per machine, or per SLURM allocation when running inside one."""
    env = os.environ if environ is None else environ
    if env.get(LOCK_DIR_ENV):
        return Path(env[LOCK_DIR_ENV])
    scope = f"slurm-{env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else "local"
    return Path(tempfile.gettempdir()) / f"dars-gpu-locks-{scope}"


def try_acquire(pool: Sequence[str], count: int, directory: Path) -> tuple[list[str], list[int]]:
    """Lock ``count`` free devices of ``pool``: (ids, lock fds), or ``([], [])`` holding none."""
    directory.mkdir(parents=True, exist_ok=True)
    ids, fds = [], []
    for device in pool:
        fd = os.open(directory / f"gpu{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        ids.append(device)
        fds.append(fd)
        if len(ids) == count:
            return ids, fds
    for fd in fds:
        os.close(fd)
    return [], []


def acquire(pool: Sequence[str], count: int, directory: Path, poll: float = 2.0,
            timeout: float | None = None) -> tuple[list[str], list[int]]:
    """Wait until ``count`` devices of ``pool`` are free and lock them."""
    if count > len(pool):
        raise DarsError(f"job needs {count} GPU(s) but only {len(pool)} are visible "
                        f"({','.join(pool) or 'none'}); lower `gpus` in the config")
    start = time.monotonic()
    ids, fds = try_acquire(pool, count, directory)
    if not ids:
        log.info("waiting for %d free GPU(s) among %s (locks in %s)", count, ",".join(pool),
                 directory)
    while not ids:
        if timeout is not None and time.monotonic() - start > timeout:
            raise DarsError(f"no {count} free GPU(s) among {','.join(pool)} after {timeout} s")
        time.sleep(poll)
        ids, fds = try_acquire(pool, count, directory)
    return ids, fds


def default_workers(cores: int, gpus: int) -> int:
    """``train.num_workers`` when unset: on GPUs the job's cores but one per rank (whose own
    process feeds its GPU); on the CPU none, since the model's threads use the cores."""
    return max(cores - gpus, 0) if gpus else 0


def split_threads(command: Sequence[str], processes: int) -> list[str]:
    """``--threads T`` (or ``--threads=T``) in ``command`` becomes ``max(1, T // processes)``."""
    out = list(command)
    for i, arg in enumerate(out):
        if arg == "--threads" and i + 1 < len(out) and out[i + 1].isdigit():
            out[i + 1] = str(max(1, int(out[i + 1]) // processes))
        elif arg.startswith("--threads=") and arg.split("=", 1)[1].isdigit():
            out[i] = f"--threads={max(1, int(arg.split('=', 1)[1]) // processes)}"
    return out


def launch_command(command: Sequence[str], gpus: int, ddp: bool) -> list[str]:
    """The command line to exec: ``command`` itself, or torchrun over ``gpus`` processes."""
    if not command:
        raise DarsError("gpu-run: no command given (use: dars gpu-run --gpus N -- CMD ...)")
    if ddp and gpus > 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "--no-python",
                *split_threads(command, gpus)]
    return list(command)


def run(command: Sequence[str], gpus: int, ddp: bool = False,
        environ: dict[str, str] | None = None) -> None:
    """Pick the job's GPUs, then replace this process with the command (locks stay held)."""
    env = dict(os.environ if environ is None else environ)
    argv = launch_command(command, gpus, ddp)
    if gpus < 0:
        raise DarsError(f"gpu-run: --gpus must be >= 0, got {gpus}")
    if gpus == 0:
        if visible := gpu_pool(env):
            log.warning("gpu-run: GPU(s) %s are here but this job asks for none (config "
                        "`gpus: 0`): it runs on the CPU; set `gpus: 1` to use a GPU",
                        ",".join(visible))
        env["CUDA_VISIBLE_DEVICES"] = ""
        log.info("gpu-run: no GPU for this job (CPU)")
    else:
        ids, fds = acquire(gpu_pool(env), gpus, lock_dir(env))
        for fd in fds:
            os.set_inheritable(fd, True)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        log.info("gpu-run: CUDA_VISIBLE_DEVICES=%s", env["CUDA_VISIBLE_DEVICES"])
    log.info("gpu-run: %s", " ".join(argv))
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise DarsError(f"gpu-run: cannot run {argv[0]!r}: {exc}") from exc


def gpu_run_command(args: argparse.Namespace) -> None:
    run(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd, args.gpus, args.ddp)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``dars gpu-run`` and of ``python -m dars.jobs.gpu_slots``."""
    p.add_argument("--gpus", type=int, required=True, help="GPUs the command gets (0 = none)")
    p.add_argument("--ddp", action="store_true",
                   help="with --gpus > 1, start the command through torchrun, one process per GPU")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    p.set_defaults(handler=gpu_run_command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dars.jobs.gpu_slots``, the rules' form: it starts in 0.1 s, not the seconds
    of ``dars``'s imports, which the wrapped command pays once anyway."""
    args = add_arguments(argparse.ArgumentParser(prog="python -m dars.jobs.gpu_slots",
                                              description=__doc__.split("\n\n")[0])
                      ).parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        gpu_run_command(args)
    except DarsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
