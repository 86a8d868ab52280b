"""Kill anywhere: SIGTERM in training, and SIGKILL of every workflow stage mid-way.

Fast (in-process) tests: SIGTERM stops training after the current step, saves the position
inside the epoch, and the resumed run ends bit-identical to an uninterrupted one.

Slow tests (``-m slow``) run the workflow on a small demo config in a scratch directory, kill
one stage at a time mid-way and rerun ``snakemake``; see :func:`killed_run`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import write_folder_dataset

from dars.core import config as config_mod
from dars.core.options import InferOptions, TrainOptions
from dars.engine.train import EXIT_TERMINATED, Trainer
from dars.models import checkpoint

TIMING = ["images_per_s", "seconds"]  # log columns that measure time, not training


# ------------------------------------------------------------------------------ SIGTERM in-process
def _config(root: Path) -> dict:
    return config_mod.validate({
        "dataset": {"name": "folder", "root": str(root)},
        "model": {"name": "tiny", "width": 4},
        "train": {"epochs": 3, "batch_size": 2, "lr": 0.05, "crop_size": 16},
        "rounds": [{"alpha": 0.5, "epochs": 2}],
    })


@pytest.fixture(scope="module")
def sigterm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 labeled, 8 unlabeled: 2 baseline steps an epoch; a student epoch (half batch 1) takes
    8 steps and cycles the labeled set twice."""
    root = tmp_path_factory.mktemp("sigterm") / "data"
    write_folder_dataset(root, n=16, size=16, splits={"labeled": range(0, 4),
                                                      "unlabeled": range(4, 12),
                                                      "val": range(12, 16)})
    pseudo = root / "pseudo"
    pseudo.mkdir()
    for i in range(4, 12):  # the true masks stand in for pseudo labels
        (pseudo / f"img{i:03d}.png").write_bytes((root / "masks" / f"img{i:03d}.png").read_bytes())
    return root


def _train(cfg: dict, work: Path, round_: int, teacher: Path | None, pseudo: Path | None,
           sigterm_at: int | None = None) -> Trainer:
    """Train one round; the step also draws from the CPU RNG, as dropout on the CPU would (the
    tiny model has none), so resuming must restore the RNG, not only replay the data."""
    trainer = Trainer(TrainOptions.from_config(cfg, round_), work / "state", init=teacher,
                      pseudo_dir=pseudo)
    step, calls = trainer._step, {"n": 0}

    def step_with_dropout(batch, it):  # noqa: ANN001, ANN202
        noise = torch.rand(len(batch[0]), 1, 1, 1)
        out = step((batch[0] * (noise > 0.3), *batch[1:]), it)
        calls["n"] += 1
        if calls["n"] == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-epoch, like SLURM's
        return out

    trainer._step = step_with_dropout
    trainer.run(work / "model.pt", work / "train_log.csv")
    return trainer


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(("round_", "sigterm_at", "epoch", "step"), [
    (0, 3, 1, 1),   # baseline: epoch 2 of 3, after its first of 2 steps
    (1, 6, 0, 6),   # student: epoch 1 of 2, after 6 of 8 steps (2nd labeled pass)
    (1, 8, 1, 0),   # student: the last step of an epoch: stops at the epoch boundary
])
def test_sigterm_saves_and_resume_is_bit_identical(sigterm_data: Path, tmp_path: Path,
                                                   round_: int, sigterm_at: int, epoch: int,
                                                   step: int) -> None:
    cfg = _config(sigterm_data)
    teacher = pseudo = None
    if round_:
        _train(cfg, tmp_path / "teacher", 0, None, None)
        teacher = tmp_path / "teacher" / "model.pt"
        pseudo = sigterm_data / "pseudo"
    _train(cfg, tmp_path / "ref", round_, teacher, pseudo)

    work = tmp_path / "killed"
    with pytest.raises(SystemExit) as exc:
        _train(cfg, work, round_, teacher, pseudo, sigterm_at=sigterm_at)
    assert exc.value.code == EXIT_TERMINATED == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
    assert not (work / "model.pt").exists() and not (work / "train_log.csv").exists()
    saved = checkpoint.load(work / "state" / "last.pt")
    assert (saved["epoch"], saved["step"]) == (epoch, step)

    resumed = _train(cfg, work, round_, teacher, pseudo)
    assert resumed.history and (work / "model.pt").exists()
    ref = checkpoint.load(tmp_path / "ref" / "model.pt")
    out = checkpoint.load(work / "model.pt")
    for key, value in ref["model"].items():
        assert torch.equal(value, out["model"][key]), key
    for a, b in zip(ref["optimizer"]["state"].values(), out["optimizer"]["state"].values(),
                    strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "ref" / "train_log.csv").drop(columns=TIMING),
        pd.read_csv(work / "train_log.csv").drop(columns=TIMING))


