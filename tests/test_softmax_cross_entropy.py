"""Softmax cross-entropy from logits: loss and gradient, eq. (7), (8), (15), (16).

Tests ``softmax_cross_entropy``, ``softmax_cross_entropy_grad`` and
``softmax_cross_entropy_with_grad`` against several independent oracles:

* ``torch.nn.functional.cross_entropy`` in float64 and its autograd gradient,
  for every option the two share (class weights, ignore_index, label
  smoothing, reductions, integer and probability labels, class axis 1);
* 4th-order finite differences for every gradient (one logit at a time);
* invariances (shift, one-hot, mask == slice, sample weights, temperature,
  the fused call equals the two separate calls);
* extreme inputs (+-1e30, +-3e38, -inf masks, NaN, empty and ignored batches);
* mpmath at 50 digits for a few hard cases where rounding matters;
* Hypothesis property tests on random finite logits.

Every test runs twice, on the compiled kernel and on the exact NumPy path
(the ``backend`` fixture of conftest.py). Bad arguments (validation errors)
are tested in ``test_validation.py``.
"""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softxent as sx

from conftest import DTYPES, TOL, finite_difference_grad, random_logits

pytestmark = pytest.mark.usefixtures("backend")

REDUCTIONS = ["mean", "sum", "none"]

# (logits shape, class axis): a plain (N, K) batch and torch's (N, C, d) layout.
SHAPES = [((6, 5), -1), ((4, 5, 3), 1)]

# Finite differences in float64: the O(h^4) truncation plus rounding is ~1e-10.
FD_TOL = dict(rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- helpers


def loss_and_grad(logits, labels, **kwargs):
    """softxent's loss and gradient from the two separate public functions."""
    return (
        sx.softmax_cross_entropy(logits, labels, **kwargs),
        sx.softmax_cross_entropy_grad(logits, labels, **kwargs),
    )


def torch_loss_and_grad(
    logits, labels, *, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", temperature=1.0
):
    """The float64 torch oracle: loss and d(sum of loss)/d(logits); class axis 1."""
    z = torch.tensor(np.asarray(logits, dtype=np.float64), requires_grad=True)
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        target = torch.tensor(labels.astype(np.int64))
    else:
        target = torch.tensor(labels, dtype=torch.float64)
    w = None if weight is None else torch.tensor(np.asarray(weight, dtype=np.float64))
    loss = F.cross_entropy(
        z / temperature, target, weight=w, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction,
    )  # fmt: skip
    loss.sum().backward()
    return loss.detach().numpy(), z.grad.numpy()


def assert_matches(actual, expected, dtype, **tol):
    """``actual`` has the input's dtype and equals the float64 ``expected`` to TOL[dtype]."""
    assert np.asarray(actual).dtype == dtype
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, **(tol or TOL[dtype]))


def class_labels(rng, batch, n_classes, ignore_index=None):
    """Random class indices; every third row gets ``ignore_index`` when given."""
    labels = rng.integers(0, n_classes, size=batch)
    if ignore_index is not None:
        labels.reshape(-1)[::3] = ignore_index
    return labels


def probability_labels(rng, batch, n_classes, axis=-1, normalised=True):
    """Non-negative labels with the class axis at ``axis``; rows sum to 1 if ``normalised``."""
    y = rng.dirichlet(np.ones(n_classes), size=batch)
    if not normalised:  # eq. (15) holds for any non-negative row: scale rows off 1
        y = y * rng.uniform(0.3, 2.5, size=batch + (1,))
    return np.moveaxis(y, -1, axis)


def mp_lse(values) -> mpmath.mpf:
    """log sum exp of float values at the current mpmath precision."""
    return mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in values))


