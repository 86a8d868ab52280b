"""Stage options: the frozen values one stage's outputs depend on, and nothing else. Rules pass
``params()`` as ``--options-json``, so Snakemake reruns a job exactly when they change (not for a
key a stage ignores or one that only changes its speed). No torch, stage or jsonschema import
here: the Snakefile and the prediction code load it cheaply."""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, get_args, get_type_hints

from dars.core.errors import DarsError

if TYPE_CHECKING:  # the config module loads jsonschema, which the GPU machine lacks
    from dars.core.config import Config


def _plain(value: Any) -> Any:
    """A field value as JSON data: nested options as their params, tuples as lists."""
    if isinstance(value, Options):
        return value.params()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def frozen(value: Any) -> Any:
    """JSON data as a field value: lists become tuples (hashable, equal to ``from_config``'s)."""
    return tuple(frozen(v) for v in value) if isinstance(value, list) else value


def _from_plain(hint: Any, value: Any) -> Any:
    """A field's value from its JSON data: nested options rebuilt, anything else frozen."""
    if value is not None:
        for kind in (hint, *get_args(hint)):
            if isinstance(kind, type) and issubclass(kind, Options):
                return kind.from_params(value)
    return frozen(value)


class Options:
    """Base of the options dataclasses: ``params()`` and the way back from them."""

    def params(self) -> dict[str, Any]:
        """Every field as JSON data: exactly what the stage's outputs depend on."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> str:
        """``params()`` as canonical JSON (sorted keys): a rule's param, a job's identity."""
        return json.dumps(self.params(), sort_keys=True)

    @classmethod
    def from_params(cls, params: Any) -> Self:
        """Rebuild from ``params()``; a missing or unknown key is a DarsError naming it."""
        if not isinstance(params, dict):
            raise DarsError(f"{cls.__name__}: expected a JSON object, got {params!r}")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        missing, unknown = sorted(set(names) - set(params)), sorted(set(params) - set(names))
        if missing or unknown:
            raise DarsError(f"{cls.__name__}: missing keys {missing}, unknown keys {unknown}")
        hints = get_type_hints(cls)
        return cls(**{n: _from_plain(hints[n], params[n]) for n in names})

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            params = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DarsError(f"--options-json is not valid JSON: {exc}") from exc
        return cls.from_params(params)


@dataclass(frozen=True)
class SplitFiles(Options):
    """The split files of a dataset (relative to its root, else to the working directory)."""

    labeled: str
    unlabeled: str
    val: str


@dataclass(frozen=True)
class DatasetOptions(Options):
    """The ``dataset`` section minus ``dars split``'s patterns (where to look, not what is read)."""

    name: str
    root: str
    classes: tuple[str, ...]
    ignore_index: int
    splits: SplitFiles

    @classmethod
    def from_config(cls, config: Config) -> DatasetOptions:
        ds = config["dataset"]
        return cls(ds["name"], ds["root"], tuple(ds["classes"]), ds["ignore_index"],
                   SplitFiles(**ds["splits"]))


@dataclass(frozen=True)
class ModelOptions(Options):
    """What :func:`dars.models.build_model` builds; ``params()`` is a checkpoint's model_config."""

    name: str
    width: int
    backbone: str | None
    deep_stem: bool
    pretrained: str | None
    frozen_bn_affine: bool
    stride_in_1x1: bool
    ceil_mode_pool: bool
    aspp_rates: tuple[int, ...]
    aux_head: bool

    @classmethod
    def from_config(cls, config: Config) -> ModelOptions:
        """The ``model`` section, plus ``aux_head``: an auxiliary head is built only when
        ``train.aux_weight`` gives its loss a weight (see :class:`dars.models.pspnet.PSPNet`)."""
        model = {k: frozen(v) for k, v in config["model"].items()}
        return cls(**model, aux_head=config["train"]["aux_weight"] > 0)