def test_sigterm_state_from_another_process_count_repeats_the_epoch(sigterm_data: Path,
                                                                    tmp_path: Path) -> None:
    cfg = _config(sigterm_data)
    with pytest.raises(SystemExit):
        _train(cfg, tmp_path, 0, None, None, sigterm_at=3)
    state = checkpoint.load(tmp_path / "state" / "last.pt")
    state["rng"] = state["rng"] * 2  # as if saved by a 2-GPU run
    checkpoint.save(tmp_path / "state" / "last.pt", state)
    trainer = Trainer(TrainOptions.from_config(cfg, 0), tmp_path / "state")
    assert (trainer.epoch, trainer.step) == (1, 0)


# ------------------------------------------------------------------------------ infer resume
def _store_arrays(path: Path) -> dict:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in group.array_keys()}


def test_infer_resume_skips_written_images_and_equals_a_full_run(
        sigterm_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import numpy as np

    from dars.engine import infer as infer_mod
    from dars.store.probstore import ProbStore, ProbStoreWriter, partial_path

    cfg = _config(sigterm_data)
    cfg["infer"]["batch_size"] = 3  # 8 images: batches [0 1 2] [3 4 5] [6 7]
    cfg["infer"]["images_per_chunk"] = 2  # chunk files [0 1] [2 3] [4 5] [6 7]
    _train(cfg, tmp_path / "teacher", 0, None, None)
    teacher = tmp_path / "teacher" / "model.pt"
    infer_mod.infer(InferOptions.from_config(cfg), teacher, tmp_path / "ref.zarr")

    store = tmp_path / "probs.zarr"
    real_write, written = ProbStoreWriter.write_prediction, []

    def write_then_die(self, index, *arrays):  # noqa: ANN001, ANN002, ANN202
        if len(written) == 4:
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this runs
        real_write(self, index, *arrays)
        written.append(index)

    monkeypatch.setattr(ProbStoreWriter, "write_prediction", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        infer_mod.infer(InferOptions.from_config(cfg), teacher, store)
    monkeypatch.setattr(ProbStoreWriter, "write_prediction", real_write)
    assert not store.exists() and partial_path(store).exists()
    with pytest.raises(Exception, match="unfinished one exists"):
        ProbStore(store)

    predicted: list[int] = []
    real_predict = infer_mod.predict_labels

    def spy(model, samples, indices, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        predicted.extend(indices)
        return real_predict(model, samples, indices, *args, **kw)

    monkeypatch.setattr(infer_mod, "predict_labels", spy)
    with caplog.at_level(logging.INFO, logger="dars.engine.infer"):
        infer_mod.infer(InferOptions.from_config(cfg), teacher, store)
    assert "resuming: 4 of 8 images already written; predicting 5 (1 of them again" in caplog.text
    assert sorted(predicted) == [3, 4, 5, 6, 7]  # the partly written batch is redone whole
    ref, out = _store_arrays(tmp_path / "ref.zarr"), _store_arrays(store)
    for name in ref:
        assert np.array_equal(ref[name], out[name], equal_nan=True), name
    assert not partial_path(store).exists()


def test_infer_never_resumes_a_partial_store_of_another_teacher(
        sigterm_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from dars.engine import infer as infer_mod
    from dars.store.probstore import ProbStoreWriter

    cfg = _config(sigterm_data)
    cfg["train"]["epochs"] = 1
    _train(cfg, tmp_path / "old", 0, None, None)
    cfg["train"]["epochs"] = 2
    _train(cfg, tmp_path / "new", 0, None, None)
    store = tmp_path / "probs.zarr"
    real_write = ProbStoreWriter.write_prediction

    def die_after_two(self, index, *arrays):  # noqa: ANN001, ANN002, ANN202
        if index >= 2:
            raise KeyboardInterrupt
        real_write(self, index, *arrays)

    monkeypatch.setattr(ProbStoreWriter, "write_prediction", die_after_two)
    with pytest.raises(KeyboardInterrupt):  # the old teacher's inference, killed
        infer_mod.infer(InferOptions.from_config(cfg), tmp_path / "old" / "model.pt", store)
    monkeypatch.setattr(ProbStoreWriter, "write_prediction", real_write)
    infer_mod.infer(InferOptions.from_config(cfg), tmp_path / "new" / "model.pt", store)
    infer_mod.infer(InferOptions.from_config(cfg), tmp_path / "new" / "model.pt",
                    tmp_path / "ref.zarr")
    ref, out = _store_arrays(tmp_path / "ref.zarr"), _store_arrays(store)
    assert all(np.array_equal(ref[k], out[k]) for k in ref)


# ------------------------------------------------------------------------------ workflow kills
# One chain of kills on one run, each phase asking Snakemake for the next stage's output and
# killing that stage mid-way; the next phase's Snakemake call is the rerun that must recover.
# Everything ends in one full run, compared with an uninterrupted reference run of the same
# config (kill_helpers.CONFIG). About 2-3 minutes on 2 cores.
# The killed run is also the determinism check: a second run of the same config and seed, in
# another directory, whose every artifact (label histogram, both models and train logs, the
# store's arrays, every pseudo-label PNG, thresholds, stats and summaries, metrics) must equal
# the reference bit for bit -- interrupted at every stage on top.

import numpy as np  # noqa: E402
from kill_helpers import (  # noqa: E402
    RUN,
    TARGET,
    Kill,
    kill_stage,
    read_json,
    reference_run,
    run_snakemake,
    start_snakemake,
    store_arrays,
    write_config,
)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _written(store: Path) -> int:
    """Images marked written in a partial store (0 while it does not exist yet)."""
    import zarr

    try:
        return int(zarr.open_array(str(store / "written"), mode="r")[:].sum())
    except Exception:  # noqa: BLE001 - not created yet, or being created
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def killed_run(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Kill each stage once, in pipeline order; record what each kill and rerun did."""
    w = tmp_path_factory.mktemp("killed")
    write_config(w)
    res, logs = w / "results" / RUN, w / "logs" / RUN
    r0, r1 = res / "round0", res / "round1"
    seen: dict[str, dict] = {}

    def phase(name: str, target: Path, command: str, when, **kw) -> Kill:  # noqa: ANN001
        sn = start_snakemake(w, str(target.relative_to(w)))
        kill = kill_stage(sn, command, when, **kw)
        seen[name] = {"kill": kill}
        return kill

    # 1. label_histogram, while it reads the labeled masks
    phase("label_histogram", res / "label_histogram.csv", "histogram",
          lambda: "histogram:" in _text(logs / "label_histogram.log")
          and not (res / "label_histogram.csv").exists())
    seen["label_histogram"]["output_after_kill"] = (res / "label_histogram.csv").exists()

    # 2. train_baseline, after its first epoch's checkpoint
    phase("train_baseline", r0 / "model.pt", "train",
          lambda: (r0 / "state" / "last.pt").exists() and not (r0 / "model.pt").exists(),
          round_=0)
    seen["train_baseline"]["state"] = checkpoint.load(r0 / "state" / "last.pt")
    seen["train_baseline"]["outputs_after_kill"] = [
        p.name for p in r0.iterdir() if p.name != "state"]

    # 3. infer_probabilities, after 4+ of 24 images: the whole run dies (node failure)
    store = r1 / "probs.zarr.partial"
    phase("infer_probabilities", r1 / "probs.zarr", "infer",
          lambda: 4 <= _written(store) < 24, whole_run=True)
    seen["infer_probabilities"]["written_at_kill"] = _written(store)
    seen["train_baseline"]["rerun_log"] = _text(logs / "round0" / "train.log")

    # the rerun after a node failure: Snakemake's own lock must be released first
    proc = run_snakemake(w, str((r1 / "probs.zarr").relative_to(w)), check=False)
    seen["infer_probabilities"]["rerun_without_unlock"] = proc.returncode
    seen["infer_probabilities"]["rerun_message"] = proc.stdout + proc.stderr
    run_snakemake(w, "--unlock")

    # 4. pseudo_label, with some PNGs in its temporary directory
    def labels_started() -> bool:
        tmps = [p for p in r1.glob(".pseudo_labels.*.tmp") if p.is_dir()]
        return any(any(t.glob("*.png")) for t in tmps) and not (r1 / "pseudo_labels").exists()

    phase("pseudo_label", r1 / "pseudo_labels", "pseudo-label", labels_started)
    seen["pseudo_label"]["tmp_after_kill"] = [p.name for p in r1.glob(".pseudo_labels.*.tmp")]
    seen["infer_probabilities"]["rerun_log"] = _text(logs / "round1" / "infer.log")

    # 5. train_student, after its first epoch's checkpoint (SIGKILL)
    phase("train_student", r1 / "model.pt", "train",
          lambda: (r1 / "state" / "last.pt").exists() and not (r1 / "model.pt").exists(),
          round_=1)
    seen["train_student"]["state"] = checkpoint.load(r1 / "state" / "last.pt")

    # 6. train_student again, SIGTERM as soon as it has resumed: it stops after one step
    # once its progress bar is up: the trainer installs its SIGTERM handler before drawing it
    # ("resuming" is logged earlier, while a SIGTERM would still end the process at once)
    phase("sigterm", r1 / "model.pt", "train",
          lambda: "round 1:" in _text(logs / "round1" / "train.log"),
          round_=1, sig=signal.SIGTERM)
    seen["sigterm"]["log"] = _text(logs / "round1" / "train.log")
    seen["sigterm"]["state"] = checkpoint.load(r1 / "state" / "last.pt")
    seen["train_student"]["rerun_log"] = seen["sigterm"]["log"]

    # 7. evaluate of round 1, while it predicts the val images
    phase("evaluate", r1 / "metrics.json", "evaluate",
          lambda: "evaluate:" in _text(logs / "round1" / "evaluate.log")
          and not (r1 / "metrics.csv").exists(), round_=1)
    seen["sigterm"]["rerun_log"] = _text(logs / "round1" / "train.log")

    # 8. the rerun that finishes everything
    run_snakemake(w, TARGET)
    seen["final"] = {"dry_run": run_snakemake(w, TARGET, "-n").stdout}
    return {"workdir": w, "seen": seen}


def _same_checkpoint(a: Path, b: Path) -> None:
    sa, sb = checkpoint.load(a), checkpoint.load(b)
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), f"{a.name}: {key}"
    assert (sa["epoch"], sa["iteration"]) == (sb["epoch"], sb["iteration"])


def _same_csv(a: Path, b: Path) -> None:
    da, db = pd.read_csv(a), pd.read_csv(b)
    drop = [c for c in TIMING if c in da.columns]
    pd.testing.assert_frame_equal(da.drop(columns=drop), db.drop(columns=drop), check_exact=True)


def _outputs(run: Path) -> Path:
    return run / "results" / RUN


@pytest.mark.slow
def test_kill_label_histogram(killed_run: dict, reference: Path) -> None:
    seen = killed_run["seen"]["label_histogram"]
    assert seen["kill"].snakemake_rc != 0 and not seen["output_after_kill"]
    _same_csv(_outputs(reference) / "label_histogram.csv",
              _outputs(killed_run["workdir"]) / "label_histogram.csv")


@pytest.mark.slow
def test_kill_train_baseline_resumes_from_its_checkpoint(killed_run: dict,
                                                         reference: Path) -> None:
    seen = killed_run["seen"]["train_baseline"]
    assert seen["kill"].snakemake_rc != 0
    assert seen["outputs_after_kill"] == []  # neither model.pt nor train_log.csv
    epoch = seen["state"]["epoch"]
    assert 1 <= epoch < 4
    assert f"resuming round 0 from results/{RUN}/round0/state/last.pt at epoch {epoch}, " \
           "step 0" in seen["rerun_log"]
    a, b = _outputs(reference) / "round0", _outputs(killed_run["workdir"]) / "round0"
    _same_checkpoint(a / "model.pt", b / "model.pt")
    _same_csv(a / "train_log.csv", b / "train_log.csv")


@pytest.mark.slow
def test_kill_infer_skips_written_images(killed_run: dict, reference: Path) -> None:
    seen = killed_run["seen"]["infer_probabilities"]
    assert seen["kill"].snakemake_rc != 0
    # a killed Snakemake leaves its lock: the rerun needs `snakemake --unlock` first
    assert seen["rerun_without_unlock"] != 0 and "LockException" in seen["rerun_message"]
    n = seen["written_at_kill"]
    assert f"resuming: {n} of 24 images already written" in seen["rerun_log"]
    ref = store_arrays(_outputs(reference) / "round1" / "probs.zarr")
    out = store_arrays(_outputs(killed_run["workdir"]) / "round1" / "probs.zarr")
    assert ref.keys() == out.keys()
    for name in ref:
        assert np.array_equal(ref[name], out[name]), name


@pytest.mark.slow
def test_kill_pseudo_label(killed_run: dict, reference: Path) -> None:
    seen = killed_run["seen"]["pseudo_label"]
    assert seen["kill"].snakemake_rc != 0 and seen["tmp_after_kill"]  # died mid-write
    a, b = _outputs(reference) / "round1", _outputs(killed_run["workdir"]) / "round1"
    pngs = sorted(p.name for p in (a / "pseudo_labels").glob("*.png"))
    assert len(pngs) == 24 and pngs == sorted(p.name for p in (b / "pseudo_labels").glob("*.png"))
    for name in pngs:
        assert (a / "pseudo_labels" / name).read_bytes() == \
            (b / "pseudo_labels" / name).read_bytes(), name
    for name in ("thresholds.csv", "pseudo_stats.csv"):
        _same_csv(a / name, b / name)
    assert read_json(a / "pseudo_summary.json") == read_json(b / "pseudo_summary.json")
    assert list(b.glob(".pseudo_labels.*")) == []  # the killed writer's temporary is gone


@pytest.mark.slow
def test_kill_train_student_resumes_from_its_checkpoint(killed_run: dict,
                                                        reference: Path) -> None:
    seen = killed_run["seen"]["train_student"]
    assert seen["kill"].snakemake_rc != 0 and seen["state"]["epoch"] == 1
    assert f"resuming round 1 from results/{RUN}/round1/state/last.pt at epoch 1, step 0" \
        in seen["rerun_log"]
    a, b = _outputs(reference) / "round1", _outputs(killed_run["workdir"]) / "round1"
    _same_checkpoint(a / "model.pt", b / "model.pt")
    _same_csv(a / "train_log.csv", b / "train_log.csv")


@pytest.mark.slow
def test_sigterm_train_student_saves_mid_epoch_and_exits_cleanly(killed_run: dict) -> None:
    seen = killed_run["seen"]["sigterm"]
    assert seen["kill"].snakemake_rc != 0  # the job did not finish: Snakemake reruns it
    assert "SIGTERM: stopped round 1 at epoch 2, step 1 of 6" in seen["log"]
    assert "Traceback" not in seen["log"]
    assert (seen["state"]["epoch"], seen["state"]["step"]) == (1, 1)
    assert "at epoch 1, step 1" in seen["rerun_log"]


@pytest.mark.slow
def test_kill_evaluate(killed_run: dict, reference: Path) -> None:
    seen = killed_run["seen"]["evaluate"]
    assert seen["kill"].snakemake_rc != 0
    for r in (0, 1):
        a, b = _outputs(reference) / f"round{r}", _outputs(killed_run["workdir"]) / f"round{r}"
        _same_csv(a / "metrics.csv", b / "metrics.csv")
        assert read_json(a / "metrics.json") == read_json(b / "metrics.json")
    _same_csv(_outputs(reference) / "summary.csv",
              _outputs(killed_run["workdir"]) / "summary.csv")


@pytest.mark.slow
def test_killed_run_is_complete_and_clean(killed_run: dict) -> None:
    assert "Nothing to be done" in killed_run["seen"]["final"]["dry_run"]
    res = _outputs(killed_run["workdir"])
    leftovers = [str(p) for p in res.rglob("*") if ".tmp" in p.name or ".partial" in p.name]
    assert leftovers == []
    snakemake_logs = "".join(_text(p) for p in killed_run["workdir"].glob("snakemake-*.out"))
    assert "--rerun-incomplete" not in snakemake_logs  # never required