# --------------------------------------------------------------------------- torch oracle


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("ignore_index", [None, -100, 1], ids=["noignore", "ignore-100", "ignore1"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=["NK", "NCd-axis1"])
def test_integer_labels_match_torch(dtype, rng, shape, axis, ignore_index, use_weight, label_smoothing, reduction):
    n_classes = shape[1]
    batch = shape[:1] + shape[2:]
    logits = random_logits(rng, shape, dtype=dtype)
    labels = class_labels(rng, batch, n_classes, ignore_index)
    weight = rng.uniform(0.2, 3.0, n_classes) if use_weight else None
    ignore = -100 if ignore_index is None else ignore_index
    options = dict(weight=weight, ignore_index=ignore, label_smoothing=label_smoothing, reduction=reduction)

    loss, grad = loss_and_grad(logits, labels, axis=axis, **options)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, **options)

    assert_matches(loss, expected_loss, dtype)
    assert np.shape(loss) == (batch if reduction == "none" else ())
    assert_matches(grad, expected_grad, dtype)
    assert grad.shape == shape


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("normalised", [True, False], ids=["sum1", "sum-not-1"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=["NK", "NCd-axis1"])
def test_probability_labels_match_torch(dtype, rng, shape, axis, normalised, use_weight, label_smoothing, reduction):
    n_classes = shape[1]
    batch = shape[:1] + shape[2:]
    logits = random_logits(rng, shape, dtype=dtype)
    labels = probability_labels(rng, batch, n_classes, axis=1, normalised=normalised)
    weight = rng.uniform(0.2, 3.0, n_classes) if use_weight else None
    options = dict(weight=weight, label_smoothing=label_smoothing, reduction=reduction)

    loss, grad = loss_and_grad(logits, labels, axis=axis, **options)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, **options)

    assert_matches(loss, expected_loss, dtype)
    assert_matches(grad, expected_grad, dtype)


@pytest.mark.parametrize("temperature", [0.25, 0.7, 3.0])
@pytest.mark.parametrize("kind", ["int", "prob"])
def test_temperature_matches_torch_on_scaled_logits(dtype, rng, kind, temperature):
    logits = random_logits(rng, (5, 7), dtype=dtype)
    labels = class_labels(rng, (5,), 7) if kind == "int" else probability_labels(rng, (5,), 7)
    options = dict(weight=rng.uniform(0.5, 2.0, 7), label_smoothing=0.1)

    loss, grad = loss_and_grad(logits, labels, temperature=temperature, **options)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, temperature=temperature, **options)

    assert_matches(loss, expected_loss, dtype)
    assert_matches(grad, expected_grad, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [-1, 1])
def test_odd_shape_3d_matches_torch(dtype, rng, axis, reduction):
    shape = (3, 7, 50)
    logits = random_logits(rng, shape, dtype=dtype)
    n_classes = shape[axis]
    batch = tuple(int(s) for s in np.delete(shape, axis))
    labels = class_labels(rng, batch, n_classes, ignore_index=-100)

    loss, grad = loss_and_grad(logits, labels, axis=axis, reduction=reduction, label_smoothing=0.05)
    # torch wants the class axis at 1; the labels (N, d1) are the same either way.
    expected_loss, expected_grad = torch_loss_and_grad(
        np.moveaxis(logits, axis, 1), labels, reduction=reduction, label_smoothing=0.05
    )

    assert_matches(loss, expected_loss, dtype)
    assert grad.shape == shape
    assert_matches(grad, np.moveaxis(expected_grad, 1, axis), dtype)


# --------------------------------------------------------------------------- finite differences


def _fd_cases(rng):
    n, k = 3, 5
    ints = np.array([0, 3, 4])
    soft = probability_labels(rng, (n,), k, normalised=False)
    assert not np.allclose(soft.sum(axis=-1), 1.0)
    w = rng.uniform(0.2, 3.0, k)
    sw = np.array([0.5, 2.0, 1.25])
    return {
        "int": (ints, {}),
        "soft-not-sum-1": (soft, {}),
        "soft-weight-smoothing": (soft, dict(weight=w, label_smoothing=0.3)),
        "class-weight": (ints, dict(weight=w)),
        "smoothing": (ints, dict(label_smoothing=0.25)),
        "temperature-small": (ints, dict(temperature=0.4)),
        "temperature-large": (soft, dict(temperature=3.0)),
        "ignore_index": (np.array([0, -100, 4]), {}),
        "ignore_index-custom": (np.array([2, 0, 2]), dict(ignore_index=2)),
        "sample_weight": (ints, dict(sample_weight=sw)),
        "everything": (
            np.array([1, -100, 3]),
            dict(weight=w, label_smoothing=0.1, temperature=1.7, sample_weight=sw),
        ),
    }


