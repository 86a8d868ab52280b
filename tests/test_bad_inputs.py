"""Bad inputs through the real CLI: one clear ``error:`` line naming the culprit, nothing written.

Table-driven: every case below builds a small scenario (a fresh folder dataset, plus a shared
checkpoint, probability store and label histogram), runs ``dars.cli.main([...])`` and checks

- exit status 2 and exactly one ``error:`` line on stderr, with no traceback;
- the line contains every culprit string of the case (a file, a config key, an option);
- none of the stage's outputs exist and no temporary is left next to them (a ``.partial``
  store may stay: it is resumable state that no reader or Snakemake takes for a result);
- case-specific checks (an older artifact kept intact, a malicious file never executed, the
  last good checkpoint kept).

``docs/RELIABILITY.md`` lists the cases and what they found.
"""

from __future__ import annotations

import copy
import errno
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CLASSES, write_folder_dataset
from PIL import Image

from dars import cli
from dars.core import config as config_mod
from dars.core.options import ModelOptions
from dars.models import build_model, checkpoint
from dars.store.artifacts import remove_path
from dars.store.probstore import ProbStoreWriter, partial_path

SIZE = 16
UNLABELED = [f"img{i:03d}" for i in range(4, 8)]
BASE = {
    "model": {"name": "tiny", "width": 4},
    "train": {"epochs": 2, "batch_size": 2, "lr": 0.05, "crop_size": SIZE},
    "rounds": [{"alpha": 0.5, "epochs": 1}],
}


# ------------------------------------------------------------------------------ shared inputs
def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _save_checkpoint(path: Path, model_config: dict, num_classes: int = 3,
                     weights_config: dict | None = None) -> Path:
    """A dars checkpoint (untrained weights): what ``dars.models.load_model`` reads."""
    torch.manual_seed(0)
    model = build_model(weights_config or model_config, num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)  # what a student may continue
    checkpoint.save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "model_config": model_config, "num_classes": num_classes,
                           "class_names": CLASSES[:num_classes], "round": 0, "epoch": 1,
                           "iteration": 1, "signature": "test", "history": []})
    return path


def _write_store(path: Path, ids: list[str], num_classes: int = 3,
                 corrupt: float | None = None) -> Path:
    rng = np.random.default_rng(0)
    writer = ProbStoreWriter(path, ids, [(SIZE, SIZE)] * len(ids),
                             (CLASSES + ["d", "e"])[:num_classes])
    for i in range(len(ids)):
        logits = rng.normal(size=(num_classes, SIZE, SIZE)) * 3
        probs = np.exp(logits) / np.exp(logits).sum(0)
        if corrupt is not None and i == 1:
            probs[:, 2, 3] = corrupt
        p = probs.astype(np.float16)
        writer.write_prediction(i, p.argmax(0), p.max(0))
    writer.finalize()
    return path


