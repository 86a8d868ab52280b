"""Per-class confidence thresholds of DARS, DA, ST, CBST and fixed from confidence histograms.

Pure maths on an exact (C, NUM_BINS) histogram of float16 confidence bit patterns
(:mod:`dars.stats.counting`), so every count derived from it (selected, tied, kept) is exact.
A pixel of class j is *selected* when its confidence bits are >= ``threshold_bits[j]`` and kept
with probability ``keep_above[j]``, or ``keep_at[j]`` when tied at the threshold: one rule for
every method and sampling, so label assignment has one code path. A new method is a
:func:`selection_rule` (its keyword-only parameters: what it reads) and its schema entry.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from dars.core.constants import NUM_BINS, ONE_BITS
from dars.core.errors import DarsError
from dars.core.options import Options

if TYPE_CHECKING:  # the config module loads jsonschema
    from dars.core.config import Config

SAMPLINGS = ("paper", "ties", "exact")
NONE_BITS = 0x7C00  # float16 +inf: above every valid confidence, so the class gets no label


@dataclass(frozen=True)
class Thresholds:
    """Per-class results of the threshold step (arrays of length C)."""

    method: str
    sampling: str
    alpha: float
    target: np.ndarray  # int64 n_j = round(alpha * P * r_j), the labeled-distribution target
    threshold_bits: np.ndarray  # uint16 float16 pattern of t_j (NONE_BITS: nothing selected)
    selected: np.ndarray  # int64 ñ_j: pixels predicted j with confidence >= t_j
    tied: np.ndarray  # int64 pixels predicted j with confidence exactly t_j
    keep_above: np.ndarray  # float64 keep probability of selected pixels above t_j
    keep_at: np.ndarray  # float64 keep probability of selected pixels exactly at t_j

    @property
    def num_classes(self) -> int:
        return len(self.target)

    @property
    def threshold(self) -> np.ndarray:
        """t_j as float64 (+inf for a class that gets no labels)."""
        return self.threshold_bits.astype(np.uint16).view(np.float16).astype(np.float64)

    @property
    def expected_kept(self) -> np.ndarray:
        """Expected number of pseudo labels per class (exact for non-sampling methods)."""
        return (self.selected - self.tied) * self.keep_above + self.tied * self.keep_at

    @property
    def keep(self) -> np.ndarray:
        """s_j: the expected fraction of selected pixels kept (n_j / ñ_j for DARS)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.selected > 0, self.expected_kept / self.selected, 0.0)


