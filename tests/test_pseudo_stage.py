"""The pseudo-label stage on real zarr stores: passes, blocks, temperature, CLI, bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dars.cli import main, parse_shard
from dars.core.constants import NUM_BINS
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions, SplitFiles
from dars.pseudo.confidence_hist import store_histogram
from dars.pseudo.stage import (
    PseudoLabelOptions,
    mask_reader,
    pseudo_label,
)
from dars.stats.counting import confidence_histogram
from dars.store.artifacts import MANIFEST
from dars.store.probstore import MAX_IMAGES_PER_CHUNK, ProbStore, ProbStoreWriter

NAMES = ["road", "car", "person", "bike"]
C = len(NAMES)


# ----------------------------------------------------------------------------- fixtures
def write_store(path: Path, shapes: list[tuple[int, int]], seed: int = 0,
                names: list[str] = NAMES, corrupt: dict[int, float] | None = None,
                ids: list[str] | None = None, temperature: float = 1.0
                ) -> tuple[Path, dict[str, np.ndarray]]:
    """A store of over-confident softmax outputs + true masks.

    Half of the pixels are near one-hot (others 1e-5): confidence exactly 1.0 in float16, as
    real over-confident teachers produce, yet still lowered by temperature scaling.
    ``temperature`` is only recorded (inference is what applies T).
    """
    rng = np.random.default_rng(seed)
    c = len(names)
    ids = ids or [f"img{i:02d}" for i in range(len(shapes))]
    writer = ProbStoreWriter(path, ids, shapes, names, temperature=temperature)
    truth = {}
    for i, (h, w) in enumerate(shapes):
        true = rng.choice(c, size=(h, w), p=np.geomspace(1, 0.1, c) / np.geomspace(1, 0.1, c).sum())
        logits = rng.normal(size=(c, h, w)) + 3.0 * np.eye(c)[true].transpose(2, 0, 1)
        probs = np.exp(2 * logits)
        probs /= probs.sum(axis=0)
        confident = rng.random((h, w)) < 0.5
        onehot = np.eye(c)[probs.argmax(axis=0)[confident]].T
        probs[:, confident] = onehot * (1 - 1e-5 * c) + 1e-5
        if corrupt and i in corrupt:
            probs[:, 0, 0] = corrupt[i]
        p = probs.astype(np.float16)
        writer.write_prediction(i, p.argmax(0), p.max(0))
        truth[ids[i]] = true.astype(np.uint8)
    writer.finalize()
    return path, truth


def write_label_hist(path: Path, pixels: list[int], names: list[str] = NAMES,
                     classes: list[int] | None = None) -> Path:
    classes = list(range(len(pixels))) if classes is None else classes
    total = sum(pixels)
    pd.DataFrame({"class": classes, "name": [names[c] for c in classes], "pixels": pixels,
                  "ratio": [p / total for p in pixels]}).to_csv(path, index=False)
    return path


SHAPES = [(17, 23), (31, 12), (8, 40), (25, 25), (3, 5), (40, 33), (12, 12)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pseudo")
    store, truth = write_store(root / "probs.zarr", SHAPES)
    hist = write_label_hist(root / "label_histogram.csv", [600, 250, 100, 50])
    return {"root": root, "store": store, "hist": hist, "truth": truth}


def read_labels(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.png"))}


def outputs(out: Path) -> dict[str, Path]:
    return {"thresholds_out": out / "thresholds.csv", "stats_out": out / "pseudo_stats.csv",
            "summary_out": out / "summary.json"}


# ----------------------------------------------------------------------------- passes
def test_store_histogram_equals_in_memory_histogram(setup: dict) -> None:
    store = ProbStore(setup["store"])
    pred = store.group["prediction"][:]
    conf = store.group["confidence"][:]
    np.testing.assert_array_equal(store_histogram(store), confidence_histogram(pred, conf, C))
    assert store_histogram(store).sum() == store.num_pixels  # padding skipped


def test_inference_counts_each_chunk_as_pass_1_would(setup: dict, tmp_path: Path) -> None:
    """The store's rows (one per chunk, counted by the writer) sum to the histogram of its
    images, and the stage thresholds from them without reading the pixels for pass 1."""
    store = ProbStore(setup["store"])
    rows = store.group["histogram"][:]
    assert rows.shape == (-(-len(store) // store.per_chunk), C, NUM_BINS)
    for k, row in enumerate(rows):
        images = slice(k * store.per_chunk, (k + 1) * store.per_chunk)
        np.testing.assert_array_equal(row, confidence_histogram(
            store.group["prediction"][images], store.group["confidence"][images], C))
    np.testing.assert_array_equal(store.histogram(), store_histogram(store))
    summary = pseudo_label(setup["store"], setup["hist"], tmp_path / "labels",
                           PseudoLabelOptions(alpha=0.3))
    assert summary["histogram_source"] == "inference"


def test_rows_that_miss_pixels_are_recounted_from_the_images(tmp_path: Path) -> None:
    """A NaN confidence is left out of its chunk's row, so the rows fall short of the pixels:
    the store offers no histogram and the stage counts the images, naming the bad one."""
    store, _ = write_store(tmp_path / "p.zarr", SHAPES[:3], corrupt={1: np.nan})
    assert ProbStore(store).histogram() is None
    assert ProbStore(store).group["histogram"][:].sum() < ProbStore(store).num_pixels


@pytest.mark.parametrize("method", ["dars", "da", "st", "cbst"])
def test_stage_end_to_end(setup: dict, tmp_path: Path, method: str) -> None:
    out = outputs(tmp_path)
    summary = pseudo_label(setup["store"], setup["hist"], tmp_path / "labels",
                           PseudoLabelOptions(alpha=0.3, method=method), **out,
                           true_mask=setup["truth"].__getitem__)
    store = ProbStore(setup["store"])
    kept = np.zeros(C, np.int64)
    for image_id, (h, w) in zip(store.image_ids, SHAPES, strict=True):
        with Image.open(tmp_path / "labels" / f"{image_id}.png") as img:
            assert img.mode == "P" and img.size == (w, h)  # cropped to the real size
            labels = np.asarray(img)
        assert set(np.unique(labels)) <= set(range(C)) | {255}
        kept += np.bincount(labels[labels != 255], minlength=C)
    thresholds = pd.read_csv(out["thresholds_out"])
    stats = pd.read_csv(out["stats_out"])
    assert list(thresholds.columns) == ["class", "name", "target", "threshold", "selected",
                                        "tied", "keep", "kept"]
    np.testing.assert_array_equal(thresholds["kept"], kept)
    np.testing.assert_array_equal(stats["shortfall"], stats["target"] - kept)
    assert stats["name"].tolist() == NAMES
    if method != "dars":  # deterministic methods keep exactly the selected pixels
        np.testing.assert_array_equal(kept, thresholds["selected"])
    saved = json.loads(out["summary_out"].read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["kept_pixels"] == kept.sum() and saved["num_pixels"] == store.num_pixels
    assert 0 <= saved["mean_precision"] <= 1 and saved["kl_labeled_pseudo"] >= 0
    assert stats["precision"].notna().any()


def test_precision_counts_agreement_with_true_masks(setup: dict, tmp_path: Path) -> None:
    masks = _write_masks(setup["truth"], tmp_path / "masks")
    pseudo_label(setup["store"], setup["hist"], tmp_path / "labels",
                 PseudoLabelOptions(alpha=0.5, method="da"), stats_out=tmp_path / "s.csv",
                 true_mask=mask_reader({p.stem: p for p in masks.glob("*.png")}, C, 255))
    correct = np.zeros(C)
    total = np.zeros(C)
    for image_id, true in setup["truth"].items():
        labels = np.asarray(Image.open(tmp_path / "labels" / f"{image_id}.png"))
        kept = labels != 255
        total += np.bincount(labels[kept], minlength=C)
        correct += np.bincount(labels[kept & (labels == true)], minlength=C)
    stats = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_allclose(stats["precision"], correct / total)


def test_precision_where_the_unlabeled_split_lists_masks(setup: dict, tmp_path: Path) -> None:
    """Any folder data set whose unlabeled split lists masks gets precision (not only the
    demo); one listing images only gets none."""
    for listed in (True, False):
        out = tmp_path / str(listed)
        dataset = _folder_dataset(setup["truth"], out / "data", listed)
        assert main(["pseudo-label", "--options-json", PseudoLabelOptions(alpha=0.3).to_json(),
                     "--store", str(setup["store"]), "--label-hist", str(setup["hist"]),
                     "--labels-out", str(out / "labels"), "--summary-out", str(out / "s.json"),
                     "--dataset-json", dataset.to_json()]) == 0
        precision = json.loads((out / "s.json").read_text())["mean_precision"]
        assert (precision is not None) == listed


def _write_masks(truth: dict[str, np.ndarray], root: Path) -> Path:
    root.mkdir()
    for image_id, mask in truth.items():
        Image.fromarray(mask).save(root / f"{image_id}.png")
    return root


def _folder_dataset(truth: dict[str, np.ndarray], root: Path, listed: bool = True
                    ) -> DatasetOptions:
    """A folder data set whose unlabeled split lists the store's images (with their true
    masks when ``listed``), as a user's own data would."""
    root.mkdir(parents=True)
    _write_masks(truth, root / "masks")
    (root / "images").mkdir()
    lines = []
    for image_id, mask in truth.items():
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / f"images/{image_id}.png")
        lines.append(f"images/{image_id}.png" + (f" masks/{image_id}.png" if listed else ""))
    (root / "splits").mkdir()
    (root / "splits/unlabeled.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return DatasetOptions("folder", str(root), (), 255, SplitFiles(
        "splits/labeled.txt", "splits/unlabeled.txt", "splits/val.txt"))


