"""Sigmoid (binary, multi-label) cross-entropy from logits: loss and gradient.

Tests ``sigmoid_cross_entropy``, ``sigmoid_cross_entropy_grad`` and
``sigmoid_cross_entropy_with_grad`` against

* ``torch.nn.functional.binary_cross_entropy_with_logits`` in float64 and its
  autograd gradient (``pos_weight``, ``weight``, reductions, hard and soft
  labels, 2-D and 1-D logits, float32 and float64 inputs);
* 4th-order finite differences for every gradient;
* the documented ``sample_weight`` semantics (``mean`` divides by
  K * sum(sample_weight)) and the label-flip symmetry;
* extreme inputs: +-1e30, +-inf, very confident elements, NaN, empty arrays;
* Hypothesis property tests.

Bad arguments (validation errors) are tested in ``test_validation.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softxent as sx
from softxent._validation import check_probability_labels

from conftest import TOL, finite_difference_grad, random_logits

# Every test runs on the fused kernel and on the exact NumPy path (conftest.backend).
pytestmark = pytest.mark.usefixtures("backend")

REDUCTIONS = ["mean", "sum", "none"]
FD_TOL = dict(rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- helpers


def loss_and_grad(logits, labels, **kwargs):
    """softxent's loss and gradient from the two separate public functions."""
    return (
        sx.sigmoid_cross_entropy(logits, labels, **kwargs),
        sx.sigmoid_cross_entropy_grad(logits, labels, **kwargs),
    )


def torch_loss_and_grad(logits, labels, *, pos_weight=None, weight=None, reduction="mean"):
    """The float64 torch oracle: loss and d(sum of loss)/d(logits)."""
    z = torch.tensor(np.asarray(logits, dtype=np.float64), requires_grad=True)
    y = torch.tensor(np.asarray(labels, dtype=np.float64))

    def as_tensor(v):
        return None if v is None else torch.tensor(np.asarray(v, dtype=np.float64))

    loss = F.binary_cross_entropy_with_logits(
        z, y, weight=as_tensor(weight), pos_weight=as_tensor(pos_weight), reduction=reduction
    )
    loss.sum().backward()
    return loss.detach().numpy(), z.grad.numpy()


def assert_matches(actual, expected, dtype, **tol):
    """``actual`` has the input's dtype and equals the float64 ``expected`` to TOL[dtype]."""
    assert np.asarray(actual).dtype == dtype
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, **(tol or TOL[dtype]))


def make_labels(rng, shape, kind):
    """0/1 indicators ("hard") or probabilities in [0, 1] with both ends present ("soft")."""
    if kind == "hard":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    y = rng.uniform(0.0, 1.0, size=shape)
    y.reshape(-1)[:2] = [0.0, 1.0]
    return y


def label_weights(rng, kind, n_labels):
    """None, a scalar, or one non-negative value per label."""
    if kind == "none":
        return None
    if kind == "scalar":
        return 2.5
    return rng.uniform(0.2, 3.0, n_labels)


# --------------------------------------------------------------------------- torch oracle


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_kind", ["none", "scalar", "per-label"])
@pytest.mark.parametrize("pos_weight_kind", ["none", "scalar", "per-label"])
@pytest.mark.parametrize("label_kind", ["hard", "soft"])
def test_matches_torch_2d(dtype, rng, label_kind, pos_weight_kind, weight_kind, reduction):
    logits = random_logits(rng, (6, 4), dtype=dtype)
    labels = make_labels(rng, (6, 4), label_kind)
    options = dict(
        pos_weight=label_weights(rng, pos_weight_kind, 4),
        weight=label_weights(rng, weight_kind, 4),
        reduction=reduction,
    )
    loss, grad = loss_and_grad(logits, labels, **options)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, **options)
    assert_matches(loss, expected_loss, dtype)
    assert np.shape(loss) == ((6, 4) if reduction == "none" else ())
    assert_matches(grad, expected_grad, dtype)
    assert grad.shape == (6, 4)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_kind", ["hard", "soft"])
def test_matches_torch_1d(dtype, rng, label_kind, reduction):
    """A 1-D array is N rows of one label; scalar and (1,) label weights both work."""
    logits = random_logits(rng, (9,), dtype=dtype)
    labels = make_labels(rng, (9,), label_kind)
    loss, grad = loss_and_grad(logits, labels, pos_weight=1.7, weight=0.6, reduction=reduction)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, pos_weight=1.7, weight=0.6, reduction=reduction)
    assert_matches(loss, expected_loss, dtype)
    assert_matches(grad, expected_grad, dtype)
    loss1, grad1 = loss_and_grad(logits, labels, pos_weight=[1.7], weight=[0.6], reduction=reduction)
    np.testing.assert_array_equal(loss1, loss)
    np.testing.assert_array_equal(grad1, grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch_3d(dtype, rng, reduction):
    """(..., K): label weights act on the last axis."""
    logits = random_logits(rng, (2, 3, 5), dtype=dtype)
    labels = make_labels(rng, (2, 3, 5), "soft")
    options = dict(pos_weight=rng.uniform(0.5, 2.0, 5), weight=rng.uniform(0.5, 2.0, 5), reduction=reduction)
    loss, grad = loss_and_grad(logits, labels, **options)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, **options)
    assert_matches(loss, expected_loss, dtype)
    assert_matches(grad, expected_grad, dtype)


