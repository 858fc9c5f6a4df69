"""Bad-input rows for the numpy_api layer (see tests/bad_inputs/__init__.py for the row types).

Each row is one bad argument of a public ``softxent.*`` function; the message
must name the argument and show the value (and its index, for array entries).
"""

from __future__ import annotations

import numpy as np

from . import Case

LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
LABELS = np.array([0, 1])
MULTI = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])


def _sce(**overrides):
    kwargs = dict(logits=LOGITS, labels=LABELS)
    kwargs.update(overrides)
    import softxent as sx

    return sx.softmax_cross_entropy(kwargs.pop("logits"), kwargs.pop("labels"), **kwargs)


def _bce(**overrides):
    kwargs = dict(logits=LOGITS, labels=MULTI)
    kwargs.update(overrides)
    import softxent as sx

    return sx.sigmoid_cross_entropy(kwargs.pop("logits"), kwargs.pop("labels"), **kwargs)


def _sx():
    import softxent as sx

    return sx


# Labels beyond int64 used to be reported as the integer their conversion
# wrapped to (-9223372036854775808); the message now shows what was given.
_LABEL_ROWS = [
    Case(
        "numpy",
        "label-1e20-float",
        lambda tmp: _sce(labels=np.array([1e20, 0.0])),
        ValueError,
        r"labels must hold class indices in \[0, 3\) .*got 1e\+20 at index \(0,\)",
    ),
    Case(
        "numpy",
        "label-2**63+1-python-int",
        lambda tmp: _sce(labels=[0, 2**63 + 1]),
        ValueError,
        r"labels must hold class indices in \[0, 3\) .*got 9223372036854775809 at index \(1,\)",
    ),
    Case(
        "numpy",
        "label-2**63+1-uint64",
        lambda tmp: _sce(labels=np.array([2**63 + 1, 0], dtype=np.uint64)),
        ValueError,
        r"labels .*got 9223372036854775809 at index \(0,\)",
    ),
    Case(
        "numpy",
        "label-2**64-python-int",
        lambda tmp: _sce(labels=[2**64, 0]),
        ValueError,
        r"labels .*got 18446744073709551616 at index \(0,\)",
    ),
    Case(
        "numpy",
        "label-negative-float",
        lambda tmp: _sce(labels=np.array([0.0, -5.0])),
        ValueError,
        r"labels must hold class indices in \[0, 3\) .*ignore_index=-100.*got -5\.0 at index \(1,\)",
    ),
    Case(
        "numpy",
        "label-non-integer-float",
        lambda tmp: _sce(labels=np.array([0.0, 1.5])),
        ValueError,
        r"labels must be integer class indices, got the non-integer value 1\.5 at index \(1,\)",
    ),
    Case(
        "numpy",
        "label-bool-out-of-range",
        lambda tmp: _sce(logits=LOGITS[:, :1], labels=np.array([False, True])),
        ValueError,
        r"labels must hold class indices in \[0, 1\) for 1 classes.*got True at index \(1,\)",
    ),
    Case(
        "numpy",
        "label-object-none",
        lambda tmp: _sce(labels=np.array([0, None], dtype=object)),
        TypeError,
        r"labels must be integer class indices, got None at index \(1,\)",
    ),
    Case(
        "numpy",
        "label-object-string",
        lambda tmp: _sce(labels=[0, "1"]),
        TypeError,
        r"labels must be integer class indices, got dtype <U21",
    ),
    Case(
        "numpy",
        "label-wrong-shape",
        lambda tmp: _sce(labels=np.array([[0, 1]])),
        ValueError,
        r"labels must be class indices of shape \(2,\) .*got shape \(1, 2\)",
    ),
    Case(
        "numpy",
        "label-ragged-list",
        lambda tmp: _sce(labels=[[0], [1, 2]]),
        TypeError,
        r"labels could not be converted to an array",
    ),
    Case(
        "numpy",
        "ignore_index-beyond-int64",
        lambda tmp: _sce(ignore_index=2**70),
        ValueError,
        r"ignore_index must fit in a 64-bit integer, got 1180591620717411303424",
    ),
]

