"""shards: N > 1 -- inference as sharded jobs, identical to shards: 1; one thresholding job."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from workflow_helpers import (
    BIN,
    REPO,
    copy_run,
    job_counts,
    shared_tiny_run,
    snakemake,
)

from dars import cli
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions, InferOptions
from dars.engine import infer as infer_mod
from dars.models import build_model, checkpoint, load_model
from dars.store.probstore import ProbStoreWriter, partial_path

# The shards keep the unsharded job's threads: float sums over another thread count round
# differently, and the store must be bit-identical.
INFER_RULES = ("--allowed-rules", "infer_init", "infer_probabilities_shard", "infer_finalize")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_run(tmp_path_factory)


def test_sharded_dag_shards_inference_and_labels_each_round_in_one_job(tmp_path: Path) -> None:
    demo = REPO / "config" / "config.yaml"
    counts = job_counts(tmp_path, "--config", "shards=3", configfile=demo)
    # inference: per round one store created, filled by 3 shard jobs, finalized once
    assert counts["infer_probabilities_shard"] == 6  # 3 per round, 2 rounds
    assert counts["infer_init"] == counts["infer_finalize"] == 2
    assert "infer_probabilities" not in counts
    assert counts["pseudo_label"] == 2  # one thresholding job a round reads the whole store
    proc = snakemake(tmp_path, "-n", "-p", "--config", "shards=3", configfile=demo)
    text = proc.stdout + proc.stderr
    commands = re.findall(r"dars pseudo-label [^\n]*", text)
    assert len(commands) == 2 and not any("--shard" in c for c in commands)
    unsharded = job_counts(tmp_path, configfile=demo)
    assert "infer_init" not in unsharded
    assert unsharded["infer_probabilities"] == 2


@pytest.mark.parametrize("shards", [1, 2])
def test_temperature_auto_calibrates_the_teacher_before_inference(tmp_path: Path,
                                                                  shards: int) -> None:
    """T is applied by inference: every inference step (one job or init/shards/finalize) gets
    the teacher's temperature.json, so the store depends on T; thresholding only checks it."""
    demo = REPO / "config" / "config.yaml"
    auto = "pseudo_label={method: dars, sampling: paper, temperature: auto, seed: 0}"
    proc = snakemake(tmp_path, "-n", "-p", "results/demo/round1/pseudo_labels", "--config",
                     auto, f"shards={shards}", configfile=demo)
    text = proc.stdout + proc.stderr
    json_file = "results/demo/round0/temperature.json"
    infer = re.findall(r"dars infer [^\n]*", text)
    assert len(infer) == (1 if shards == 1 else 4)  # init + 2 shards + finalize
    assert all(f"--temperature {json_file}" in cmd for cmd in infer)
    assert text.index("rule calibrate:") < text.index("dars infer")
    pseudo = re.findall(r"dars pseudo-label [^\n]*", text)
    assert pseudo and all(f"--temperature {json_file}" in cmd for cmd in pseudo)
    fixed = snakemake(tmp_path, "-n", "-p", "results/demo/round1/probs.zarr", "--config",
                      auto.replace("auto", "1.27"), configfile=demo)
    assert "--temperature 1.27" in fixed.stdout and "rule calibrate:" not in fixed.stdout


# ------------------------------------------------------------------------ sharded inference
def _store_arrays(path: Path) -> dict:
    group = zarr.open_group(str(path), mode="r")
    arrays = {name: group[name][:] for name in group.array_keys()}
    attrs = group.attrs.asdict()
    keys = ("image_ids", "class_names", "job", "complete", "temperature", "images_per_chunk")
    return {**arrays, **{k: attrs[k] for k in keys}}


def _assert_same_store(a: Path, b: Path) -> None:
    ref, out = _store_arrays(a), _store_arrays(b)
    assert ref["complete"] is True and len(ref["image_ids"]) > 0
    for name, value in ref.items():
        assert np.array_equal(value, out[name]), name


@pytest.fixture
def untrained_teacher(folder_config: dict, tmp_path: Path) -> Path:
    """A checkpoint of untrained weights: inference only needs some fixed model."""
    torch.manual_seed(0)
    model = build_model(folder_config["model"], 3)
    path = tmp_path / "teacher.pt"
    checkpoint.save(path, {"model": model.state_dict(), "model_config": folder_config["model"],
                           "num_classes": 3})
    return path


