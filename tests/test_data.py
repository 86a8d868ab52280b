from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dars.data.dataset import SegmentationDataset, dataset_spec
from dars.data.io import read_image, read_mask
from dars.data.splits import read_split
from dars.data.transforms import RandomCrop, train_transform
from dars.errors import DarsError


def test_split_reading_and_ids(folder_dataset: Path) -> None:
    samples = read_split(folder_dataset, "splits/labeled.txt")
    assert [s.id for s in samples] == ["img000", "img001", "img002", "img003"]
    assert samples[0].mask == folder_dataset / "masks" / "img000.png"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("../etc/passwd masks/img000.png", "without '..'"),
        ("/etc/passwd masks/img000.png", "must be relative"),
        ("images/missing.png masks/img000.png", "file not found"),
        ("images/img000.png", "expected 'image_relpath label_relpath'"),
        ("images/img000.png masks/img000.png\nimages/img000.png masks/img000.png", "twice"),
    ],
)
def test_bad_split_lines(folder_dataset: Path, line: str, message: str) -> None:
    (folder_dataset / "splits" / "bad.txt").write_text(line + "\n")
    with pytest.raises(DarsError, match=message):
        read_split(folder_dataset, "splits/bad.txt")


def test_missing_root_and_split(tmp_path: Path, folder_dataset: Path) -> None:
    with pytest.raises(DarsError, match="dataset root not found"):
        read_split(tmp_path / "nowhere", "splits/labeled.txt")
    with pytest.raises(DarsError, match="split file not found"):
        read_split(folder_dataset, "splits/none.txt")
    (folder_dataset / "splits" / "empty.txt").write_text("\n")
    with pytest.raises(DarsError, match="lists no images"):
        read_split(folder_dataset, "splits/empty.txt")


def test_mask_checks(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.array([[0, 2], [255, 1]], np.uint8), mode="L").save(good)
    assert read_mask(good, 3, 255).tolist() == [[0, 2], [255, 1]]
    with pytest.raises(DarsError, match=r"values \[2\] outside \[0, 2\)"):
        read_mask(good, 2, 255)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(DarsError, match="mode RGB"):
        read_mask(rgb, 3, 255)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(DarsError, match="broken.png"):
        read_image(bad)


def test_size_mismatch_is_named(folder_config: dict, folder_dataset: Path) -> None:
    mask = folder_dataset / "masks" / "img001.png"
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="L").save(mask)
    spec = dataset_spec(folder_config)
    ds = SegmentationDataset(spec, spec.samples("labeled"))
    with pytest.raises(DarsError, match="img001.png is 7x5 but image"):
        ds[1]


def test_classes_from_file_and_count_mismatch(folder_config: dict, folder_dataset: Path) -> None:
    spec = dataset_spec(folder_config)
    assert spec.classes == ["background", "a", "b"]
    folder_config["dataset"]["classes"] = ["background", "a"]
    spec = dataset_spec(folder_config)
    ds = SegmentationDataset(spec, spec.samples("labeled"))
    with pytest.raises(DarsError, match="class count in config does not match"):
        for i in range(len(ds)):
            ds[i]


def test_crop_pads_with_ignore() -> None:
    torch.manual_seed(0)
    image, mask = torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.long)
    x, y = RandomCrop(8, 255)(image, mask)
    assert x.shape == (3, 8, 8) and y.shape == (8, 8)
    assert (y == 255).sum() == 64 - 20 and (x == 0).sum() == 3 * (64 - 20)


def test_train_transform_keeps_labels_valid() -> None:
    torch.manual_seed(0)
    t = train_transform((0.5, 1.5), 16, True, 255)
    for _ in range(10):
        x, y = t(torch.randn(3, 20, 24), torch.randint(0, 3, (20, 24)))
        assert x.shape == (3, 16, 16)
        assert set(y.unique().tolist()) <= {0, 1, 2, 255}