FD_CASE_IDS = list(_fd_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", FD_CASE_IDS)
def test_grad_matches_finite_differences(rng, case, reduction):
    labels, options = _fd_cases(rng)[case]
    logits = random_logits(rng, (3, 5))

    def total_loss(z):  # for "none": the gradient is that of the sum of row losses
        return float(np.sum(sx.softmax_cross_entropy(z, labels, reduction=reduction, **options)))

    grad = sx.softmax_cross_entropy_grad(logits, labels, reduction=reduction, **options)
    np.testing.assert_allclose(grad, finite_difference_grad(total_loss, logits), **FD_TOL)


def test_grad_matches_finite_differences_on_class_axis_1(rng):
    logits = random_logits(rng, (2, 4, 3))
    labels = np.array([[0, 3, -100], [2, 1, 1]])
    options = dict(axis=1, weight=[1.0, 2.0, 0.5, 1.5], label_smoothing=0.2)

    def total_loss(z):
        return float(sx.softmax_cross_entropy(z, labels, **options))

    grad = sx.softmax_cross_entropy_grad(logits, labels, **options)
    np.testing.assert_allclose(grad, finite_difference_grad(total_loss, logits), **FD_TOL)


def test_soft_label_grad_is_a_times_sum_y_minus_y(rng):
    """Eq. (15) literally, for rows that do not sum to one."""
    logits = random_logits(rng, (4, 6))
    labels = probability_labels(rng, (4,), 6, normalised=False)
    a = sx.softmax(logits)
    expected = a * labels.sum(axis=-1, keepdims=True) - labels
    grad = sx.softmax_cross_entropy_grad(logits, labels, reduction="sum")
    np.testing.assert_allclose(grad, expected, **TOL[np.float64])


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_shift_of_a_row_changes_neither_loss_nor_grad(dtype, rng, reduction):
    # Logits on a 2^-8 grid and integer shifts: z + c is exact in both dtypes.
    logits = (np.round(random_logits(rng, (4, 6)) * 256) / 256).astype(dtype)
    shifts = np.array([[0.0], [1000.0], [-517.0], [64.0]], dtype=dtype)
    labels = np.array([0, 5, 2, 3])
    options = dict(weight=rng.uniform(0.5, 2.0, 6), label_smoothing=0.1, reduction=reduction)

    loss, grad = loss_and_grad(logits, labels, **options)
    shifted_loss, shifted_grad = loss_and_grad(logits + shifts, labels, **options)
    assert not np.array_equal(logits + shifts, logits)
    np.testing.assert_allclose(shifted_loss, loss, **TOL[dtype])
    np.testing.assert_allclose(shifted_grad, grad, **TOL[dtype])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "options",
    [{}, dict(weight=[0.5, 2.0, 1.0, 3.0, 0.25]), dict(label_smoothing=0.3),
     dict(weight=[0.5, 2.0, 1.0, 3.0, 0.25], label_smoothing=0.3, temperature=2.0)],
    ids=["plain", "weight", "smoothing", "weight-smoothing-T"],
)  # fmt: skip
def test_integer_labels_equal_one_hot_labels(dtype, rng, options, reduction):
    logits = random_logits(rng, (6, 5), dtype=dtype)
    labels = np.array([0, 1, 4, 4, 2, 3])
    one_hot = np.eye(5)[labels]

    loss, grad = loss_and_grad(logits, labels, reduction=reduction, **options)
    hot_loss, hot_grad = loss_and_grad(logits, one_hot, reduction=reduction, **options)

    # The mean divides by sum_i w_{y_i} for class indices but by N for
    # probability labels (as PyTorch does); the rows themselves are equal.
    factor = 1.0
    if reduction == "mean" and "weight" in options:
        factor = len(labels) / np.asarray(options["weight"])[labels].sum()
    np.testing.assert_allclose(loss, hot_loss * factor, **TOL[dtype])
    np.testing.assert_allclose(grad, hot_grad * factor, **TOL[dtype])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
def test_masked_class_equals_class_sliced_out(dtype, rng, use_weight, reduction):
    n_classes, masked = 6, 2
    logits = random_logits(rng, (5, n_classes), dtype=dtype)
    logits[:, masked] = -np.inf
    labels = np.array([0, 1, 3, 5, 4])  # never the masked class
    weight = rng.uniform(0.5, 2.0, n_classes) if use_weight else None

    keep = np.arange(n_classes) != masked
    sliced_labels = labels - (labels > masked)
    sliced_weight = None if weight is None else weight[keep]

    loss, grad = loss_and_grad(logits, labels, weight=weight, reduction=reduction)
    sliced_loss, sliced_grad = loss_and_grad(logits[:, keep], sliced_labels, weight=sliced_weight, reduction=reduction)

    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, sliced_loss, **TOL[dtype])
    np.testing.assert_allclose(grad[:, keep], sliced_grad, **TOL[dtype])
    np.testing.assert_array_equal(grad[:, masked], 0.0)


def test_masked_class_equals_class_sliced_out_for_probability_labels(rng):
    logits = random_logits(rng, (4, 5))
    logits[[0, 2], 1] = -np.inf  # row-wise masks may differ
    labels = probability_labels(rng, (4,), 5)
    labels[[0, 2], 1] = 0.0
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    for i in range(4):
        keep = np.isfinite(logits[i])
        row_loss, row_grad = loss_and_grad(logits[i : i + 1, keep], labels[i : i + 1, keep], reduction="none")
        np.testing.assert_allclose(loss[i], row_loss[0], **TOL[np.float64])
        np.testing.assert_allclose(grad[i, keep], row_grad[0], **TOL[np.float64])
        np.testing.assert_array_equal(grad[i, ~keep], 0.0)