def check_alpha(alpha: float) -> None:
    """alpha is the fraction of unlabeled pixels to label: it must lie in (0, 1]."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise DarsError(f"alpha must be in (0, 1], got {alpha!r}")


def check_pixels_per_image(pixels_per_image: int | None) -> None:
    """P of n_j = alpha P r_j (per image, or in all): None (the true count) or a positive int."""
    if pixels_per_image is not None and (isinstance(pixels_per_image, bool) or not isinstance(
            pixels_per_image, int | np.integer) or pixels_per_image <= 0):
        raise DarsError(f"pixels per image must be a positive integer (or null for the true "
                        f"count), got {pixels_per_image!r}")


@dataclass(frozen=True)
class PseudoLabelOptions(Options):
    """What a round's pseudo labels depend on: the ``pseudo_label`` section, the round's alpha
    and ``dataset.pixels_per_image`` (P). The temperature is the job's argument, as for
    inference (the store's T, from a calibration file when ``auto``)."""

    alpha: float
    method: str = "dars"
    sampling: str = "paper"
    seed: int = 0
    fixed_threshold: float | None = None
    pixels_per_image: int | None = None
    # (key, value) of the method's own pseudo_label keys (rule_settings), in the JSON as keys of
    # their own: a method without any has the options (and reruns nothing) it always had
    settings: tuple[tuple[str, Any], ...] = ()

    def params(self) -> dict[str, Any]:
        params = super().params()
        del params["settings"]
        return {**params, **dict(self.settings)}

    @classmethod
    def from_params(cls, params: Any) -> PseudoLabelOptions:
        """Rebuild from ``params()``: keys that are no field are the method's settings."""
        if not isinstance(params, dict):
            return super().from_params(params)  # says what it expected
        names = {f.name for f in fields(cls)} - {"settings"}
        own = sorted((k, v) for k, v in params.items() if k not in names)
        return super().from_params({**{k: v for k, v in params.items() if k in names},
                                    "settings": [list(kv) for kv in own]})

    @classmethod
    def from_config(cls, config: Config, round_index: int = 1, method: str | None = None,
                    seed: int | None = None, alpha: float | None = None) -> PseudoLabelOptions:
        """Round ``round_index`` (1-based) of the config; the comparison's branches give
        their own ``method`` and ``seed`` (and ``alpha``: a "dars@0.45" branch's round 1)."""
        rounds = len(config["rounds"])
        if not 1 <= round_index <= rounds:
            raise DarsError(f"round {round_index} is not configured (the config has student "
                            f"rounds 1..{rounds})")
        section = config["pseudo_label"]
        method = section["method"] if method is None else method
        return cls(alpha=config["rounds"][round_index - 1]["alpha"] if alpha is None else alpha,
                   method=method,
                   sampling=section["sampling"],
                   seed=section["seed"] if seed is None else seed,
                   fixed_threshold=section["threshold"],
                   pixels_per_image=config["dataset"]["pixels_per_image"],
                   settings=tuple((k, section[k]) for k in rule_settings(method)))

    def check(self) -> None:
        check_options(self.alpha, self.method, self.sampling, self.fixed_threshold,
                      dict(self.settings))
        check_pixels_per_image(self.pixels_per_image)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DarsError(f"seed must be a non-negative integer, got {self.seed!r}")


def round_half_up(x: np.ndarray | float) -> np.ndarray:
    """Round to the nearest integer, halves up (np.rint would round halves to even)."""
    return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)


def exact_keep_count(selected: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Sampling ``exact``: how many of an image's m selected pixels of a class are kept.

    The released rule (CVMI-Lab/DARS tool/gen_pseudo_label_utils.py:384-395) removes
    ``int(m - m * s_j)`` computed in float32, keeping ceil(m s_j) but for float32 rounding,
    which this restates exactly; s_j = min(1, n_j / ñ_j) is the whole split's share
    (``keep_above``). Arguments broadcast; counts up to 2^24 are exact in float32."""
    m = np.asarray(selected, np.int64)
    m32 = m.astype(np.float32)
    removed = m32 - m32 * np.asarray(share, np.float64).astype(np.float32)
    return m - np.trunc(removed).astype(np.int64)


def _rank_threshold(cum_ge: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Bit pattern of the rank-th largest confidence per row (NONE_BITS where rank == 0): the
    last bin of the prefix where ``cum_ge`` (counts >= b, non-increasing) reaches ``rank``,
    which must not exceed the row total."""
    last = (cum_ge >= rank[:, None]).sum(axis=1) - 1
    return np.where(rank > 0, last, NONE_BITS).astype(np.uint16)


def _fixed_bits(threshold: float) -> int:
    """Smallest float16 bit pattern >= ``threshold``: float16 confidences c >= threshold are
    exactly those of patterns >= it."""
    half = np.float16(threshold)
    if float(half) < threshold:
        half = np.nextafter(half, np.float16(np.inf))
    return int(np.asarray(half).view(np.uint16))


@dataclass(frozen=True)
class ClassCounts:
    """What a selection rule sees: the counts of one round's confidences, per predicted class."""

    cum_ge: np.ndarray  # (C, NUM_BINS) int64: confidences >= bit pattern b
    predicted: np.ndarray  # m_j: pixels predicted j
    target: np.ndarray  # n_j = round(alpha * P * r_j), the labeled-distribution target
    alpha: float
    total: int  # pixels in the histogram

    @property
    def num_classes(self) -> int:
        return len(self.target)


SelectionRule = Callable[..., np.ndarray]
#: method name -> its rule: the per-class threshold bit patterns (NONE_BITS: no label).
SELECTION_RULES: dict[str, SelectionRule] = {}


def selection_rule(rule: SelectionRule) -> SelectionRule:
    """Register ``rule`` as the method of its name (the order is the schema's)."""
    SELECTION_RULES[rule.__name__] = rule
    return rule


def rule_settings(method: str) -> list[str]:
    """``method``'s own ``pseudo_label`` keys (sorted): its keyword-only parameters that are no
    field of :class:`PseudoLabelOptions`."""
    shared = {f.name for f in fields(PseudoLabelOptions)}
    params = inspect.signature(SELECTION_RULES[method]).parameters.values()
    return sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in shared)


