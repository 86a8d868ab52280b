"""Compare every paper config with the authors' released settings; write docs/PAPER_SETTINGS.md.

The released values are stated in scripts/released_settings.yaml (read off the authors' yaml
files and code); ours are what config/<name>.yaml resolves to after validation with the schema's
defaults, plus the official split files' sizes and two behaviours of the thresholding code.
A value that differs is an error unless INTENDED lists it with the reason.

    python scripts/paper_settings.py                # rewrite docs/PAPER_SETTINGS.md
    python scripts/paper_settings.py --check   # exit 1: an unlisted difference, a stale file
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dars.core import config as config_mod
from dars.core.config import epochs_per_round, evaluate_schedule, scale_range
from dars.engine.sliding import window_stride
from dars.engine.train import plan_schedule
from dars.pseudo.thresholds import round_half_up

REPO = Path(__file__).resolve().parents[1]
RELEASED = REPO / "scripts" / "released_settings.yaml"
OUT = REPO / "docs" / "PAPER_SETTINGS.md"
COMMAND = "python scripts/paper_settings.py"
#: Native long side of a dataset's images: an inference base size of null (native) equals it.
NATIVE_LONG_SIDE = {"cityscapes": 2048}

#: Differences on purpose, per setting (all configs), with the reason shown in the table.
INTENDED = {
    "n_j": "rounding to the nearest pixel count is the formula n_j = alpha P r_j; truncation "
           "drops up to one pixel per class and changes nothing else",
    "never_predicted": "a class the teacher never predicts gets no pseudo label and is "
                       "reported as a 100 % shortfall instead of stopping the run",
    "softmax": "the softmax in float32 is at least as exact; the stored confidence is float16 "
               "either way, so thresholds compare the same kind of value",
}
#: Differences on purpose in one config only: (config, setting) -> reason.
INTENDED_IN = {
    ("cityscapes_1-4_crop361", "gpus"): "one GPU count per config: the released round 1 ran on "
                                        "4, rounds 0 and 2 on 2; with SyncBN the count changes "
                                        "memory and speed, not the training",
}


@dataclass(frozen=True)
class Row:
    setting: str
    released: Any
    ours: Any
    source: str

    @property
    def same(self) -> bool:
        return _norm(self.released) == _norm(self.ours)


def _norm(value: Any) -> Any:
    """Numbers compared at the precision the configs state them (lists element-wise)."""
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _base_size(cfg: dict, section: str) -> Any:
    """The long side inference resizes to; null (native) as the dataset's native long side."""
    value = cfg[section].get("base_size")
    return NATIVE_LONG_SIDE.get(cfg["dataset"]["name"], "native") if value is None else value


