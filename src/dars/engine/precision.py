"""bf16 autocast only on GPUs with native bf16 (compute capability >= 8.0): a V100 or T4 would
emulate it or fail; a CPU is 4x (inference), 12x (training) slower (benchmarks/RESULTS.md)."""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


def use_bf16(requested: bool, device: torch.device) -> bool:
    """``requested`` and ``device`` computes bf16 natively; a GPU fallback warns once a process."""
    return requested and device.type == "cuda" and _native_bf16()


@functools.cache
def _native_bf16() -> bool:
    """Native bf16 on this process's GPU (the current device: one GPU per process)."""
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    if not native:
        log.warning("bf16 requested but %s has no native bf16 (compute capability < 8.0): "
                    "running in float32", torch.cuda.get_device_name())
    return native
