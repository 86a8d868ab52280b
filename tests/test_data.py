import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dars.core import config
from dars.core.errors import DarsError
from dars.core.options import DatasetOptions
from dars.data.dataset import SegmentationDataset, dataset_spec
from dars.data.demo import DEMO_CLASSES, DemoOptions, build_demo
from dars.data.images import read_image, read_mask
from dars.data.shapes import SHAPES_CLASSES
from dars.data.splits import read_split
from dars.pseudo.label_histogram import label_histogram


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


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_images_decode_as_pillow_does(tmp_path: Path, mode: str) -> None:
    """OpenCV decodes PNG images (faster): the same RGB pixels as Pillow's convert("RGB")."""
    noisy = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(noisy).convert(mode).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, np.asarray(Image.open(path).convert("RGB")))


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(DarsError, match="broken.png"):
        read_image(bad)
    bad.write_bytes(good.read_bytes()[:-12])  # the pixels whole, IEND cut
    with pytest.raises(DarsError, match="cannot read image .*broken.png: missing, truncated"):
        read_image(bad)


def test_size_mismatch_is_named(folder_config: dict, folder_dataset: Path) -> None:
    mask = folder_dataset / "masks" / "img001.png"
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="L").save(mask)
    spec = dataset_spec(DatasetOptions.from_config(folder_config))
    ds = SegmentationDataset(spec, spec.samples("labeled"))
    with pytest.raises(DarsError, match="img001.png is 7x5 but image"):
        ds[1]


def test_classes_from_file_and_count_mismatch(folder_config: dict, folder_dataset: Path) -> None:
    spec = dataset_spec(DatasetOptions.from_config(folder_config))
    assert spec.classes == ["background", "a", "b"]
    folder_config["dataset"]["classes"] = ["background", "a"]
    spec = dataset_spec(DatasetOptions.from_config(folder_config))
    ds = SegmentationDataset(spec, spec.samples("labeled"))
    with pytest.raises(DarsError, match="class count in config does not match"):
        for i in range(len(ds)):
            ds[i]


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _pixel_digest(root: Path) -> str:
    """sha256 over the decoded pixels of every PNG (independent of the zlib build)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(np.asarray(Image.open(p)).tobytes())
    return h.hexdigest()


DEMO_ARGS = {"num_train": 6, "num_val": 2, "size": 48, "labeled_fraction": 0.5, "seed": 3}


def test_default_fashion_demo_is_unchanged(tmp_path: Path) -> None:
    """The digest was taken from the generator before the ``scene`` option existed (commit
    9d749b9): adding the shapes scene must not change one pixel of the default demo (the
    schema's default scene is fashion: test_unknown_scene_is_rejected)."""
    build_demo(tmp_path / "fashion", DemoOptions(**DEMO_ARGS, scene="fashion"))
    assert _pixel_digest(tmp_path / "fashion") == (
        "ae0b258e06e931f4b05e9a449f709fd7cf84fd18279b1f1b6006579a06e681a5")
    assert (tmp_path / "fashion" / "classes.txt").read_text().split() == DEMO_CLASSES


def test_shapes_demo_is_deterministic(tmp_path: Path) -> None:
    build_demo(tmp_path / "a", DemoOptions(**DEMO_ARGS, scene="shapes"))
    build_demo(tmp_path / "b", DemoOptions(**DEMO_ARGS, scene="shapes"))
    build_demo(tmp_path / "c", DemoOptions(**{**DEMO_ARGS, "seed": 4}, scene="shapes"))
    a = _file_bytes(tmp_path / "a")
    assert a == _file_bytes(tmp_path / "b")
    c = _file_bytes(tmp_path / "c")
    assert a.keys() == c.keys() and a["images/train_00000.png"] != c["images/train_00000.png"]
    for split in ("labeled", "unlabeled", "val"):
        lines = a[f"splits/{split}.txt"].decode().splitlines()
        assert lines and all(line.split()[1].startswith("masks/") for line in lines)


@pytest.fixture(scope="module")
def shapes_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "demo"
    build_demo(root, DemoOptions(num_train=400, num_val=20, size=64, labeled_fraction=0.125,
                                 seed=0, scene="shapes"))
    return root


def test_shapes_demo_has_ten_object_classes(shapes_demo: Path) -> None:
    classes = (shapes_demo / "classes.txt").read_text().split("\n")[:-1]
    assert classes == SHAPES_CLASSES and len(classes) == 11 and classes[0] == "background"
    cfg = config.validate({"dataset": {"name": "demo", "root": str(shapes_demo)}})
    spec = dataset_spec(DatasetOptions.from_config(cfg))
    assert spec.num_classes == 11
    seen = set()
    for sample in spec.samples("labeled"):
        seen |= set(np.unique(read_mask(sample.mask, 11, 255)).tolist())
    assert seen == set(range(11))  # every class occurs in the 50 labeled scenes


def test_shapes_pixels_are_long_tailed(shapes_demo: Path, tmp_path: Path) -> None:
    cfg = config.validate({"dataset": {"name": "demo", "root": str(shapes_demo)}})
    hist = label_histogram(DatasetOptions.from_config(cfg), tmp_path / "hist.csv",
                           split="unlabeled")
    fractions = dict(zip(hist["name"], hist["ratio"], strict=True))
    objects = np.array([fractions[name] for name in SHAPES_CLASSES[1:]])
    assert 0.45 < fractions["background"] < 0.70  # background dominates
    assert 0.005 < objects.min() < 0.03  # the rarest class: ~1-2 % of the pixels
    assert objects.max() > 5 * objects.min()
    assert objects[:3].sum() > objects[3:].sum()  # three head classes outweigh the seven others
    assert objects.argmax() == 0 and objects[-3:].max() < objects[:3].min()  # Zipf rank order


def test_unknown_scene_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scene 'cars'"):
        build_demo(tmp_path / "x", DemoOptions(**DEMO_ARGS, scene="cars"))
    with pytest.raises(DarsError, match="scene"):
        config.validate({"demo": {"scene": "cars"}})
    assert config.validate({})["demo"]["scene"] == "fashion"
