"""The loss contract (softxent._contract): one set of option checks and rules, used by every front end."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import softxent as sx
from softxent import _contract
from softxent._contract import XentOptions, format_index, mean_scale, reduce_total
from softxent._xent_common import scalar_or_array

BAD_OPTIONS = [
    (dict(reduction="avg"), ValueError, r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    (dict(label_smoothing=1.5), ValueError, r"label_smoothing must lie in \[0, 1\], got 1\.5"),
    (dict(label_smoothing=-0.1), ValueError, r"label_smoothing must lie in \[0, 1\], got -0\.1"),
    (dict(label_smoothing=math.nan), ValueError, r"label_smoothing must be finite, got nan"),
    (dict(label_smoothing=True), TypeError, r"label_smoothing must be a real number, got True"),
    (dict(label_smoothing="0.1"), TypeError, r"label_smoothing must be a real number, got '0\.1'"),
    (dict(ignore_index=2.5), TypeError, r"ignore_index must be an integer"),
    (dict(ignore_index=2**64), ValueError, r"ignore_index must fit in a 64-bit integer, got 18446744073709551616"),
]


def test_defaults_are_pytorch_defaults():
    assert XentOptions.build() == XentOptions(
        ignore_index=-100, reduction="mean", label_smoothing=0.0, temperature=1.0, z_loss=0.0, softcap=None
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(label_smoothing=0, temperature=1, z_loss=0),  # ints: what the checks turn into floats
        dict(label_smoothing=-0.0),
        dict(label_smoothing=np.float64(0.0), temperature=np.float32(1.0)),  # NumPy scalars: the checks
        dict(ignore_index=np.int64(-100), reduction=np.str_("mean")),
    ],
)
def test_default_values_in_any_spelling_build_the_defaults(kw):
    """build() skips its checks for the plain default values; any spelling of them gives the same options."""
    assert XentOptions.build(**kw) == XentOptions.build()


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        (dict(label_smoothing=False), TypeError),
        (dict(temperature=True), TypeError),
        (dict(ignore_index=-100.0), TypeError),
    ],
)
def test_defaults_in_the_wrong_type_are_still_refused(kw, error):
    """A bool equals 0 or 1 and -100.0 equals -100, but they are mistakes, not the defaults."""
    with pytest.raises(error):
        XentOptions.build(**kw)


@pytest.mark.parametrize(("kw", "error", "match"), BAD_OPTIONS)
def test_bad_options_get_one_text_in_every_front_end(kw, error, match):
    """The contract, the NumPy API and softxent.torch give the same error for the same bad option."""
    with pytest.raises(error, match=match):
        XentOptions.build(**kw)
    with pytest.raises(error, match=match):
        sx.softmax_cross_entropy(np.zeros((2, 3)), [0, 1], **kw)
    torch = pytest.importorskip("torch", reason="softxent.torch needs torch")
    import softxent.torch as sxt

    with pytest.raises(error, match=match):
        sxt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), **kw)
    with pytest.raises(error, match=match):
        sxt.linear_cross_entropy(torch.zeros(2, 4), torch.zeros(3, 4), torch.tensor([0, 1]), **kw)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        (dict(temperature=0.0), ValueError, r"temperature must be > 0, got 0\.0"),
        (dict(temperature=math.inf), ValueError, r"temperature must be finite, got inf"),
        (dict(z_loss=-1e-4), ValueError, r"z_loss must be >= 0, got -0\.0001"),
        (dict(softcap=0.0), ValueError, r"softcap must be > 0, got 0\.0"),
        (dict(ignore_index=None, allow_no_ignore=False), TypeError, r"ignore_index must be an integer, got None"),
    ],
)
def test_other_option_checks(kw, error, match):
    with pytest.raises(error, match=match):
        XentOptions.build(**kw)


def test_options_are_frozen():
    opts = XentOptions.build(label_smoothing=0.1)
    with pytest.raises(AttributeError):
        opts.label_smoothing = 0.2  # type: ignore[misc]


def test_mean_over_no_counted_row_is_zero_not_nan():
    assert mean_scale(4.0) == 0.25
    assert mean_scale(0.0) == 0.0
    assert reduce_total(3.0, 4.0, "mean") == 0.75
    assert reduce_total(3.0, 4.0, "sum") == 3.0
    assert reduce_total(0.0, 0.0, "mean") == 0.0
    assert _contract.grad_scale("mean", 0.0) == 0.0
    assert _contract.grad_scale("sum", 0.0) == 1.0
    assert _contract.grad_scale("mean", 8.0) == 0.125


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 1, 5), (4, 0, 3)])
def test_format_index_is_numpys_unravel_index(shape):
    size = math.prod(shape)
    for flat in range(size):
        want = tuple(int(i) for i in np.unravel_index(flat, shape))
        assert format_index(flat, shape) == repr(want)
    assert format_index(0, ()) == "()"


def test_masked_row_text_is_shared():
    """The NumPy API and softxent.torch word the all-masked row the same way, in their own argument names."""
    x = np.array([[0.0, 1.0], [-np.inf, -np.inf]])
    with pytest.raises(ValueError) as numpy_error:
        sx.softmax_cross_entropy(x, [0, 1])
    assert str(numpy_error.value).startswith("logits row (1,) is -inf for every class (all classes masked)")
    torch = pytest.importorskip("torch", reason="softxent.torch needs torch")
    import softxent.torch as sxt

    with pytest.raises(ValueError) as torch_error:
        sxt.cross_entropy(torch.tensor(x), torch.tensor([0, 1]))
    assert str(torch_error.value).startswith("row 1 of input (the batch flattened) is -inf for every class")
    tail = "so it has no softmax, but its"
    assert tail in str(numpy_error.value) and tail in str(torch_error.value)


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (1.5, np.float32, 1.5),
        (1e39, np.float32, math.inf),  # a loss beyond float32's range (tiny T): inf, as the kernel gives
        (-1e39, np.float32, -math.inf),
        (math.nan, np.float32, math.nan),
        (1e39, np.float64, 1e39),
        (7e4, np.float16, math.inf),
        (np.float64(2.0), np.float32, 2.0),
    ],
)
def test_scalar_results_take_the_logits_dtype_without_warnings(value, dtype, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = scalar_or_array(value, np.dtype(dtype))
    assert type(out) is dtype
    assert out == expected or (math.isnan(out) and math.isnan(expected))