@pytest.mark.parametrize("kind", ["int", "prob"])
def test_sample_weight_scales_the_sum(dtype, rng, kind):
    logits = random_logits(rng, (5, 4), dtype=dtype)
    labels = class_labels(rng, (5,), 4) if kind == "int" else probability_labels(rng, (5,), 4)
    sw = np.array([0.0, 1.0, 2.5, 0.5, 3.0])
    options = dict(weight=[1.0, 2.0, 0.5, 1.5], label_smoothing=0.1)

    rows, row_grads = loss_and_grad(logits, labels, reduction="none", **options)
    loss, grad = loss_and_grad(logits, labels, reduction="sum", sample_weight=sw, **options)
    np.testing.assert_allclose(loss, np.sum(sw * rows.astype(np.float64)), **TOL[dtype])
    np.testing.assert_allclose(grad, sw[:, None] * row_grads, **TOL[dtype])

    weighted_rows = sx.softmax_cross_entropy(logits, labels, reduction="none", sample_weight=sw, **options)
    np.testing.assert_allclose(weighted_rows, sw * rows, **TOL[dtype])


@pytest.mark.parametrize("kind", ["int", "prob"])
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
def test_integer_sample_weight_equals_repeated_rows_for_mean(dtype, rng, kind, use_weight):
    logits = random_logits(rng, (4, 5), dtype=dtype)
    labels = np.array([0, 3, -100, 4]) if kind == "int" else probability_labels(rng, (4,), 5, normalised=False)
    counts = np.array([2, 0, 3, 1])
    options = dict(weight=[1.0, 2.0, 0.5, 1.5, 3.0] if use_weight else None, label_smoothing=0.1)

    loss, grad = loss_and_grad(logits, labels, sample_weight=counts.astype(float), **options)
    rep_loss, rep_grad = loss_and_grad(np.repeat(logits, counts, axis=0), np.repeat(labels, counts, axis=0), **options)
    # The gradient of a repeated row is the sum over its copies.
    rep_grad_per_row = np.zeros_like(grad, dtype=np.float64)
    np.add.at(rep_grad_per_row, np.repeat(np.arange(4), counts), rep_grad)

    np.testing.assert_allclose(loss, rep_loss, **TOL[dtype])
    np.testing.assert_allclose(grad, rep_grad_per_row, **TOL[dtype])


WITH_GRAD_OPTIONS = [
    dict(),
    dict(reduction="sum", weight=[1.0, 0.5, 2.0, 1.0]),
    dict(reduction="none", label_smoothing=0.2, temperature=0.5),
    dict(ignore_index=3, sample_weight=[1.0, 0.0, 2.0, 0.5, 1.0]),
]


@pytest.mark.parametrize("kind", ["int", "prob"])
@pytest.mark.parametrize("options", WITH_GRAD_OPTIONS, ids=["default", "sum-weight", "none-smooth-T", "ignore-sw"])
def test_with_grad_returns_exactly_the_separate_results(dtype, rng, kind, options):
    logits = random_logits(rng, (5, 4), dtype=dtype)
    labels = class_labels(rng, (5,), 4) if kind == "int" else probability_labels(rng, (5,), 4)
    loss, grad = sx.softmax_cross_entropy_with_grad(logits, labels, **options)
    expected_loss, expected_grad = loss_and_grad(logits, labels, **options)
    assert np.asarray(loss).dtype == np.asarray(expected_loss).dtype == dtype
    assert grad.dtype == expected_grad.dtype == dtype
    np.testing.assert_array_equal(loss, expected_loss)
    np.testing.assert_array_equal(grad, expected_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.0])
def test_temperature_equals_dividing_logits(dtype, rng, temperature, reduction):
    logits = random_logits(rng, (5, 6), dtype=dtype)
    labels = class_labels(rng, (5,), 6, ignore_index=-100)
    options = dict(weight=rng.uniform(0.5, 2.0, 6), label_smoothing=0.1, reduction=reduction)

    loss, grad = loss_and_grad(logits, labels, temperature=temperature, **options)
    scaled = logits.astype(np.float64) / temperature
    plain_loss, plain_grad = loss_and_grad(scaled, labels, **options)

    assert_matches(loss, plain_loss, dtype)
    assert_matches(grad, plain_grad / temperature, dtype)