# --------------------------------------------------------------------------- finite differences

FD_OPTIONS = {
    "plain": {},
    "pos_weight": dict(pos_weight=[0.5, 3.0, 1.0, 2.0]),
    "weight": dict(weight=[2.0, 0.25, 1.0, 1.5]),
    "sample_weight": dict(sample_weight=[0.5, 0.0, 2.0]),
    "all": dict(pos_weight=[0.5, 3.0, 1.0, 2.0], weight=[2.0, 0.25, 1.0, 1.5], sample_weight=[0.5, 1.0, 2.0]),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_kind", ["hard", "soft"])
@pytest.mark.parametrize("case", list(FD_OPTIONS))
def test_grad_matches_finite_differences(rng, case, label_kind, reduction):
    options = FD_OPTIONS[case]
    logits = random_logits(rng, (3, 4))
    labels = make_labels(rng, (3, 4), label_kind)

    def total_loss(z):  # for "none": the gradient of the sum of the elementwise losses
        return float(np.sum(sx.sigmoid_cross_entropy(z, labels, reduction=reduction, **options)))

    grad = sx.sigmoid_cross_entropy_grad(logits, labels, reduction=reduction, **options)
    np.testing.assert_allclose(grad, finite_difference_grad(total_loss, logits), **FD_TOL)


def test_grad_matches_finite_differences_1d(rng):
    logits = random_logits(rng, (5,))
    labels = make_labels(rng, (5,), "soft")
    options = dict(pos_weight=2.0, weight=0.5, sample_weight=[1.0, 2.0, 0.0, 0.5, 3.0])

    def total_loss(z):
        return float(sx.sigmoid_cross_entropy(z, labels, **options))

    grad = sx.sigmoid_cross_entropy_grad(logits, labels, **options)
    np.testing.assert_allclose(grad, finite_difference_grad(total_loss, logits), **FD_TOL)


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("shape", [(5, 3), (5,), (2, 3, 4)], ids=["2d", "1d", "3d"])
def test_sample_weight_semantics(dtype, rng, shape):
    logits = random_logits(rng, shape, dtype=dtype)
    labels = make_labels(rng, shape, "soft")
    rows = shape[:-1] if len(shape) >= 2 else shape
    n_labels = shape[-1] if len(shape) >= 2 else 1
    sw = rng.uniform(0.0, 3.0, rows)
    sw.reshape(-1)[0] = 0.0
    swb = sw[..., None] if len(shape) >= 2 else sw
    options = dict(pos_weight=1.5)

    elements, element_grads = loss_and_grad(logits, labels, reduction="none", **options)
    elements = elements.astype(np.float64)
    weighted = np.asarray(swb * elements)

    np.testing.assert_allclose(
        sx.sigmoid_cross_entropy(logits, labels, reduction="none", sample_weight=sw, **options), weighted, **TOL[dtype]
    )
    loss, grad = loss_and_grad(logits, labels, reduction="sum", sample_weight=sw, **options)
    np.testing.assert_allclose(loss, weighted.sum(), **TOL[dtype])
    np.testing.assert_allclose(grad, swb * element_grads, **TOL[dtype])
    # mean divides by K * sum(sample_weight), not by the number of elements.
    denominator = n_labels * sw.sum()
    loss, grad = loss_and_grad(logits, labels, reduction="mean", sample_weight=sw, **options)
    np.testing.assert_allclose(loss, weighted.sum() / denominator, **TOL[dtype])
    np.testing.assert_allclose(grad, swb * element_grads / denominator, **TOL[dtype])


def test_integer_sample_weight_equals_repeated_rows_for_mean(dtype, rng):
    logits = random_logits(rng, (4, 3), dtype=dtype)
    labels = make_labels(rng, (4, 3), "soft")
    counts = np.array([2, 0, 3, 1])
    options = dict(pos_weight=[1.0, 2.0, 0.5], weight=[0.5, 1.0, 2.0])

    loss, grad = loss_and_grad(logits, labels, sample_weight=counts.astype(float), **options)
    rep_loss, rep_grad = loss_and_grad(np.repeat(logits, counts, axis=0), np.repeat(labels, counts, axis=0), **options)
    rep_grad_per_row = np.zeros(grad.shape)
    np.add.at(rep_grad_per_row, np.repeat(np.arange(4), counts), rep_grad)

    np.testing.assert_allclose(loss, rep_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, rep_grad_per_row, **TOL[dtype])


def test_all_sample_weights_zero_gives_zero_mean(dtype, rng):
    logits = random_logits(rng, (3, 2), dtype=dtype)
    loss, grad = loss_and_grad(logits, make_labels(rng, (3, 2), "hard"), sample_weight=np.zeros(3))
    assert loss == 0.0 and not np.isnan(loss)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_flipping_logit_and_label_keeps_loss_and_negates_grad(dtype, rng, reduction):
    """-log sigma(z) for y = 1 is -log(1 - sigma(-z)) for y = 0 (no pos_weight)."""
    logits = random_logits(rng, (4, 3), dtype=dtype)
    labels = make_labels(rng, (4, 3), "soft")
    options = dict(weight=[0.5, 1.0, 2.0], reduction=reduction)
    loss, grad = loss_and_grad(logits, labels, **options)
    flipped_loss, flipped_grad = loss_and_grad(-logits, 1.0 - labels, **options)
    np.testing.assert_allclose(flipped_loss, loss, **TOL[dtype])
    np.testing.assert_allclose(flipped_grad, -grad, **TOL[dtype])


def test_unweighted_grad_is_sigmoid_minus_label(rng):
    logits = random_logits(rng, (4, 5))
    labels = make_labels(rng, (4, 5), "soft")
    grad = sx.sigmoid_cross_entropy_grad(logits, labels, reduction="sum")
    np.testing.assert_allclose(grad, 1.0 / (1.0 + np.exp(-logits)) - labels, **TOL[np.float64])


WITH_GRAD_OPTIONS = [
    dict(),
    dict(reduction="sum", pos_weight=[1.0, 3.0, 0.5]),
    dict(reduction="none", weight=[0.5, 1.0, 2.0], sample_weight=[1.0, 0.0, 2.0, 0.5]),
]


@pytest.mark.parametrize("options", WITH_GRAD_OPTIONS, ids=["default", "sum-pos_weight", "none-weights"])
def test_with_grad_returns_exactly_the_separate_results(dtype, rng, options):
    logits = random_logits(rng, (4, 3), dtype=dtype)
    labels = make_labels(rng, (4, 3), "soft")
    loss, grad = sx.sigmoid_cross_entropy_with_grad(logits, labels, **options)
    expected_loss, expected_grad = loss_and_grad(logits, labels, **options)
    assert np.asarray(loss).dtype == np.asarray(expected_loss).dtype == dtype
    assert grad.dtype == expected_grad.dtype == dtype
    np.testing.assert_array_equal(loss, expected_loss)
    np.testing.assert_array_equal(grad, expected_grad)


# --------------------------------------------------------------------------- extreme inputs


@pytest.mark.parametrize("big", [1e30, np.inf], ids=["1e30", "inf"])
def test_huge_logits_with_matching_labels_give_zero(dtype, big):
    logits = np.array([[big, -big], [-big, big]], dtype=dtype)
    labels = np.array([[1.0, 0.0], [0.0, 1.0]])
    options = dict(pos_weight=[2.0, 0.5], weight=[1.5, 3.0])
    for reduction in REDUCTIONS:
        loss, grad = loss_and_grad(logits, labels, reduction=reduction, **options)
        assert np.asarray(loss).dtype == grad.dtype == dtype
        np.testing.assert_array_equal(loss, 0.0)  # no NaN from 0 * inf
        np.testing.assert_array_equal(grad, 0.0)


def test_huge_logits_with_wrong_labels(dtype):
    logits = np.array([1e30, -1e30], dtype=dtype)
    labels = np.array([0.0, 1.0])
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    np.testing.assert_allclose(loss, [1e30, 1e30], rtol=TOL[dtype]["rtol"])
    np.testing.assert_array_equal(grad, [1.0, -1.0])
    # Infinite logits on the wrong side: an infinite loss, a finite gradient.
    loss, grad = loss_and_grad(np.array([np.inf, -np.inf], dtype=dtype), labels, reduction="none")
    np.testing.assert_array_equal(loss, [np.inf, np.inf])
    np.testing.assert_array_equal(grad, [1.0, -1.0])


def test_confident_elements_keep_tiny_exact_loss_float64():
    logits = np.array([40.0, -40.0, 800.0])
    labels = np.array([1.0, 0.0, 1.0])
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    tiny = math.exp(-40.0)
    np.testing.assert_allclose(loss[:2], math.log1p(tiny), rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad[:2], [-tiny / (1 + tiny), tiny / (1 + tiny)], rtol=1e-12, atol=0)
    assert loss[2] == 0.0 and grad[2] == 0.0  # exp(-800) underflows: exactly 0 is exact here


def test_confident_elements_keep_tiny_exact_loss_float32():
    logits = np.array([40.0, -40.0, 20.0], dtype=np.float32)
    labels = np.array([1.0, 0.0, 1.0])
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    eps = float(np.finfo(np.float32).eps)
    tiny = np.exp(-np.array([40.0, 40.0, 20.0]))
    assert np.all(loss > 0) and np.all(grad != 0)
    np.testing.assert_allclose(loss, np.log1p(tiny), rtol=4 * eps, atol=0)
    np.testing.assert_allclose(grad, np.array([-1.0, 1.0, -1.0]) * tiny / (1 + tiny), rtol=4 * eps, atol=0)


def test_nan_propagates_elementwise(dtype, rng):
    logits = random_logits(rng, (3, 4), dtype=dtype)
    labels = make_labels(rng, (3, 4), "soft")
    clean_loss, clean_grad = loss_and_grad(logits, labels, reduction="none")
    logits[1, 2] = np.nan
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    nan = np.zeros((3, 4), dtype=bool)
    nan[1, 2] = True
    np.testing.assert_array_equal(np.isnan(loss), nan)
    np.testing.assert_array_equal(np.isnan(grad), nan)
    np.testing.assert_array_equal(loss[~nan], clean_loss[~nan])
    np.testing.assert_array_equal(grad[~nan], clean_grad[~nan])
    assert np.isnan(sx.sigmoid_cross_entropy(logits, labels))
    assert np.isnan(sx.sigmoid_cross_entropy(logits, labels, reduction="sum"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0, 4), (0,), (3, 0)])