def our_settings(cfg: dict) -> dict[str, Any]:
    """What our resolved config (and code) does, under the keys of released_settings.yaml."""
    train, infer, evaluate = cfg["train"], cfg["infer"], cfg["evaluate"]
    model = cfg["model"]
    default_backbone = {"pspnet": "resnet50", "deeplabv2": "resnet101"}.get(model["name"])
    splits = {k: REPO / v for k, v in cfg["dataset"]["splits"].items()}
    labeled, unlabeled = _lines(splits["labeled"]), _lines(splits["unlabeled"])
    student = train["student_batch_size"] or train["batch_size"]
    epochs = epochs_per_round(cfg)
    cumulative = [sum(epochs[: k + 1]) for k in range(len(epochs))]
    if train["schedule"] != "continue":
        cumulative = epochs
    return {
        "model": f"{model['name']}-{model['backbone'] or default_backbone}",
        "crop": train["crop_size"],
        "base_size": [_base_size(cfg, "infer"), _base_size(cfg, "evaluate")],
        "scale": [list(scale_range(cfg, k)) for k in range(len(cfg["rounds"]) + 1)],
        "alpha": [r["alpha"] for r in cfg["rounds"]],
        "cumulative_epochs": cumulative,
        "labeled": labeled,
        "unlabeled": unlabeled,
        "round0_list": unlabeled if train["baseline_list"] == "match_unlabeled" else labeled,
        "round0_batch": train["batch_size"],
        "student_batch": [student // 2, student // 2],
        "base_lr": train["lr"],
        "aux_weight": train["aux_weight"],
        "rotate": train["rotate"],
        "momentum": train["momentum"],
        "weight_decay": train["weight_decay"],
        "power": train["poly_power"],
        "temperature": cfg["pseudo_label"]["temperature"],
        "seed": cfg["seed"],
        "head_lr_mult": train["head_lr_mult"],
        "poly_schedule": train["schedule"],
        "train_flip": train["flip"],
        "blur": train["blur"],
        "stride": [window_stride(s["crop_size"], s["stride_ratio"]) for s in (infer, evaluate)],
        "infer_flip": [infer["flip"], evaluate["flip"]],
        "average": [infer["average"], evaluate["average"]],
        "softmax": "float32 logits / T, then softmax (confidence stored as float16)",
        "n_j": "round(alpha P r_j), halves up" if int(round_half_up(2.5)) == 3 else "?",
        "never_predicted": "no labels for that class (shortfall reported)",
        "precision": "bfloat16 autocast" if train["bf16"] else "float32",
        "lr_order": _lr_order(),
        "sampling": SAMPLING[cfg["pseudo_label"]["sampling"]],
        # what dars.data.transforms does; update with it
        "aug_library": "OpenCV on the uint8 image, before normalisation",
        "aug_interpolation": "scale and rotation: bilinear image, nearest mask",
        "aug_padding": "crop pads half on each side (mean colour / ignore); rotation fills mean "
                       "colour / ignore",
        "gpus": [cfg["gpus"]] * len(epochs),
        "sync_bn": train["sync_bn"],
        "validation": [[start + before, every] for (start, every), before in zip(
            (evaluate_schedule(cfg, k) for k in range(len(epochs))),
            [0, *cumulative[:-1]], strict=True)],
        "frozen_bn_affine": model["frozen_bn_affine"],
        "head_lr_stages": train["head_lr_stages"],
        "stem": "3 x 3x3 (deep)" if model["deep_stem"] else "7x7",
        "pixel_count": _pixel_count(cfg["dataset"]["pixels_per_image"]),
        "pretrained": Path(model["pretrained"] or "none").name,
        "aspp_rates": model["aspp_rates"],
        "stride_in_1x1": model["stride_in_1x1"],
        "ceil_mode_pool": model["ceil_mode_pool"],
    }


SAMPLING = {"paper": "each selected pixel kept with probability s_j",
            "ties": "each tied pixel kept with probability s_j",
            "exact": "per image and class, m - int(m - m s_j) of the m selected pixels kept "
                     "(float32), a uniformly random subset"}


def _pixel_count(per_image: int | None) -> str:
    """P per image of n_j = alpha P r_j (dataset.pixels_per_image)."""
    return "true count of every image" if per_image is None else f"{per_image} per image"


def _lr_order() -> str:
    """When our schedule sets the lr, read off the code: step 1 at base lr means after."""
    first, second = (plan_schedule("continue", 1.0, [1], 0, 4).factor(i) for i in (0, 1))
    return ("set after optimizer.step(): step 1 at base lr" if (first, second) == (1.0, 0.75)
            else "set before optimizer.step()")


def _released_code_value(name: str, value: Any, cfg: dict) -> Any:
    """A code-level released value in the form ours takes (per section where it applies)."""
    if name == "stride":
        return [math.ceil(2 / 3 * s["crop_size"]) for s in (cfg["infer"], cfg["evaluate"])]
    if name == "infer_flip":
        return [value, value]
    if name == "poly_schedule":
        return "continue"
    return value


def rows_for(name: str, released: dict, code: dict) -> list[Row]:
    cfg = config_mod.load(REPO / "config" / f"{name}.yaml")
    ours = our_settings(cfg)
    rows = []
    for key, value in released.items():
        if key == "files":
            continue
        if key == "base_size":
            value = [value, value]  # pseudo-label generation and evaluation use the same
        source = "yaml"
        if isinstance(value, dict):  # a value with its released file:line
            value, source = value["value"], value["source"]
        rows.append(Row(key, value, ours[key], source))
    for key, entry in code.items():
        rows.append(Row(key, _released_code_value(key, entry["value"], cfg), ours[key],
                        entry["source"]))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def build() -> tuple[str, list[str]]:
    """The markdown document and the unlisted differences."""
    data = yaml.safe_load(RELEASED.read_text())
    lines = [
        "# Paper configs against the authors' released settings",
        "",
        f"Generated by `{COMMAND}` from `scripts/released_settings.yaml` (the released values, "
        "read off CVMI-Lab/DARS at 0cfe09a) and `config/<name>.yaml` resolved with the schema's "
        "defaults; `tests/test_paper_settings.py` regenerates it and fails on a difference "
        "that is not listed as intended. Do not edit by hand.",
        "",
        "Multi-valued cells: scale per round 0, 1, 2; alpha per round 1, 2; epochs cumulative "
        "(a student file resumes at the previous round's epoch); base size, stride and flip "
        "for pseudo-label inference, then evaluation; student batch labeled, pseudo-labeled; "
        "GPUs per round 0, 1, 2; validation (evaluate_start, every) per round 0, 1, 2 in "
        "cumulative epochs.",
        "",
    ]
    problems = []
    for name, released in data["configs"].items():
        files = ", ".join(f"`{f}`" for f in released["files"])
        lines += [f"## {name}", "", f"Released files: {files}.", "",
                  "| setting | released | ours | status | released in |",
                  "|---|---|---|---|---|"]
        for row in rows_for(name, released, data["code"]):
            if row.same:
                status = "same"
            elif (name, row.setting) in INTENDED_IN:
                status = f"intended: {INTENDED_IN[name, row.setting]}"
            elif row.setting in INTENDED:
                status = f"intended: {INTENDED[row.setting]}"
            else:
                status = "**DIFFERS**"
                problems.append(f"{name}: {row.setting}: released {_fmt(row.released)}, "
                                f"ours {_fmt(row.ours)}")
            lines.append(f"| {row.setting} | {_fmt(row.released)} | {_fmt(row.ours)} | "
                         f"{status} | {row.source} |")
        lines.append("")
    return "\n".join(lines), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail on an unlisted difference or a stale --out")
    args = parser.parse_args(argv)
    text, problems = build()
    for problem in problems:
        print(f"error: {problem} (not an intended difference)", file=sys.stderr)
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            print(f"error: {args.out} is not up to date: run {COMMAND}", file=sys.stderr)
            return 1
    else:
        args.out.write_text(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
