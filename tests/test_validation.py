"""Bad input gets a clear error, never a wrong number.

Each case calls a public function with one bad argument and checks the
exception type and that the message names the argument and shows the value.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import softxent as sx
from softxent._contract import MaskedRowError

LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])


def sce(**overrides):
    kwargs = dict(logits=LOGITS, labels=np.array([0, 1]))
    kwargs.update(overrides)
    return sx.softmax_cross_entropy(kwargs.pop("logits"), kwargs.pop("labels"), **kwargs)


def bce(**overrides):
    kwargs = dict(logits=LOGITS, labels=np.array([[1, 0, 1], [0, 0, 1]]))
    kwargs.update(overrides)
    return sx.sigmoid_cross_entropy(kwargs.pop("logits"), kwargs.pop("labels"), **kwargs)


CASES = [
    # (id, call, exception, regex the message must match: argument name and value)
    ("label too large", lambda: sce(labels=np.array([0, 3])), ValueError, r"labels .*\[0, 3\).* got 3 at index \(1,\)"),
    ("negative label", lambda: sce(labels=np.array([-1, 0])), ValueError, r"labels .* got -1 at index \(0,\)"),
    (
        "label near ignore_index",
        lambda: sce(labels=np.array([-99, 0])),
        ValueError,
        r"labels .*ignore_index=-100.* got -99 at index \(0,\)",
    ),
    (
        "non-integer label",
        lambda: sce(labels=np.array([0.5, 1.0])),
        ValueError,
        r"labels must be integer .* 0\.5 at index \(0,\)",
    ),
    ("NaN label", lambda: sce(labels=np.array([np.nan, 1.0])), ValueError, r"labels must be integer .*nan"),
    ("string labels", lambda: sce(labels=np.array(["a", "b"])), TypeError, r"labels .*dtype <U1"),
    (
        "negative probability label",
        lambda: sce(labels=PROBS * np.array([1, -1, 1])),
        ValueError,
        r"labels must be finite probabilities .* -0\.2 at index \(0, 1\)",
    ),
    (
        "infinite probability label",
        lambda: sce(labels=np.where(PROBS > 0.5, np.inf, PROBS)),
        ValueError,
        r"labels .* inf at index \(0, 0\)",
    ),
    (
        "labels shape",
        lambda: sce(labels=np.array([0, 1, 2])),
        ValueError,
        r"labels must be class indices of shape \(2,\) .* got shape \(3,\)",
    ),
    (
        "integer logits",
        lambda: sce(logits=np.array([[1, 2], [3, 4]])),
        TypeError,
        r"logits must have a floating dtype .* int64",
    ),
    ("complex logits", lambda: sce(logits=LOGITS + 1j), TypeError, r"logits must be real, .*complex128"),
    ("string logits", lambda: sce(logits="abc"), TypeError, r"logits .*string 'abc'"),
    (
        "scalar logits",
        lambda: sx.softmax_cross_entropy(np.float64(1.0), 0),
        ValueError,
        r"logits must have a class axis",
    ),
    (
        "unknown reduction",
        lambda: sce(reduction="avg"),
        ValueError,
        r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'",
    ),
    ("reduction None", lambda: sce(reduction=None), ValueError, r"reduction .* got None"),
    ("smoothing > 1", lambda: sce(label_smoothing=1.5), ValueError, r"label_smoothing must lie in \[0, 1\], got 1\.5"),
    (
        "smoothing < 0",
        lambda: sce(label_smoothing=-0.1),
        ValueError,
        r"label_smoothing must lie in \[0, 1\], got -0\.1",
    ),
    (
        "smoothing NaN",
        lambda: sce(label_smoothing=float("nan")),
        ValueError,
        r"label_smoothing must be finite, got nan",
    ),
    (
        "smoothing string",
        lambda: sce(label_smoothing="0.1"),
        TypeError,
        r"label_smoothing must be a real number, got '0\.1'",
    ),
    ("temperature 0", lambda: sce(temperature=0.0), ValueError, r"temperature must be > 0, got 0\.0"),
    ("temperature < 0", lambda: sce(temperature=-2), ValueError, r"temperature must be > 0, got -2\.0"),
    ("temperature inf", lambda: sce(temperature=float("inf")), ValueError, r"temperature must be finite, got inf"),
    ("weight length", lambda: sce(weight=[1.0, 2.0]), ValueError, r"weight must have shape \(3,\) .* got shape \(2,\)"),
    (
        "negative weight",
        lambda: sce(weight=[1.0, -2.0, 1.0]),
        ValueError,
        r"weight must be finite and non-negative, got -2\.0 at index \(1,\)",
    ),
    ("NaN weight", lambda: sce(weight=[1.0, np.nan, 1.0]), ValueError, r"weight .* got nan at index \(1,\)"),
    (
        "sample_weight length",
        lambda: sce(sample_weight=[1.0, 2.0, 3.0]),
        ValueError,
        r"sample_weight must have shape \(2,\) .* got shape \(3,\)",
    ),
    (
        "negative sample_weight",
        lambda: sce(sample_weight=[1.0, -1.0]),
        ValueError,
        r"sample_weight must be finite and non-negative, got -1\.0 at index \(1,\)",
    ),
    (
        "scalar sample_weight",
        lambda: sce(sample_weight=2.0),
        ValueError,
        r"sample_weight must have shape \(2,\) .* got the scalar 2\.0",
    ),
    (
        "ignore_index float",
        lambda: sce(ignore_index=1.5),
        TypeError,
        r"ignore_index must be an integer or None, got 1\.5",
    ),
    ("axis out of range", lambda: sce(axis=2), ValueError, r"axis=2 is out of range for an array with 2 dimension"),
    ("axis float", lambda: sx.softmax(LOGITS, axis=1.0), TypeError, r"axis must be an integer, got 1\.0"),
    (
        "all -inf row not ignored",
        lambda: sce(logits=np.array([[0.0, 1.0, 2.0], [-np.inf] * 3])),
        MaskedRowError,  # a ValueError that carries the row, for front ends that name it in their words
        r"logits row \(1,\) is -inf for every class .*ignore_index=-100",
    ),
    # sigmoid head
    (
        "sigmoid labels shape",
        lambda: bce(labels=np.array([1, 0])),
        ValueError,
        r"labels must have the shape of logits \(2, 3\) .* got shape \(2,\)",
    ),
    (
        "sigmoid label > 1",
        lambda: bce(labels=np.array([[1, 0, 2], [0, 0, 1]])),
        ValueError,
        r"labels must be finite probabilities in \[0, 1\], got 2\.0 at index \(0, 2\)",
    ),
    (
        "sigmoid negative label",
        lambda: bce(labels=np.array([[1, 0, -1], [0, 0, 1]])),
        ValueError,
        r"labels .* got -1\.0 at index \(0, 2\)",
    ),
    (
        "pos_weight length",
        lambda: bce(pos_weight=[1.0, 2.0]),
        ValueError,
        r"pos_weight must have shape \(3,\) .* got shape \(2,\)",
    ),
    (
        "negative pos_weight",
        lambda: bce(pos_weight=-1.0),
        ValueError,
        r"pos_weight must be finite and non-negative, got -1\.0",
    ),
    (
        "sigmoid weight length",
        lambda: bce(weight=np.ones(4)),
        ValueError,
        r"weight must have shape \(3,\) .* got shape \(4,\)",
    ),
    (
        "sigmoid integer logits",
        lambda: bce(logits=np.array([[1, 2, 3], [4, 5, 6]])),
        TypeError,
        r"logits must have a floating dtype",
    ),
    ("sigmoid reduction", lambda: bce(reduction="mean "), ValueError, r"reduction must be one of .* got 'mean '"),
    (
        "sigmoid sample_weight",
        lambda: bce(sample_weight=np.ones(3)),
        ValueError,
        r"sample_weight must have shape \(2,\) .* got shape \(3,\)",
    ),
    # generic math
    (
        "softmax temperature",
        lambda: sx.softmax(LOGITS, temperature=0),
        ValueError,
        r"temperature must be > 0, got 0\.0",
    ),
    (
        "log_softmax temperature",
        lambda: sx.log_softmax(LOGITS, temperature=-1.0),
        ValueError,
        r"temperature must be > 0, got -1\.0",
    ),
    (
        "where not bool",
        lambda: sx.softmax(LOGITS, where=np.ones(3)),
        TypeError,
        r"where must be a boolean mask, got dtype float64",
    ),
    (
        "where shape",
        lambda: sx.logsumexp(LOGITS, where=np.ones(2, dtype=bool)),
        ValueError,
        r"where has shape \(2,\), which does not broadcast to the input's shape \(2, 3\)",
    ),
    ("softmax scalar", lambda: sx.softmax(1.0), ValueError, r"axis=-1 needs an array with at least one dimension"),
    ("softmax string", lambda: sx.softmax(["a", "b"]), TypeError, r"x must be an array of real numbers, got dtype <U1"),
    ("ragged input", lambda: sx.softmax([[1.0, 2.0], [3.0]]), TypeError, r"x could not be converted to an array"),
    ("sigmoid complex", lambda: sx.sigmoid(np.array([1j])), TypeError, r"x must be real"),
    (
        "vjp shape",
        lambda: sx.softmax_vjp(LOGITS, np.ones(3)),
        ValueError,
        r"v must have the shape of x \(2, 3\), got \(3,\)",
    ),
    (
        "entropy negative",
        lambda: sx.entropy([1.2, -0.2]),
        ValueError,
        r"p must be a probability vector .* got -0\.2 at index \(1,\)",
    ),
    (
        "entropy not normalised",
        lambda: sx.entropy([[0.5, 0.5], [1.0, 2.0]]),
        ValueError,
        r"p must sum to 1 along axis 1 .* index \(1,\) sums to 3\.0",
    ),
    ("entropy base 1", lambda: sx.entropy([0.5, 0.5], base=1), ValueError, r"base must differ from 1"),
    ("entropy base 0", lambda: sx.entropy([0.5, 0.5], base=0), ValueError, r"base must be > 0, got 0\.0"),
    (
        "kl shapes",
        lambda: sx.kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5]),
        ValueError,
        r"p and q must have the same shape, got p\.shape = \(2,\), q\.shape = \(3,\)",
    ),
    (
        "kl negative q",
        lambda: sx.kl_divergence([0.5, 0.5], [1.5, -0.5]),
        ValueError,
        r"q must be a probability vector .* -0\.5 at index \(1,\)",
    ),
    (
        "cross_entropy q not normalised",
        lambda: sx.cross_entropy([0.5, 0.5], [0.5, 0.6]),
        ValueError,
        r"q must sum to 1 .* sums to 1\.1",
    ),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, exc, pattern):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


@pytest.mark.parametrize(
    "fn", [sx.softmax_cross_entropy, sx.softmax_cross_entropy_grad, sx.softmax_cross_entropy_with_grad]
)
def test_every_softmax_loss_entry_point_validates(fn):
    """The grad and with_grad variants check their input exactly like the loss."""
    with pytest.raises(ValueError, match=r"got 7 at index \(0,\)"):
        fn(LOGITS, np.array([7, 0]))
    with pytest.raises(TypeError, match="floating dtype"):
        fn(np.array([[1, 2]]), np.array([0]))


@pytest.mark.parametrize(
    "fn", [sx.sigmoid_cross_entropy, sx.sigmoid_cross_entropy_grad, sx.sigmoid_cross_entropy_with_grad]
)
def test_every_sigmoid_loss_entry_point_validates(fn):
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 3\.0"):
        fn(np.zeros(2), np.array([3.0, 0.0]))


def test_valid_edge_values_are_accepted():
    """The boundaries of each range are valid and give finite results."""
    assert np.isfinite(sce(label_smoothing=0.0))
    assert np.isfinite(sce(label_smoothing=1.0))
    assert np.isfinite(sce(weight=[0.0, 1.0, 0.0]))
    assert np.isfinite(sce(ignore_index=None))
    assert np.isfinite(sce(labels=np.array([0.0, 2.0])))  # integral floats, as read from a CSV
    assert np.isfinite(sce(labels=np.array([True, False])))
    assert sce(sample_weight=[0.0, 0.0]) == 0.0


# --------------------------------------------------------------------------- labels as given


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (np.array([0.0, 1e20]), "1e+20"),
        (np.array([0, 2**63 + 1], dtype=np.uint64), "9223372036854775809"),
        ([0, 2**63 + 1], "9223372036854775809"),  # NumPy makes this list float64 and rounds it
        ([0, 2**64], "18446744073709551616"),  # an object array
        (np.array([0, -(2**70)], dtype=object), "-1180591620717411303424"),
        (np.array([0.0, 2.0**63]), "9.223372036854776e+18"),
        (np.array([0.0, -(2.0**63)]), "-9.223372036854776e+18"),
    ],
    ids=["float-1e20", "uint64", "list-2**63+1", "list-2**64", "object-negative", "float-2**63", "float--2**63"],
)
def test_huge_labels_are_reported_as_given(labels, shown):
    """Issue 15: these were all reported as -9223372036854775808 (int64 wrap-around)."""
    with pytest.raises(ValueError) as info:
        sce(labels=labels)
    message = str(info.value)
    assert f"got {shown} at index (1,)" in message, message
    assert "-9223372036854775808" not in message


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 1], dtype=object),
        np.array([0.0, 1], dtype=object),
        np.array([0, 1], dtype=np.uint64),
        [np.int8(0), 1.0],
    ],
    ids=["object-ints", "object-mixed", "uint64", "list-mixed"],
)
def test_integer_labels_of_any_container_give_the_int64_result(labels):
    assert sce(labels=labels) == sce(labels=np.array([0, 1]))


def test_huge_ignore_index_is_refused_but_int64_extremes_work():
    with pytest.raises(ValueError, match=r"ignore_index must fit in a 64-bit integer, got -9223372036854775809"):
        sce(ignore_index=-(2**63) - 1)
    labels = np.array([0, np.iinfo(np.int64).min])
    assert sce(labels=labels, ignore_index=np.iinfo(np.int64).min) == sce(labels=np.array([0, -100]))


@pytest.mark.parametrize("value", [np.True_, True])
def test_numpy_booleans_are_booleans(value):
    loss, grad, lse = sx.softmax_cross_entropy_with_grad(LOGITS, np.array([0, 1]), return_lse=value)
    assert lse.shape == (2,)
    assert sx.logsumexp(LOGITS, keepdims=np.bool_(value)).shape == (2, 1)


def test_messages_are_one_line_for_array_values():
    with pytest.raises(TypeError) as info:
        sx.softmax(LOGITS, temperature=np.ones((3, 3)))
    assert "\n" not in str(info.value)