def _write_hist(path: Path, pixels: list[int]) -> Path:
    names = (CLASSES + ["d", "e"])[:len(pixels)]
    pd.DataFrame({"class": range(len(pixels)), "name": names, "pixels": pixels,
                  "ratio": np.array(pixels) / sum(pixels)}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shared")
    model_cfg = ModelOptions.from_config(config_mod.validate(copy.deepcopy(BASE))).params()
    return {
        "ckpt": _save_checkpoint(root / "teacher.pt", model_cfg),
        "store": _write_store(root / "probs.zarr", UNLABELED),
        "hist": _write_hist(root / "label_histogram.csv", [50, 30, 20]),
        "model_cfg": model_cfg,  # type: ignore[dict-item]
    }


@dataclass
class W:
    """One case's world: a fresh dataset under ``tmp/data``; outputs go under ``tmp/out``."""

    tmp: Path
    shared: dict
    extra: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def config(self, **overrides: object) -> dict:
        return _merge(_merge(BASE, {"dataset": {"name": "folder", "root": str(self.data)}}),
                      overrides)

    def cfg(self, **overrides: object) -> str:
        return json.dumps(self.config(**overrides))

    def image(self, i: int) -> Path:
        return self.data / "images" / f"img{i:03d}.png"

    def mask(self, i: int) -> Path:
        return self.data / "masks" / f"img{i:03d}.png"

    # one argv per stage, with its outputs
    def histogram(self, cfg: str | None = None) -> tuple[list[str], list[Path]]:
        out = self.out / "label_histogram.csv"
        return ["histogram", "--config-json", cfg or self.cfg(), "--out", str(out)], [out]

    def train(self, cfg: str | None = None, round_: int = 0, init: Path | None = None,
              pseudo: Path | None = None) -> tuple[list[str], list[Path]]:
        model, log_csv = self.out / "model.pt", self.out / "train_log.csv"
        argv = ["train", "--round", str(round_), "--config-json", cfg or self.cfg(),
                "--state-dir", str(self.out / "state"), "--out", str(model),
                "--log-csv", str(log_csv), "--threads", "1"]
        if round_:
            argv += ["--init", str(init or self.shared["ckpt"]), "--pseudo", str(pseudo)]
        return argv, [model, log_csv]

    def infer(self, cfg: str | None = None, model: Path | None = None
              ) -> tuple[list[str], list[Path]]:
        out = self.out / "probs.zarr"
        return ["infer", "--config-json", cfg or self.cfg(), "--model",
                str(model or self.shared["ckpt"]), "--out", str(out), "--threads", "1"], [out]

    def evaluate(self, cfg: str | None = None, model: Path | None = None
                 ) -> tuple[list[str], list[Path]]:
        metrics, summary = self.out / "metrics.csv", self.out / "metrics.json"
        return ["evaluate", "--config-json", cfg or self.cfg(), "--model",
                str(model or self.shared["ckpt"]), "--round", "0", "--metrics", str(metrics),
                "--summary", str(summary), "--threads", "1"], [metrics, summary]

    def pseudo(self, store: Path | None = None, hist: Path | None = None, alpha: str = "0.5",
               *extra: str) -> tuple[list[str], list[Path]]:
        outs = [self.out / n for n in ("pseudo_labels", "thresholds.csv", "pseudo_stats.csv",
                                       "pseudo_summary.json")]
        options = json.dumps({"alpha": float(alpha), "method": "dars", "sampling": "paper",
                              "seed": 0, "fixed_threshold": None,
                              "pixels_per_image": None})
        argv = ["pseudo-label", "--options-json", options, "--store",
                str(store or self.shared["store"]), "--label-hist",
                str(hist or self.shared["hist"]), "--labels-out", str(outs[0]),
                "--thresholds-out", str(outs[1]), "--stats-out", str(outs[2]),
                "--summary-out", str(outs[3]), "--threads", "1", *extra]
        return argv, outs


@dataclass
class Run:
    argv: list[str]
    outputs: list[Path]
    culprits: list[str]
    check: Callable[[], None] | None = None  # extra assertions after the failed run
    # a damaged artifact: the path the error says to delete, then the commands that must
    # succeed after deleting it (regenerating it, then the failed stage again)
    delete: Path | None = None
    heal: list[list[str]] = field(default_factory=list)


CASES: dict[str, Callable[[W, pytest.MonkeyPatch], Run]] = {}


def case(name: str) -> Callable:
    def add(build: Callable[[W, pytest.MonkeyPatch], Run]) -> Callable:
        assert name not in CASES
        CASES[name] = build
        return build
    return add


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _split(w: W, name: str, lines: list[str]) -> Path:
    path = w.data / "splits" / f"{name}.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ------------------------------------------------------------------------------ config
@case("config-unknown-top-level-key")
def _(w, mp):
    cfg = w.config()
    cfg["pseudo_labell"] = {"method": "dars"}
    return Run(*w.histogram(json.dumps(cfg)), ["pseudo_labell (unknown key)"])


@case("config-unknown-nested-key")
def _(w, mp):
    return Run(*w.histogram(w.cfg(train={"epoch": 3})), ["train.epoch (unknown key)"])


@case("config-wrong-type-number")
def _(w, mp):
    return Run(*w.histogram(w.cfg(train={"lr": "fast"})), ["config key train.lr", "'fast'"])


@case("config-wrong-type-rounds-not-a-list")
def _(w, mp):
    return Run(*w.histogram(w.cfg(rounds={"alpha": 0.2})), ["config key rounds", "array"])


@case("config-alpha-zero")
def _(w, mp):
    return Run(*w.histogram(w.cfg(rounds=[{"alpha": 0.0}])), ["config key rounds.0.alpha"])


@case("config-alpha-above-one")
def _(w, mp):
    return Run(*w.histogram(w.cfg(rounds=[{"alpha": 0.2}, {"alpha": 1.5}])),
               ["config key rounds.1.alpha", "1.5"])


@case("config-rounds-empty")
def _(w, mp):
    return Run(*w.histogram(w.cfg(rounds=[])), ["config key rounds:"])


@case("config-negative-epochs")
def _(w, mp):
    return Run(*w.train(w.cfg(train={"epochs": -3})), ["config key train.epochs", "-3"])


@case("config-negative-round-epochs")
def _(w, mp):
    return Run(*w.train(w.cfg(rounds=[{"alpha": 0.3, "epochs": -1}])),
               ["config key rounds.0.epochs"])


@case("config-yaml-unsafe-tag")
def _(w, mp):
    marker = w.tmp / "pwned"
    path = w.tmp / "evil.yaml"
    path.write_text(f"run: x\nseed: !!python/object/apply:os.system ['touch {marker}']\n")
    out = w.out / "label_histogram.csv"

    def check() -> None:
        assert not marker.exists(), "YAML tag was executed"

    return Run(["histogram", "--config", str(path), "--out", str(out)], [out],
               [str(path), "not valid YAML"], check)


@case("cli-alpha-out-of-range")
def _(w, mp):
    return Run(*w.pseudo(None, None, "1.5"), ["alpha", "1.5"])


@case("cli-temperature-not-positive")
def _(w, mp):
    return Run(*w.pseudo(None, None, "0.5", "--temperature", "0"), ["temperature"])


# ------------------------------------------------------------------------------ data
@case("dataset-root-missing")
def _(w, mp):
    missing = w.tmp / "no-such-root"
    return Run(*w.histogram(w.cfg(dataset={"root": str(missing)})),
               ["dataset root not found", str(missing)])


@case("split-lists-missing-image")
def _(w, mp):
    split = _split(w, "labeled", ["images/img000.png masks/img000.png",
                                  "images/img099.png masks/img000.png"])
    return Run(*w.train(), [f"{split}:2", "file not found", str(w.image(99))])


@case("split-path-escapes-root")
def _(w, mp):
    (w.tmp / "secret.png").write_bytes(w.image(0).read_bytes())
    split = _split(w, "labeled", ["images/img000.png masks/img000.png",
                                  "../secret.png masks/img001.png"])
    return Run(*w.histogram(), [f"{split}:2", "'../secret.png'", "without '..'"])


@case("split-path-absolute")
def _(w, mp):
    split = _split(w, "unlabeled", [f"{w.image(4)} {w.mask(4)}"])
    return Run(*w.infer(), [f"{split}:1", str(w.image(4)), "must be relative"])


@case("image-mask-size-mismatch-train")
def _(w, mp):
    Image.fromarray(np.zeros((8, 12), np.uint8), mode="L").save(w.mask(2))
    return Run(*w.train(), [str(w.mask(2)), "12x8", str(w.image(2)), "16x16"])


@case("image-mask-size-mismatch-evaluate")
def _(w, mp):
    Image.fromarray(np.zeros((8, 12), np.uint8), mode="L").save(w.mask(9))
    return Run(*w.evaluate(), [str(w.mask(9)), "size"])


@case("mask-value-out-of-range")
def _(w, mp):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[3, 3] = 7
    Image.fromarray(mask, mode="L").save(w.mask(1))
    return Run(*w.histogram(), [str(w.mask(1)), "values [7] outside [0, 3)"])


@case("mask-rgb")
def _(w, mp):
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(w.mask(3))
    return Run(*w.histogram(), [str(w.mask(3)), "mode RGB", "index mask"])


@case("mask-png-truncated")
def _(w, mp):
    w.mask(0).write_bytes(w.mask(0).read_bytes()[:60])
    return Run(*w.histogram(), ["cannot read mask", str(w.mask(0))])


@case("image-png-truncated")
def _(w, mp):
    noisy = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    w.image(5).write_bytes(_png_bytes(noisy)[:200])  # header intact, pixel data cut
    return Run(*w.infer(), ["cannot read image", str(w.image(5))])


@case("image-jpeg-truncated")
def _(w, mp):
    noisy = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    jpg = w.data / "images" / "img001.jpg"
    jpg.write_bytes(_png_bytes(noisy, "JPEG")[:300])
    _split(w, "labeled", [f"images/img00{i}.png masks/img00{i}.png" for i in (0, 2, 3)]
           + ["images/img001.jpg masks/img001.png"])
    return Run(*w.train(), ["cannot read image", str(jpg)])


@case("image-not-an-image")
def _(w, mp):
    w.image(6).write_bytes(b"\x00garbage, not a PNG at all" * 10)
    return Run(*w.infer(), ["cannot read image", str(w.image(6))])


@case("labeled-set-empty")
def _(w, mp):
    split = _split(w, "labeled", [])
    return Run(*w.histogram(), [str(split), "lists no images"])


@case("labeled-masks-all-ignore")
def _(w, mp):
    for i in range(4):
        Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8), mode="L").save(w.mask(i))
    return Run(*w.histogram(), ["labeled masks contain no labeled pixel"])