# --------------------------------------------------------------------------- extreme inputs


@pytest.mark.parametrize("big", [1e30, -1e30], ids=["+1e30", "-1e30"])
def test_huge_logits_label_at_max_gives_zero(dtype, big):
    # One row with a huge max and the label on it, one with a huge min.
    logits = np.array([[big, 0.0, -abs(big)], [0.0, -abs(big), 1.0]], dtype=dtype)
    labels = np.array([int(np.argmax(logits[0])), 2])
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    assert loss.dtype == grad.dtype == dtype
    np.testing.assert_array_equal(loss[0], 0.0)
    np.testing.assert_array_equal(grad[0], 0.0)
    # Row 1: an ordinary two-class row, with the -1e30 class contributing exactly 0.
    expected = math.log1p(math.exp(-1.0))
    np.testing.assert_allclose(loss[1], expected, **TOL[dtype])
    assert grad[1, 1] == 0.0
    np.testing.assert_allclose(grad[1], [1 / (1 + math.e), 0.0, -1 / (1 + math.e)], **TOL[dtype])


def test_huge_logits_label_1e30_below_the_max(dtype):
    logits = np.array([[1e30, 0.0, -1e30]], dtype=dtype)
    loss, grad = loss_and_grad(logits, np.array([1]), reduction="sum")
    np.testing.assert_allclose(loss, 1e30, rtol=TOL[dtype]["rtol"])
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]], **TOL[dtype])
    loss2 = sx.softmax_cross_entropy(logits, np.array([2]))
    np.testing.assert_allclose(loss2, 2e30, rtol=TOL[dtype]["rtol"])


# From a subnormal temperature (1/T overflows float64) to a huge one (1/T is
# 0 in float32): the kernels multiply by 1/T, the exact path divides by T.
EXTREME_TEMPERATURES = [1e-310, 1e-300, 1e-30, 1e-8, 1.0, 1e30, 1e300]


def shifted_oracle(logits, target, sample_weight, temperature, grad_scale):
    """Per-row loss, gradient and log-sum-exp in float64 from the effective
    target ``t`` (N, K), shifting by the row max before dividing by T (so no
    temperature overflows the division) and dividing the gradient by T last."""
    z = logits.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d = (z - m) / temperature
        lse_d = np.log(np.exp(d).sum(axis=-1, keepdims=True))  # d <= 0 with one 0: no overflow
        loss = np.where(target > 0, target * (lse_d - d), 0.0).sum(axis=-1)
        loss = np.where(sample_weight > 0, loss * sample_weight, 0.0)  # a row weighed 0 is 0, even if inf
        a = np.exp(d - lse_d)
        grad = (a * target.sum(axis=-1, keepdims=True) - target) * (sample_weight * grad_scale)[:, None]
        grad = grad / temperature
        lse = m[:, 0] / temperature + lse_d[:, 0]
    return loss, grad, lse