@dataclass(frozen=True)
class PredictOptions(Options):
    """How a model is applied to an image (:mod:`dars.engine.predict`), from the ``infer`` or
    ``evaluate`` section; the defaults are the plain whole-image forward pass."""

    mode: str = "whole"
    crop_size: int | None = None
    stride_ratio: float = 2 / 3
    flip: bool = False
    bf16: bool = False
    base_size: int | tuple[int, int] | None = None
    average: str = "logits"

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> PredictOptions:
        """From ``config["infer"]`` or ``config["evaluate"]`` (which share these keys)."""
        return cls(**{f.name: frozen(section[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class TrainOptions(Options):
    """One training round: the ``train`` keys of the same names, the epochs of rounds 0..``round``
    (a later round never changes an earlier one), its scale range and validation schedule, and
    the ``evaluate`` section (None when it never validates, so the section changes nothing)."""

    dataset: DatasetOptions
    model: ModelOptions
    seed: int
    round: int
    epochs_per_round: tuple[int, ...]
    scale_range: tuple[float, float]
    batch_size: int
    student_batch_size: int | None
    baseline_list: str
    lr: float
    momentum: float
    weight_decay: float
    poly_power: float
    schedule: str
    aux_weight: float
    crop_size: int
    flip: bool
    rotate: float
    blur: bool
    augment: str
    head_lr_mult: float
    head_lr_stages: tuple[str, ...]
    bf16: bool
    channels_last: bool
    sync_bn: bool
    evaluate_start: int
    evaluate_every: int
    validation: EvaluateOptions | None

    @classmethod
    def from_config(cls, config: Config, round_index: int = 0) -> TrainOptions:
        from dars.core.config import epochs_per_round, evaluate_schedule, scale_range

        rounds = len(config["rounds"])
        if not 0 <= round_index <= rounds:
            raise DarsError(f"round {round_index} is not configured (the config has rounds "
                            f"0..{rounds})")
        train = config["train"]
        start, every = evaluate_schedule(config, round_index)
        return cls(dataset=DatasetOptions.from_config(config),
                   model=ModelOptions.from_config(config), seed=config["seed"],
                   round=round_index,
                   epochs_per_round=tuple(epochs_per_round(config)[:round_index + 1]),
                   scale_range=scale_range(config, round_index),
                   evaluate_start=start, evaluate_every=every,
                   validation=EvaluateOptions.from_config(config) if every else None,
                   **{f.name: frozen(train[f.name]) for f in fields(cls)
                      if f.name in train and f.name not in ("evaluate_start", "evaluate_every")})


@dataclass(frozen=True)
class InferOptions(Options):
    """The ``infer`` section; the temperature is the job's argument (``auto``: from calibration)."""

    dataset: DatasetOptions
    predict: PredictOptions
    batch_size: int
    images_per_chunk: int | None

    @classmethod
    def from_config(cls, config: Config) -> InferOptions:
        section = config["infer"]
        return cls(DatasetOptions.from_config(config), PredictOptions.from_section(section),
                   section["batch_size"], section["images_per_chunk"])


@dataclass(frozen=True)
class EvaluateOptions(Options):
    """The ``evaluate`` section."""

    dataset: DatasetOptions
    predict: PredictOptions
    batch_size: int
    tail_classes: tuple[str, ...]

    @classmethod
    def from_config(cls, config: Config) -> EvaluateOptions:
        section = config["evaluate"]
        return cls(DatasetOptions.from_config(config), PredictOptions.from_section(section),
                   section["batch_size"], tuple(section["tail_classes"]))


@dataclass(frozen=True)
class CalibrateOptions(Options):
    """Temperature fitting on ``pseudo_label.calibration_split``, predicting as inference does."""

    dataset: DatasetOptions
    predict: PredictOptions
    batch_size: int
    split: str

    @classmethod
    def from_config(cls, config: Config) -> CalibrateOptions:
        return cls(DatasetOptions.from_config(config), PredictOptions.from_section(config["infer"]),
                   config["infer"]["batch_size"], config["pseudo_label"]["calibration_split"])


def add_options_args(p: argparse.ArgumentParser) -> None:
    """The three ways a stage's subcommand gets its options."""
    p.add_argument("--options-json",
                   help="the stage's options as JSON (what the workflow's rules pass)")
    p.add_argument("--config", help="YAML config file (validated with defaults)")
    p.add_argument("--config-json", help="config (or part of it) as JSON; overrides --config "
                   "keys")


def temperature_arg(text: str) -> float:
    """``--temperature``: a number, or the json of ``dars calibrate`` (``temperature: auto``)."""
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        return float(json.loads(Path(text).read_text())["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor a calibration json with a temperature: {exc}"
        ) from exc


def config_of(args: argparse.Namespace) -> Config:
    """The validated config of ``--config``/``--config-json`` (defaults filled)."""
    from dars.core import config  # here: prediction code imports this module, never the schema

    return config.load(args.config, args.config_json)


def options_of(args: argparse.Namespace, cls: type[Options], **extra: Any) -> Any:
    """The stage options ``cls`` from ``--options-json``, else from the config
    (``cls.from_config(config, **extra)``); the two ways exclude each other."""
    if args.options_json is None:
        return cls.from_config(config_of(args), **extra)  # type: ignore[attr-defined]
    if args.config or args.config_json:
        raise DarsError("give --options-json or --config/--config-json, not both")
    return cls.from_json(args.options_json)