@case("class-count-histogram-vs-store")
def _(w, mp):
    hist = _write_hist(w.tmp / "hist4.csv", [40, 30, 20, 10])
    return Run(*w.pseudo(None, hist), [str(hist), "4 rows for the 3 classes"])


@case("class-count-store-vs-histogram")
def _(w, mp):
    store = _write_store(w.tmp / "probs4.zarr", UNLABELED, num_classes=4)
    return Run(*w.pseudo(store, None), [str(w.shared["hist"]), "3 rows for the 4 classes",
                                        "missing classes [3]"])


@case("class-count-config-vs-checkpoint")
def _(w, mp):
    return Run(*w.infer(w.cfg(dataset={"classes": ["bg", "a", "b", "c"]})),
               [str(w.shared["ckpt"]), "predicts 3 classes but the dataset has 4"])


@case("class-count-config-vs-masks")
def _(w, mp):
    return Run(*w.histogram(w.cfg(dataset={"classes": ["bg", "a"]})),
               ["values [2] outside [0, 2)", "class count"])


@case("store-probabilities-nan")
def _(w, mp):
    store = _write_store(w.tmp / "nan.zarr", UNLABELED, corrupt=float("nan"))
    return Run(*w.pseudo(store, None), [str(store), "image 'img005'", "NaN"])