@pytest.mark.parametrize("per_chunk", [1, 2])
def test_infer_shards_fill_one_store_identical_to_one_job(
        folder_config: dict, untrained_teacher: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, per_chunk: int) -> None:
    # 4 unlabeled images in batches [0 1 2] [3]; shard 0/2 = [0 1], shard 1/2 = [2 3]: with 1
    # or 2 images per chunk file the shards' files are disjoint
    folder_config["infer"]["batch_size"] = 3
    folder_config["infer"]["images_per_chunk"] = per_chunk
    cfg, teacher = folder_config, untrained_teacher
    infer_mod.infer(InferOptions.from_config(cfg), teacher, tmp_path / "ref.zarr")
    store = tmp_path / "probs.zarr"
    with pytest.raises(DarsError, match="no unfinished store of this inference job.*init-store"):
        infer_mod.infer_shard(InferOptions.from_config(cfg), teacher, store, (0, 2))

    predicted: list[int] = []
    real_predict, real_write = infer_mod.predict_labels, ProbStoreWriter.write_prediction

    def spy(model, samples, indices, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        predicted.extend(indices)
        return real_predict(model, samples, indices, *args, **kw)

    def write_then_die(self, index, *arrays):  # noqa: ANN001, ANN002, ANN202
        if index == 3:
            raise KeyboardInterrupt  # the shard job is killed after writing image 2
        real_write(self, index, *arrays)

    monkeypatch.setattr(infer_mod, "predict_labels", spy)
    infer_mod.init_store(InferOptions.from_config(cfg), teacher, store)
    monkeypatch.setattr(ProbStoreWriter, "write_prediction", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        infer_mod.infer_shard(InferOptions.from_config(cfg), teacher, store, (1, 2))
    monkeypatch.setattr(ProbStoreWriter, "write_prediction", real_write)
    predicted.clear()
    # a rerun of the init step keeps what is written
    infer_mod.init_store(InferOptions.from_config(cfg), teacher, store)
    infer_mod.infer_shard(InferOptions.from_config(cfg), teacher, store, (1, 2))
    # resumed: image 2's chunk was written before the kill and is not predicted again; with
    # 2 images a chunk, image 2 waited for image 3 and its whole batch is redone
    assert predicted == ([3] if per_chunk == 1 else [0, 1, 2, 3])
    # shard 0 has not run: finalize names its images and leaves the store unfinished
    with pytest.raises(DarsError, match=r"2 of 4 images not written: img004, img005 \(an "
                                        r"inference job or shard has not finished"):
        infer_mod.finalize_store(InferOptions.from_config(cfg), teacher, store)
    assert not store.exists() and partial_path(store).exists()

    predicted.clear()
    infer_mod.infer_shard(InferOptions.from_config(cfg), teacher, store, (0, 2))
    assert sorted(predicted) == [0, 1, 2]  # image 2 only completes the batch, as unsharded
    args = ["infer", "--config-json", json.dumps(cfg), "--model", str(teacher), "--out",
            str(store), "--threads", "1"]
    assert cli.main([*args, "--finalize"]) == 0
    assert not partial_path(store).exists()
    _assert_same_store(tmp_path / "ref.zarr", store)
    with pytest.raises(SystemExit):  # one step at a time
        cli.build_parser().parse_args([*args, "--finalize", "--shard", "0/2"])


def test_inference_stores_the_confidence_at_its_temperature(
        folder_config: dict, untrained_teacher: Path, tmp_path: Path) -> None:
    """confidence = max_c softmax(logits / T)_c, prediction = argmax (independent of T),
    written by inference; the store records T."""
    from dars.data.dataset import dataset_spec, to_tensor
    from dars.data.images import read_image
    from dars.store.probstore import ProbStore

    cfg, t = folder_config, 2.5
    infer_mod.infer(InferOptions.from_config(cfg), untrained_teacher, tmp_path / "t.zarr",
                    temperature=t)
    store = ProbStore(tmp_path / "t.zarr")
    assert store.temperature == t
    model = load_model(untrained_teacher, 3)
    samples = dataset_spec(DatasetOptions.from_config(cfg)).samples("unlabeled",
                                                                    require_masks=False)
    block = next(store.blocks())
    for j, sample in enumerate(samples):
        with torch.no_grad():
            logits = model(to_tensor(read_image(sample.image))[None])["out"][0].double()
        expected = torch.softmax(logits / t, dim=0)
        np.testing.assert_array_equal(block.prediction[j], expected.argmax(0).numpy())
        np.testing.assert_allclose(block.confidence[j].astype(np.float64),
                                   expected.max(0).values.numpy(), rtol=1e-3)  # float16
    infer_mod.infer(InferOptions.from_config(cfg), untrained_teacher, tmp_path / "plain.zarr")
    plain = ProbStore(tmp_path / "plain.zarr")
    assert plain.temperature == 1.0
    np.testing.assert_array_equal(next(plain.blocks()).prediction, block.prediction)
    assert (next(plain.blocks()).confidence >= block.confidence).all()  # T > 1 softens


@pytest.mark.slow
def test_torchrun_inference_splits_the_images_over_processes(
        folder_config: dict, untrained_teacher: Path, tmp_path: Path) -> None:
    """`gpus: 2` runs `dars infer` under torchrun: each process writes its own range of one
    store (here 2 gloo processes on CPU), and the store equals a single process's."""
    folder_config["infer"]["batch_size"] = 3
    infer_mod.infer(InferOptions.from_config(folder_config), untrained_teacher,
                    tmp_path / "ref.zarr")
    store = tmp_path / "probs.zarr"
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python",
         str(BIN / "dars"), "infer", "--config-json", json.dumps(folder_config), "--model",
         str(untrained_teacher), "--out", str(store), "--threads", "1"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 1 of 2" in proc.stderr
    assert not partial_path(store).exists()
    _assert_same_store(tmp_path / "ref.zarr", store)


@pytest.mark.slow
def test_three_infer_shards_give_an_identical_store(tiny_run: Path, tmp_path: Path) -> None:
    work = copy_run(tiny_run, tmp_path / "sharded")
    target = "results/tiny/round1/probs.zarr"
    shutil.rmtree(work / target)
    snakemake(work, target, "--config", "shards=3", *INFER_RULES)
    _assert_same_store(tiny_run / target, work / target)
    round1 = work / "results/tiny/round1"
    assert not partial_path(work / target).exists()
    assert not list((round1 / "shards").glob("infer_*.done"))  # temporary step markers
    logs = work / "logs/tiny/round1"
    assert all((logs / f"infer_{i}.log").is_file() for i in range(3))
    assert "also predicting" in (logs / "infer_1.log").read_text()  # straddling batches
