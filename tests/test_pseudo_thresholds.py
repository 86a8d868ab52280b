"""Thresholds and label assignment against a brute-force per-class sort reference.

The reference is the obvious implementation (sort each class's confidences, take the n-th);
the fast path works on float16 bit-pattern histograms. Hypothesis runs derandomized, so the
binomial 4-sigma checks are deterministic rather than occasionally flaky.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dars.core.constants import IGNORE, NUM_BINS, PAD
from dars.core.errors import DarsError
from dars.pseudo.assign import (
    LabelRule,
    assign_labels,
    image_hashes,
    image_key,
    image_uniforms,
)
from dars.pseudo.stage import kl_divergence
from dars.pseudo.thresholds import (
    NONE_BITS,
    PseudoLabelOptions,
    compute_thresholds,
    exact_keep_count,
    round_half_up,
)
from dars.stats.counting import confidence_histogram

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)


# ----------------------------------------------------------------------------- reference
REFERENCE_METHODS = ("dars", "da", "st", "cbst")  # the methods reference() restates


def reference(pred: np.ndarray, conf: np.ndarray, ratios: np.ndarray, alpha: float,
              method: str, fixed: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(threshold t_j, selected ñ_j) by sorting each class's confidences (PAD skipped)."""
    real = pred != PAD
    pred, conf = pred[real], conf[real].astype(np.float64)
    total = pred.size
    c = len(ratios)
    per_class = [np.sort(conf[pred == j])[::-1] for j in range(c)]
    if method == "st":
        if fixed is not None:
            t = np.full(c, fixed)
        else:
            everything = np.sort(conf)[::-1]
            n = int(np.floor(alpha * total + 0.5))
            t = np.full(c, everything[n - 1] if n else np.inf)
    else:
        t = np.empty(c)
        for j, values in enumerate(per_class):
            if method == "cbst":
                k = int(np.floor(alpha * len(values) + 0.5))
            else:
                k = min(int(np.floor(alpha * total * ratios[j] + 0.5)), len(values))
            t[j] = values[k - 1] if k else np.inf
    selected = np.array([np.count_nonzero(v >= t[j]) for j, v in enumerate(per_class)])
    return t, selected


# ----------------------------------------------------------------------------- data
def make_data(seed: int, num_classes: int, num_pixels: int, levels: int, ones: float,
              pad: float = 0.0, floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random predictions and float16 confidences with many ties (``levels`` values + 1.0).

    Confidences lie in [floor, 1], floor = 1/C (a softmax maximum) by default; a lower floor
    exercises the histogram's full-range fallback.
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(num_classes, 0.5))
    pred = rng.choice(num_classes, size=num_pixels, p=weights).astype(np.uint8)
    grid = rng.uniform(1.0 / num_classes if floor is None else floor, 1.0, size=levels)
    conf = grid[rng.integers(0, levels, num_pixels)]
    conf[rng.random(num_pixels) < ones] = 1.0
    conf = conf.astype(np.float16)
    padding = rng.random(num_pixels) < pad
    pred[padding] = PAD
    conf[padding] = rng.choice([0.0, 0.5, np.nan], size=int(padding.sum()))  # ignored anyway
    return pred, conf


def make_ratios(seed: int, num_classes: int, zeros: bool) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    r = rng.dirichlet(np.full(num_classes, 0.7))
    if zeros and num_classes > 1:
        r[rng.integers(0, num_classes)] = 0.0
        r /= r.sum()
    return r


def kept_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels[labels != IGNORE], minlength=num_classes)[:num_classes]


datasets = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31),
    "num_classes": st.integers(1, 7),
    "num_pixels": st.integers(0, 3000),
    "levels": st.integers(1, 40),
    "ones": st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    "pad": st.sampled_from([0.0, 0.2]),
    "floor": st.sampled_from([None, None, 0.0]),
})
alphas = st.one_of(st.floats(0.001, 1.0), st.just(1.0))


# ----------------------------------------------------------------------------- histogram
@SETTINGS
@given(data=datasets)
def test_histogram_matches_bit_pattern_counts(data: dict) -> None:
    pred, conf = make_data(**data)
    hist = confidence_histogram(pred, conf, data["num_classes"], threads=2)
    assert hist.shape == (data["num_classes"], NUM_BINS)
    real = pred != PAD
    expected = np.zeros_like(hist)
    np.add.at(expected, (pred[real], conf[real].view(np.uint16)), 1)
    np.testing.assert_array_equal(hist, expected)


