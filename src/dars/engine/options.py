"""The options of the model stages: training, inference, evaluation, calibration.

Kept apart from the stages themselves (which import torch) so that the Snakefile builds every
rule's params without loading torch. See :mod:`dars.options` for what an options type is.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dars.config import Config, epochs_per_round, evaluate_schedule, scale_range
from dars.errors import DarsError
from dars.options import DatasetOptions, ModelOptions, Options, PredictOptions, frozen


@dataclass(frozen=True)
class TrainOptions(Options):
    """One training round: the dataset, the model, the seed, this round's place in the
    schedule and the ``train`` hyperparameters (``train.num_workers`` is speed only: an
    argument of :class:`dars.engine.train.Trainer`, not an option).

    ``epochs_per_round`` lists the epochs of rounds 0..``round`` (all this round's lr schedule
    depends on: a later round never changes an earlier one), ``scale_range`` is this round's
    random-scale range (:func:`dars.config.scale_range`), ``evaluate_start``/``evaluate_every``
    this round's validation schedule (:func:`dars.config.evaluate_schedule`) and
    ``validation`` the ``evaluate`` section it validates with (None when it never does, so the
    section changes nothing then); the other fields are the ``train`` keys of the same names.
    """

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
    """Inference on the unlabeled pool: the ``infer`` section (prediction protocol, batch,
    store layout). The temperature is the job's argument: it comes from a calibration file
    when it is ``auto``."""

    dataset: DatasetOptions
    predict: PredictOptions
    batch_size: int
    store_probs: bool
    images_per_chunk: int | None

    @classmethod
    def from_config(cls, config: Config) -> InferOptions:
        section = config["infer"]
        return cls(DatasetOptions.from_config(config), PredictOptions.from_section(section),
                   section["batch_size"], section["store_probs"], section["images_per_chunk"])


@dataclass(frozen=True)
class EvaluateOptions(Options):
    """Validation metrics: the ``evaluate`` section (prediction protocol, batch, tail classes)."""

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
    """Temperature fitting: the logits are predicted as inference predicts them (the ``infer``
    prediction protocol and batch, not its store layout) on ``pseudo_label.calibration_split``."""

    dataset: DatasetOptions
    predict: PredictOptions
    batch_size: int
    split: str

    @classmethod
    def from_config(cls, config: Config) -> CalibrateOptions:
        return cls(DatasetOptions.from_config(config), PredictOptions.from_section(config["infer"]),
                   config["infer"]["batch_size"], config["pseudo_label"]["calibration_split"])