def assert_scaled_close(actual, expected, dtype):
    """TOL[dtype], the absolute part relative to the largest finite magnitude
    (gradients at T = 1e30 are ~1e-30 everywhere)."""
    with np.errstate(over="ignore"):
        expected = np.asarray(expected).astype(dtype).astype(np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert not np.isnan(actual).any(), actual
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 1.0
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


@pytest.mark.parametrize("temperature", EXTREME_TEMPERATURES)
@pytest.mark.parametrize("kind", ["index", "probability"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_extreme_temperatures_match_the_shifted_oracle(temperature, kind, reduction, dtype, rng):
    n, k = 5, 6
    logits = random_logits(rng, (n, k), dtype=dtype)
    logits[1, 4] = logits[1, 2] = logits[1].max() + 1  # a tie for the max
    logits[2, :2] = -np.inf  # masked classes
    # Row 3 weighs 0, row 4 1e10: (sw / T) * grad_scale overflows before it is scaled back.
    sample_weight = np.array([1.0, 2.0, 0.5, 0.0, 1e10])
    eps = 0.1
    if kind == "index":
        labels = np.array([0, 2, 3, 5, 1])
        one_hot = np.eye(k)[labels]
        weight = None
        target = (1 - eps) * one_hot + eps / k
    else:
        labels = rng.dirichlet(np.ones(k), size=n).astype(dtype)
        labels[2, :2] = 0.0  # no mass on the masked classes
        weight = np.array([1.0, 0.5, 2.0, 1.0, 3.0, 0.25])
        target = weight * ((1 - eps) * labels.astype(np.float64) + eps / k)
    denominator = sample_weight.sum()
    grad_scale = 1.0 / denominator if reduction == "mean" else 1.0
    loss, grad, lse = sx.softmax_cross_entropy_with_grad(
        logits, labels, weight=weight, label_smoothing=eps, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, return_lse=True,
    )  # fmt: skip
    loss_rows, expected_grad, expected_lse = shifted_oracle(logits, target, sample_weight, temperature, grad_scale)
    expected_loss = loss_rows.sum() * grad_scale
    assert loss.dtype == grad.dtype == dtype
    assert_scaled_close(loss, expected_loss, dtype)
    assert_scaled_close(grad, expected_grad, dtype)
    np.testing.assert_allclose(lse, expected_lse, rtol=TOL[dtype]["rtol"])
    # The loss alone takes the same path choice as the loss with its gradient.
    assert_scaled_close(
        sx.softmax_cross_entropy(
            logits, labels, weight=weight, label_smoothing=eps, sample_weight=sample_weight,
            temperature=temperature, reduction=reduction,
        ), expected_loss, dtype,
    )  # fmt: skip


@pytest.mark.parametrize("temperature", [1e-310, 1e-300])
def test_tiny_temperature_gradient_keeps_its_zeros(temperature, dtype):
    """Issue 15: 1/T = inf made the gradient's exact zeros NaN (0 * inf) on both paths."""
    logits = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 2.0]], dtype=dtype)
    loss, grad = sx.softmax_cross_entropy_with_grad(logits, np.array([1, 0]), temperature=temperature)
    assert loss == 0.0  # each label is its row's max: the one-hot limit is exact
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_float32_limits_give_finite_exact_values(temperature):
    logits = np.array([[3e38, -3e38, 0.0], [-3e38, 2e38, 3e38]], dtype=np.float32)
    labels = np.array([0, 1])
    loss, grad = loss_and_grad(logits, labels, reduction="none", temperature=temperature)
    assert loss.dtype == grad.dtype == np.float32
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # Row 0: label at the max, everything else ~6e38 / T below: loss 0, grad 0.
    assert loss[0] == 0.0
    np.testing.assert_array_equal(grad[0], 0.0)
    # Row 1: label ~1e38 below the max: loss (z_top - z_1) / T, grad (e_top - e_1) / T.
    gap = float(logits[1, 2]) - float(logits[1, 1])
    np.testing.assert_allclose(loss[1], gap / temperature, rtol=TOL[np.float32]["rtol"])
    np.testing.assert_allclose(grad[1], np.array([0.0, -1.0, 1.0]) / temperature, **TOL[np.float32])


def test_neg_inf_entries_give_finite_loss_on_unmasked_label(dtype):
    logits = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], dtype=dtype)
    labels = np.array([0, 1])
    loss, grad = loss_and_grad(logits, labels, reduction="none")
    np.testing.assert_allclose(loss, [math.log1p(math.e), 0.0], **TOL[dtype])
    p = 1 / (1 + math.e)
    np.testing.assert_allclose(grad, [[p - 1, 0.0, 1 - p], [0.0, 0.0, 0.0]], **TOL[dtype])


def test_label_on_masked_class_gives_infinite_loss():
    logits = np.array([[0.0, -np.inf, 1.0]])
    assert sx.softmax_cross_entropy(logits, np.array([1])) == np.inf


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "+inf"])
@pytest.mark.parametrize("kind", ["int", "prob"])
def test_nan_or_pos_inf_row_is_nan_for_that_row_only(dtype, rng, kind, bad):
    logits = random_logits(rng, (4, 5), dtype=dtype)
    labels = class_labels(rng, (4,), 5) if kind == "int" else probability_labels(rng, (4,), 5)
    clean_loss, clean_grad = loss_and_grad(logits, labels, reduction="none")
    logits[1, 3] = bad

    loss, grad = loss_and_grad(logits, labels, reduction="none")
    assert np.isnan(loss[1]) and np.all(np.isnan(grad[1]))
    others = [0, 2, 3]
    np.testing.assert_array_equal(loss[others], clean_loss[others])
    np.testing.assert_array_equal(grad[others], clean_grad[others])
    assert np.isnan(sx.softmax_cross_entropy(logits, labels, reduction="mean"))
    assert np.isnan(sx.softmax_cross_entropy(logits, labels, reduction="sum"))


def test_nan_row_that_is_ignored_gives_zero(rng):
    logits = random_logits(rng, (3, 4))
    logits[1, 2] = np.nan
    loss, grad = loss_and_grad(logits, np.array([0, -100, 3]))
    expected_loss, expected_grad = loss_and_grad(logits[[0, 2]], np.array([0, 3]))
    np.testing.assert_allclose(loss, expected_loss, **TOL[np.float64])
    np.testing.assert_array_equal(grad[1], 0.0)
    np.testing.assert_allclose(grad[[0, 2]], expected_grad, **TOL[np.float64])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["int", "prob"])
