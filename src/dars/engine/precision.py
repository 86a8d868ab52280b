"""Whether bf16 autocast runs: only on a GPU that computes in bf16 natively.

``train.bf16`` and ``infer``/``evaluate`` ``bf16`` ask for it; they get it on CUDA devices of
compute capability 8.0 or later (A100, H100, RTX 30xx and newer). A V100 or T4 has no bf16
convolution kernels: PyTorch emulates them or fails, so there the job runs in float32 and says
so once. A CPU never gets it: autocast emulates bf16 there (benchmarks/bench_train.py: 4x slower
inference, 12x slower training than fp32 on the 2-core EPYC of benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


def use_bf16(requested: bool, device: torch.device) -> bool:
    """bf16 autocast for ``device`` when ``requested`` and the device computes bf16 natively;
    the first fallback on a GPU logs one warning line (per process)."""
    return requested and device.type == "cuda" and _native_bf16()


@functools.cache
def _native_bf16() -> bool:
    """Native bf16 on this process's GPU (the current device: one GPU per process)."""
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    if not native:
        log.warning("bf16 requested but %s has no native bf16 (compute capability < 8.0): "
                    "running in float32", torch.cuda.get_device_name())
    return native