_OPTION_ROWS = [
    Case(
        "numpy",
        "temperature-nan",
        lambda tmp: _sce(temperature=float("nan")),
        ValueError,
        r"temperature must be finite, got nan",
    ),
    Case(
        "numpy",
        "temperature-negative",
        lambda tmp: _sx().softmax(LOGITS, temperature=-1e-300),
        ValueError,
        r"temperature must be > 0, got -1e-300",
    ),
    Case(
        "numpy",
        "temperature-int-beyond-float",
        lambda tmp: _sx().log_softmax(LOGITS, temperature=10**400),
        ValueError,
        r"temperature must be finite, got 1000.*beyond float64's range",
    ),
    Case(
        "numpy",
        "temperature-array",
        lambda tmp: _sce(temperature=np.array([1.0, 2.0])),
        TypeError,
        r"temperature must be a real number, got \[1\. 2\.\]",
    ),
    Case(
        "numpy",
        "label_smoothing-nan",
        lambda tmp: _sce(label_smoothing=float("nan")),
        ValueError,
        r"label_smoothing must be finite, got nan",
    ),
    Case(
        "numpy",
        "label_smoothing-above-1",
        lambda tmp: _sce(label_smoothing=1.0000001),
        ValueError,
        r"label_smoothing must lie in \[0, 1\], got 1\.0000001",
    ),
    Case(
        "numpy",
        "weight-wrong-length",
        lambda tmp: _sce(weight=[1.0, 2.0]),
        ValueError,
        r"weight must have shape \(3,\) \(one per class, 3 classes\), got shape \(2,\)",
    ),
    Case(
        "numpy",
        "weight-negative",
        lambda tmp: _sce(weight=[1.0, -2.0, 1.0]),
        ValueError,
        r"weight must be finite and non-negative, got -2\.0 at index \(1,\)",
    ),
    Case(
        "numpy",
        "weight-nan",
        lambda tmp: _sce(weight=[1.0, 1.0, np.nan]),
        ValueError,
        r"weight must be finite and non-negative, got nan at index \(2,\)",
    ),
    Case(
        "numpy",
        "weight-ragged",
        lambda tmp: _sce(weight=[[1.0], [1.0, 2.0]]),
        TypeError,
        r"weight could not be converted to an array",
    ),
    Case(
        "numpy",
        "sample_weight-wrong-shape",
        lambda tmp: _sce(sample_weight=np.ones((2, 1))),
        ValueError,
        r"sample_weight must have shape \(2,\) \(one per row\), got shape \(2, 1\)",
    ),
    Case(
        "numpy",
        "sample_weight-string",
        lambda tmp: _sce(sample_weight="ab"),
        TypeError,
        r"sample_weight must hold real numbers, got the string 'ab'",
    ),
    Case(
        "numpy",
        "reduction-typo",
        lambda tmp: _sce(reduction="means"),
        ValueError,
        r"reduction must be one of \('mean', 'sum', 'none'\), got 'means'",
    ),
    Case(
        "numpy",
        "axis-out-of-range",
        lambda tmp: _sce(axis=-3),
        ValueError,
        r"axis=-3 is out of range for an array with 2 dimension\(s\)",
    ),
    Case(
        "numpy",
        "inplace-string",
        lambda tmp: _sx().softmax_cross_entropy_grad(LOGITS.copy(), LABELS, inplace="no"),
        TypeError,
        r"inplace must be True or False, got 'no'",
    ),
    Case(
        "numpy",
        "return_lse-string",
        lambda tmp: _sx().softmax_cross_entropy_with_grad(LOGITS, LABELS, return_lse="no"),
        TypeError,
        r"return_lse must be True or False, got 'no'",
    ),
    Case(
        "numpy",
        "keepdims-string",
        lambda tmp: _sx().logsumexp(LOGITS, keepdims="yes"),
        TypeError,
        r"keepdims must be True or False, got 'yes'",
    ),
]

