"""Cityscapes, VOC and folder datasets in their real on-disk layouts; `dars split`. Fixtures are
tiny trees written by the tests (tests/fake_datasets.py); the paper configs are checked in
test_config.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_datasets import (
    cityscapes_split_lines,
    write_cityscapes,
    write_mask,
    write_split,
    write_voc,
)
from PIL import Image

from dars.cli import main
from dars.core import config
from dars.core.constants import IGNORE
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions
from dars.data.dataset import SegmentationDataset, dataset_spec
from dars.data.definitions import CITYSCAPES, CITYSCAPES_LABEL_IDS, VOC, dataset_names
from dars.data.draw_split import discover_pairs, labeled_count
from dars.data.images import read_mask
from dars.pseudo.thresholds import PseudoLabelOptions
from dars.store.probstore import ProbStore

PSEUDO_OPTIONS = PseudoLabelOptions(alpha=0.5).to_json()  # dars pseudo-label --options-json

@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    root = write_cityscapes(tmp_path / "cityscapes",
                            {"train": {"aachen": 5, "bochum": 5}, "val": {"frankfurt": 2}})
    write_split(root / "val.txt", cityscapes_split_lines(root, "val"))
    return root


def _cs_config(root: Path, **sections: dict) -> dict:
    return config.validate({
        "dataset": {"name": "cityscapes", "root": str(root),
                    "splits": {"labeled": "labeled.txt", "unlabeled": "unlabeled.txt",
                               "val": "val.txt"}},
        **sections,
    })


# -- label mapping ---------------------------------------------------------------------------
def test_cityscapes_label_ids_map_to_the_official_train_ids(tmp_path: Path) -> None:
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_mask(tmp_path / "x_gtFine_labelIds.png", raw)
    mapped = read_mask(tmp_path / "x_gtFine_labelIds.png", 19, 255)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(256):
        assert mapped.flat[label_id] == expected.get(label_id, 255), label_id
    assert len(CITYSCAPES.classes) == 19


def test_cityscapes_ready_train_ids_are_read_unchanged(tmp_path: Path) -> None:
    ids = np.array([[0, 7], [18, 255]], np.uint8)
    write_mask(tmp_path / "x_gtFine_labelTrainIds.png", ids)
    assert read_mask(tmp_path / "x_gtFine_labelTrainIds.png", 19, 255).tolist() == ids.tolist()


def test_official_split_falls_back_to_label_ids(cityscapes_root: Path) -> None:
    spec = dataset_spec(DatasetOptions.from_config(_cs_config(cityscapes_root)))
    val = spec.samples("val")
    assert [s.mask.name for s in val] == ["frankfurt_000000_000019_gtFine_labelIds.png",
                                         "frankfurt_000001_000019_gtFine_labelIds.png"]
    # a ready labelTrainIds file takes precedence over the fallback
    ready = val[0].mask.with_name("frankfurt_000000_000019_gtFine_labelTrainIds.png")
    write_mask(ready, np.zeros((32, 64), np.uint8))
    assert spec.samples("val")[0].mask == ready
    _, mask = SegmentationDataset(spec, spec.samples("val")).load(1)
    assert set(np.unique(mask)) <= set(range(19)) | {255} and 255 in mask


def test_voc_palette_masks_of_odd_sizes(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc")
    cfg = config.validate({"dataset": {"name": "voc", "root": str(root), "splits": {
        "labeled": "labeled.txt", "unlabeled": "unlabeled.txt", "val": "val.txt"}}})
    spec = dataset_spec(DatasetOptions.from_config(cfg))
    assert spec.classes == list(VOC.classes) and spec.num_classes == 21
    ds = SegmentationDataset(spec, spec.samples("labeled"))
    sizes = set()
    for i in range(len(ds)):
        image, mask = ds.load(i)
        sizes.add(mask.shape)
        assert image.shape[:2] == mask.shape
        assert set(np.unique(mask)) <= {0, 1, 7, 15, 20, 255} and (mask[0] == 255).all()
    assert len(sizes) > 1


def test_fixed_dataset_facts_cannot_be_contradicted(cityscapes_root: Path) -> None:
    cfg = _cs_config(cityscapes_root)
    cfg["dataset"]["ignore_index"] = 250
    with pytest.raises(DarsError, match="dataset.ignore_index: cityscapes masks use 255"):
        dataset_spec(DatasetOptions.from_config(cfg))
    cfg = _cs_config(cityscapes_root)
    cfg["dataset"]["classes"] = ["road", "rest"]
    with pytest.raises(DarsError, match="leave dataset.classes empty"):
        dataset_spec(DatasetOptions.from_config(cfg))


def test_folder_dataset_takes_user_classes_and_ignore(folder_dataset: Path) -> None:
    for i in range(12):  # relabel: ignore becomes 9
        m = np.array(Image.open(folder_dataset / "masks" / f"img{i:03d}.png"))
        m[:2] = 9
        write_mask(folder_dataset / "masks" / f"img{i:03d}.png", m)
    cfg = config.validate({"dataset": {"name": "folder", "root": str(folder_dataset),
                                       "classes": ["bg", "x", "y"], "ignore_index": 9}})
    spec = dataset_spec(DatasetOptions.from_config(cfg))
    assert (spec.classes, spec.ignore_index) == (["bg", "x", "y"], 9)
    _, mask = SegmentationDataset(spec, spec.samples("labeled")).load(0)
    assert (mask[:2] == IGNORE).all()  # the dataset's 9 is the pipeline's IGNORE once read
    assert (mask[2:] < 3).all()


def test_schema_lists_every_defined_dataset() -> None:
    enum = config.schema()["properties"]["dataset"]["properties"]["name"]["enum"]
    assert sorted(enum) == dataset_names()


# -- dars split ------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "total", "count"),
                         [("1/8", 2975, 372), ("1/4", 2975, 744), ("0.125", 2975, 372),
                          ("1464", 10582, 1464)])
def test_labeled_count(spec: str, total: int, count: int) -> None:
    assert labeled_count(spec, total) == count


@pytest.mark.parametrize("spec", ["0", "1/0", "abc", "10"])
def test_labeled_count_refuses_nonsense(spec: str) -> None:
    with pytest.raises(DarsError, match="--labeled"):
        labeled_count(spec, 10)


def _split(cfg: dict, out: Path, labeled: str, seed: int) -> tuple[list[str], list[str]]:
    argv = ["split", "--config-json", json.dumps(cfg), "--labeled", labeled, "--seed", str(seed),
            "--out-labeled", str(out / "l.txt"), "--out-unlabeled", str(out / "u.txt")]
    assert main(argv) == 0
    return ((out / "l.txt").read_text().splitlines(), (out / "u.txt").read_text().splitlines())


def test_split_command_is_seeded_disjoint_and_official(cityscapes_root: Path,
                                                       tmp_path: Path) -> None:
    cfg = _cs_config(cityscapes_root)
    a_l, a_u = _split(cfg, tmp_path / "a", "1/4", 3)
    b_l, b_u = _split(cfg, tmp_path / "b", "1/4", 3)
    c_l, _ = _split(cfg, tmp_path / "c", "1/4", 4)
    assert (a_l, a_u) == (b_l, b_u) and len(a_l) == round(10 / 4) and len(a_u) == 10 - len(a_l)
    assert c_l != a_l  # another seed, another split (10 choose 2 = 45 possibilities)
    assert not set(a_l) & set(a_u) and a_l == sorted(a_l)
    assert all(line.split()[1].endswith("_gtFine_labelTrainIds.png") for line in a_l + a_u)
    assert all("/train/" in line for line in a_l + a_u)  # val never drawn
    # the written files are readable splits (masks resolved to the raw labelIds files)
    cfg["dataset"]["splits"].update(labeled=str(tmp_path / "a" / "l.txt"))
    assert len(dataset_spec(DatasetOptions.from_config(cfg)).samples("labeled")) == len(a_l)


def test_split_excludes_val_and_images_without_masks(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc")
    cfg = config.validate({"dataset": {"name": "voc", "root": str(root),
                                       "splits": {"val": "val.txt"}}})
    labeled, unlabeled = _split(cfg, tmp_path, "2", 0)
    names = {line.split()[0] for line in labeled + unlabeled}
    assert len(labeled) == 2 and len(names) == 8  # 10 images - 2 val; the mask-less one skipped
    assert "JPEGImages/2012_nomask.jpg" not in names


def test_split_patterns_are_checked(folder_dataset: Path, tmp_path: Path) -> None:
    cfg = config.validate({"dataset": {"name": "folder", "root": str(folder_dataset)}})
    assert main(["split", "--config-json", json.dumps(cfg), "--labeled", "1/2", "--seed", "0",
                 "--out-labeled", str(tmp_path / "l"), "--out-unlabeled",
                 str(tmp_path / "u")]) == 2  # folder has no default patterns
    with pytest.raises(DarsError, match=r"uses \['stem'\]"):
        discover_pairs(folder_dataset, "images/{name}.png", "masks/{stem}.png")
    pairs = discover_pairs(folder_dataset, "images/{name}.png", "masks/{name}.png")
    assert len(pairs) == 12 and pairs[0] == ("images/img000.png", "masks/img000.png")


# -- every stage on the real layouts ------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["cityscapes", "voc"])
def test_every_stage_runs_on_the_real_layout(dataset: str, tmp_path: Path) -> None:
    if dataset == "cityscapes":
        root = write_cityscapes(tmp_path / "data", {"train": {"aachen": 8}, "val": {"ulm": 2}})
        write_split(root / "val.txt", cityscapes_split_lines(root, "val"))
        _split(_cs_config(root), root, "1/2", 0)
        splits = {"labeled": "l.txt", "unlabeled": "u.txt", "val": "val.txt"}
        tail = ["person", "car"]
    else:
        root = write_voc(tmp_path / "data")
        splits = {"labeled": "labeled.txt", "unlabeled": "unlabeled.txt", "val": "val.txt"}
        tail = ["bus", "car"]
    cfg = config.validate({
        "dataset": {"name": dataset, "root": str(root), "splits": splits},
        "model": {"name": "tiny", "width": 8},
        "train": {"epochs": 2, "batch_size": 4, "crop_size": 24, "rotate": 10, "blur": True},
        "rounds": [{"alpha": 0.5, "epochs": 1}],
        "infer": {"mode": "sliding", "crop_size": 24, "batch_size": 3},
        "evaluate": {"mode": "sliding", "crop_size": 24, "flip": True, "tail_classes": tail},
    })
    res, js = tmp_path / "res", json.dumps(cfg)
    assert main(["histogram", "--config-json", js, "--out", str(res / "hist.csv")]) == 0
    hist = pd.read_csv(res / "hist.csv")
    spec = dataset_spec(DatasetOptions.from_config(cfg))
    assert len(hist) == len(spec.classes) and hist["pixels"].sum() > 0
    if dataset == "cityscapes":  # labelIds were mapped: raw ids 0/4/9/30 counted nowhere
        raw = np.concatenate([np.array(Image.open(s.mask)).ravel()
                              for s in spec.samples("labeled")])
        assert hist["pixels"].sum() == np.isin(raw, CITYSCAPES_LABEL_IDS).sum()
    train = ["train", "--config-json", js, "--threads", "1"]
    assert main([*train, "--round", "0", "--out", str(res / "r0.pt"),
                 "--log-csv", str(res / "r0.csv"), "--state-dir", str(res / "s0")]) == 0
    assert main(["infer", "--config-json", js, "--model", str(res / "r0.pt"),
                 "--out", str(res / "probs.zarr"), "--threads", "1"]) == 0
    store = ProbStore(res / "probs.zarr")
    expected = [np.array(Image.open(s.image)).shape[:2] for s in spec.samples("unlabeled")]
    assert [tuple(s) for s in store.shapes] == expected  # variable sizes kept exactly
    assert main(["pseudo-label", "--options-json", PSEUDO_OPTIONS, "--store",
                 str(res / "probs.zarr"), "--label-hist", str(res / "hist.csv"),
                 "--labels-out", str(res / "pseudo"),
                 "--summary-out", str(res / "pseudo.json")]) == 0
    for sample, size in zip(spec.samples("unlabeled"), expected, strict=True):
        label = np.array(Image.open(res / "pseudo" / f"{sample.id}.png"))
        assert label.shape == size  # one label per image, at that image's own size
        assert set(np.unique(label).tolist()) <= set(range(spec.num_classes)) | {255}
    if dataset == "voc":
        assert len(set(expected)) > 1  # the point of the VOC fixture: sizes vary
    assert main([*train, "--round", "1", "--init", str(res / "r0.pt"),
                 "--pseudo", str(res / "pseudo"), "--out", str(res / "r1.pt"),
                 "--log-csv", str(res / "r1.csv"), "--state-dir", str(res / "s1")]) == 0
    assert main(["evaluate", "--config-json", js, "--model", str(res / "r1.pt"),
                 "--round", "1", "--metrics", str(res / "m.csv"),
                 "--summary", str(res / "m.json"), "--threads", "1"]) == 0
    summary = json.loads((res / "m.json").read_text())
    assert summary["images"] == 2 and 0 <= summary["miou"] <= 1