def test_empty_arrays(dtype, shape, reduction):
    logits = np.zeros(shape, dtype=dtype)
    labels = np.zeros(shape)
    loss, grad = loss_and_grad(logits, labels, reduction=reduction)
    assert np.asarray(loss).dtype == grad.dtype == dtype
    assert grad.shape == shape
    if reduction == "none":
        assert loss.shape == shape
    else:
        assert np.shape(loss) == () and loss == 0.0 and not np.isnan(loss)


# --------------------------------------------------------------------------- properties


@st.composite
def batches(draw):
    """Finite float64 logits (|z| <= 50), labels in [0, 1], per-label weights."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(1, 5))
    logits = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-50, 50)))
    labels = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(0.0, 1.0)))
    pos_weight = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.0, 5.0)))
    weight = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.0, 5.0)))
    return logits, labels, pos_weight, weight


@given(batches(), st.sampled_from(REDUCTIONS))
def test_property_matches_torch(batch, reduction):
    logits, labels, pos_weight, weight = batch
    options = dict(pos_weight=pos_weight, weight=weight, reduction=reduction)
    loss, grad = loss_and_grad(logits, labels, **options)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, **options)
    assert np.all(np.asarray(loss) >= 0.0)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)


@given(batches())
def test_property_loss_at_least_label_entropy(batch):
    """Unweighted, -[y log s + (1-y) log(1-s)] >= H(y), with equality at s = y: Gibbs' inequality."""
    logits, labels, _, _ = batch
    loss = sx.sigmoid_cross_entropy(logits, labels, reduction="none")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nan_to_num(labels * np.log(labels)) - np.nan_to_num((1 - labels) * np.log1p(-labels))
    assert np.all(loss >= h - 1e-12 * (1 + np.abs(logits)))


