"""Contiguous image ranges of sharded inference (``dars infer --shard i/N``, and the
processes of a multi-GPU job): pure range arithmetic."""

from __future__ import annotations

import argparse
import re

import numpy as np

from dars.errors import DarsError


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N (an argparse ``type``)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(f"shard must look like i/N with 0 <= i < N, got {text!r}")
    return int(match[1]), int(match[2])


def shard_range(index: int, count: int, num_images: int, align: int = 1) -> range:
    """Image indices of shard ``index`` of ``count``: contiguous, balanced, cut at multiples
    of ``align``.

    Contiguous ranges keep each shard's reads and writes to neighbouring chunks of the store;
    ``align`` (the store's images per chunk file) makes every chunk file belong to one shard,
    so concurrent inference shards never write the same file. With fewer chunks than shards
    some shards are empty.
    """
    if not 0 <= index < count:
        raise DarsError(f"shard {index}/{count}: index must be in [0, {count})")
    if align < 1:
        raise DarsError(f"shard alignment must be >= 1, got {align}")
    chunks = -(-num_images // align)
    bounds = np.linspace(0, chunks, count + 1).round().astype(int) * align
    return range(min(int(bounds[index]), num_images), min(int(bounds[index + 1]), num_images))