def test_empty_batch(dtype, kind, reduction):
    logits = np.zeros((0, 4), dtype=dtype)
    labels = np.zeros((0,), dtype=np.int64) if kind == "int" else np.zeros((0, 4))
    loss, grad = loss_and_grad(logits, labels, reduction=reduction)
    assert np.asarray(loss).dtype == grad.dtype == dtype
    assert grad.shape == (0, 4)
    if reduction == "none":
        assert loss.shape == (0,)
    else:
        assert np.shape(loss) == () and loss == 0.0 and not np.isnan(loss)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_rows_ignored_gives_zero_not_nan(dtype, rng, reduction):
    logits = random_logits(rng, (3, 4), dtype=dtype)
    labels = np.full(3, -100)
    loss, grad = loss_and_grad(logits, labels, reduction=reduction, label_smoothing=0.2)
    assert loss == 0.0 and not np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros((3, 4)))
    # All sample weights 0 is the same.
    loss, grad = loss_and_grad(logits, np.array([0, 1, 2]), reduction=reduction, sample_weight=np.zeros(3))
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros((3, 4)))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fully_masked_row_that_is_ignored_gives_zero(dtype, reduction):
    logits = np.array([[-np.inf, -np.inf, -np.inf], [1.0, 2.0, 0.5]], dtype=dtype)
    loss, grad = loss_and_grad(logits, np.array([-100, 1]), reduction=reduction)
    expected_loss, expected_grad = loss_and_grad(logits[1:], np.array([1]), reduction=reduction)
    np.testing.assert_array_equal(grad[0], 0.0)
    np.testing.assert_allclose(grad[1:], expected_grad, **TOL[dtype])
    if reduction == "none":
        assert loss[0] == 0.0
        np.testing.assert_allclose(loss[1:], expected_loss, **TOL[dtype])
    else:
        np.testing.assert_allclose(loss, expected_loss, **TOL[dtype])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fully_masked_row_with_zero_sample_weight_gives_zero_quietly(dtype, reduction):
    """The documented alternative to ignore_index: a weight-0 row is skipped, without warnings."""
    logits = np.array([[-np.inf, -np.inf, -np.inf], [1.0, 2.0, 0.5]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" RuntimeWarning from inf * 0
        loss, grad = loss_and_grad(logits, np.array([0, 1]), reduction=reduction, sample_weight=[0.0, 1.0])
    expected_loss, expected_grad = loss_and_grad(logits, np.array([-100, 1]), reduction=reduction)
    np.testing.assert_array_equal(loss, expected_loss)
    np.testing.assert_array_equal(grad, expected_grad)


@pytest.mark.parametrize(
    "func", [sx.softmax_cross_entropy, sx.softmax_cross_entropy_grad, sx.softmax_cross_entropy_with_grad]
)
def test_fully_masked_row_that_asks_for_a_loss_raises(func):
    logits = np.array([[1.0, 2.0, 0.5], [-np.inf, -np.inf, -np.inf]])
    with pytest.raises(ValueError, match="-inf for every class"):
        func(logits, np.array([0, 1]))


# --------------------------------------------------------------------------- precision


def test_confident_row_keeps_tiny_exact_loss_and_grad_float64():
    logits = np.array([[40.0, 0.0]])
    loss, grad = loss_and_grad(logits, np.array([0]))
    tiny = math.exp(-40.0)
    np.testing.assert_allclose(loss, math.log1p(tiny), rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad[0, 0], -tiny / (1 + tiny), rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad[0, 1], tiny / (1 + tiny), rtol=1e-12, atol=0)


def test_confident_row_keeps_tiny_exact_loss_and_grad_float32():
    logits = np.array([[40.0, 0.0], [0.0, 25.0]], dtype=np.float32)
    loss, grad = loss_and_grad(logits, np.array([0, 1]), reduction="none")
    eps = float(np.finfo(np.float32).eps)
    for row, gap in enumerate([40.0, 25.0]):
        tiny = math.exp(-gap)
        true_class = row
        assert grad[row, true_class] != 0.0
        np.testing.assert_allclose(grad[row, true_class], -tiny / (1 + tiny), rtol=4 * eps, atol=0)
        np.testing.assert_allclose(loss[row], math.log1p(tiny), rtol=4 * eps, atol=0)


def test_long_float32_row_against_mpmath():
    """131072 classes: a naive float32 sum loses ~1e-5; the result must be rounded once."""
    rng = np.random.default_rng(7)
    row = random_logits(rng, (131072,), scale=10.0, dtype=np.float32)
    label = 12345
    mpmath.mp.dps = 50
    lse = mp_lse(row)
    exact_loss = float(lse - mpmath.mpf(float(row[label])))
    exact_grad_label = float(mpmath.exp(mpmath.mpf(float(row[label])) - lse) - 1)
    top = int(np.argmax(row))
    exact_grad_top = float(mpmath.exp(mpmath.mpf(float(row[top])) - lse))

    for dt in DTYPES:
        loss, grad = loss_and_grad(row.astype(dt)[None, :], np.array([label]))
        assert_matches(loss, exact_loss, dt)
        assert_matches(grad[0, label], exact_grad_label, dt)
        assert_matches(grad[0, top], exact_grad_top, dt)


@pytest.mark.parametrize("label", [0, 1, 2])
def test_three_scales_row_against_mpmath(dtype, label):
    row = [0.0, -30.0, -60.0]
    mpmath.mp.dps = 50
    lse = mp_lse(row)
    exact_loss = float(lse - row[label])
    exact_grad = [float(mpmath.exp(v - lse) - (c == label)) for c, v in enumerate(row)]
    loss, grad = loss_and_grad(np.array([row], dtype=dtype), np.array([label]))
    # Relative tolerance only: the values span 1e-26 .. 60 and must all be exact.
    assert_matches(loss, exact_loss, dtype, rtol=TOL[dtype]["rtol"], atol=0)
    assert_matches(grad[0], exact_grad, dtype, rtol=TOL[dtype]["rtol"], atol=0)


# --------------------------------------------------------------------------- properties


@st.composite
def batches(draw, max_rows=6, max_classes=8):
    """Finite float64 logits (|z| <= 50) with valid class labels, some possibly -100 (ignored)."""
    n = draw(st.integers(1, max_rows))
    k = draw(st.integers(1, max_classes))
    logits = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-50, 50)))
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1) | st.just(-100)))
    return logits, labels