# --------------------------------------------------------------------------- labels in the logits' dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_kind", ["hard", "soft"])
def test_float_labels_give_the_results_of_converted_ones(dtype, label_kind, rng):
    """float32 and float64 labels skip the float64 conversion on the kernel
    path (one compiled check instead); the results are those of the same
    values in float16, which take the general check. Each label dtype is its
    own compiled specialisation, which may round differently in the last bit
    (after a fresh compile, on another CPU): compared at the dtype's tolerance."""
    z = random_logits(rng, (300, 14), dtype=dtype)
    y16 = make_labels(rng, (300, 14), label_kind).astype(np.float16)  # values exact in every dtype below
    for reduction in REDUCTIONS:
        ref_loss, ref_grad = sx.sigmoid_cross_entropy_with_grad(z, y16, pos_weight=2.0, reduction=reduction)
        for label_dtype in (np.float32, np.float64):
            y = y16.astype(label_dtype)
            loss, grad = sx.sigmoid_cross_entropy_with_grad(z, y, pos_weight=2.0, reduction=reduction)
            np.testing.assert_allclose(loss, ref_loss, **TOL[dtype])
            np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, -0.5, 1.5, np.inf, -np.inf])
def test_bad_float_labels_name_the_first_one(dtype, bad, rng):
    """The compiled label check finds the first bad label past its first block
    (4096 entries) and the error names it, as the general check does."""
    z = random_logits(rng, (3, 5000), dtype=dtype)
    y = make_labels(rng, (3, 5000), "soft").astype(dtype)
    y[1, 4000] = bad
    y[2, 10] = 7.0  # a later bad label is not the one reported
    with pytest.raises(
        ValueError, match=r"labels must be finite probabilities in \[0, 1\], got .* at index \(1, 4000\)"
    ):
        sx.sigmoid_cross_entropy_with_grad(z, y)