@case("store-of-another-temperature")
def _(w, mp):
    return Run(*w.pseudo(None, None, "0.5", "--temperature", "1.5"),
               [str(w.shared["store"]), "written at temperature 1, this stage asks for 1.5",
                "dars infer --temperature 1.5"])


@case("store-incomplete")
def _(w, mp):
    store = w.tmp / "probs.zarr"
    writer = ProbStoreWriter(store, UNLABELED, [(SIZE, SIZE)] * 4, CLASSES)
    writer.write_prediction(0, np.zeros((SIZE, SIZE), np.uint8),
                            np.full((SIZE, SIZE), 1 / 3, np.float16))
    return Run(*w.pseudo(store, None), [str(store), "an unfinished one exists"])


@case("store-not-marked-complete")
def _(w, mp):
    import zarr

    store = _write_store(w.tmp / "probs.zarr", UNLABELED)
    zarr.open_group(str(store), mode="r+").attrs["complete"] = False
    return Run(*w.pseudo(store, None), [str(store), "incomplete"])


# ------------------------------------------------------------------------------ checkpoints
@case("checkpoint-other-architecture")
def _(w, mp):
    other = _save_checkpoint(w.tmp / "wide.pt", w.shared["model_cfg"],
                             weights_config={**w.shared["model_cfg"], "width": 8})
    return Run(*w.infer(model=other), [str(other), "does not fit model 'tiny'"])