def test_histogram_parts_sum_to_whole() -> None:
    pred, conf = make_data(3, 5, 700_000, 30, 0.5, pad=0.1)  # > 2 kernel chunks
    whole = confidence_histogram(pred, conf, 5, threads=2)
    parts = sum(confidence_histogram(p, c, 5, threads=1)
                for p, c in zip(np.array_split(pred, 3), np.array_split(conf, 3), strict=True))
    np.testing.assert_array_equal(whole, parts)
    assert whole.sum() == np.count_nonzero(pred != PAD)


def test_histogram_counts_confidences_below_one_over_c_exactly() -> None:
    pred = np.array([0, 0, 1, 1, 1, 2], np.uint8)
    conf = np.array([0.0, 0.01, 1.0, 0.5, 0.0, 0.3], np.float16)
    hist = confidence_histogram(pred, conf, 3)
    expected = np.zeros_like(hist)
    np.add.at(expected, (pred, conf.view(np.uint16)), 1)
    np.testing.assert_array_equal(hist, expected)


def test_histogram_of_all_padding_is_empty() -> None:
    pred = np.full((4, 6), PAD, np.uint8)
    hist = confidence_histogram(pred, np.full((4, 6), np.nan, np.float16), 3)
    assert hist.sum() == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.5, -0.25])
def test_histogram_rejects_invalid_confidence(bad: float) -> None:
    pred = np.zeros(10, np.uint8)
    conf = np.full(10, 0.5, np.float16)
    conf[7] = bad
    with pytest.raises(DarsError, match="NaN, infinite or outside"):
        confidence_histogram(pred, conf, 2)


def test_histogram_rejects_out_of_range_class() -> None:
    pred = np.array([0, 1, 2, PAD], np.uint8)
    with pytest.raises(DarsError, match="outside 0..1"):
        confidence_histogram(pred, np.full(4, 0.5, np.float16), 2)


# ----------------------------------------------------------------------------- thresholds
@SETTINGS
@given(data=datasets, alpha=alphas, method=st.sampled_from(REFERENCE_METHODS),
       zeros=st.booleans())
def test_thresholds_match_sort_reference(data: dict, alpha: float, method: str,
                                         zeros: bool) -> None:
    pred, conf = make_data(**data)
    c = data["num_classes"]
    ratios = make_ratios(data["seed"], c, zeros)
    hist = confidence_histogram(pred, conf, c)
    th = compute_thresholds(hist, ratios, alpha, method, num_pixels=int((pred != PAD).sum()))
    t_ref, sel_ref = reference(pred, conf, ratios, alpha, method)
    np.testing.assert_array_equal(th.threshold, t_ref)
    np.testing.assert_array_equal(th.selected, sel_ref)
    np.testing.assert_array_equal(th.threshold_bits == NONE_BITS, np.isinf(t_ref))


@SETTINGS
@given(data=datasets, fixed=st.floats(0.0, 1.0))
def test_fixed_threshold_st_matches_reference(data: dict, fixed: float) -> None:
    pred, conf = make_data(**data)
    c = data["num_classes"]
    hist = confidence_histogram(pred, conf, c)
    th = compute_thresholds(hist, np.full(c, 1 / c), 0.5, "st", fixed_threshold=fixed)
    _, sel_ref = reference(pred, conf, np.full(c, 1 / c), 0.5, "st", fixed=fixed)
    np.testing.assert_array_equal(th.selected, sel_ref)


@SETTINGS
@given(data=datasets, alpha=alphas, method=st.sampled_from(["da", "st", "cbst"]))
def test_non_sampling_methods_keep_exactly_the_selected(data: dict, alpha: float,
                                                        method: str) -> None:
    pred, conf = make_data(**data)
    c = data["num_classes"]
    ratios = make_ratios(data["seed"], c, zeros=True)
    th = compute_thresholds(confidence_histogram(pred, conf, c), ratios, alpha, method)
    real = pred != PAD  # assign_labels sees real (unpadded) pixels only
    labels = assign_labels(pred[real][None], conf[real][None], th, image_key(0, "x"))
    np.testing.assert_array_equal(kept_counts(labels, c), th.selected)
    assert np.all(th.keep_above == 1) and np.all(th.keep_at == 1)