# --------------------------------------------------------------------------- float32 arithmetic against float64
#
# float32 logits are computed in float32 arithmetic on the kernel path (see
# softxent.kernels._sigmoid): each element's loss within a few eps of the
# float64 value, relative, and its gradient within a few eps of the larger of
# its two terms (where they cancel, float32 can do no better). Measured:
# 3.5 and 3.1 eps; 6 eps leaves room for another CPU's FMA contractions,
# and still fails a float32 log(1 - sigmoid) or an exp off by a few ulps.

F32_EPS = float(np.finfo(np.float32).eps)
F32_TINY = float(np.finfo(np.float32).tiny)


def oracle64(logits, labels, pos_weight=1.0, weight=1.0, sample_weight=None):
    """Per-element float64 loss, gradient and the gradient's term magnitude, written out here
    (softplus by logaddexp; 0 * inf = 0 for a term without weight)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    sw = 1.0 if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if z.ndim >= 2 and sample_weight is not None:
        sw = sw[..., None]  # one per row
    cp, cn = np.asarray(pos_weight, dtype=np.float64) * y, 1.0 - y
    weight = np.asarray(weight, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        loss = np.where(cp > 0, cp * np.logaddexp(0.0, -z), 0.0) + np.where(cn > 0, cn * np.logaddexp(0.0, z), 0.0)
        sig_p, sig_n = np.exp(-np.logaddexp(0.0, -z)), np.exp(-np.logaddexp(0.0, z))
    scale = weight * sw
    return loss * scale, (cn * sig_p - cp * sig_n) * scale, (cn * sig_p + cp * sig_n) * scale


def assert_float32_close(loss, grad, logits, labels, times_eps=6.0, **options):
    expected_loss, expected_grad, magnitude = oracle64(logits, labels, **options)
    assert loss.dtype == grad.dtype == np.float32
    nan = np.isnan(np.asarray(logits, dtype=np.float64))
    np.testing.assert_array_equal(np.isnan(loss), nan)
    np.testing.assert_array_equal(np.isnan(grad), nan)
    # results below float32's smallest normal number may be flushed to 0
    floor = 4 * F32_TINY * np.max(np.abs(magnitude[~nan]), initial=1.0)
    with np.errstate(invalid="ignore"):
        loss_err = np.abs(loss.astype(np.float64) - expected_loss)
        grad_err = np.abs(grad.astype(np.float64) - expected_grad)
    inf = np.isinf(expected_loss)
    np.testing.assert_array_equal(loss[inf & ~nan], expected_loss[inf & ~nan])
    ok = ~nan & ~inf
    bad_loss = ok & (loss_err > times_eps * F32_EPS * np.abs(expected_loss) + floor)
    bad_grad = ~nan & (grad_err > times_eps * F32_EPS * magnitude + floor)
    assert not bad_loss.any(), (
        np.asarray(logits)[bad_loss][:5],
        (loss_err / np.abs(expected_loss) / F32_EPS)[bad_loss][:5],
    )
    assert not bad_grad.any(), (np.asarray(logits)[bad_grad][:5], (grad_err / magnitude / F32_EPS)[bad_grad][:5])


@pytest.mark.parametrize("shape", [(3000, 14), (40, 100), (777,)], ids=["flat", "rows", "1d"])
@pytest.mark.parametrize("label_kind", ["hard", "soft64", "soft32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weights"])
def test_float32_matches_float64_oracle(rng, shape, label_kind, weighted):
    """Few labels (the flat tiles), many labels (the row loop) and 1-D, over [-90, 90]."""
    logits = (
        np.concatenate(
            [
                random_logits(rng, shape[0] // 2 * np.prod(shape[1:], dtype=int)),
                rng.uniform(-90.0, 90.0, np.prod(shape)),
            ]
        )[: np.prod(shape)]
        .reshape(shape)
        .astype(np.float32)
    )
    labels = make_labels(rng, shape, "hard" if label_kind == "hard" else "soft")
    if label_kind == "soft32":
        labels = labels.astype(np.float32)
    k = shape[-1] if len(shape) > 1 else 1
    options = {}
    if weighted:
        rows = shape[:-1] if len(shape) > 1 else shape
        options = dict(pos_weight=rng.uniform(0.2, 3.0, k), weight=rng.uniform(0.2, 3.0, k))
        options["sample_weight"] = rng.uniform(0.0, 3.0, rows)
        if len(shape) == 1:
            options["pos_weight"], options["weight"] = 2.5, 0.7
    loss, grad = sx.sigmoid_cross_entropy_with_grad(logits, labels, reduction="none", **options)
    assert_float32_close(loss, grad, logits, labels, **options)
    # the reductions: the float64 sum of the same elements
    expected = oracle64(logits, labels, **options)[0].sum()
    np.testing.assert_allclose(
        sx.sigmoid_cross_entropy(logits, labels, reduction="sum", **options), expected, rtol=8 * F32_EPS
    )


def test_float32_extreme_inputs_match_float64_oracle():
    """+-1e30, +-88 (exp(-88) is below float32's smallest normal), +-87, +-1e-8, 0, NaN, +-inf,
    against hard and soft labels, with and without weights."""
    values = [1e30, -1e30, 88.0, -88.0, 87.0, -87.0, 40.0, -40.0, 1e-8, -1e-8, 0.0, -0.0, np.nan, np.inf, -np.inf]
    z = np.array(values * 3, dtype=np.float32).reshape(3, -1).T.copy()  # (15, 3)
    y = np.tile(np.array([0.0, 1.0, 0.3]), (len(values), 1))
    for options in (dict(), dict(pos_weight=[2.0, 0.5, 3.0], weight=[1.5, 0.25, 2.0])):
        loss, grad = sx.sigmoid_cross_entropy_with_grad(z, y, reduction="none", **options)
        assert_float32_close(loss, grad, z, y, **options)
        # the confident elements keep their tiny losses, relative, where float32 has them
        expected = oracle64(z, y, **options)[0]
        i = np.abs(z) == 40.0
        np.testing.assert_allclose(loss[i & (expected < 1e-10)], expected[i & (expected < 1e-10)], rtol=6 * F32_EPS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(20000, 14), (1500, 200)], ids=["flat", "rows"])
def test_results_do_not_depend_on_thread_count(rng, dtype, shape):
    """Rows are independent and their blocks fixed by the shape: the same compiled code gives
    the same bits on 1 and 2 threads. Rows computed alone agree to rounding (another batch
    may take another vector/remainder split inside the same loop)."""
    numba = pytest.importorskip("numba")
    logits = random_logits(rng, shape, dtype=dtype)
    labels = make_labels(rng, shape, "soft").astype(dtype)
    options = dict(pos_weight=rng.uniform(0.5, 2.0, shape[1]), sample_weight=rng.uniform(0.0, 2.0, shape[0]))
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            results.append(sx.sigmoid_cross_entropy_with_grad(logits, labels, reduction="none", **options))
            results.append(sx.sigmoid_cross_entropy_with_grad(logits, labels, reduction="mean", **options))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[:2], results[2:]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    part = slice(1234, 1241)
    loss, grad = sx.sigmoid_cross_entropy_with_grad(
        logits[part], labels[part], reduction="none", pos_weight=options["pos_weight"],
        sample_weight=options["sample_weight"][part],
    )  # fmt: skip
    np.testing.assert_allclose(loss, results[0][0][part], rtol=4 * np.finfo(dtype).eps, atol=0)
    np.testing.assert_allclose(grad, results[0][1][part], rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)


def test_float32_confident_elements_keep_relative_precision():
    """A confident element's loss and gradient are exp(-|z|) itself, to float32's precision
    (measured 0.9 eps over [17, 87]; an exponential of a few ulps fails this)."""
    z = np.linspace(17.0, 87.0, 20001).astype(np.float32)
    for zz, y in ((z, np.ones(z.size)), (-z, np.zeros(z.size))):
        loss, grad = sx.sigmoid_cross_entropy_with_grad(zz, y, reduction="none")
        tiny = np.exp(-z.astype(np.float64))
        np.testing.assert_allclose(loss, np.log1p(tiny), rtol=2 * F32_EPS, atol=0)
        np.testing.assert_allclose(np.abs(grad), tiny / (1.0 + tiny), rtol=2 * F32_EPS, atol=0)


# --------------------------------------------------------------------------- the label check inside the kernel's sweep
#
# float32/float64 labels are checked by the kernel while it reads them (no
# separate pass); a bad one raises the error of the general NumPy check, word
# for word: the same value and index, on every kernel path.

LABEL_PATHS = {  # name: (shape, options), each reaching another loop of the kernel
    "unweighted": ((300, 14), {}),
    "unweighted-blocks": ((20000, 14), {}),  # several parallel blocks: the bad label is in a later one
    "weighted-tiles": ((300, 14), dict(pos_weight=2.0)),
    "weighted-rows": ((30, 200), dict(weight=0.5)),
    "sample-weight-blocks": ((20000, 14), dict(sample_weight=np.linspace(0.0, 2.0, 20000))),
    "1d": ((777,), {}),
}


def numpy_label_error(labels):
    """The message of the general check (what the front end said before the check moved into the kernel)."""
    with pytest.raises(ValueError) as info:
        check_probability_labels(labels, upper=1.0)
    return str(info.value)


def bad_label_values(label_dtype):
    """Ordinary and extreme bad labels, exact in ``label_dtype``."""
    one, zero = label_dtype(1.0), label_dtype(0.0)
    return [np.nan, -0.5, 1.5, np.inf, -np.inf, np.nextafter(one, label_dtype(2.0)),
            -np.nextafter(zero, one), label_dtype(-0.0) - np.finfo(label_dtype).tiny, 7e37]  # fmt: skip


@pytest.mark.parametrize("label_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", list(LABEL_PATHS))
def test_bad_labels_raise_the_numpy_checks_error(dtype, label_dtype, path, rng):
    shape, options = LABEL_PATHS[path]
    z = random_logits(rng, shape, dtype=dtype)
    for bad in bad_label_values(label_dtype):
        y = make_labels(rng, shape, "soft").astype(label_dtype)
        first = (y.size * 2) // 3  # past the first tile and block
        y.flat[first] = bad
        y.flat[-1] = 3.0  # a later bad label is not the one reported
        expected = numpy_label_error(y)
        where = tuple(int(i) for i in np.unravel_index(first, shape))
        assert expected.endswith(f"at index {where}"), expected
        for fn in (sx.sigmoid_cross_entropy, sx.sigmoid_cross_entropy_grad, sx.sigmoid_cross_entropy_with_grad):
            for reduction in ("mean", "none"):
                with pytest.raises(ValueError) as info:
                    fn(z, y, reduction=reduction, **options)
                assert str(info.value) == expected, (fn.__name__, reduction, bad)


def test_float64_labels_just_above_one_are_caught_before_rounding(backend):
    """With float32 logits, 1 + 2**-40 in float64 labels would round to 1.0 in float32: still an error."""
    z = np.zeros((50, 14), dtype=np.float32)
    y = np.full((50, 14), 0.5)
    y[7, 3] = 1.0 + 2.0**-40
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1\.0000000000009095 at index \(7, 3\)$"):
        sx.sigmoid_cross_entropy_with_grad(z, y)


def test_bad_labels_are_reported_before_other_bad_arguments(dtype):
    """The check moved into the kernel, after the other arguments' checks: a bad label is still the error
    reported first, as when it was checked first."""
    z = np.zeros((4, 3), dtype=dtype)
    y = np.full((4, 3), 0.5, dtype=dtype)
    y[2, 1] = np.nan
    for options in (dict(reduction="average"), dict(pos_weight=[1.0, 2.0]), dict(sample_weight=np.ones(3))):
        with pytest.raises(
            ValueError, match=r"labels must be finite probabilities in \[0, 1\], got nan at index \(2, 1\)"
        ):
            sx.sigmoid_cross_entropy(z, y, **options)
    with pytest.raises(ValueError, match="reduction must be one of"):
        sx.sigmoid_cross_entropy(z, np.full((4, 3), 0.5, dtype=dtype), reduction="average")


# --------------------------------------------------------------------------- the unweighted pass


def test_unit_weights_give_the_bits_of_no_weights(dtype, rng):
    """Weights that are all 1 run the unweighted pass (same bits, on either backend)."""
    z = random_logits(rng, (500, 14), dtype=dtype)
    z[0, :4] = [np.nan, np.inf, -np.inf, 1e30]
    y = make_labels(rng, (500, 14), "soft").astype(dtype)
    for reduction in REDUCTIONS:
        expected = sx.sigmoid_cross_entropy_with_grad(z, y, reduction=reduction)
        for options in (dict(pos_weight=1.0), dict(weight=np.ones(14)), dict(pos_weight=np.ones(14), weight=1)):
            for got, want in zip(sx.sigmoid_cross_entropy_with_grad(z, y, reduction=reduction, **options), expected):
                np.testing.assert_array_equal(got, want)


def test_labels_in_the_other_float_dtype_give_the_same_bits(dtype, rng):
    """The unweighted pass reads float32 and float64 labels as they are: labels exact in both dtypes give
    the same bits either way (1 - y is one correctly rounded subtraction in both)."""
    other = np.float64 if dtype == np.float32 else np.float32
    z = random_logits(rng, (700, 14), dtype=dtype)
    y = make_labels(rng, (700, 14), "soft").astype(np.float32)
    for reduction in REDUCTIONS:
        expected = sx.sigmoid_cross_entropy_with_grad(z, y.astype(dtype), reduction=reduction)
        got = sx.sigmoid_cross_entropy_with_grad(z, y.astype(other), reduction=reduction)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(20000, 14), (1500, 200)], ids=["flat", "wide"])
def test_unweighted_results_do_not_depend_on_threads_or_batch(rng, dtype, shape):
    """Without weights the kernel runs flat tiles that ignore rows: the same bits on 1 and 2 threads, and
    each element's loss and gradient the same bits whether its rows come alone or in the whole batch."""
    numba = pytest.importorskip("numba")
    logits = random_logits(rng, shape, dtype=dtype)
    labels = make_labels(rng, shape, "soft").astype(dtype)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            results.append(sx.sigmoid_cross_entropy_with_grad(logits, labels, reduction="none"))
            results.append(sx.sigmoid_cross_entropy_with_grad(logits, labels, reduction="mean"))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[:2], results[2:]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for part in (slice(1234, 1241), slice(3, 4), slice(-5, None)):
        loss, grad = sx.sigmoid_cross_entropy_with_grad(logits[part], labels[part], reduction="none")
        np.testing.assert_array_equal(loss, results[0][0][part])
        np.testing.assert_array_equal(grad, results[0][1][part])


# --------------------------------------------------------------------------- the entry point for callers that validated


@pytest.mark.parametrize(
    "options", [{}, dict(pos_weight=True, weight=True, sample_weight=True)], ids=["plain", "weighted"]
)
@pytest.mark.parametrize("shape", [(1000, 14), (20000, 14), (300, 200)], ids=["one-block", "blocks", "wide"])
def test_sigmoid_xent_total_is_the_public_sum(backend, dtype, shape, options, rng):
    """``sigmoid_xent_total`` (the estimators' entry) gives the public function's ``"sum"`` loss and its
    gradient, the same bits."""
    if backend == "reference":
        pytest.skip("sigmoid_xent_total is the compiled kernel's entry point")
    from softxent._sigmoid_xent import sigmoid_xent_total

    n, k = shape
    z = random_logits(rng, shape, dtype=dtype)
    y = make_labels(rng, shape, "soft").astype(dtype)
    kw = {}
    if options:
        kw = dict(
            pos_weight=rng.uniform(0.5, 2.0, k), weight=rng.uniform(0.5, 2.0, k), sample_weight=rng.uniform(0, 2, n)
        )
    loss, grad = sx.sigmoid_cross_entropy_with_grad(z, y, reduction="sum", **kw)
    g = np.empty_like(z)
    total = sigmoid_xent_total(z, y, grad_scale=1.0, grad_out=g, **kw)
    assert isinstance(total, float)
    assert np.asarray(total, dtype=dtype) == loss
    np.testing.assert_array_equal(g, grad)
    elem = np.empty_like(z)
    assert sigmoid_xent_total(z, y, loss_out=elem, **kw) == total  # no gradient, the same total
    np.testing.assert_array_equal(elem, sx.sigmoid_cross_entropy(z, y, reduction="none", **kw))
    zf, yf = np.asfortranarray(z), np.asfortranarray(y)  # copied to C order
    assert sigmoid_xent_total(zf, yf, grad_out=g, **kw) == total
    with pytest.raises(ValueError, match="grad_out must be a C-contiguous"):
        sigmoid_xent_total(z, y, grad_out=np.asfortranarray(g), **kw)
    y[n // 2, 1] = -0.25
    with pytest.raises(ValueError, match=rf"got -0\.25 at index \({n // 2}, 1\)"):
        sigmoid_xent_total(z, y, grad_out=g, **kw)


def test_unweighted_loops_are_vectorised(backend):
    """The unweighted pass and the sum-and-check loop compile to SIMD code for every logits/labels
    dtype pair: an int64 label counter once left the pass at 4 float32 lanes and 2x slower, with
    identical results, which no numerical test can see. Compiled afresh (numba shows no cached code)."""
    import re

    if backend == "reference":
        pytest.skip("compiled code only")
    numba = pytest.importorskip("numba")
    from softxent.kernels import _sigmoid as ks
    from softxent.kernels._jit import JIT_ELEMENT, JIT_SUM

    for func, flags in (
        (ks._plain_finish, JIT_ELEMENT),
        (ks._plain_finish_log1p, JIT_ELEMENT),
        (ks._sum_check, JIT_SUM),
    ):
        fresh = numba.njit(**{**flags, "cache": False})(func.py_func)
        for zt, yt in ((np.float32, np.float32), (np.float32, np.float64), (np.float64, np.float64)):
            x, y = np.zeros(64, zt), np.zeros(64, yt)
            if func is ks._sum_check:
                fresh(x, y)
            else:
                fresh(x, y, 1.0, *([x.copy()] * (5 if func is ks._plain_finish else 3)))
            ir = fresh.inspect_llvm(fresh.signatures[-1])
            kind = "float" if zt == np.float32 else "double"
            lanes = {int(w) for w in re.findall(rf"<(\d+) x {kind}>", ir)}
            want = 8 if (zt, yt) == (np.float32, np.float32) and func is not ks._sum_check else 4
            assert lanes and max(lanes) >= want, (func.__name__, zt, yt, lanes)