@case("teacher-of-other-model-config")
def _(w, mp):
    pseudo = w.tmp / "pseudo"
    pseudo.mkdir()
    for name in UNLABELED:
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8), mode="L").save(pseudo / f"{name}.png")
    return Run(*w.train(w.cfg(model={"width": 8}), round_=1, pseudo=pseudo),
               [str(w.shared["ckpt"]), "was trained with model", "'width': 4"])


@case("student-pseudo-labels-missing")
def _(w, mp):
    pseudo = w.tmp / "pseudo"
    pseudo.mkdir()
    return Run(*w.train(round_=1, pseudo=pseudo), [str(pseudo), "pseudo labels missing",
                                                   "img004"])


@case("checkpoint-not-a-checkpoint")
def _(w, mp):
    junk = w.tmp / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 definitely not a torch file")
    return Run(*w.evaluate(model=junk), ["cannot load checkpoint", str(junk)])


class _Evil:
    """Pickles as a call to ``open(marker, "w")``: loading it unsafely creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def _evil_checkpoint(w: W) -> tuple[Path, Path]:
    marker = w.tmp / "executed"
    evil = w.tmp / "evil.pt"
    torch.save({"model": _Evil(marker), "model_config": dict(w.shared["model_cfg"]),
                "num_classes": 3}, evil)
    return evil, marker


@case("checkpoint-malicious-pickle-infer")
def _(w, mp):
    evil, marker = _evil_checkpoint(w)

    def check() -> None:
        assert not marker.exists(), "the pickle's payload ran"

    return Run(*w.infer(model=evil), ["cannot load checkpoint", str(evil), "Weights only"],
               check)


@case("checkpoint-malicious-pickle-teacher")
def _(w, mp):
    evil, marker = _evil_checkpoint(w)
    pseudo = w.tmp / "pseudo"
    pseudo.mkdir()
    for name in UNLABELED:
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8), mode="L").save(pseudo / f"{name}.png")

    def check() -> None:
        assert not marker.exists(), "the pickle's payload ran"

    return Run(*w.train(round_=1, init=evil, pseudo=pseudo), ["cannot load checkpoint",
                                                              str(evil)], check)


@case("pretrained-weights-missing")
def _(w, mp):
    missing = w.tmp / "resnet50-imagenet.pth"
    cfg = w.cfg(model={"name": "pspnet", "pretrained": str(missing)}, train={"crop_size": SIZE})
    return Run(*w.train(cfg), ["model.pretrained", "file not found", str(missing)])


@case("evaluate-unknown-tail-class")
def _(w, mp):
    return Run(*w.evaluate(w.cfg(evaluate={"tail_classes": ["a", "bicycle"]})),
               ["evaluate.tail_classes", "bicycle"])


# ------------------------------------------------------------------------------ damaged artifacts
# An artifact damaged after it was written (a lost file, a cut one, a flipped bit): the reader
# stops before using it, names the file and what to delete, and deleting that heals the run.
def _inferred_store(w: W) -> tuple[Path, list[str]]:
    """A store written by `dars infer` (2 images a chunk file: img004-005, img006-007)."""
    argv, (store,) = w.infer(w.cfg(infer={"images_per_chunk": 2}))
    assert cli.main(argv) == 0
    return store, argv


def _damaged_store(w: W, damage: Callable[[Path], None], culprits: list[str]) -> Run:
    store, infer = _inferred_store(w)
    damage(store)
    argv, outs = w.pseudo(store)
    return Run(argv, outs, [str(store), *culprits, f"delete {store} and rerun inference"],
               delete=store, heal=[infer, argv])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@case("store-chunk-missing")
def _(w, mp):
    # zarr alone would read the images of a lost chunk as the fill value (confidence 0)
    return _damaged_store(w, lambda s: (s / "confidence" / "c" / "1" / "0" / "0").unlink(),
                          ["array 'confidence'", "confidence/c/1/0/0",
                           "images 'img006'..'img007'", "is missing"])


@case("store-chunk-truncated")
def _(w, mp):
    return _damaged_store(w, lambda s: _truncate(s / "prediction" / "c" / "0" / "0" / "0"),
                          ["array 'prediction'", "images 'img004'..'img005'", "truncated"])


@case("store-chunk-byte-flipped")
def _(w, mp):
    # same size, so only the chunk's checksum can tell (the codec alone: a traceback from a
    # worker thread, or silently wrong values)
    return _damaged_store(w, lambda s: _flip_byte(s / "prediction" / "c" / "1" / "0" / "0"),
                          ["array 'prediction'", "images 'img006'..'img007'", "corrupt",
                           "checksum"])


@case("store-histogram-byte-flipped")
def _(w, mp):
    # the per-chunk confidence counts thresholding sums instead of reading every pixel
    return _damaged_store(w, lambda s: _flip_byte(s / "histogram" / "c" / "1" / "0" / "0"),
                          ["array 'histogram'", "images 'img006'..'img007'", "corrupt",
                           "checksum"])


def _damaged_pseudo_labels(w: W, damage: Callable[[Path], None], name: str,
                           culprits: list[str]) -> Run:
    pseudo, _ = w.pseudo()
    assert cli.main(pseudo) == 0
    labels = w.out / "pseudo_labels"
    damage(labels / name)
    argv, outs = w.train(round_=1, pseudo=labels)
    return Run(argv, outs, [str(labels / name), *culprits, f"delete {labels} and rerun the "
                            "pseudo-label stage"], delete=labels, heal=[pseudo, argv])


@case("pseudo-label-png-missing")
def _(w, mp):
    return _damaged_pseudo_labels(w, Path.unlink, "img005.png", ["is missing"])


@case("pseudo-label-png-truncated")
def _(w, mp):
    return _damaged_pseudo_labels(w, _truncate, "img006.png", ["truncated"])


@case("checkpoint-model-truncated")
def _(w, mp):
    train, (model, _) = w.train()
    assert cli.main(train) == 0
    _truncate(model)
    argv, outs = w.infer(model=model)
    return Run(argv, outs, ["cannot load checkpoint", str(model), f"delete {model} and rerun "
                            "the job that wrote it"], delete=model, heal=[train, argv])


@case("checkpoint-last-truncated")
def _(w, mp):
    # a round stopped after an epoch (model.pt not written yet), then its last.pt was cut
    argv, (model, _) = w.train()
    assert cli.main(argv) == 0
    model.unlink()
    last = w.out / "state" / "last.pt"
    _truncate(last)
    return Run(argv, [model], ["cannot load checkpoint", str(last), f"delete {last} to "
                               "restart round 0"], delete=last, heal=[argv])


# ------------------------------------------------------------------------------ faults
def _disk_full_after(nbytes: int) -> Callable:
    def write(self, path, *args, **kwargs):  # noqa: ANN001, ANN202
        Path(path).write_bytes(b"x" * nbytes)  # a partial file, as a full disk leaves it
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return write


@case("disk-full-writing-histogram")
def _(w, mp):
    argv, outs = w.histogram()
    outs[0].parent.mkdir(parents=True)
    old = "class,name,pixels,ratio\n0,background,1,1.0\n"
    outs[0].write_text(old)  # an earlier run's artifact must survive the failed rewrite
    mp.setattr(pd.DataFrame, "to_csv", _disk_full_after(10))

    def check() -> None:
        assert outs[0].read_text() == old
        assert [p.name for p in outs[0].parent.iterdir()] == [outs[0].name]

    return Run(argv, [], [str(outs[0]), "No space left on device"], check)


@case("disk-full-writing-checkpoint")
def _(w, mp):
    argv, outs = w.train()
    mp.setattr(torch, "save", lambda obj, f, *a, **k: _disk_full_after(100)(None, f))

    def check() -> None:
        assert not (w.out / "state" / "last.pt").exists(), "a truncated last.pt was left"

    return Run(argv, outs, [str(w.out / "state" / "last.pt"), "No space left on device"], check)


@case("disk-full-writing-probability-store")
def _(w, mp):
    argv, outs = w.infer()
    chunk = w.out / "probs.zarr.partial" / "confidence" / "c" / "0" / "0" / "0"
    real = ProbStoreWriter.write_prediction

    def write(self, index, *arrays):  # noqa: ANN001, ANN002, ANN202
        if index == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(chunk))
        real(self, index, *arrays)

    mp.setattr(ProbStoreWriter, "write_prediction", write)
    return Run(argv, outs, [str(chunk), "No space left on device"])


@case("disk-full-writing-pseudo-labels")
def _(w, mp):
    argv, outs = w.pseudo()
    from dars.pseudo import stage

    real = stage._write_labels

    def fail(store, thresholds, options, root, *rest):  # noqa: ANN001, ANN202
        real(store, thresholds, options, root, *rest)  # the PNGs written, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "manifest.json"))

    mp.setattr(stage, "_write_labels", fail)
    return Run(argv, outs, [str(outs[0]), "No space left on device"])


@case("loss-becomes-nan")
def _(w, mp):
    from dars.engine import train

    calls = {"n": 0}
    real = train.seg_loss

    def nan_from_third_step(outputs, target, ignore, aux_weight):  # noqa: ANN001, ANN202
        calls["n"] += 1
        loss = real(outputs, target, ignore, aux_weight)
        return loss * float("nan") if calls["n"] >= 3 else loss

    mp.setattr(train, "seg_loss", nan_from_third_step)
    argv, outs = w.train(w.cfg(train={"epochs": 3}))  # 4 labeled / batch 2: 2 steps an epoch

    def check() -> None:  # the last good state (after epoch 1) is kept for a rerun
        state = checkpoint.load(w.out / "state" / "last.pt")
        assert state["epoch"] == 1 and len(state["history"]) == 1
        assert all(torch.isfinite(v).all() for v in state["model"].values()
                   if v.is_floating_point())

    return Run(argv, outs, ["loss became nan at iteration 2", "round 0", "lower train.lr",
                            str(w.out / "state" / "last.pt")], check)


# ------------------------------------------------------------------------------ the table
@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _leftovers(out: Path) -> list[str]:
    """Temporaries anywhere under ``out`` (a .partial store is allowed: resumable state)."""
    if not out.exists():
        return []
    return [str(p) for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, tmp_path: Path, shared: dict, capsys: pytest.CaptureFixture,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder_dataset(tmp_path / "data", size=SIZE)
    run = CASES[name](W(tmp_path, shared), monkeypatch)
    code = cli.main(run.argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    for culprit in run.culprits:
        assert culprit in errors[0], f"{culprit!r} not named in: {errors[0]}"
    for out in run.outputs:
        assert not out.exists(), f"{out} written although the stage failed"
        if out.suffix == ".zarr" and partial_path(out).exists():
            import zarr

            assert not zarr.open_group(str(partial_path(out))).attrs["complete"]
    assert _leftovers(tmp_path / "out") == []
    if run.check is not None:
        run.check()
    if run.delete is not None:  # the error's remedy works: delete, rerun, succeed
        assert str(run.delete) in errors[0]
        remove_path(run.delete)
        for argv in run.heal:
            assert cli.main(argv) == 0, capsys.readouterr().err
        assert all(out.exists() for out in run.outputs)


def test_the_malicious_pickle_is_real(tmp_path: Path, shared: dict) -> None:
    """Loading the test's pickle *without* weights_only runs its payload: the refusal above
    is what keeps it from running."""
    evil, marker = _evil_checkpoint(W(tmp_path, shared))
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_loader_refuses_pickles_even_in_nested_objects(tmp_path: Path) -> None:
    path = tmp_path / "nested.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "model_config": {}, "x": [_Evil(tmp_path / "m")]}, f,
                    protocol=2)
    from dars.core.errors import DarsError

    with pytest.raises(DarsError, match="cannot load checkpoint"):
        checkpoint.load(path)
    assert not (tmp_path / "m").exists()