@SETTINGS
@given(data=datasets, alpha=alphas, sampling=st.sampled_from(["paper", "ties"]))
def test_dars_counts_are_binomial_around_target(data: dict, alpha: float, sampling: str) -> None:
    pred, conf = make_data(**{**data, "pad": 0.0})
    c = data["num_classes"]
    ratios = make_ratios(data["seed"], c, zeros=True)
    th = compute_thresholds(confidence_histogram(pred, conf, c), ratios, alpha, "dars",
                            sampling=sampling)
    labels = assign_labels(pred[None], conf[None], th, image_key(data["seed"], "img"))
    kept = kept_counts(labels, c)
    over = th.selected > th.target
    # Classes with no more selected pixels than n_j keep them all, deterministically.
    np.testing.assert_array_equal(kept[~over], th.selected[~over])
    # Others: expectation n_j exactly, count within 4 sigma of the binomial.
    np.testing.assert_allclose(th.expected_kept[over], th.target[over], rtol=1e-9)
    trials = th.selected if sampling == "paper" else th.tied
    p = th.keep_above if sampling == "paper" else th.keep_at
    sigma = np.sqrt(trials * p * (1 - p))
    assert np.all(np.abs(kept - th.target)[over] <= 4 * sigma[over] + 1e-9)
    if sampling == "ties":  # every pixel strictly above t_j survives
        above = conf.view(np.uint16) > th.threshold_bits[pred]
        np.testing.assert_array_equal(labels[0][above], pred[above])


def test_kept_fraction_and_distribution_match_alpha_when_teacher_predicts_enough() -> None:
    """The paper's regime: every class predicted at least n_j times -> kept ≈ alpha, KL ≈ 0."""
    c, n = 19, 400_000
    rng = np.random.default_rng(7)
    ratios = np.geomspace(1.0, 0.005, c)
    ratios /= ratios.sum()
    pred = rng.choice(c, size=n, p=ratios).astype(np.uint8)
    conf = np.where(rng.random(n) < 0.6, 1.0, rng.uniform(0.3, 1.0, n)).astype(np.float16)
    hist = confidence_histogram(pred, conf, c)
    for alpha in (0.05, 0.2, 0.5):
        th = compute_thresholds(hist, ratios, alpha, "dars")
        assert np.all(hist.sum(axis=1) >= th.target)
        kept = kept_counts(assign_labels(pred[None], conf[None], th, image_key(1, "a")), c)
        assert abs(kept.sum() / n - alpha) < 0.005
        assert kl_divergence(ratios, kept) < 1e-3