@pytest.mark.parametrize("sampling", ["paper", "exact"])
def test_block_size_and_threads_change_no_label(setup: dict, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                sampling: str) -> None:
    """Images are read a block at a time and labelled by a pool of threads; blocks of 2 images
    on 3 threads give the same files, manifest and tallies as whole-chunk blocks on one."""
    import dars.pseudo.stage as stage

    options = PseudoLabelOptions(alpha=0.3, seed=2, sampling=sampling)
    base = pseudo_label(setup["store"], setup["hist"], tmp_path / "whole", options, threads=1)
    monkeypatch.setattr(stage, "images_per_block", lambda store: 2)
    other = pseudo_label(setup["store"], setup["hist"], tmp_path / "n", options, threads=3)
    assert read_labels(tmp_path / "n") == read_labels(tmp_path / "whole")
    assert ((tmp_path / "n" / MANIFEST).read_bytes()
            == (tmp_path / "whole" / MANIFEST).read_bytes())
    for key in ("kept_pixels", "num_pixels", "num_images", "kl_labeled_pseudo"):
        assert other[key] == base[key]


# Labels of an integer-generated store (no float maths, so the same on every machine), pinned
# when pass 2 was a compiled kernel (numba, commit 515de19) and PNGs were written by hand: the
# digest covers the labels' pixels (decoded by Pillow), which must never change; the PNG
# bytes may (another encoder). dars pseudo-label wrote labels with these pixels since then.
PINNED_SHAPES = [(17, 23), (3, 5), (64, 64), (64, 64), (130, 70), (1, 1), (40, 33)]
PINNED_IDS = [f"img{i}" for i in range(len(PINNED_SHAPES) - 1)] + ["city/frame_0001"]
PINNED = [  # (alpha, method, sampling, seed) -> blake2b-128 of the label pixels, kept pixels
    ((0.3, "dars", "paper", 0), "8aaab1cad7bbd2fc88662dcdbfacf288", 5687),
    ((0.3, "dars", "ties", 7), "0e68f6ab1eb9937091492c8686c1b385", 5630),
    ((0.3, "dars", "exact", 0), "980366160fd8faa450b42934efe52952", 5714),  # pinned when added
    ((0.5, "da", "paper", 0), "0a9aa2b86a0eb9e4f984c0576ee002d4", 12001),
    ((0.7, "st", "paper", 0), "b5b7f07b02f0d2c4ed57fc2499db462d", 13314),
    ((0.7, "cbst", "paper", 0), "46c7baa1fb79591c64418e867de0ed65", 13317),
]