_INPUT_ROWS = [
    Case(
        "numpy",
        "logits-0-d",
        lambda tmp: _sx().softmax_cross_entropy(np.float64(1.0), 0),
        ValueError,
        r"logits must have a class axis, got a 0-d array",
    ),
    Case(
        "numpy",
        "softmax-0-d",
        lambda tmp: _sx().softmax(3.0),
        ValueError,
        r"axis=-1 needs an array with at least one dimension, got a scalar",
    ),
    Case(
        "numpy",
        "logits-complex",
        lambda tmp: _sce(logits=LOGITS + 1j),
        TypeError,
        r"logits must be real, got the complex dtype complex128",
    ),
    Case(
        "numpy",
        "logits-object",
        lambda tmp: _sce(logits=np.array([[1.0, None, 0.0], [0.0, 1.0, 2.0]], dtype=object)),
        TypeError,
        r"logits must be an array of real numbers, got None at index \(0, 1\)",
    ),
    Case(
        "numpy",
        "softmax-string",
        lambda tmp: _sx().softmax("abc"),
        TypeError,
        r"x must be an array of real numbers, got the string 'abc'",
    ),
    Case(
        "numpy",
        "softmax-ragged",
        lambda tmp: _sx().softmax([[1.0, 2.0], [3.0]]),
        TypeError,
        r"x could not be converted to an array",
    ),
    Case(
        "numpy",
        "where-wrong-shape",
        lambda tmp: _sx().softmax(LOGITS, where=np.ones((3, 2), dtype=bool)),
        ValueError,
        r"where has shape \(3, 2\), which does not broadcast to the input's shape \(2, 3\)",
    ),
    Case(
        "numpy",
        "where-integer",
        lambda tmp: _sx().log_softmax(LOGITS, where=np.array([1, 0, 1])),
        TypeError,
        r"where must be a boolean mask, got dtype int64",
    ),
    Case(
        "numpy",
        "where-ragged",
        lambda tmp: _sx().softmax(LOGITS, where=[[True], [True, False]]),
        TypeError,
        r"where could not be converted to an array",
    ),
    Case(
        "numpy",
        "jacobian-1e6-classes",
        lambda tmp: _sx().softmax_jacobian(np.zeros(10**6)),
        ValueError,
        r"softmax_jacobian of 1000000 classes needs 8\.0 TB \(1000000 x 1000000 float64\).*softmax_vjp",
    ),
    Case(
        "numpy",
        "jacobian-batch-float32",
        lambda tmp: _sx().softmax_jacobian(np.zeros((10**4, 10**4), np.float32)),
        ValueError,
        r"softmax_jacobian of 10000 rows of 10000 classes needs 4\.0 TB \(10000 x 10000 x 10000 float32\)",
    ),
    Case(
        "numpy",
        "vjp-v-shape",
        lambda tmp: _sx().softmax_vjp(LOGITS, np.ones((1, 3))),
        ValueError,
        r"v must have the shape of x \(2, 3\), got \(1, 3\)",
    ),
    Case(
        "numpy",
        "entropy-base-1",
        lambda tmp: _sx().entropy([0.5, 0.5], base=1),
        ValueError,
        r"base must differ from 1 .*got 1\.0",
    ),
    Case(
        "numpy",
        "entropy-base-negative",
        lambda tmp: _sx().entropy([0.5, 0.5], base=-2),
        ValueError,
        r"base must be > 0, got -2\.0",
    ),
    Case(
        "numpy",
        "entropy-not-a-distribution",
        lambda tmp: _sx().entropy([[0.5, 0.5], [1.0, 2.0]]),
        ValueError,
        r"p must sum to 1 along axis 1 .*index \(1,\) sums to 3\.0",
    ),
    Case(
        "numpy",
        "kl-shape-mismatch",
        lambda tmp: _sx().kl_divergence([[0.5, 0.5], [0.5, 0.5]], [0.5, 0.5]),
        ValueError,
        r"p and q must have the same shape, got p\.shape = \(2, 2\), q\.shape = \(2,\)",
    ),
    Case(
        "numpy",
        "cross_entropy-negative-q",
        lambda tmp: _sx().cross_entropy([0.5, 0.5], [1.5, -0.5]),
        ValueError,
        r"q must be a probability vector .*got -0\.5 at index \(1,\)",
    ),
    Case(
        "numpy",
        "sigmoid-pos_weight-shape",
        lambda tmp: _bce(pos_weight=np.ones((2, 3))),
        ValueError,
        r"pos_weight must have shape \(3,\) \(one per label, 3 labels\), got shape \(2, 3\)",
    ),
    Case(
        "numpy",
        "sigmoid-pos_weight-nan",
        lambda tmp: _bce(pos_weight=[1.0, np.nan, 1.0]),
        ValueError,
        r"pos_weight must be finite and non-negative, got nan at index \(1,\)",
    ),
    Case(
        "numpy",
        "sigmoid-label-above-1",
        lambda tmp: _bce(labels=MULTI * 1.5),
        ValueError,
        r"labels must be finite probabilities in \[0, 1\], got 1\.5 at index \(0, 0\)",
    ),
    Case(
        "numpy",
        "sigmoid-labels-shape",
        lambda tmp: _bce(labels=LABELS),
        ValueError,
        r"labels must have the shape of logits \(2, 3\) .*got shape \(2,\)",
    ),
]

CASES: list = [*_LABEL_ROWS, *_OPTION_ROWS, *_INPUT_ROWS]

CASES += [
    Case(
        "numpy",
        "entropy-empty-distribution",
        lambda tmp: _sx().entropy(np.zeros((2, 0))),
        ValueError,
        r"p must sum to 1 along axis 1, but it has no entries along that axis \(shape \(2, 0\)\)",
    ),
    Case(
        "numpy",
        "kl-empty-vectors",
        lambda tmp: _sx().kl_divergence([], []),
        ValueError,
        r"p must sum to 1 along axis 0, but it has no entries",
    ),
    Case(
        "numpy",
        "labels-string",
        lambda tmp: _sce(labels="01"),
        TypeError,
        r"labels must be class indices or probabilities, got the string '01'",
    ),
]