# ----------------------------------------------------------------------------- edge cases
def test_all_confidences_tied_at_one() -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, 5000).astype(np.uint8)
    conf = np.ones(5000, np.float16)
    hist = confidence_histogram(pred, conf, 3)
    ratios = np.array([0.5, 0.3, 0.2])
    st_ = compute_thresholds(hist, ratios, 0.2, "st")
    assert np.all(st_.threshold == 1.0) and st_.selected.sum() == 5000  # ties overshoot alpha
    dars = compute_thresholds(hist, ratios, 0.2, "dars")
    np.testing.assert_array_equal(dars.threshold, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(dars.target, [500, 300, 200])
    np.testing.assert_allclose(dars.keep, dars.target / hist.sum(axis=1))
    ties = compute_thresholds(hist, ratios, 0.2, "dars", sampling="ties")
    np.testing.assert_allclose(ties.expected_kept, ties.target)


def test_alpha_one_keeps_everything_for_st_and_cbst() -> None:
    pred, conf = make_data(5, 4, 2000, 10, 0.3)
    hist = confidence_histogram(pred, conf, 4)
    for method in ("st", "cbst"):
        th = compute_thresholds(hist, np.full(4, 0.25), 1.0, method)
        np.testing.assert_array_equal(th.selected, hist.sum(axis=1))


def test_absent_and_never_predicted_classes() -> None:
    pred = np.array([0] * 50 + [1] * 30, np.uint8)  # class 2 never predicted
    conf = np.linspace(0.4, 1.0, 80).astype(np.float16)
    hist = confidence_histogram(pred, conf, 3)
    ratios = np.array([0.0, 0.5, 0.5])  # class 0 absent from the labeled set
    th = compute_thresholds(hist, ratios, 0.5, "dars")
    np.testing.assert_array_equal(th.target, [0, 20, 20])
    np.testing.assert_array_equal(th.selected, [0, 20, 0])
    assert th.threshold[0] == np.inf and th.threshold[2] == np.inf
    labels = assign_labels(pred[None], conf[None], th, image_key(0, "a"))
    np.testing.assert_array_equal(kept_counts(labels, 3), [0, 20, 0])


def test_target_larger_than_predicted_keeps_all() -> None:
    pred = np.array([0] * 90 + [1] * 10, np.uint8)
    conf = np.full(100, 0.75, np.float16)
    th = compute_thresholds(confidence_histogram(pred, conf, 2), np.array([0.5, 0.5]), 0.8,
                            "dars")
    np.testing.assert_array_equal(th.target, [40, 40])
    np.testing.assert_array_equal(th.selected, [90, 10])
    assert th.keep[1] == 1.0 and th.keep[0] == pytest.approx(40 / 90)


def test_empty_image_and_empty_histogram() -> None:
    th = compute_thresholds(np.zeros((3, NUM_BINS), np.int64), np.full(3, 1 / 3), 0.5, "dars")
    assert th.selected.sum() == 0 and np.all(np.isinf(th.threshold))
    labels = assign_labels(np.zeros((0, 5), np.uint8), np.zeros((0, 5), np.float16), th,
                           image_key(0, "a"))
    assert labels.shape == (0, 5)


# ----------------------------------------------------------------------------- randomness
def test_image_key_is_stable_and_distinct() -> None:
    a = image_key(3, "frankfurt/000001")
    assert a == image_key(3, "frankfurt/000001")
    assert a != image_key(4, "frankfurt/000001")
    assert a != image_key(3, "frankfurt/000002")
    # blake2b (digest 4, keyed with the seed's 8 little-endian bytes), restated independently
    import hashlib
    expected = hashlib.blake2b(b"frankfurt/000001", digest_size=4,
                               key=(3).to_bytes(8, "little")).digest()
    assert a == int.from_bytes(expected, "little")
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(DarsError, match="seed"):
            image_key(bad, "a")


def _reference_hashes(key: int, n: int) -> list[int]:
    """The pixels' 32-bit hashes restated in Python integers: MurmurHash3's fmix32 of
    (i * PHI) ^ key (PHI = 0x9E3779B9)."""
    out = []
    for i in range(n):
        x = ((i * 0x9E3779B9) & 0xFFFFFFFF) ^ key
        x ^= x >> 16
        x = (x * 0x85EBCA6B) & 0xFFFFFFFF
        x ^= x >> 13
        x = (x * 0xC2B2AE35) & 0xFFFFFFFF
        x ^= x >> 16
        out.append(x)
    return out


def _reference_uniforms(key: int, n: int) -> np.ndarray:
    """The uniforms: the top 24 bits of the hashes."""
    return np.array([(x >> 8) / 2**24 for x in _reference_hashes(key, n)])


def test_image_uniforms_match_the_restated_hash_and_look_uniform() -> None:
    key = image_key(0, "aachen/000000")
    u = image_uniforms(key, (7, 9))
    np.testing.assert_array_equal(u.reshape(-1), _reference_uniforms(key, 63))
    big = image_uniforms(key, (512, 512)).reshape(-1)
    assert big.min() >= 0 and big.max() < 1
    # 16 equal bins: chi-square with 15 degrees of freedom, below its 1e-6 upper quantile (~50)
    counts = np.bincount((big * 16).astype(int), minlength=16)
    chi2 = ((counts - big.size / 16) ** 2 / (big.size / 16)).sum()
    assert chi2 < 50
    # neighbouring pixels, and the same pixel of another image, are uncorrelated
    # (|r| < 0.01 is 5 standard errors at 262,144 pairs)
    assert abs(np.corrcoef(big[:-1], big[1:])[0, 1]) < 0.01
    other = image_uniforms(image_key(0, "aachen/000001"), (512, 512)).reshape(-1)
    assert abs(np.corrcoef(big, other)[0, 1]) < 0.01


def test_sampling_depends_on_seed_only_through_rng() -> None:
    pred, conf = make_data(11, 3, 4000, 5, 0.9)
    th = compute_thresholds(confidence_histogram(pred, conf, 3), np.full(3, 1 / 3), 0.2, "dars")
    assert np.any(th.keep_above < 1) or np.any(th.keep_at < 1)
    first = assign_labels(pred[None], conf[None], th, image_key(0, "a"))
    np.testing.assert_array_equal(first, assign_labels(pred[None], conf[None], th,
                                                       image_key(0, "a")))
    assert not np.array_equal(first, assign_labels(pred[None], conf[None], th,
                                                   image_key(1, "a")))


def _keep_rule(pred: np.ndarray, conf: np.ndarray, th,
               uniform: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """The rule of docs/METHOD.md ("Pseudo labels", steps 2 and 4) restated pixel by pixel:
    selected if conf >= t_j; kept with keep_above (keep_at when tied at t_j) against the
    image's raster-order uniforms, the probability rounded to 24 bits as assign documents;
    PAD (padding) gets no label."""
    out = np.full(pred.shape, IGNORE, np.uint8)
    t = th.threshold_bits
    for (y, x), j in np.ndenumerate(pred):
        b = int(np.asarray(conf[y, x]).view(np.uint16))
        if j != PAD and b >= t[j]:
            p = th.keep_at[j] if b == t[j] else th.keep_above[j]
            if uniform[y, x] < round(p * 2**24) / 2**24:
                out[y, x] = j
    return out


@SETTINGS
@given(seed=st.integers(0, 2**16), num_classes=st.integers(1, 7),
       shape=st.tuples(st.integers(0, 9), st.integers(0, 11)),
       alpha=alphas, method=st.sampled_from(REFERENCE_METHODS),
       sampling=st.sampled_from(["paper", "ties"]))
def test_labelling_matches_the_rule_pixel_by_pixel(
        seed: int, num_classes: int, shape: tuple[int, int], alpha: float, method: str,
        sampling: str) -> None:
    """The numpy pass against the rule restated pixel by pixel: every label and every count
    (PAD pixels, as a store marks padding, get IGNORE)."""
    h, w = shape
    pred, conf = make_data(seed, num_classes, max(h * w, 1), 5, 0.5)
    pred, conf = pred[:h * w].reshape(h, w), conf[:h * w].reshape(h, w)
    pred[:, w // 2:][pred[:, w // 2:] == 0] = PAD  # some pixels as padding
    ratios = make_ratios(seed, num_classes, zeros=True)
    th = compute_thresholds(confidence_histogram(pred, conf, num_classes), ratios, alpha,
                            method, sampling=sampling)
    key = image_key(seed, "im")
    labels, kept = LabelRule(th).labels(pred, conf, key)
    expected = _keep_rule(pred, conf, th, _reference_uniforms(key, h * w).reshape(h, w))
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(kept, kept_counts(expected, num_classes))


def test_large_images_are_labelled_in_slices_like_small_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An image larger than a slice of pass 2 (slices end mid-row here) gets the labels and
    counts of the rule applied to it whole."""
    import dars.pseudo.assign as assign

    pred, conf = make_data(5, 3, 9 * 7, 7, 0.5)
    pred, conf = pred.reshape(9, 7), conf.reshape(9, 7)
    th = compute_thresholds(confidence_histogram(pred, conf, 3), np.full(3, 1 / 3), 0.3, "dars")
    assert np.any(th.keep_above < 1) or np.any(th.keep_at < 1)
    whole = LabelRule(th).labels(pred, conf, image_key(4, "a"))
    monkeypatch.setattr(assign, "_CHUNK", 5)
    sliced = LabelRule(th).labels(pred, conf, image_key(4, "a"))
    np.testing.assert_array_equal(sliced[0], whole[0])
    np.testing.assert_array_equal(sliced[1], whole[1])
    np.testing.assert_array_equal(whole[0], _keep_rule(pred, conf, th, image_uniforms(
        image_key(4, "a"), (9, 7))))


# ----------------------------------------------------------------------------- sampling exact
def _released_keep(m: int, sp: float) -> int:
    """How many of an image's m pixels of class j over the threshold the released code keeps
    (CVMI-Lab/DARS tool/gen_pseudo_label_utils.py:384-387), in its own torch arithmetic:
    num_to_ignore = int(m - m.float() * sp), the rest kept."""
    import torch

    num = torch.tensor(m)  # class_j_over_threshold.sum(): an int64 tensor
    return m - int(num - num.float() * sp)


@given(m=st.one_of(st.integers(0, 2**21), st.integers(0, 50)),
       sp=st.one_of(st.floats(0.0, 1.0), st.just(1.0),
                    st.builds(lambda n, d: min(n / d, 1.0), st.integers(0, 10**6),
                              st.integers(1, 10**6))))
@SETTINGS
def test_exact_keep_count_is_the_released_one(m: int, sp: float) -> None:
    """Float32 rounding included: released keeps m - int(m - m s_j), ceil(m s_j) but for it."""
    assert int(exact_keep_count(m, sp)) == _released_keep(m, sp)


def _released_exact(pred: np.ndarray, conf: np.ndarray, th, key: int  # noqa: ANN001
                    ) -> np.ndarray:
    """The released second forward restated image by image (tool/gen_pseudo_label_utils.py:
    371-395): pixels of class j below t_j get IGNORE; of the m_j left, m_j - int(m_j - m_j s_j)
    are kept, the rest removed in a random order, here the order of the pixels' 32-bit hashes
    restated in Python integers (fmix32 of (i * PHI) ^ key); PAD gets no label."""
    h, w = pred.shape
    hashes = _reference_hashes(key, h * w)
    flat_pred, flat_bits = pred.reshape(-1), conf.reshape(-1).view(np.uint16)
    out = np.full(h * w, IGNORE, np.uint8)
    for j in range(th.num_classes):
        over = [i for i in range(h * w) if flat_pred[i] == j
                and int(flat_bits[i]) >= int(th.threshold_bits[j])]
        keep = _released_keep(len(over), float(th.keep_above[j]))
        for i in sorted(over, key=hashes.__getitem__)[:keep]:
            out[i] = j
    return out.reshape(h, w)


@SETTINGS
@given(seed=st.integers(0, 2**16), num_classes=st.integers(1, 7),
       shape=st.tuples(st.integers(0, 9), st.integers(0, 11)), alpha=alphas,
       levels=st.sampled_from([1, 3, 40]))
def test_exact_sampling_is_the_released_rule(seed: int, num_classes: int,
                                              shape: tuple[int, int], alpha: float,
                                              levels: int) -> None:
    """Sampling exact against the released per-image rule restated: labels and counts."""
    h, w = shape
    pred, conf = make_data(seed, num_classes, max(h * w, 1), levels, 0.5)
    pred, conf = pred[:h * w].reshape(h, w), conf[:h * w].reshape(h, w)
    pred[:, w // 2:][pred[:, w // 2:] == 0] = PAD
    ratios = make_ratios(seed, num_classes, zeros=True)
    th = compute_thresholds(confidence_histogram(pred, conf, num_classes), ratios, alpha,
                            "dars", sampling="exact")
    key = image_key(seed, "im")
    labels, kept = LabelRule(th).labels(pred, conf, key)
    expected = _released_exact(pred, conf, th, key)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(kept, kept_counts(expected, num_classes))


def test_exact_keeps_the_exact_count_per_image_and_class(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image keeps exactly m - int(m - m s_j) of its m selected pixels of class j, whatever
    the slice size of pass 2; which ones depends on the seed and image id, and over many keys
    every selected pixel is kept about as often (a uniformly random subset)."""
    import dars.pseudo.assign as assign

    c = 3
    images = [make_data(seed, c, 60 * 50, 4, 0.6) for seed in range(4)]
    pred = np.concatenate([p for p, _ in images])
    conf = np.concatenate([q for _, q in images])
    th = compute_thresholds(confidence_histogram(pred, conf, c), np.full(c, 1 / c), 0.3, "dars",
                            sampling="exact")
    assert np.all(th.keep_above[th.selected > th.target] < 1)
    rule = LabelRule(th)
    for i, (p, q) in enumerate(images):
        p, q = p.reshape(60, 50), q.reshape(60, 50)
        bits = q.view(np.uint16)
        m = np.array([np.count_nonzero((p == j) & (bits >= th.threshold_bits[j]))
                      for j in range(c)])
        labels, kept = rule.labels(p, q, image_key(0, f"im{i}"))
        np.testing.assert_array_equal(kept, [_released_keep(int(m[j]), float(th.keep_above[j]))
                                             for j in range(c)])
        np.testing.assert_array_equal(kept, kept_counts(labels, c))
        monkeypatch.setattr(assign, "_CHUNK", 7)
        np.testing.assert_array_equal(LabelRule(th).labels(p, q, image_key(0, f"im{i}"))[0],
                                      labels)
        monkeypatch.undo()
        assert not np.array_equal(rule.labels(p, q, image_key(1, f"im{i}"))[0], labels)
    p, q = images[0][0].reshape(60, 50), images[0][1].reshape(60, 50)
    j = int(np.argmin(th.keep_above))
    pool = (p == j) & (q.view(np.uint16) >= th.threshold_bits[j])
    share = np.mean([rule.labels(p, q, image_key(s, "a"))[0][pool] == j for s in range(400)],
                    axis=0)
    expected = _released_keep(int(pool.sum()), float(th.keep_above[j])) / pool.sum()
    # 400 draws per pixel: a standard error below 0.025, so 6 of them
    assert np.all(np.abs(share - expected) < 0.15)
    assert abs(share.mean() - expected) < 1e-9  # exactly k of m every time


def test_image_hashes_are_distinct_and_their_top_bits_the_uniforms() -> None:
    key = image_key(5, "x")
    hashes = image_hashes(key, (300, 300)).reshape(-1)
    assert np.unique(hashes).size == hashes.size
    np.testing.assert_array_equal((hashes >> 8) / 2**24,
                                  image_uniforms(key, (300, 300)).reshape(-1))


def test_exact_changes_nothing_for_other_methods_or_a_full_share() -> None:
    """exact only samples dars; with every s_j = 1 it keeps every selected pixel."""
    pred, conf = make_data(3, 3, 900, 6, 0.5)
    pred, conf = pred.reshape(30, 30), conf.reshape(30, 30)
    hist = confidence_histogram(pred, conf, 3)
    for method in ("da", "st", "cbst"):
        a = compute_thresholds(hist, np.full(3, 1 / 3), 0.4, method, sampling="exact")
        b = compute_thresholds(hist, np.full(3, 1 / 3), 0.4, method)
        key = image_key(0, "a")
        np.testing.assert_array_equal(assign_labels(pred, conf, a, key),
                                      assign_labels(pred, conf, b, key))
    predicted = hist.sum(axis=1)  # r_j = the teacher's own shares: n_j = m_j at alpha 1
    full = compute_thresholds(hist, predicted / predicted.sum(), 1.0, "dars", sampling="exact")
    assert np.all(full.keep_above == 1) and np.all(full.keep_at == 1)
    assert np.all(assign_labels(pred, conf, full, image_key(0, "a")) == pred)


# ----------------------------------------------------------------------------- pixel count
@given(data=datasets, alpha=alphas, per_image=st.sampled_from([1, 187_500, 500 * 375 + 3]),
       images=st.integers(1, 1464))
@SETTINGS
def test_target_counts_the_given_pixels(data: dict, alpha: float, per_image: int,
                                        images: int) -> None:
    """n_j = round(alpha P r_j) with P = pixels per image x images (released VOC: 500 x 375);
    the threshold is the min(n_j, m_j)-th largest confidence of class j as before."""
    pred, conf = make_data(**data)
    c = data["num_classes"]
    ratios = make_ratios(data["seed"], c, zeros=True)
    p = per_image * images
    th = compute_thresholds(confidence_histogram(pred, conf, c), ratios, alpha, "dars",
                            target_pixels=p)
    expected = [int(np.floor(alpha * p * r + 0.5)) for r in ratios]
    np.testing.assert_array_equal(th.target, expected)
    np.testing.assert_array_equal(th.target, round_half_up(alpha * p * ratios))
    real = pred != PAD
    for j in range(c):
        values = np.sort(conf[real][pred[real] == j].astype(np.float64))[::-1]
        k = min(expected[j], len(values))
        assert th.threshold[j] == (values[k - 1] if k else np.inf)


def test_pixels_per_image_comes_from_the_dataset_section() -> None:
    from dars.core import config

    cfg = config.validate({"dataset": {"pixels_per_image": 187500}})
    assert PseudoLabelOptions.from_config(cfg).pixels_per_image == 187500
    assert PseudoLabelOptions.from_config(config.validate({})).pixels_per_image is None
    from pathlib import Path

    voc = config.load(Path(__file__).resolve().parents[1] / "config" / "voc_1464.yaml")
    assert voc["dataset"]["pixels_per_image"] == 500 * 375
    assert voc["pseudo_label"]["sampling"] == "exact"
    for bad in (0, -3, 1.5, "500x375"):
        with pytest.raises(DarsError, match="pixels_per_image"):
            config.validate({"dataset": {"pixels_per_image": bad}})


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "187500"])
def test_bad_pixel_counts_are_refused(bad: object) -> None:
    with pytest.raises(DarsError, match="pixels per image must be a positive integer"):
        PseudoLabelOptions(alpha=0.5, pixels_per_image=bad).check()
    with pytest.raises(DarsError, match="pixels per image must be a positive integer"):
        compute_thresholds(np.zeros((2, NUM_BINS), np.int64), np.array([.5, .5]), 0.5, "dars",
                           target_pixels=bad)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 64), (17, 300), (9, 4, 3)])