@pytest.fixture(scope="module")
def integer_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Predictions and float16 confidence bit patterns drawn as integers (half exactly 1.0)."""
    root = tmp_path_factory.mktemp("pinned")
    rng = np.random.default_rng(23)
    writer = ProbStoreWriter(root / "p.zarr", PINNED_IDS, PINNED_SHAPES, NAMES)
    for i, (h, w) in enumerate(PINNED_SHAPES):
        pred = rng.integers(0, C, (h, w), dtype=np.uint8)
        bits = np.where(rng.random((h, w)) < 0.5, 0x3C00, rng.integers(0x3400, 0x3C00, (h, w)))
        writer.write_prediction(i, pred, bits.astype(np.uint16).view(np.float16))
    writer.finalize()
    return root / "p.zarr", write_label_hist(root / "h.csv", [600, 250, 100, 50])


@pytest.mark.parametrize(("options", "expected", "kept"), PINNED)
def test_labels_are_those_pinned(integer_store: tuple[Path, Path], tmp_path: Path,
                                 options: tuple, expected: str, kept: int) -> None:
    import hashlib

    alpha, method, sampling, seed = options
    summary = pseudo_label(*integer_store, tmp_path / "labels", PseudoLabelOptions(
        alpha=alpha, method=method, sampling=sampling, seed=seed))
    pixels = hashlib.blake2b(digest_size=16)
    for image_id in PINNED_IDS:
        with Image.open(tmp_path / "labels" / f"{image_id}.png") as im:
            pixels.update(np.ascontiguousarray(np.asarray(im)).tobytes())
    assert (pixels.hexdigest(), summary["kept_pixels"]) == (expected, kept)


def test_pixels_per_image_sets_the_target(setup: dict, tmp_path: Path) -> None:
    """dataset.pixels_per_image: n_j = round(alpha P r_j) with P = that count x the images
    (the released VOC 500 x 375), not the store's true pixel count."""
    summary = pseudo_label(setup["store"], setup["hist"], tmp_path / "labels", PseudoLabelOptions(
        alpha=0.3, sampling="exact", pixels_per_image=300), **outputs(tmp_path))
    thresholds = pd.read_csv(tmp_path / "thresholds.csv")
    ratios = np.array([600, 250, 100, 50]) / 1000
    p = 300 * len(SHAPES)
    assert p != summary["store_pixels"]
    np.testing.assert_array_equal(thresholds["target"], np.floor(0.3 * p * ratios + 0.5))
    assert summary["pixels_per_image"] == 300 and summary["sampling"] == "exact"