@selection_rule
def dars(counts: ClassCounts) -> np.ndarray:
    """t_j = the n_j-th largest confidence among pixels predicted j (all of them when fewer
    than n_j, none when n_j = 0); :func:`compute_thresholds` then samples down to n_j."""
    return _rank_threshold(counts.cum_ge, np.minimum(counts.target, counts.predicted))


@selection_rule
def da(counts: ClassCounts) -> np.ndarray:
    """DARS's thresholds without the sampling (ties at t_j can overshoot n_j)."""
    return dars(counts)


@selection_rule
def st(counts: ClassCounts, *, fixed_threshold: float | None) -> np.ndarray:
    """One threshold for every class: the round(alpha * P)-th largest confidence overall, or
    ``fixed_threshold`` (``pseudo_label.threshold``) when given."""
    if fixed_threshold is not None:
        return np.full(counts.num_classes, _fixed_bits(fixed_threshold), np.uint16)
    overall = counts.cum_ge.sum(axis=0, keepdims=True)
    rank = round_half_up([counts.alpha * counts.total])
    return np.repeat(_rank_threshold(overall, rank), counts.num_classes)


@selection_rule
def cbst(counts: ClassCounts) -> np.ndarray:
    """Per class, the round(alpha * m_j)-th largest confidence among the m_j pixels predicted j
    (the teacher's biased distribution, not r_j)."""
    return _rank_threshold(counts.cum_ge, round_half_up(counts.alpha * counts.predicted))


@selection_rule
def fixed(counts: ClassCounts, *, tau: float) -> np.ndarray:
    """One confidence threshold ``tau`` (``pseudo_label.tau``) for every class, whatever alpha:
    the field's common baseline (FixMatch-style confidence masking)."""
    if not (math.isfinite(tau) and 0 <= tau <= 1):
        raise DarsError(f"tau must be in [0, 1], got {tau!r}")
    return np.full(counts.num_classes, _fixed_bits(tau), np.uint16)


METHODS = tuple(SELECTION_RULES)


def check_options(alpha: float, method: str, sampling: str, fixed_threshold: float | None,
                  settings: Mapping[str, Any] | None = None) -> None:
    """Validate the scalar options; ``settings`` must be exactly :func:`rule_settings`'s."""
    check_alpha(alpha)
    if method not in METHODS:
        raise DarsError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if sampling not in SAMPLINGS:
        raise DarsError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if sorted(settings or {}) != rule_settings(method):
        raise DarsError(f"method {method!r} reads the settings {rule_settings(method)}, got "
                        f"{sorted(settings or {})}")
    if fixed_threshold is not None:
        if method != "st":
            raise DarsError(f"a fixed threshold applies to method 'st' only, not {method!r}")
        if not (math.isfinite(fixed_threshold) and 0 <= fixed_threshold <= 1):
            raise DarsError(f"fixed threshold must be in [0, 1], got {fixed_threshold!r}")


