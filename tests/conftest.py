"""Shared fixtures: small datasets written in the generic folder layout; the shared workflow
runs started in the background as soon as the tests that need them are collected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["background", "a", "b"]


def write_folder_dataset(root: Path, n: int = 12, size: int = 16, seed: int = 0,
                         splits: dict[str, range] | None = None) -> Path:
    """Random RGB images of 4x4 blocks whose class is learnable from colour (brightest channel)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    for i in range(n):
        cells = rng.integers(0, len(CLASSES), (4, 4)).astype(np.uint8)
        mask = np.kron(cells, np.ones((size // 4, size // 4), np.uint8))
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        for c in range(len(CLASSES)):
            image[..., c][mask == c] += 150
        Image.fromarray(image).save(root / "images" / f"img{i:03d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img{i:03d}.png")
    splits = splits or {"labeled": range(0, 4), "unlabeled": range(4, 8), "val": range(8, n)}
    for name, idx in splits.items():
        lines = [f"images/img{i:03d}.png masks/img{i:03d}.png" for i in idx]
        (root / "splits" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "data")


@pytest.fixture
def folder_config(folder_dataset: Path) -> dict:
    from dars.core import config

    return config.validate({
        "dataset": {"name": "folder", "root": str(folder_dataset)},
        "model": {"name": "tiny", "width": 8},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.05, "crop_size": 16},
        "rounds": [{"alpha": 0.5, "epochs": 1}],
    })


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the whole-workflow runs several tests share (the tiny run, the kill suite's
    reference) now, in the background: they then overlap the tests that come before their
    first user instead of waiting for it (about 1.5 minutes of the suite on 2 cores)."""
    import kill_helpers
    import workflow_helpers

    needed = {name for item in items for name in getattr(item, "fixturenames", ())}
    factory = config._tmp_path_factory  # what the tmp_path_factory fixture returns
    if "tiny_run" in needed:
        workflow_helpers.start_tiny_run(factory.mktemp("background"))
    if "reference" in needed:
        kill_helpers.start_reference_run(factory.mktemp("background"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop background runs no test waited for (a -x stop, a failure before them)."""
    import workflow_helpers

    for run in workflow_helpers.BACKGROUND.values():
        run.stop()