def test_a_bad_pixel_count_is_one_error_line(setup: dict, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    options = json.loads(PseudoLabelOptions(alpha=0.3).to_json()) | {"pixels_per_image": 0}
    assert main(["pseudo-label", "--options-json", json.dumps(options), "--store",
                 str(setup["store"]), "--label-hist", str(setup["hist"]), "--labels-out",
                 str(tmp_path / "labels")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "pixels per image" in err[0]
    assert not (tmp_path / "labels").exists()


def test_seed_determinism(setup: dict, tmp_path: Path) -> None:
    runs = {}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        pseudo_label(setup["store"], setup["hist"], tmp_path / name,
                     PseudoLabelOptions(alpha=0.1, seed=seed))
        runs[name] = read_labels(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_single_image_and_image_ids_with_folders(tmp_path: Path) -> None:
    store, _ = write_store(tmp_path / "p.zarr", [(9, 7)], ids=["city/frame_0001"])
    hist = write_label_hist(tmp_path / "h.csv", [1, 1, 1, 1])
    summary = pseudo_label(store, hist, tmp_path / "labels", PseudoLabelOptions(alpha=1.0))
    assert (tmp_path / "labels" / "city" / "frame_0001.png").is_file()
    assert summary["num_images"] == 1 and summary["num_pixels"] == 63


# ----------------------------------------------------------------------------- store layout
def _arrays(path: Path) -> dict[str, np.ndarray]:
    store = ProbStore(path)  # verifies the manifest
    block = next(store.blocks(block=len(store)))
    return {"confidence": block.confidence, "prediction": block.prediction,
            "shapes": store.shapes}


def test_chunks_hold_several_images_and_out_of_order_writes_change_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dars.store import probstore

    ref, _ = write_store(tmp_path / "ref.zarr", SHAPES)
    rng = np.random.default_rng(0)
    probs = []
    for h, w in SHAPES:
        p = rng.random((C, h, w)).astype(np.float32)
        probs.append((p / p.sum(axis=0)).astype(np.float16))
    stores = []
    for name, order, buffer in (("in_order", range(7), 1 << 30),
                                ("shuffled", [6, 0, 3, 1, 5, 2, 4], 1)):
        monkeypatch.setattr(probstore, "_BUFFER_BYTES", buffer)  # 1: write chunks early
        writer = ProbStoreWriter(tmp_path / f"{name}.zarr", [f"i{i}" for i in range(7)],
                                 SHAPES, NAMES, images_per_chunk=3)
        for i in order:
            writer.write_prediction(i, probs[i].argmax(0), probs[i].max(0))
        writer.close(range(7))
        writer.finalize()
        stores.append(_arrays(tmp_path / f"{name}.zarr"))
    for key in stores[0]:
        np.testing.assert_array_equal(stores[0][key], stores[1][key], key)
    files = sorted(p.relative_to(tmp_path / "shuffled.zarr").as_posix()
                   for p in (tmp_path / "shuffled.zarr").rglob("*") if p.is_file())
    # 3 chunk files (3 + 3 + 1 images) per per-image array
    assert [f for f in files if f.startswith("confidence/c/")] == [
        f"confidence/c/{k}/0/0" for k in range(3)]
    assert "manifest.json" in files
    assert ProbStore(ref).per_chunk == MAX_IMAGES_PER_CHUNK == 256  # small images: 256 a file


def test_a_writer_must_finish_the_chunks_it_starts(tmp_path: Path) -> None:
    writer = ProbStoreWriter(tmp_path / "p.zarr", ["a", "b", "c"], [(2, 2)] * 3, NAMES[:2],
                             images_per_chunk=2)
    writer.write_prediction(0, np.zeros((2, 2), np.uint8), np.full((2, 2), 0.5, np.float16))
    with pytest.raises(DarsError, match=r"chunk\(s\) \[0\] were never predicted"):
        writer.close(range(0, 1))


# ----------------------------------------------------------------------------- temperature
def test_the_stage_uses_the_stores_temperature_and_refuses_another(setup: dict,
                                                                   tmp_path: Path) -> None:
    plain = pseudo_label(setup["store"], setup["hist"], tmp_path / "plain",
                         PseudoLabelOptions(alpha=0.3, method="cbst"))
    one = pseudo_label(setup["store"], setup["hist"], tmp_path / "one",
                       PseudoLabelOptions(alpha=0.3, method="cbst"), temperature=1.0)
    assert read_labels(tmp_path / "plain") == read_labels(tmp_path / "one")
    assert plain["kept_pixels"] == one["kept_pixels"] and one["temperature"] == 1.0
    with pytest.raises(DarsError, match=r"written at temperature 1, this stage asks for "
                                        r"1.27; infer again with `dars infer --temperature"):
        pseudo_label(setup["store"], setup["hist"], tmp_path / "t",
                     PseudoLabelOptions(alpha=0.3, method="da"), temperature=1.27)
    assert not (tmp_path / "t").exists()
    warm, _ = write_store(tmp_path / "warm.zarr", SHAPES, temperature=1.27)
    summary = pseudo_label(warm, setup["hist"], tmp_path / "t", PseudoLabelOptions(
        alpha=0.3, method="da"), temperature=1.27, thresholds_out=tmp_path / "t.csv")
    assert summary["temperature"] == 1.27
    # pass 2 sees exactly the confidences counted in pass 1: the deterministic DA keeps
    # exactly the selected counts
    t = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_array_equal(t["kept"], t["selected"])


# ----------------------------------------------------------------------------- CLI
def test_cli_takes_the_options_json_or_a_config(setup: dict, tmp_path: Path) -> None:
    """``--options-json`` as the rules pass it; by hand ``--config`` and ``--round`` give the
    same options (the round's alpha, the pseudo_label section)."""
    from dars.core import config

    dataset = _folder_dataset(setup["truth"], tmp_path / "data")
    options = PseudoLabelOptions(alpha=0.4, method="dars", sampling="ties", seed=3)
    assert main(["pseudo-label", "--options-json", options.to_json(), "--store",
                 str(setup["store"]), "--label-hist", str(setup["hist"]),
                 "--labels-out", str(tmp_path / "labels"), "--summary-out",
                 str(tmp_path / "s.json"), "--thresholds-out", str(tmp_path / "t.csv"),
                 "--stats-out", str(tmp_path / "p.csv"), "--dataset-json", dataset.to_json()]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["alpha"], summary["sampling"], summary["seed"]) == (0.4, "ties", 3)
    assert summary["histogram_source"] == "inference" and summary["mean_precision"] is not None
    partial = {"rounds": [{"alpha": 0.9}, {"alpha": 0.5}],
               "pseudo_label": {"method": "st", "threshold": 0.9}}
    assert PseudoLabelOptions.from_config(config.validate(partial), 2) == PseudoLabelOptions(
        alpha=0.5, method="st", fixed_threshold=0.9)
    assert main(["pseudo-label", "--config-json", json.dumps(partial), "--round", "2",
                 "--store", str(setup["store"]), "--label-hist", str(setup["hist"]),
                 "--labels-out", str(tmp_path / "st"), "--summary-out",
                 str(tmp_path / "st.json")]) == 0
    assert json.loads((tmp_path / "st.json").read_text())["fixed_threshold"] == 0.9
    assert len(read_labels(tmp_path / "st")) == len(SHAPES)
    assert main(["pseudo-label", "--options-json", "{}", "--store", str(setup["store"]),
                 "--label-hist", str(setup["hist"]), "--labels-out",
                 str(tmp_path / "bad")]) == 2  # missing keys: one error line


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shard(text)


# ----------------------------------------------------------------------------- bad input
def assert_nothing_written(out: Path) -> None:
    assert not (out / "labels").exists()
    assert [p.name for p in out.iterdir() if not p.name.startswith("in")] == []


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return tmp_path


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5])
def test_bad_alpha_writes_nothing(setup: dict, inputs: Path, alpha: float) -> None:
    with pytest.raises(DarsError, match="alpha"):
        pseudo_label(setup["store"], setup["hist"], inputs / "labels",
                     PseudoLabelOptions(alpha=alpha), **outputs(inputs))
    assert_nothing_written(inputs)


def test_class_count_mismatch(setup: dict, inputs: Path) -> None:
    hist = write_label_hist(inputs / "in" / "h.csv", [5, 4, 3, 2, 1], names=NAMES + ["bus"])
    with pytest.raises(DarsError, match=r"h.csv.*5 rows for the 4 classes.*unexpected \[4\]"):
        pseudo_label(setup["store"], hist, inputs / "labels", PseudoLabelOptions(alpha=0.2),
                     **outputs(inputs))
    assert_nothing_written(inputs)


def test_histogram_missing_a_class(setup: dict, inputs: Path) -> None:
    hist = write_label_hist(inputs / "in" / "h.csv", [5, 4, 3], classes=[0, 1, 3])
    with pytest.raises(DarsError, match=r"h.csv.*missing classes \[2\]"):
        pseudo_label(setup["store"], hist, inputs / "labels", PseudoLabelOptions(alpha=0.2),
                     **outputs(inputs))
    assert_nothing_written(inputs)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_non_finite_probabilities(inputs: Path, bad: float, temperature: float) -> None:
    store, _ = write_store(inputs / "in" / "p.zarr", SHAPES[:3], corrupt={1: bad},
                           temperature=temperature)
    hist = write_label_hist(inputs / "in" / "h.csv", [1, 1, 1, 1])
    with pytest.raises(DarsError, match=r"image 'img01'.*NaN, infinite"):
        pseudo_label(store, hist, inputs / "labels",
                     PseudoLabelOptions(alpha=0.2), temperature=temperature, **outputs(inputs))
    assert_nothing_written(inputs)


def test_bad_true_mask_writes_nothing(setup: dict, inputs: Path) -> None:
    truth = {k: v[:-1] for k, v in setup["truth"].items()}  # one row short
    with pytest.raises(DarsError, match="true mask of 'img00'"):
        pseudo_label(setup["store"], setup["hist"], inputs / "labels",
                     PseudoLabelOptions(alpha=0.2), true_mask=truth.__getitem__,
                     **outputs(inputs))
    assert_nothing_written(inputs)
    with pytest.raises(DarsError, match="cannot read mask"):
        mask_reader({"img00": inputs / "in" / "img00.png"}, C, 255)("img00")
    with pytest.raises(DarsError, match="'img09' of the probability store is not in the "
                                        "unlabeled split"):
        mask_reader({"img00": inputs / "in" / "img00.png"}, C, 255)("img09")