def _check_hist(conf_hist: np.ndarray, label_ratios: np.ndarray,
                num_pixels: int | None) -> tuple[np.ndarray, np.ndarray]:
    hist = np.asarray(conf_hist)
    if hist.ndim != 2 or hist.shape[1] != NUM_BINS or hist.shape[0] < 1:
        raise DarsError(f"confidence histogram must have shape (C, {NUM_BINS}), got {hist.shape}")
    if not np.issubdtype(hist.dtype, np.integer) or (hist.size and hist.min() < 0):
        raise DarsError("confidence histogram must hold non-negative integer counts")
    ratios = np.asarray(label_ratios, np.float64)
    if ratios.shape != (hist.shape[0],):
        raise DarsError(f"{ratios.size} label ratios for {hist.shape[0]} classes")
    if not np.all(np.isfinite(ratios)) or np.any(ratios < 0) or abs(ratios.sum() - 1) > 1e-6:
        raise DarsError(f"label ratios must be non-negative and sum to 1, got {ratios.tolist()}")
    if num_pixels is not None and num_pixels != int(hist.sum()):
        raise DarsError(f"confidence histogram counts {int(hist.sum())} pixels, expected "
                        f"{num_pixels} (a shard or image missing?)")
    return hist.astype(np.int64), ratios


def compute_thresholds(conf_hist: np.ndarray, label_ratios: np.ndarray, alpha: float,
                       method: str, num_pixels: int | None = None, sampling: str = "paper",
                       fixed_threshold: float | None = None,
                       target_pixels: int | None = None,
                       settings: Mapping[str, Any] | None = None) -> Thresholds:
    """Thresholds and keep probabilities of one method (its rule in :data:`SELECTION_RULES`).

    ``dars`` then samples down to n_j = round(alpha * P * r_j): ``paper`` and ``exact`` (per
    image, :func:`exact_keep_count`) keep each selected pixel with s_j = n_j / ñ_j, ``ties``
    every pixel above t_j and a sample of those tied. Other methods keep all they select; their
    ``target`` is DARS's n_j, so shortfalls compare. P is ``target_pixels`` (the released VOC
    code counts 500 x 375 per image), else the histogram total, checked against ``num_pixels``
    (a missing shard)."""
    check_options(alpha, method, sampling, fixed_threshold, settings)
    hist, ratios = _check_hist(conf_hist, label_ratios, num_pixels)
    total = int(hist.sum())
    check_pixels_per_image(target_pixels)
    predicted = hist.sum(axis=1)  # m_j
    cum_ge = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    target = round_half_up(alpha * (total if target_pixels is None else target_pixels) * ratios)
    rule = SELECTION_RULES[method]
    shared = {"fixed_threshold": fixed_threshold}
    wanted = inspect.signature(rule).parameters
    bits = rule(ClassCounts(cum_ge, predicted, target, float(alpha), total),
                **{k: v for k, v in {**shared, **(settings or {})}.items() if k in wanted})
    rows = np.arange(len(ratios))
    valid = bits <= ONE_BITS
    col = np.minimum(bits, ONE_BITS)
    selected = np.where(valid, cum_ge[rows, col], 0)
    tied = np.where(valid, hist[rows, col], 0)
    keep_above = np.ones(len(ratios))
    keep_at = np.ones(len(ratios))
    over = selected > target
    if method == "dars" and sampling in ("paper", "exact"):
        keep_above = np.where(over, target / np.maximum(selected, 1), 1.0)
        keep_at = keep_above.copy()
    elif method == "dars":
        above = selected - tied  # < target by the choice of t_j
        keep_at = np.where(over, (target - above) / np.maximum(tied, 1), 1.0)
    return Thresholds(method=method, sampling=sampling, alpha=float(alpha), target=target,
                      threshold_bits=bits, selected=selected.astype(np.int64),
                      tied=tied.astype(np.int64), keep_above=keep_above, keep_at=keep_at)