def test_png_round_trips_through_pil(shape: tuple[int, ...], tmp_path) -> None:  # noqa: ANN001
    from PIL import Image

    from dars.data.images import png_bytes

    rng = np.random.default_rng(0)
    array = np.where(rng.random(shape) < 0.6, IGNORE, rng.integers(0, 19, shape)).astype(np.uint8)
    (tmp_path / "x.png").write_bytes(png_bytes(array))
    with Image.open(tmp_path / "x.png") as im:
        assert im.mode == ("P" if len(shape) == 2 else "RGB") and im.size == shape[1::-1]
        np.testing.assert_array_equal(np.asarray(im), array)
        # the grey palette: a tool that converts the palette sees the same values
        np.testing.assert_array_equal(np.asarray(im.convert("L" if len(shape) == 2 else "RGB")),
                                      array)


def test_png_refuses_what_it_cannot_write() -> None:
    from dars.data.images import png_bytes

    for bad in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 4), np.uint8)):
        with pytest.raises(DarsError, match="PNG"):
            png_bytes(bad)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.0001, float("nan"), float("inf")])
def test_alpha_outside_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(DarsError, match="alpha"):
        compute_thresholds(np.zeros((2, NUM_BINS), np.int64), np.array([0.5, 0.5]), alpha,
                           "dars")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "bogus"}, "method"),
    ({"sampling": "bogus"}, "sampling"),
    ({"method": "dars", "fixed_threshold": 0.9}, "fixed threshold applies"),
    ({"method": "st", "fixed_threshold": 1.5}, "fixed threshold must"),
    ({"label_ratios": np.array([0.5, 0.25, 0.25])}, "3 label ratios for 2"),
    ({"label_ratios": np.array([0.9, 0.3])}, "sum to 1"),
    ({"num_pixels": 5}, "expected 5"),
])
def test_bad_threshold_arguments(kwargs: dict, message: str) -> None:
    args = {"conf_hist": np.zeros((2, NUM_BINS), np.int64), "label_ratios": np.array([.5, .5]),
            "alpha": 0.5, "method": "st"} | kwargs
    with pytest.raises(DarsError, match=message):
        compute_thresholds(**args)


def test_assign_rejects_invalid_pixels() -> None:
    th = compute_thresholds(np.ones((2, NUM_BINS), np.int64), np.array([.5, .5]), 0.5, "da")
    with pytest.raises(DarsError, match="class 3"):  # PAD is padding, not an error
        assign_labels(np.array([[3, PAD, 0]], np.uint8), np.full((1, 3), 0.5, np.float16), th,
                      image_key(0, "a"))
    with pytest.raises(DarsError, match="class 2"):
        assign_labels(np.array([[2]], np.uint8), np.array([[0.5]], np.float16), th,
                      image_key(0, "a"))
    with pytest.raises(DarsError, match="NaN"):
        assign_labels(np.array([[1]], np.uint8), np.array([[np.nan]], np.float16), th,
                      image_key(0, "a"))