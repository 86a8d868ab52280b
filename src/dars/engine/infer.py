"""``dars infer``: the teacher's prediction and confidence, max softmax(logits / T)
(:mod:`dars.engine.predict`), of the unlabeled pool into a store.

Resumable: images in a leftover ``.partial`` store of the same job are skipped; a partly written
batch is redone whole, as kernels may round differently for another batch size and the store
must equal an uninterrupted one bit for bit. Likewise a shard (``shards: N``: :func:`init_store`, N
:func:`infer_shard`, :func:`finalize_store`) predicts the batches an unsharded run forms."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from dars.core.errors import DarsError
from dars.core.options import InferOptions
from dars.data.dataset import dataset_spec
from dars.data.images import image_size
from dars.data.splits import Sample
from dars.engine import distributed
from dars.engine.predict import predict_labels, size_batches
from dars.models import load_model
from dars.store.probstore import ProbStoreWriter

log = logging.getLogger(__name__)


def job_fingerprint(model_path: Path, options: InferOptions, temperature: float = 1.0) -> str:
    """Hash of what the stored values depend on: the teacher file, the options and T."""
    job = {**options.params(), "temperature": temperature}
    digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode())
    with open(model_path, "rb") as f:
        return hashlib.file_digest(f, lambda: digest).hexdigest()[:32]


def batches_to_redo(samples: Sequence[Sample], pending: Sequence[int], batch: int) -> list[int]:
    """Every image of the batches (as an uninterrupted run forms them) holding a pending one."""
    todo = set(pending)
    if len(todo) == len(samples):
        return list(range(len(samples)))
    return sorted(i for b in size_batches(samples, range(len(samples)), batch)
                  if todo.intersection(b) for i in b)


def _open_store(options: InferOptions, model_path: Path, out: Path, create: bool,
                temperature: float) -> tuple[ProbStoreWriter, list[Sample]]:
    """The job's partial store and samples; ``create``: make or resume it (one job), else open."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise DarsError(f"temperature must be a positive number, got {temperature}")
    spec = dataset_spec(options.dataset)
    samples = spec.samples("unlabeled", require_masks=False)
    writer = ProbStoreWriter(out, [s.id for s in samples],
                             [image_size(s.image) for s in samples] if create else None,
                             spec.classes, job=job_fingerprint(model_path, options, temperature),
                             temperature=temperature, images_per_chunk=options.images_per_chunk)
    return writer, samples


def shard_range(index: int, count: int, num_images: int, align: int = 1) -> range:
    """Image indices of shard ``index`` of ``count``: contiguous, balanced, cut at multiples
    of ``align`` (the store's images per chunk file), so no two shards write the same file."""
    chunks = -(-num_images // align)
    bounds = np.linspace(0, chunks, count + 1).round().astype(int) * align
    return range(min(int(bounds[index]), num_images), min(int(bounds[index + 1]), num_images))


def _load_teacher(options: InferOptions, model_path: Path) -> nn.Module:
    return load_model(model_path, dataset_spec(options.dataset).num_classes)


def infer(options: InferOptions, model_path: Path, out: Path, temperature: float = 1.0) -> None:
    """Predict the unlabeled pool into the store; under ``torchrun`` each process is a shard."""
    world = distributed.setup()
    try:
        model = _load_teacher(options, model_path)  # a bad checkpoint fails before any store
        if world.is_main:
            writer, samples = _open_store(options, model_path, out, True, temperature)
        distributed.barrier(world)
        if not world.is_main:
            writer, samples = _open_store(options, model_path, out, False, temperature)
        own = shard_range(world.rank, world.size, len(samples), writer.per_chunk)
        _predict_into(writer, model, samples, own, options, temperature)
        distributed.barrier(world)
        if world.is_main:
            writer.finalize()
    finally:
        distributed.teardown(world)


def init_store(options: InferOptions, model_path: Path, out: Path, temperature: float = 1.0
               ) -> None:
    """Sharded step 1: create (or keep, to resume) the partial store the shards write into."""
    writer, samples = _open_store(options, model_path, out, True, temperature)
    log.info("%s ready: %d images, %d already written", writer.path, len(samples),
             len(samples) - len(writer.pending()))


def infer_shard(options: InferOptions, model_path: Path, out: Path, shard: tuple[int, int],
                temperature: float = 1.0) -> None:
    """Sharded step 2: predict the pending images of shard (i, N) into the store."""
    model = _load_teacher(options, model_path)
    writer, samples = _open_store(options, model_path, out, False, temperature)
    _predict_into(writer, model, samples, shard_range(*shard, len(samples), writer.per_chunk),
                  options, temperature)


def finalize_store(options: InferOptions, model_path: Path, out: Path, temperature: float = 1.0
                   ) -> None:
    """Sharded step 3: check every shard's images are in, move the store to ``out``."""
    writer, samples = _open_store(options, model_path, out, False, temperature)
    writer.finalize()
    log.info("%s complete: %d images", out, len(samples))


def _predict_into(writer: ProbStoreWriter, model: nn.Module, samples: Sequence[Sample],
                  own: range, options: InferOptions, temperature: float) -> None:
    """Write the pending images of ``own``, predicted in the batches an unsharded run forms."""
    pending = writer.pending(own)
    batch = options.batch_size
    todo = batches_to_redo(samples, pending, batch)
    again = sum(1 for i in todo if i in own) - len(pending)
    if len(pending) < len(own):
        log.info("resuming: %d of %d images already written; predicting %d (%d of them again, "
                 "to keep partly written batches whole)", len(own) - len(pending), len(own),
                 len(todo), again)
    neighbours = len(todo) - len(pending) - again
    if neighbours:
        log.info("images %d-%d of %d: also predicting %d images of other shards (not stored) "
                 "to batch as an unsharded run does", own.start, own.stop - 1, len(samples),
                 neighbours)
    t0 = time.perf_counter()
    labels = predict_labels(model, samples, todo, batch, options.predict, temperature)
    for index, prediction, confidence in tqdm(labels, total=len(todo), desc="infer",
                                              mininterval=2, unit="img"):
        if index in own:
            writer.write_prediction(index, prediction.numpy(), confidence.numpy())
    writer.close(own)
    seconds = time.perf_counter() - t0
    log.info("inferred %d images in %.1f s (%.1f img/s)", len(todo), seconds,
             len(todo) / max(seconds, 1e-9))