@given(batches(), st.sampled_from(REDUCTIONS), st.floats(0.25, 4.0))
def test_property_loss_nonnegative_and_grad_rows_sum_to_zero(batch, reduction, temperature):
    logits, labels = batch
    loss, grad = loss_and_grad(logits, labels, reduction=reduction, temperature=temperature)
    assert np.all(np.asarray(loss) >= 0.0)
    # sum_c (a_c - y_c) / T = 0 for a one-hot label without weights, whatever the reduction factor.
    row_sums = grad.sum(axis=-1)
    np.testing.assert_allclose(row_sums, 0.0, atol=32 * logits.shape[1] * np.finfo(float).eps / temperature)
    # The largest entry of a row is bounded by 1/T (times the reduction factor <= 1).
    assert np.all(np.abs(grad) <= 1.0 / temperature + 1e-12)


@given(
    batches(),
    st.sampled_from(REDUCTIONS),
    st.floats(0.25, 4.0),
    st.floats(0.0, 1.0),
    st.booleans(),
)
def test_property_matches_torch_integer_labels(batch, reduction, temperature, smoothing, use_weight):
    logits, labels = batch
    k = logits.shape[1]
    weight = np.linspace(0.5, 2.0, k) if use_weight else None
    options = dict(weight=weight, label_smoothing=smoothing, reduction=reduction)
    loss, grad = loss_and_grad(logits, labels, temperature=temperature, **options)
    if reduction == "mean" and np.all(labels == -100):
        # torch gives 0/0 = NaN here; softxent documents 0 (loss and gradient).
        expected_loss, expected_grad = 0.0, np.zeros_like(logits)
    else:
        expected_loss, expected_grad = torch_loss_and_grad(logits, labels, temperature=temperature, **options)
    tol = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss, expected_loss, **tol)
    np.testing.assert_allclose(grad, expected_grad, **tol)


@given(data=st.data())
def test_property_matches_torch_probability_labels(data):
    logits, _ = data.draw(batches())
    labels = data.draw(hnp.arrays(np.float64, logits.shape, elements=st.floats(0.0, 2.0)))
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    smoothing = data.draw(st.floats(0.0, 1.0))
    loss, grad = loss_and_grad(logits, labels, reduction=reduction, label_smoothing=smoothing)
    expected_loss, expected_grad = torch_loss_and_grad(logits, labels, reduction=reduction, label_smoothing=smoothing)
    assert np.all(np.asarray(loss) >= 0.0)
    tol = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss, expected_loss, **tol)
    np.testing.assert_allclose(grad, expected_grad, **tol)
