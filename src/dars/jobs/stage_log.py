"""One summary line per stage at the end of its log (rank 0 only): Snakemake's ``benchmark:``
files record time and RSS but not the GPU peak, and stages run by hand have none."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("dars.stage")


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process and of its finished children (Linux: KiB units)."""
    scale = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * scale


def peak_gpu_bytes() -> int | None:
    """Peak CUDA memory allocated by torch in this process, if CUDA was used."""
    torch = sys.modules.get("torch")  # never imported here: a stage without torch has no GPU
    try:
        if torch is None or not torch.cuda.is_initialized():
            return None
        return int(torch.cuda.max_memory_allocated())
    except Exception:  # noqa: BLE001 -- a summary line must never fail the stage
        return None


def summary_line(stage: str, seconds: float, rss: int, gpu: int | None) -> str:
    line = f"stage {stage}: {seconds:.1f} s, peak RSS {_mib(rss)}"
    return line if gpu is None else f"{line}, peak GPU {_mib(gpu)}"


@contextmanager
def stage_summary(stage: str) -> Iterator[None]:
    """Log the summary line when the block ends, failed or not (with ``failed`` then)."""
    start = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        if int(os.environ.get("RANK", "0")) == 0:
            line = summary_line(stage, time.perf_counter() - start, peak_rss_bytes(),
                                peak_gpu_bytes())
            log.info(line if ok else f"{line} (failed)")
