"""The fused numba CPU kernels against the exact NumPy reference path.

Every public function that dispatches to :mod:`softxent.kernels` is called
twice: once on the default (kernel) path, and once with
``SOFTXENT_REFERENCE=1`` on the logits cast to float64 (the float64 NumPy
oracle). The two must agree, for every option and in float32 and float64,
within these bounds (``eps`` is float32's machine epsilon):

=================  ============================================  ===============
quantity           float32 input                                  float64 input
=================  ============================================  ===============
loss               1e-6 relative, or 1e-6 absolute near 0         1e-13 rel/abs
gradient           1e-6 absolute                                  1e-13 rel/abs
softmax            (|d| + 10) eps relative + 1e-37 absolute       1e-13 rel/abs
log_softmax        4 eps (1 + |value|)                            1e-13 rel/abs
logsumexp          2 ulp of the float32 result                    1e-13 rel/abs
=================  ============================================  ===============

with ``d = (x - max x) / T`` the shifted logit. NaN and infinite entries must
sit at the same places, with the same signs, on both paths.

Covered: every option of the softmax cross-entropy (integer and probability
labels, class weights, ignore_index, label smoothing, sample weights,
temperature, reductions, a class axis that is not last, non-contiguous
input), odd and large shapes (both the few-class tile kernel and the row
kernel, serial and parallel), non-finite rows, empty input, ``out=`` and
``inplace=``, ``return_lse``, thread-count independence, confident rows, and
softmax / log_softmax / logsumexp.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special

import softxent as sx
from softxent import kernels

from conftest import DTYPES, random_logits

numba = pytest.importorskip("numba", reason="numba is not installed: no kernels to test")
_cpu = pytest.importorskip("softxent.kernels._cpu")

EPS32 = float(np.finfo(np.float32).eps)

REDUCTIONS = ["mean", "sum", "none"]
TEMPERATURES = [0.3, 1.0, 4.0]
# Few classes (the tile kernel, V <= 64) and many (the row kernel).
CLASS_COUNTS = [5, 100]
ODD_V = [1, 2, 15, 17, 1000, 32769]
ODD_N = [1, 3, 257]
# (rows, classes): few classes with many rows, serial (one block) and
# parallel (several blocks), and one very wide row set.
BIG_SHAPES = [(5000, 10), (20000, 10), (3, 131072)]
APIS = ["loss", "grad", "with_grad"]
SOFTMAX_FUNCS = ["softmax", "log_softmax", "logsumexp"]

DTYPE_IDS = [np.dtype(d).name for d in DTYPES]
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
reductions = pytest.mark.parametrize("reduction", REDUCTIONS)


# --------------------------------------------------------------------------- elementwise building blocks


@numba.njit
def _apply_vexp(x, out):
    for i in range(x.shape[0]):
        out[i] = _cpu.vexp(x[i])


@numba.njit
def _apply_log1p_recip(a, log1p, recip):
    for i in range(a.shape[0]):
        log1p[i], recip[i] = _cpu._log1p_recip(a[i])


@numba.njit
def _apply_vlog1p(u, out):
    for i in range(u.shape[0]):
        out[i] = _cpu._vlog1p(u[i])


def _ulps(got, want, dtype):
    """|got - want| in units of the dtype's eps times |want| (want in long double)."""
    want = np.asarray(want, dtype=np.longdouble)
    return np.asarray(np.abs(got.astype(np.longdouble) - want) / (np.abs(want) * np.finfo(dtype).eps), dtype=np.float64)


@dtypes
def test_vectorised_exp_is_accurate_over_its_whole_range(dtype):
    """The polynomial exponential (magic-constant rounding, no clamp) within 2 ulps
    wherever the result is normal (float32: for x > -20; its one-FMA range
    reduction grows to 3.5 ulps at the bottom of the range), exactly 0 below,
    exactly 1 at 0, NaN for NaN."""
    lo = -88.0 if np.dtype(dtype) == np.float32 else -709.0
    x = np.concatenate([np.linspace(lo, 0.0, 400_001), -np.logspace(-30, 2.5, 20_001)]).astype(dtype)
    got = np.empty_like(x)
    _apply_vexp(x, got)
    want = np.exp(x.astype(np.longdouble))
    normal = want >= np.finfo(dtype).tiny
    ulps = _ulps(got[normal], want[normal], dtype)
    assert ulps[x[normal] > -20.0].max() <= 2.0
    assert ulps.max() <= (3.5 if np.dtype(dtype) == np.float32 else 2.0)
    assert (got[~normal] == 0.0).all(), "results below the smallest normal are flushed to exactly 0"
    specials = np.array([0.0, -0.0, -np.inf, np.nan, -1e30], dtype=dtype)
    out = np.empty_like(specials)
    _apply_vexp(specials, out)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 0.0 and np.isnan(out[3]) and out[4] == 0.0


def test_log1p_and_reciprocal_from_one_division():
    """The sigmoid head's log(1 + a) and 1 / (1 + a), a = exp(-|z|) in [0, 1] (0 or normal: the
    exponential flushes subnormals), against long double,
    with tiny a keeping its digits and both sides of the sqrt(2) - 1 switch."""
    edge = math.sqrt(2.0) - 1.0
    a = np.concatenate([
        np.linspace(0.0, 1.0, 200_001), np.logspace(-300, 0, 3001),
        np.nextafter(edge, 0.0) + np.arange(-3, 4) * 1e-17, [0.0, 1.0, 2.3e-308],
    ])  # fmt: skip
    log1p, recip = np.empty_like(a), np.empty_like(a)
    _apply_log1p_recip(a, log1p, recip)
    al = a.astype(np.longdouble)
    want_log = np.log1p(al)
    nz = want_log != 0
    assert _ulps(log1p[nz], want_log[nz], np.float64).max() <= 4.0
    assert (log1p[~nz] == 0.0).all()
    assert _ulps(recip, 1.0 / (1.0 + al), np.float64).max() <= 4.0


def test_vectorised_log1p_from_tiny_to_huge():
    """The tile kernel's log1p(u), u >= 0 (u = s - 1 of a softmax row, up to V - 1)."""
    u = np.concatenate([np.logspace(-300, 15, 100_001), np.linspace(0.0, 3.0, 30_001)])
    got = np.empty_like(u)
    _apply_vlog1p(u, got)
    want = np.log1p(u.astype(np.longdouble))
    nz = want != 0
    assert _ulps(got[nz], want[nz], np.float64).max() <= 4.0
    assert (got[~nz] == 0.0).all()
    special = np.array([np.inf, np.nan, 0.0])
    out = np.empty_like(special)
    _apply_vlog1p(special, out)
    assert out[0] == np.inf and np.isnan(out[1]) and out[2] == 0.0


# --------------------------------------------------------------------------- backend switching


@pytest.fixture(autouse=True)
def kernel_path(monkeypatch):
    """Every test runs on the kernel path unless it asks the oracle."""
    monkeypatch.delenv("SOFTXENT_REFERENCE", raising=False)
    for dt in DTYPES:
        assert kernels.cpu(np.dtype(dt)) is not None, "numba is importable but the kernels are off"


@pytest.mark.parametrize("value, forced", [("1", True), ("yes", True), ("0", False), ("", False), (None, False)])
def test_the_reference_switch_is_read_at_every_call(monkeypatch, value, forced):
    """``SOFTXENT_REFERENCE`` set or cleared through ``os.environ`` (as users
    and monkeypatch do) is seen by the next call, whichever way it is read."""
    if value is None:
        monkeypatch.delenv("SOFTXENT_REFERENCE", raising=False)
    else:
        monkeypatch.setenv("SOFTXENT_REFERENCE", value)
    assert kernels.reference_forced() is forced
    assert (kernels.compiled() is None) is forced
    assert (kernels.cpu(np.dtype(np.float32)) is None) is forced
    assert kernels.cpu(np.dtype(np.float16)) is None
    monkeypatch.setattr(kernels, "_POSIX", False)  # the os.environ.get fallback
    assert kernels.reference_forced() is forced


@pytest.mark.parametrize("n, count", [(1, 1), (7, 2), (300, 3), (kernels._SCRATCH_MAX + 1, 2)])
def test_scratch_arrays_are_apart_and_as_long_as_asked(n, count):
    bufs = kernels.scratch(n, count)
    assert [b.shape for b in bufs] == [(n,)] * count and all(b.dtype == np.float64 for b in bufs)
    for i in range(count):
        for j in range(i):
            assert not np.shares_memory(bufs[i], bufs[j])
    for k, b in enumerate(bufs):
        b[:] = k
    assert all((b == k).all() for k, b in enumerate(bufs))


@pytest.fixture
def oracle(monkeypatch):
    """``oracle(fn, logits, ...)``: ``fn`` on the exact NumPy path, logits in float64."""

    def call(fn, logits, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setenv("SOFTXENT_REFERENCE", "1")
            return fn(np.asarray(logits).astype(np.float64), *args, **kwargs)

    return call


def is32(dtype) -> bool:
    return np.dtype(dtype) == np.float32


# --------------------------------------------------------------------------- comparisons


def _as_f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_within(actual, expected, bound, what: str) -> None:
    """``|actual - expected| <= bound`` elementwise; NaN and +-inf at the same places."""
    a, e = _as_f64(actual), _as_f64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), (
        f"{what}: NaN at {np.argwhere(nan_a).tolist()[:8]}, expected at {np.argwhere(nan_e).tolist()[:8]}"
    )
    inf_a = np.where(np.isinf(a), np.sign(a), 0.0)
    inf_e = np.where(np.isinf(e), np.sign(e), 0.0)
    assert np.array_equal(inf_a, inf_e), f"{what}: infinities differ at {np.argwhere(inf_a != inf_e).tolist()[:8]}"
    fin = np.isfinite(e)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(fin, np.abs(a - e), 0.0)
        b = np.broadcast_to(_as_f64(bound), e.shape)
        bad = fin & ~(err <= b)
    if bad.any():
        ratio = np.where(bad, err / np.where(b > 0, b, np.finfo(float).tiny), 0.0)
        i = np.unravel_index(int(np.argmax(ratio)), e.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {e.size} entries out of tolerance; worst at {tuple(map(int, i))}: "
            f"got {a[i]!r}, expected {e[i]!r}, |error| {err[i]:.3e} > bound {b[i]:.3e}"
        )


def _abs_finite(e):
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(e), np.abs(e), 0.0)


def assert_loss(actual, expected, dtype, what="loss"):
    e = _as_f64(expected)
    r = 1e-6 if is32(dtype) else 1e-13
    assert_within(actual, e, np.maximum(r * _abs_finite(e), r), what)


def assert_grad(actual, expected, dtype, what="gradient"):
    e = _as_f64(expected)
    bound = 1e-6 if is32(dtype) else np.maximum(1e-13 * _abs_finite(e), 1e-13)
    assert_within(actual, e, bound, what)


def assert_same_rounding(actual, expected, dtype, what):
    """Two kernel results of the same inputs from separately compiled code:
    equal within the documented bounds (the loss bound for losses, the
    gradient bound for gradients), NaN and infinities at the same places."""
    a = np.asarray(actual)
    assert a.shape == np.shape(expected) and a.dtype == np.asarray(expected).dtype, what
    if "grad" in what:
        assert_grad(actual, expected, dtype, what)
    else:
        assert_loss(actual, expected, dtype, what)


def shifted(x, axis, temperature=1.0):
    """``|d| = |x - max x| / T`` (float64, 0 where not finite), for the softmax bound."""
    x = _as_f64(x)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=axis, keepdims=True, initial=-np.inf) if x.shape[axis] else np.zeros(())
        d = np.abs(x - m) / temperature
    return np.where(np.isfinite(d), d, 0.0)


def assert_softmax_family(name, actual, expected, x, dtype, axis=-1, temperature=1.0):
    e = _as_f64(expected)
    if not is32(dtype):
        assert_within(actual, e, np.maximum(1e-13 * _abs_finite(e), 1e-13), name)
    elif name == "softmax":
        assert_within(actual, e, (shifted(x, axis, temperature) + 10) * EPS32 * _abs_finite(e) + 1e-37, name)
    elif name == "log_softmax":
        assert_within(actual, e, 4 * EPS32 * (1 + _abs_finite(e)), name)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            ulp = np.spacing(np.abs(e).astype(np.float32)).astype(np.float64)
        assert_within(actual, e, 2 * np.where(np.isfinite(ulp), ulp, 0.0), name)


def assert_identical(actual, expected, what):
    """Bit for bit (NaN equal to NaN). Only for results of the *same compiled
    code* (one kernel, other threads, batches, buffers or layouts that reach it
    as the same contiguous rows): separately compiled specialisations (another
    label dtype, the in-place pass, another driver) may round differently in
    the last bit, on another CPU or after a fresh compile, and are compared
    with :func:`assert_same_rounding`."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape and a.dtype == e.dtype, f"{what}: {a.shape} {a.dtype} vs {e.shape} {e.dtype}"
    assert np.array_equal(a, e, equal_nan=True), (
        f"{what}: differs at {np.argwhere(~((a == e) | (np.isnan(a) & np.isnan(e)))).tolist()[:8]}"
    )


# --------------------------------------------------------------------------- cases


def call_api(api, logits, labels, **kw):
    """(loss, grad) from one public function; the one it does not give is None."""
    if api == "loss":
        return sx.softmax_cross_entropy(logits, labels, **kw), None
    if api == "grad":
        return None, sx.softmax_cross_entropy_grad(logits, labels, **kw)
    return sx.softmax_cross_entropy_with_grad(logits, labels, **kw)


def compare_xent(oracle, api, logits, labels, dtype, **kw):
    """Kernel vs float64 oracle for one call; returns the kernel's (loss, grad)."""
    loss, grad = call_api(api, logits, labels, **kw)
    ref_loss, ref_grad = oracle(sx.softmax_cross_entropy_with_grad, logits, labels, **kw)
    if loss is not None:
        assert np.asarray(loss).dtype == np.dtype(dtype)
        assert_loss(loss, ref_loss, dtype)
    if grad is not None:
        assert grad.dtype == np.dtype(dtype) and grad.shape == np.shape(logits)
        assert_grad(grad, ref_grad, dtype)
    return loss, grad


def _softmax_rows(rng, n, v):
    z = rng.standard_normal((n, v)) * 2
    return np.exp(z - z.max(axis=1, keepdims=True)) / np.exp(z - z.max(axis=1, keepdims=True)).sum(
        axis=1, keepdims=True
    )


def _unnormalised_rows(rng, n, v):
    """Non-negative targets whose rows sum to anything in [0.3, 2], some entries 0.

    Row mass stays O(1) so that float32 gradients are O(1) too (a float32
    entry of size g carries a rounding of g * 6e-8 by itself)."""
    y = rng.uniform(0.0, 1.0, (n, v)) * (rng.uniform(0.0, 1.0, (n, v)) < 0.7)
    y[:, 0] += 1e-3  # no all-zero row unless asked
    return y / y.sum(axis=1, keepdims=True) * rng.uniform(0.3, 2.0, (n, 1))


def make_case(name, rng, n, v, dtype):
    """(logits (n, v), labels, kwargs) for one option set."""
    x = random_logits(rng, (n, v), dtype=dtype)
    idx = rng.integers(0, v, n)
    idx[1::2] = np.argmax(x[1::2], axis=1)  # the label is the top class: its own branch
    kw = {}
    w = rng.uniform(0.2, 2.0, v)
    sw = rng.uniform(0.0, 2.0, n)
    sw[::4] = 0.0
    if name == "index":
        return x, idx, kw
    if name == "index_weight":
        return x, idx, dict(weight=w)
    if name == "index_ignore_default":
        idx[::3] = -100
        return x, idx, kw
    if name == "index_ignore_class":  # a real class index as ignore_index
        idx[::3] = 1
        return x, idx, dict(ignore_index=1)
    if name == "index_ignore_none":
        return x, idx, dict(ignore_index=None)
    if name == "index_smoothing":
        return x, idx, dict(label_smoothing=0.15)
    if name == "index_smoothing_weight_ignore":
        idx[1::3] = -100
        return x, idx, dict(label_smoothing=0.3, weight=w)
    if name == "index_sample_weight":
        return x, idx, dict(sample_weight=sw)
    if name.startswith("index_T"):
        return x, idx, dict(temperature=float(name[7:]))
    if name == "index_all":
        idx[2::5] = 2
        return x, idx, dict(weight=w, ignore_index=2, label_smoothing=0.1, sample_weight=sw, temperature=0.3)
    if name == "prob":
        return x, _softmax_rows(rng, n, v), kw
    if name == "prob_unnormalised":
        y = _unnormalised_rows(rng, n, v)
        y[1::5] = 0.0  # a row with no target mass: loss 0
        return x, y, kw
    if name == "prob_weight_smoothing":
        return x, _softmax_rows(rng, n, v), dict(weight=w, label_smoothing=0.2)
    if name == "prob_sample_weight":
        return x, _softmax_rows(rng, n, v), dict(sample_weight=sw)
    if name.startswith("prob_T"):
        return x, _softmax_rows(rng, n, v), dict(temperature=float(name[6:]))
    if name == "prob_all":
        y = _unnormalised_rows(rng, n, v)
        return x, y, dict(weight=w, label_smoothing=0.25, sample_weight=sw, temperature=4.0)
    raise AssertionError(name)


OPTION_CASES = [
    "index", "index_weight", "index_ignore_default", "index_ignore_class", "index_ignore_none",
    "index_smoothing", "index_smoothing_weight_ignore", "index_sample_weight",
    "index_T0.3", "index_T4", "index_all",
    "prob", "prob_unnormalised", "prob_weight_smoothing", "prob_sample_weight",
    "prob_T0.3", "prob_T4", "prob_all",
]  # fmt: skip
LAYOUT_CASES = ["index", "index_all", "prob", "prob_all"]


# --------------------------------------------------------------------------- dispatch


DISPATCH = [
    ("softmax_cross_entropy", "softmax_xent_index", False),
    ("softmax_cross_entropy_grad", "softmax_xent_index", False),
    ("softmax_cross_entropy_with_grad", "softmax_xent_index", False),
    ("softmax_cross_entropy_with_grad", "softmax_xent_prob", True),
    ("softmax", "softmax_rows", None),
    ("log_softmax", "softmax_rows", None),
    ("logsumexp", "logsumexp_rows", None),
]


@dtypes
@pytest.mark.parametrize("public, kernel, prob", DISPATCH, ids=[f"{p}-{k}" for p, k, _ in DISPATCH])
def test_kernel_is_used_by_default_and_not_under_reference(public, kernel, prob, dtype, rng, monkeypatch):
    """The comparisons below are kernel vs reference only if the default path
    calls the kernel and SOFTXENT_REFERENCE=1 does not."""
    calls = []
    real = getattr(_cpu, kernel)

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(_cpu, kernel, spy)
    x = random_logits(rng, (4, 6), dtype=dtype)
    args = () if prob is None else ((_softmax_rows(rng, 4, 6) if prob else np.array([0, 1, 2, 3])),)
    getattr(sx, public)(x, *args)
    assert len(calls) == 1
    monkeypatch.setenv("SOFTXENT_REFERENCE", "1")
    getattr(sx, public)(x, *args)
    assert len(calls) == 1


# --------------------------------------------------------------------------- every option


@dtypes
@reductions
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", OPTION_CASES)
@pytest.mark.parametrize("api", APIS)
def test_options_match_reference(api, case, v, reduction, dtype, rng, oracle):
    # 70 rows: one full tile of the few-class kernel and a partial one.
    x, labels, kw = make_case(case, rng, 70, v, dtype)
    compare_xent(oracle, api, x, labels, dtype, reduction=reduction, **kw)


@dtypes
@reductions
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_with_grad_is_exactly_the_two_separate_calls(case, v, reduction, dtype, rng):
    """softmax_cross_entropy_with_grad documents that it returns *exactly*
    (softmax_cross_entropy(...), softmax_cross_entropy_grad(...)): the kernel's
    loss-only pass and its loss+gradient pass must agree bit for bit."""
    x, labels, kw = make_case(case, rng, 70, v, dtype)
    loss, grad = sx.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, **kw)
    assert_identical(sx.softmax_cross_entropy(x, labels, reduction=reduction, **kw), loss, "loss-only vs with_grad")
    assert_identical(sx.softmax_cross_entropy_grad(x, labels, reduction=reduction, **kw), grad, "grad vs with_grad")


def _to_axis1(x, labels, kw, prob):
    """The (12, V) case as a (4, V, 3) array with the class axis at 1 (C-contiguous)."""
    v = x.shape[1]
    x3 = np.ascontiguousarray(x.reshape(4, 3, v).transpose(0, 2, 1))
    lab3 = np.ascontiguousarray(labels.reshape(4, 3, v).transpose(0, 2, 1)) if prob else labels.reshape(4, 3)
    kw3 = dict(kw)
    if "sample_weight" in kw:
        kw3["sample_weight"] = kw["sample_weight"].reshape(4, 3)
    return x3, lab3, kw3


@dtypes
@reductions
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_class_axis_not_last(case, v, reduction, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, 12, v, dtype)
    x3, lab3, kw3 = _to_axis1(x, labels, kw, case.startswith("prob"))
    loss3, grad3 = compare_xent(oracle, "with_grad", x3, lab3, dtype, axis=1, reduction=reduction, **kw3)
    assert grad3.shape == (4, v, 3)
    # The same rows with the class axis last give the same numbers, bit for bit.
    loss2, grad2 = sx.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, **kw)
    assert_identical(grad3.transpose(0, 2, 1).reshape(12, v), grad2, "gradient, axis=1 vs axis=-1")
    if reduction == "none":
        assert_identical(loss3.reshape(12), loss2, "loss, axis=1 vs axis=-1")
    else:
        assert_loss(loss3, loss2, dtype, "loss, axis=1 vs axis=-1")
    assert_identical(
        sx.softmax_cross_entropy(x3, lab3, axis=1, reduction=reduction, **kw3),
        sx.softmax_cross_entropy(x, labels, reduction=reduction, **kw).reshape(np.shape(loss3)),
        "loss-only, axis=1 vs axis=-1",
    )


def _non_contiguous(x, layout):
    """(view, base, inside): ``x`` copied into a non-contiguous view of ``base``;
    ``inside`` marks the entries of ``base`` that the view covers."""
    n, v = x.shape
    if layout == "transposed":
        base = np.empty((v, n), dtype=x.dtype)
        view = base.T
        where = (slice(None), slice(None))
    elif layout == "column_strided":
        base = np.full((n, 2 * v + 1), np.nan, dtype=x.dtype)
        where = (slice(None), slice(1, None, 2))
        view = base[where]
    else:  # row_strided
        base = np.full((2 * n, v), np.nan, dtype=x.dtype)
        where = (slice(None, None, 2), slice(None))
        view = base[where]
    view[...] = x
    inside = np.zeros(base.shape, dtype=bool)
    inside[where] = True
    assert not view.flags.c_contiguous or n <= 1
    return view, base, inside


LAYOUTS = ["transposed", "column_strided", "row_strided"]


@dtypes
@reductions
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_input_equals_contiguous(layout, case, v, reduction, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, 70, v, dtype)
    view, base, _ = _non_contiguous(x, layout)
    before = base.copy()
    loss_v, grad_v = compare_xent(oracle, "with_grad", view, labels, dtype, reduction=reduction, **kw)
    loss_c, grad_c = sx.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, **kw)
    assert_identical(loss_v, loss_c, "loss, view vs contiguous")
    assert_identical(grad_v, grad_c, "gradient, view vs contiguous")
    assert_identical(
        sx.softmax_cross_entropy(view, labels, reduction=reduction, **kw),
        sx.softmax_cross_entropy(x, labels, reduction=reduction, **kw),
        "loss-only, view vs contiguous",
    )
    assert_identical(base, before, "the input view was modified")


# --------------------------------------------------------------------------- shapes


@dtypes
@pytest.mark.parametrize("n", ODD_N)
@pytest.mark.parametrize("v", ODD_V)
@pytest.mark.parametrize("labels_kind", ["index", "prob"])
def test_odd_shapes(labels_kind, v, n, dtype, rng, oracle):
    x = random_logits(rng, (n, v), dtype=dtype)
    if labels_kind == "index":
        labels, kw = rng.integers(0, v, n), dict(label_smoothing=0.1)
    else:
        labels, kw = _unnormalised_rows(rng, n, v), dict(temperature=0.3)
    compare_xent(oracle, "with_grad", x, labels, dtype, reduction="none", **kw)
    compare_xent(oracle, "loss", x, labels, dtype, reduction="sum", **kw)


@dtypes
@pytest.mark.parametrize("shape", BIG_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", ["index", "index_all", "prob_all"])
def test_big_shapes(case, shape, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, *shape, dtype)
    compare_xent(oracle, "with_grad", x, labels, dtype, reduction="none", **kw)
    compare_xent(oracle, "loss", x, labels, dtype, reduction="mean", **kw)


@pytest.mark.parametrize("labels_kind", ["index", "prob"])
def test_wide_float32_row_loss_within_1e6_relative(labels_kind, rng, oracle):
    """3 x 131072 float32: the float32 exponentials summed over 131072 classes
    still give each row's loss to 1e-6 relative."""
    x = random_logits(rng, (3, 131072), scale=4.0, dtype=np.float32)
    labels = rng.integers(0, 131072, 3) if labels_kind == "index" else _softmax_rows(rng, 3, 131072)
    ref = _as_f64(oracle(sx.softmax_cross_entropy, x, labels, reduction="none"))
    for loss in (
        sx.softmax_cross_entropy(x, labels, reduction="none"),
        sx.softmax_cross_entropy_with_grad(x, labels, reduction="none")[0],
    ):
        err = np.abs(_as_f64(loss) - ref) / np.abs(ref)
        assert (err <= 1e-6).all(), f"relative errors {err}"


# Rows longer than 64 KiB run passes 1 and 2 chunk by chunk (64 KiB each:
# 16384 float32 or 8192 float64 classes), each chunk against its own max.
LONG_V = 70001  # 5 float32 chunks / 9 float64 chunks, the last one partial


def _long_rows(rng, dtype):
    """(logits, labels): one row per situation the chunked passes must get right."""
    v = LONG_V
    x = rng.standard_normal((12, v)) * 3
    x[1] = 0.0
    x[1, -1] = 20.0  # confident, its max in the last chunk: r = 1.4e-4 must keep its digits
    x[2] *= 1.0 / 3.0
    x[2, [5, 50000]] = 10.0  # the max tied across two chunks
    x[3, 16384:40000] = -np.inf  # whole chunks masked
    x[4, 40000] = np.nan
    x[5, 20000] = np.inf
    x[6] = np.linspace(-30.0, 30.0, v)  # the running max grows chunk by chunk
    x[7] = np.linspace(30.0, -30.0, v)
    x[8] = -np.inf  # every class masked: ignored below
    x[9, :100] = -np.inf  # its label sits on a masked class: infinite loss
    x[10] = np.sign(x[10]) * 1e30
    x[11, 0] = 100.0  # later chunks 1e-43 below the max: their factors underflow
    labels = rng.integers(0, v, 12)
    labels[[1, 6]] = v - 1  # the top class, in the last chunk
    labels[2] = 50000
    labels[8] = -100
    labels[9] = 50
    return x.astype(dtype), labels


@dtypes
@pytest.mark.parametrize(
    "kw",
    [{}, {"temperature": 0.3}, {"weight": "w", "sample_weight": "sw"}, {"label_smoothing": 0.1}],
    ids=["plain", "temperature", "weights", "smoothing"],
)
def test_long_rows_by_chunks_match_reference(kw, dtype, rng, oracle):
    """Chunked long rows (plain, T, class and row weights; smoothing takes the
    whole-row passes) against the oracle, row by row, in place and not."""
    x, labels = _long_rows(rng, dtype)
    kw = dict(kw)
    if "weight" in kw:
        kw["weight"] = rng.uniform(0.2, 2.0, LONG_V)
        kw["sample_weight"] = rng.uniform(0.5, 2.0, 12)
    loss, grad = compare_xent(oracle, "with_grad", x, labels, dtype, reduction="none", **kw)
    work = x.copy()
    loss_in, grad_in = sx.softmax_cross_entropy_with_grad(work, labels, reduction="none", inplace=True, **kw)
    assert grad_in is work
    # In place, pass 2 is its own one-array specialisation (see _cpu's
    # docstring): the same numbers up to rounding, not necessarily the same bits.
    assert_same_rounding(loss_in, loss, dtype, "in-place loss")
    assert_same_rounding(grad_in, grad, dtype, "in-place gradient")
    assert np.isnan(loss[[4, 5]]).all() and loss[8] == 0.0 and loss[9] == np.inf


def _buffer_at(offset, shape, dtype):
    """An empty C-contiguous array whose data starts ``offset`` bytes past a 32-byte boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = (32 - raw.ctypes.data % 32) % 32 + offset
    out = raw[start : start + nbytes].view(dtype).reshape(shape)
    out[...] = np.nan  # every entry must be written
    return out


# A gradient of 16 MiB or more in its own buffer (a new array or out=) is
# written by streaming stores, 32 bytes at a time from each row's first
# 32-byte boundary (kernels/_rows.py, _STREAM_MIN_BYTES).
STREAM_BYTES = 16 << 20


def _large_batch(kind, rng, dtype):
    """(logits, labels) whose gradient is just over 16 MiB: long rows by chunks (the
    situations of :func:`_long_rows`, repeated) or whole rows of a few thousand classes."""
    itemsize = np.dtype(dtype).itemsize
    if kind == "chunked":
        x, labels = _long_rows(rng, dtype)
        reps = -(-STREAM_BYTES // x.nbytes)
        return np.tile(x, (reps, 1)), np.tile(labels, reps)
    v = 16384 // itemsize + 1
    n = -(-STREAM_BYTES // (v * itemsize))
    x = random_logits(rng, (n, v), dtype=dtype)
    x[1, 7] = np.nan
    x[2] = -np.inf
    x[3, :] = 0.0
    x[3, 5] = 30.0  # confident
    labels = rng.integers(0, v, n)
    labels[2] = -100
    labels[3] = 5
    return x, labels


@dtypes
@pytest.mark.parametrize("kind", ["chunked", "whole"])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}], ids=["plain", "smoothing"])
def test_large_gradient_in_its_own_buffer_at_every_alignment(kw, kind, dtype, rng, oracle):
    """The streamed gradient against the oracle, and out= at every start of the buffer
    (also one not aligned to its elements, which the front end copies) gives the same.
    Rows computed in a small batch (ordinary stores) have the same bits: the stores
    differ, not the arithmetic (the determinism promise)."""
    x, labels = _large_batch(kind, rng, dtype)
    assert x.nbytes >= STREAM_BYTES
    loss, grad = compare_xent(oracle, "with_grad", x, labels, dtype, reduction="none", **kw)
    few_loss, few_grad = sx.softmax_cross_entropy_with_grad(x[:8], labels[:8], reduction="none", **kw)
    assert_identical(few_grad, grad[:8], "rows in a small batch")
    assert_identical(few_loss, loss[:8], "losses in a small batch")
    itemsize = np.dtype(dtype).itemsize
    for offset in [*range(0, 32, itemsize), 1]:
        out = _buffer_at(offset, x.shape, dtype)
        loss_out, grad_out = sx.softmax_cross_entropy_with_grad(x, labels, reduction="none", out=out, **kw)
        assert grad_out is out
        assert_identical(grad_out, grad, f"out= at offset {offset}")
        assert_identical(loss_out, loss, f"loss with out= at offset {offset}")


# --------------------------------------------------------------------------- non-finite rows


SPECIAL_ROWS = ["masked_but_one", "label_on_masked", "huge", "nan", "negative_nan", "posinf", "neg_huge_row"]


def _special_batch(kind, rng, v, dtype, labels_kind):
    """A 70-row batch whose row 3 (and for some kinds row 40) is special."""
    n = 70
    x = random_logits(rng, (n, v), dtype=dtype)
    idx = rng.integers(0, v, n)
    special = [3, 40]
    for r in special:
        if kind == "masked_but_one":
            x[r] = -np.inf
            x[r, r % v] = 2.5
            idx[r] = r % v
        elif kind == "label_on_masked":
            x[r, 1] = -np.inf
            idx[r] = 1
        elif kind == "huge":
            x[r, 0], x[r, 1] = 1e30, -1e30
            idx[r] = 1 if r == 3 else 0
        elif kind == "neg_huge_row":
            x[r] = -1e30
            x[r, 2] = -1e30 + 1e24
        elif kind == "nan":
            x[r, 2] = np.nan
        elif kind == "negative_nan":
            x[r, 2] = np.copysign(x.dtype.type(np.nan), x.dtype.type(-1.0))
        elif kind == "posinf":
            x[r, 2] = np.inf
    if labels_kind == "index":
        return x, idx, special
    y = _softmax_rows(rng, n, v)
    if kind in ("masked_but_one", "label_on_masked", "huge"):
        y[special] = np.eye(v)[idx[special]]
    return x, y, special


@dtypes
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("labels_kind", ["index", "prob"])
@pytest.mark.parametrize("kind", SPECIAL_ROWS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_special_rows(temperature, smoothing, kind, labels_kind, v, dtype, rng, oracle):
    x, labels, special = _special_batch(kind, rng, v, dtype, labels_kind)
    kw = dict(label_smoothing=smoothing, temperature=temperature)
    for api in APIS:
        loss, grad = compare_xent(oracle, api, x, labels, dtype, reduction="none", **kw)
        if kind in ("nan", "negative_nan", "posinf"):
            others = np.setdiff1d(np.arange(70), special)
            if loss is not None:
                assert np.isnan(loss[special]).all() and np.isfinite(loss[others]).all()
            if grad is not None:
                assert np.isnan(grad[special]).all() and np.isfinite(grad[others]).all()
        if kind == "masked_but_one" and smoothing == 0.0:
            if loss is not None:
                assert (loss[special] == 0).all()
            if grad is not None:
                assert (grad[special] == 0).all()
        if kind == "label_on_masked" and loss is not None:
            assert (loss[special] == np.inf).all()
    for reduction in ("sum", "mean"):
        compare_xent(oracle, "with_grad", x, labels, dtype, reduction=reduction, **kw)
        compare_xent(oracle, "loss", x, labels, dtype, reduction=reduction, **kw)


IGNORED_BY = ["ignore_index", "ignore_class", "sample_weight_zero", "prob_zero_row"]


@dtypes
@reductions
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("ignored_by", IGNORED_BY)
@pytest.mark.parametrize("fill", ["nan", "posinf", "all_neginf"])
def test_ignored_rows_are_zero_whatever_their_logits(fill, ignored_by, v, reduction, dtype, rng, oracle):
    n = 70
    x = random_logits(rng, (n, v), dtype=dtype)
    rows = [0, 5, 64, 69]
    x[rows] = {"nan": np.nan, "posinf": np.inf, "all_neginf": -np.inf}[fill]
    labels = rng.integers(0, v, n)
    kw = {}
    if ignored_by == "ignore_index":
        labels[rows] = -100
    elif ignored_by == "ignore_class":
        labels[labels == 1] = 0
        labels[rows] = 1
        kw["ignore_index"] = 1
    elif ignored_by == "sample_weight_zero":
        kw["sample_weight"] = np.where(np.isin(np.arange(n), rows), 0.0, 1.0)
    else:
        labels = _softmax_rows(rng, n, v)
        labels[rows] = 0.0
    # Smoothing gives every class target mass, so it would make a zero
    # probability row count; the index-label rows stay ignored with it.
    kw["label_smoothing"] = 0.0 if ignored_by == "prob_zero_row" else 0.1
    for api in APIS:
        loss, grad = compare_xent(oracle, api, x, labels, dtype, reduction=reduction, **kw)
        if loss is not None:
            assert np.isfinite(loss).all()
            if reduction == "none":
                assert (loss[rows] == 0).all()
        if grad is not None:
            assert np.isfinite(grad).all() and (grad[rows] == 0).all()


@dtypes
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("labels_kind", ["index", "prob"])
@pytest.mark.parametrize("api", APIS)
def test_all_masked_row_raises_like_reference(api, labels_kind, v, dtype, rng, oracle):
    x = random_logits(rng, (70, v), dtype=dtype)
    x[66] = -np.inf
    labels = rng.integers(0, v, 70) if labels_kind == "index" else _softmax_rows(rng, 70, v)
    with pytest.raises(ValueError, match="every class") as ref_exc:
        oracle(lambda *a, **k: call_api(api, *a, **k), x, labels)
    with pytest.raises(ValueError, match="every class") as exc:
        call_api(api, x, labels)
    assert str(exc.value) == str(ref_exc.value)


# --------------------------------------------------------------------------- empty input


@dtypes
@reductions
@pytest.mark.parametrize("shape", [(0, 5), (0, 100), (4, 0), (0, 0)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("labels_kind", ["index_ignored", "prob"])
@pytest.mark.parametrize("api", APIS)
def test_empty_input(api, labels_kind, shape, reduction, dtype, oracle):
    x = np.zeros(shape, dtype=dtype)
    labels = np.full(shape[0], -100) if labels_kind == "index_ignored" else np.zeros(shape)
    loss, grad = compare_xent(oracle, api, x, labels, dtype, reduction=reduction)
    if loss is not None:
        assert np.shape(loss) == ((shape[0],) if reduction == "none" else ())
        assert (np.asarray(loss) == 0).all()
    if grad is not None:
        assert grad.shape == shape


@dtypes
@pytest.mark.parametrize("api", APIS)
def test_no_classes_with_a_label_raises_like_reference(api, dtype, oracle):
    x = np.zeros((3, 0), dtype=dtype)
    labels = np.array([0, -100, 0])
    with pytest.raises(ValueError) as ref_exc:
        oracle(lambda *a, **k: call_api(api, *a, **k), x, labels)
    with pytest.raises(ValueError) as exc:
        call_api(api, x, labels)
    assert str(exc.value) == str(ref_exc.value)


# --------------------------------------------------------------------------- out= and inplace=


GRAD_APIS = ["grad", "with_grad"]


def _grad_of(api, result):
    return result if api == "grad" else result[1]


def _grad_call(api, x, labels, **kw):
    fn = sx.softmax_cross_entropy_grad if api == "grad" else sx.softmax_cross_entropy_with_grad
    return fn(x, labels, **kw)


def _out_buffer(layout, shape, dtype):
    if layout == "contiguous":
        out = np.empty(shape, dtype=dtype)
    elif layout == "fortran":
        out = np.empty(shape[::-1], dtype=dtype).T
    else:  # strided
        out = np.empty(shape[:-1] + (2 * shape[-1],), dtype=dtype)[..., ::2]
    out[...] = np.nan  # every entry must be written, ignored rows included
    return out


@dtypes
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.parametrize("out_layout", ["contiguous", "fortran", "strided"])
@pytest.mark.parametrize("api", GRAD_APIS)
@pytest.mark.parametrize("axis", [-1, 1])
def test_out_receives_the_gradient(axis, api, out_layout, case, v, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, 12, v, dtype)
    if axis == 1:
        x, labels, kw = _to_axis1(x, labels, kw, case.startswith("prob"))
    kw["reduction"] = "sum"
    out = _out_buffer(out_layout, x.shape, dtype)
    x_before = x.copy()
    result = _grad_call(api, x, labels, axis=axis, out=out, **kw)
    assert np.shares_memory(_grad_of(api, result), out)
    ref_loss, ref_grad = oracle(sx.softmax_cross_entropy_with_grad, x, labels, axis=axis, **kw)
    assert_grad(out, ref_grad, dtype)
    if api == "with_grad":
        assert_loss(result[0], ref_loss, dtype)
    assert_identical(out, sx.softmax_cross_entropy_grad(x, labels, axis=axis, **kw), "out vs a fresh gradient")
    assert_identical(x, x_before, "logits modified by out=")


@dtypes
@pytest.mark.parametrize("out_layout", ["contiguous", "fortran", "strided"])
@pytest.mark.parametrize("api", GRAD_APIS)
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("v", CLASS_COUNTS)
def test_out_is_the_returned_object(v, axis, api, out_layout, dtype, rng):
    x, labels, kw = make_case("index", rng, 12, v, dtype)
    if axis == 1:
        x, labels, kw = _to_axis1(x, labels, kw, False)
    out = _out_buffer(out_layout, x.shape, dtype)
    grad = _grad_of(api, _grad_call(api, x, labels, axis=axis, out=out))
    assert grad is out, f"returned a {'view of' if np.shares_memory(grad, out) else 'copy, not'} out"
    assert np.shares_memory(grad, out)


BAD_OUT = [
    ("wrong_shape", lambda x: np.empty((x.shape[0], x.shape[1] + 1), x.dtype), ValueError),
    ("transposed_shape", lambda x: np.empty(x.shape[::-1], x.dtype), ValueError),
    ("wrong_dtype", lambda x: np.empty(x.shape, np.float32 if x.dtype == np.float64 else np.float64), ValueError),
    ("read_only", lambda x: np.broadcast_to(np.zeros(x.shape[1], x.dtype), x.shape), ValueError),
    ("list", lambda x: np.zeros(x.shape, x.dtype).tolist(), TypeError),
]


@dtypes
@pytest.mark.parametrize("api", GRAD_APIS)
@pytest.mark.parametrize("name, make_out, error", BAD_OUT, ids=[b[0] for b in BAD_OUT])
def test_bad_out_raises(name, make_out, error, api, dtype, rng):
    x = random_logits(rng, (6, 5), dtype=dtype)
    out = make_out(x)
    snapshot = np.array(out, copy=True)
    with pytest.raises(error):
        _grad_call(api, x, np.arange(6) % 5, out=out)
    if isinstance(out, np.ndarray):
        assert_identical(np.asarray(out), snapshot, "a refused out was written")


@dtypes
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.parametrize("api", GRAD_APIS)
@pytest.mark.parametrize("axis", [-1, 1])
@reductions
def test_inplace_contiguous(reduction, axis, api, case, v, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, 12, v, dtype)
    if axis == 1:
        x, labels, kw = _to_axis1(x, labels, kw, case.startswith("prob"))
    kw.update(axis=axis, reduction=reduction)
    ref_loss, ref_grad = oracle(sx.softmax_cross_entropy_with_grad, x, labels, **kw)
    result = _grad_call(api, x, labels, inplace=True, **kw)
    assert np.shares_memory(_grad_of(api, result), x)
    # Within the tolerance, not bit for bit: with the gradient aliasing the
    # logits the compiler may order the row sums differently (not documented
    # as identical to the out-of-place result).
    assert_grad(x, ref_grad, dtype)
    if api == "with_grad":
        assert_loss(result[0], ref_loss, dtype)


@dtypes
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LAYOUT_CASES)
@pytest.mark.parametrize("api", GRAD_APIS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_inplace_on_a_view_fills_the_view(layout, api, case, v, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, 70, v, dtype)
    kw["reduction"] = "mean"
    view, base, inside = _non_contiguous(x, layout)
    outside = ~inside
    base_before = base.copy()
    ref_loss, ref_grad = oracle(sx.softmax_cross_entropy_with_grad, x, labels, **kw)
    result = _grad_call(api, view, labels, inplace=True, **kw)
    assert np.shares_memory(_grad_of(api, result), view)
    assert_grad(view, ref_grad, dtype)
    assert_identical(base[outside], base_before[outside], "entries outside the view")
    if api == "with_grad":
        assert_loss(result[0], ref_loss, dtype)


@dtypes
@pytest.mark.parametrize("layout", ["contiguous", *LAYOUTS, "axis1"])
@pytest.mark.parametrize("api", GRAD_APIS)
@pytest.mark.parametrize("v", CLASS_COUNTS)
def test_inplace_returns_the_logits_object(v, api, layout, dtype, rng):
    x, labels, kw = make_case("index", rng, 12, v, dtype)
    axis = -1
    if layout == "axis1":
        x, labels, kw = _to_axis1(x, labels, kw, False)
        axis = 1
    elif layout != "contiguous":
        x = _non_contiguous(x, layout)[0]
    grad = _grad_of(api, _grad_call(api, x, labels, axis=axis, inplace=True))
    assert grad is x, f"returned a {'view of' if np.shares_memory(grad, x) else 'copy, not'} the logits"


@pytest.mark.parametrize("api", GRAD_APIS)
def test_inplace_with_a_list_raises_type_error(api):
    with pytest.raises(TypeError):
        _grad_call(api, [[1.0, 2.0], [0.5, 0.0]], [0, 1], inplace=True)


@dtypes
@pytest.mark.parametrize("api", GRAD_APIS)
def test_inplace_with_out_raises_value_error(api, dtype, rng):
    x = random_logits(rng, (6, 5), dtype=dtype)
    before = x.copy()
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="exclusive"):
        _grad_call(api, x, np.arange(6) % 5, out=out, inplace=True)
    assert_identical(x, before, "logits written despite the error")
    assert (out == 7.0).all()


@dtypes
@pytest.mark.parametrize("api", GRAD_APIS)
def test_inplace_read_only_raises(api, dtype, rng):
    x = random_logits(rng, (6, 5), dtype=dtype)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _grad_call(api, x, np.arange(6) % 5, inplace=True)


# --------------------------------------------------------------------------- return_lse


LSE_CASES = ["index", "index_all", "index_T4", "prob_all", "prob_T0.3"]


def _scipy_lse(x, temperature, axis=-1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return scipy.special.logsumexp(_as_f64(x) / temperature, axis=axis)


@dtypes
@pytest.mark.parametrize("v", CLASS_COUNTS)
@pytest.mark.parametrize("case", LSE_CASES)
@pytest.mark.parametrize("axis", [-1, 1])
def test_return_lse_is_logsumexp_of_logits_over_t(axis, case, v, dtype, rng, oracle):
    x, labels, kw = make_case(case, rng, 12, v, dtype)
    # Special rows: a one-class row, a huge row, a NaN row, an all-masked row (ignored).
    x[1] = -np.inf
    x[1, 0] = 3.0
    x[4, :2] = (1e30, -1e30)
    x[7, 1] = np.nan
    if case.startswith("index"):
        x[10] = -np.inf
        labels[10] = kw.get("ignore_index", -100)
    if axis == 1:
        x, labels, kw = _to_axis1(x, labels, kw, case.startswith("prob"))
    t = kw.get("temperature", 1.0)
    loss, grad, lse = sx.softmax_cross_entropy_with_grad(x, labels, axis=axis, return_lse=True, **kw)
    assert lse.dtype == np.float64
    assert lse.shape == ((4, 3) if axis == 1 else (12,))
    assert_loss(lse, _scipy_lse(x, t, axis), dtype, "lse vs scipy")
    ref = oracle(sx.softmax_cross_entropy_with_grad, x, labels, axis=axis, return_lse=True, **kw)
    assert_loss(lse, ref[2], dtype, "lse vs reference")
    assert_identical(loss, sx.softmax_cross_entropy_with_grad(x, labels, axis=axis, **kw)[0], "loss")


@dtypes
def test_returned_rows_are_not_the_reused_scratch_buffers(dtype, rng):
    """Per-row losses and log-sum-exps that a call only reduces live in
    buffers reused by the next call; whatever a call returns must survive
    the calls after it (float64 rows are returned without a conversion)."""
    x, labels, _ = make_case("index", rng, 300, 7, dtype)
    rows = sx.softmax_cross_entropy(x, labels, reduction="none")
    _, _, lse = sx.softmax_cross_entropy_with_grad(x, labels, return_lse=True)
    rows_copy, lse_copy = rows.copy(), lse.copy()
    for _ in range(2):  # other inputs, all sizes, through the scratch buffers
        for n in (50, 300, 900):
            y, lab, _ = make_case("index", rng, n, 7, dtype)
            sx.softmax_cross_entropy_with_grad(10 * y, lab)
            sx.softmax_cross_entropy(10 * y, lab, reduction="sum")
    assert_identical(rows, rows_copy, "reduction='none' rows after later calls")
    assert_identical(lse, lse_copy, "return_lse after later calls")
    assert not np.shares_memory(rows, lse)
    for buf in kernels.scratch(300, 2):
        assert not np.shares_memory(buf, rows) and not np.shares_memory(buf, lse)


def test_threads_calling_at_once_each_get_their_own_result(rng):
    """The scratch buffers are per thread: four Python threads running the
    (GIL-free) kernel at the same time get what one serial call gets."""
    import concurrent.futures

    cases = [make_case("index", rng, 20000, 10, np.float32)[:2] for _ in range(4)]
    want = [sx.softmax_cross_entropy_with_grad(x, y) for x, y in cases]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda c: sx.softmax_cross_entropy_with_grad(*c), cases))
            for (lw, gw), (lg, gg) in zip(want, got):
                assert_identical(lg, lw, "loss from a thread")
                assert_identical(gg, gw, "gradient from a thread")


# --------------------------------------------------------------------------- threads


@pytest.fixture
def restore_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads here")
    saved = numba.get_num_threads()
    yield
    numba.set_num_threads(saved)


THREAD_CASES = ["index", "index_all", "prob_all", "index_small_v", "softmax", "log_softmax", "logsumexp"]


@dtypes
@pytest.mark.parametrize("case", THREAD_CASES)
def test_thread_count_does_not_change_a_bit(case, dtype, rng, restore_threads):
    n, v = (20000, 10) if case == "index_small_v" else (512, 4096)
    rows_per_block = max(1, _cpu._BLOCK_ELEMENTS // v)
    assert math.ceil(n / rows_per_block) >= 4  # several blocks: the parallel path runs
    if case in SOFTMAX_FUNCS:
        x = random_logits(rng, (n, v), dtype=dtype)
        x[5, 3] = np.nan
        fn = getattr(sx, case)

        def run():
            return (fn(x),)
    else:
        x, labels, kw = make_case("index" if case == "index_small_v" else case, rng, n, v, dtype)
        x[5, 3] = np.nan

        def run():
            return (
                *sx.softmax_cross_entropy_with_grad(x, labels, reduction="none", **kw),
                sx.softmax_cross_entropy(x, labels, reduction="none", **kw),
            )

    numba.set_num_threads(1)
    one = run()
    numba.set_num_threads(2)
    two = run()
    for a, b in zip(one, two):
        assert_identical(a, b, "1 thread vs 2 threads")


# --------------------------------------------------------------------------- confident rows


def _confident(layout, dtype):
    """Logits whose row is [40, 0] (other classes -inf), label class 0."""
    v = 2 if layout.startswith("v2") else 100
    x = np.full((1, v), -np.inf, dtype=dtype)
    x[0, :2] = (40.0, 0.0)
    labels = np.array([0]) if layout.endswith("index") else np.eye(v)[:1]
    return x, labels


CONFIDENT = ["v2_index", "v2_prob", "v100_index", "v100_prob"]


def assert_relative(actual, expected, rel, what):
    actual, expected = float(actual), float(expected)
    assert abs(actual - expected) <= rel * abs(expected), f"{what}: got {actual!r}, expected {expected!r}"


@dtypes
@pytest.mark.parametrize("layout", CONFIDENT)
@pytest.mark.parametrize("api", APIS)
def test_confident_row_keeps_its_tiny_loss_and_gradient(api, layout, dtype):
    rel = 1e-6 if is32(dtype) else 1e-12
    tiny = math.exp(-40) / (1 + math.exp(-40))  # softmax of the other class
    x, labels = _confident(layout, dtype)
    loss, grad = call_api(api, x, labels, reduction="sum")
    if loss is not None:
        assert_relative(loss, math.log1p(math.exp(-40)), rel, "loss")
    if grad is not None:
        assert_relative(grad[0, 0], -tiny, rel, "gradient of the label")
        assert_relative(grad[0, 1], tiny, rel, "gradient of the other class")
        assert (grad[0, 2:] == 0).all()
    if api != "loss":
        result = _grad_call("grad", x, labels, reduction="sum", inplace=True)
        assert_relative(result[0, 0], -tiny, rel, "in-place gradient of the label")


@dtypes
def test_confident_row_softmax_and_log_softmax(dtype):
    rel = 1e-6 if is32(dtype) else 1e-12
    for v in (2, 100):
        x, _ = _confident(f"v{v}_index", dtype)
        p = sx.softmax(x)
        assert_relative(p[0, 1], math.exp(-40) / (1 + math.exp(-40)), rel, "softmax")
        assert_relative(sx.log_softmax(x)[0, 0], -math.log1p(math.exp(-40)), rel, "log_softmax")
        assert_relative(sx.logsumexp(x)[0], 40 + math.log1p(math.exp(-40)), rel, "logsumexp")


# --------------------------------------------------------------------------- softmax family


def _softmax_call(name, x, axis=-1, temperature=1.0):
    fn = getattr(sx, name)
    return fn(x, axis=axis) if name == "logsumexp" else fn(x, axis=axis, temperature=temperature)


def compare_softmax(oracle, name, x, dtype, axis=-1, temperature=1.0):
    got = _softmax_call(name, x, axis, temperature)
    ref = oracle(lambda z: _softmax_call(name, z, axis, temperature), x)
    assert np.asarray(got).dtype == np.dtype(dtype)
    assert_softmax_family(name, got, ref, x, dtype, axis, temperature)
    return got


@dtypes
@pytest.mark.parametrize("n", ODD_N)
@pytest.mark.parametrize("v", ODD_V)
@pytest.mark.parametrize("name", SOFTMAX_FUNCS)
def test_softmax_family_odd_shapes(name, v, n, dtype, rng, oracle):
    x = random_logits(rng, (n, v), scale=5.0, dtype=dtype)
    compare_softmax(oracle, name, x, dtype)


# (function, temperature): logsumexp has no temperature.
SOFTMAX_T = [(name, t) for name in SOFTMAX_FUNCS for t in (TEMPERATURES if name != "logsumexp" else [1.0])]
softmax_t = pytest.mark.parametrize("name, temperature", SOFTMAX_T, ids=[f"{n}-T{t:g}" for n, t in SOFTMAX_T])

SOFTMAX_SPECIAL = [
    "masked_but_one",
    "all_masked",
    "some_masked",
    "nan",
    "negative_nan",
    "posinf",
    "huge",
    "neg_huge_row",
    "zeros",
]


@dtypes
@pytest.mark.parametrize("v", [1, 2, 5, 17, 100])
@pytest.mark.parametrize("kind", SOFTMAX_SPECIAL)
@softmax_t
def test_softmax_family_special_rows(name, temperature, kind, v, dtype, rng, oracle):
    x = random_logits(rng, (9, v), scale=5.0, dtype=dtype)
    r = 4
    if kind == "masked_but_one":
        x[r] = -np.inf
        x[r, v // 2] = 1.5
    elif kind == "all_masked":
        x[r] = -np.inf
    elif kind == "some_masked":
        x[r, ::2] = -np.inf
    elif kind == "nan":
        x[r, v - 1] = np.nan
    elif kind == "negative_nan":
        x[r, v - 1] = np.copysign(x.dtype.type(np.nan), x.dtype.type(-1.0))
    elif kind == "posinf":
        x[r, 0] = np.inf
    elif kind == "huge":
        x[r, 0] = 1e30
        x[r, v - 1] = -1e30
        x[r + 1, 0] = -1e30
    elif kind == "neg_huge_row":
        x[r] = -1e30
    else:
        x[r] = 0.0
    got = compare_softmax(oracle, name, x, dtype, temperature=temperature)
    others = np.arange(9) != r
    ref_rows = compare_softmax(oracle, name, x[others], dtype, temperature=temperature)
    assert_identical(got[others], ref_rows, "other rows depend on the special row")
    if kind in ("nan", "negative_nan") or (kind == "posinf" and name != "logsumexp"):
        assert np.isnan(got[r]).all()


@dtypes
@pytest.mark.parametrize("shape", [(70, 5), (33, 1000)], ids=lambda s: f"{s[0]}x{s[1]}")
@softmax_t
def test_softmax_family_temperature(name, temperature, shape, dtype, rng, oracle):
    x = random_logits(rng, shape, scale=5.0, dtype=dtype)
    compare_softmax(oracle, name, x, dtype, temperature=temperature)


@dtypes
@pytest.mark.parametrize("v", [5, 100])
@pytest.mark.parametrize("layout", ["axis1", *LAYOUTS])
@pytest.mark.parametrize("name", SOFTMAX_FUNCS)
def test_softmax_family_layouts_equal_contiguous(name, layout, v, dtype, rng, oracle):
    x = random_logits(rng, (12, v), scale=5.0, dtype=dtype)
    flat = _softmax_call(name, x, temperature=0.3 if name != "logsumexp" else 1.0)
    t = 0.3 if name != "logsumexp" else 1.0
    if layout == "axis1":
        x3 = np.ascontiguousarray(x.reshape(4, 3, v).transpose(0, 2, 1))
        got = compare_softmax(oracle, name, x3, dtype, axis=1, temperature=t)
        got = got.reshape(12) if name == "logsumexp" else got.transpose(0, 2, 1).reshape(12, v)
    else:
        view, _, _ = _non_contiguous(x, layout)
        got = compare_softmax(oracle, name, view, dtype, temperature=t)
    assert_identical(got, flat, f"{layout} vs contiguous")


@dtypes
@pytest.mark.parametrize("shape", [(0, 5), (0, 100), (4, 0), (0, 0)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", SOFTMAX_FUNCS)
def test_softmax_family_empty(name, shape, dtype, oracle):
    x = np.zeros(shape, dtype=dtype)
    got = compare_softmax(oracle, name, x, dtype)
    if name == "logsumexp":
        assert got.shape == (shape[0],) and (got == -np.inf).all()
    else:
        assert got.shape == shape


# --------------------------------------------------------------------------- sigmoid heads


@dtypes
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (257, 15), (5000, 14), (40, 1000)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sigmoid_kernel_matches_reference(shape, reduction, dtype, rng, oracle):
    """The vectorised sigmoid kernel (vector tails, serial and parallel blocks) against the exact path,
    with weights, pos_weight, sample weights and soft labels; the loss alone is bit-identical to the
    loss that comes with the gradient."""
    x = random_logits(rng, shape, scale=8.0, dtype=dtype)
    x.flat[:: max(1, x.size // 7)] *= 1e3  # a few saturated elements: |z| in the thousands
    y = rng.uniform(0, 1, shape).round(1).astype(dtype)
    kw = dict(pos_weight=rng.uniform(0.5, 2, shape[1]), weight=rng.uniform(0, 1, shape[1]),
              sample_weight=rng.uniform(0, 2, shape[0]), reduction=reduction)  # fmt: skip
    loss, grad = sx.sigmoid_cross_entropy_with_grad(x, y, **kw)
    ref_loss, ref_grad = oracle(sx.sigmoid_cross_entropy_with_grad, x, y.astype(np.float64), **kw)
    assert_loss(loss, ref_loss, dtype)
    assert_grad(grad, ref_grad, dtype)
    assert_identical(sx.sigmoid_cross_entropy(x, y, **kw), loss, "loss alone vs with the gradient")
    assert_identical(sx.sigmoid_cross_entropy_grad(x, y, **kw), grad, "gradient alone vs with the loss")


@pytest.mark.parametrize("with_sample_weight", [False, True])
@pytest.mark.parametrize("shape", [(300, 14), (7, 64), (1000, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_sigmoid_flat_tiles_equal_the_row_path(shape, with_sample_weight, rng):
    """Few weighted labels run as flat tiles of rows; they must give what the row path gives."""
    from softxent.kernels import _sigmoid

    n, k = shape
    z = rng.normal(0, 6, shape)
    z[0, 0], z[1, 1] = np.nan, 800.0
    y = rng.uniform(0, 1, shape).round(1)
    pos_w, w = rng.uniform(0.5, 2, k), rng.uniform(0, 1, k)
    sw = rng.uniform(0, 2, n) if with_sample_weight else np.empty(0)
    outs = []
    for run in (_sigmoid._total_weighted_flat, _sigmoid._total_weighted_rows):
        grad, elem = np.empty(shape), np.empty(shape)
        total, bad = run(z, y, pos_w, w, sw, 0.5, grad, True, elem, 0, n)
        assert not bad
        outs.append((grad, elem, total))
    # Two separately compiled loops over the same per-element function: equal
    # up to the float64 rounding of the loss sums, not necessarily in the last bit.
    for flat, by_row in zip(outs[0][:2], outs[1][:2], strict=True):
        np.testing.assert_allclose(flat, by_row, rtol=1e-14, atol=1e-300)
    assert np.isnan(outs[0][2]) and np.isnan(outs[1][2])  # the NaN logit's loss reaches the total
    assert np.isnan(outs[0][1][0, 0]) and np.isfinite(outs[0][1][2:]).all()


# -- code generation: the hot loop stays vectorised


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "inplace"])
def test_pass_two_is_vectorised_in_and_out_of_place(dtype, in_place):
    """Pass 2 (one exponential per element) must compile to SIMD code, written
    over the logits or not: twice a harmless-looking change (an aliasing
    buffer, a loop bound) left it scalar and 3-5x slower with identical
    results, which no numerical test can see. Compiled afresh here, since
    numba does not show the code of a cached function."""
    import re

    fresh = numba.njit(**{**_cpu.JIT_SUM, "cache": False})(_cpu._exp_store.py_func)
    x = np.linspace(-3.0, 0.0, 1000).astype(dtype)
    fresh(x, None if in_place else np.empty_like(x), 0.0, 1.0, x[::-1].copy())  # one loop per specialisation
    ir = fresh.inspect_llvm(fresh.signatures[0])
    kind = "float" if np.dtype(dtype) == np.float32 else "double"
    widths = {int(w) for w in re.findall(rf"<(\d+) x {kind}>", ir)}
    assert widths and max(widths) >= 4, f"no SIMD {kind} vectors in pass 2 (vector widths found: {widths})"


# -- the compiled label pass of the wrappers


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("with_weight", [False, True])
def test_compiled_label_pass_matches_numpy(label_dtype, with_weight, monkeypatch):
    from softxent import _losses
    from softxent._xent_common import compiled_index_labels

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, (4, 9)).astype(label_dtype)
    labels[0, 3] = labels[2, 8] = -100
    weight = rng.uniform(0.1, 2.0, 7) if with_weight else None
    kern = kernels.cpu(np.dtype(np.float64))
    fast = compiled_index_labels(labels, kern, 7, weight, -100)
    assert fast is not None and not isinstance(fast, int)
    monkeypatch.setattr(_losses, "compiled_index_labels", lambda *args: None)
    slow = _losses._parse_labels(labels, (4, 9, 7), kern, 2, weight, -100)
    np.testing.assert_array_equal(fast.index, slow.index)
    np.testing.assert_array_equal(fast.row_weight, slow.row_weight)
    assert fast.index[0, 3] == -1 and fast.row_weight[2, 8] == 0.0


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad_value", [7, -1, -100])
def test_compiled_label_pass_raises_the_numpy_message(label_dtype, bad_value):
    from softxent import _losses
    from softxent._xent_common import compiled_index_labels

    labels = np.array([[0, 1, 2], [3, bad_value, 4]], dtype=label_dtype)
    ignore = None if bad_value == -100 else -100  # -100 is bad only when nothing is ignored
    kern = kernels.cpu(np.dtype(np.float64))
    assert compiled_index_labels(labels, kern, 7, None, ignore) == 4  # the flat position of the bad label
    with pytest.raises(ValueError) as fast:
        _losses._parse_labels(labels, (2, 3, 7), kern, 2, None, ignore)
    with pytest.raises(ValueError) as slow:
        _losses.check_class_labels(labels.astype(np.int64), 7, ignore)
    assert str(fast.value) == str(slow.value)
    assert f"got {bad_value} at index (1, 1)" in str(fast.value)


@dtypes
@pytest.mark.parametrize("axis", [-1, 0])
def test_float_probability_labels_give_the_results_of_converted_ones(dtype, axis, rng):
    """float32 and float64 probability labels go to the kernel as they are
    (one compiled check instead of a float64 copy): the results of the same
    values in float16, which the general check converts to float64. Each label
    dtype is its own compiled specialisation, so the comparison is at the
    documented bound: comparing bits failed in CI when one specialisation came
    from numba's cache and the other was compiled in the process."""
    x = random_logits(rng, (300, 37), dtype=dtype)
    y16 = _unnormalised_rows(rng, 300, 37).astype(np.float16)  # values exact in every dtype below
    if axis == 0:
        x, y16 = np.ascontiguousarray(x.T), np.ascontiguousarray(y16.T)
    for kw in ({}, {"label_smoothing": 0.1, "weight": rng.uniform(0.5, 2.0, 37)}):
        want = sx.softmax_cross_entropy_with_grad(x, y16, axis=axis, reduction="none", **kw)
        for label_dtype in (np.float32, np.float64):
            got = sx.softmax_cross_entropy_with_grad(x, y16.astype(label_dtype), axis=axis, reduction="none", **kw)
            assert_same_rounding(got[0], want[0], dtype, f"loss, {np.dtype(label_dtype)} labels")
            assert_same_rounding(got[1], want[1], dtype, f"gradient, {np.dtype(label_dtype)} labels")


@dtypes
@pytest.mark.parametrize("bad", [np.nan, -0.5, np.inf, -np.inf])
def test_bad_float_probability_labels_name_the_first_one(dtype, bad, rng):
    """The compiled check finds the first bad probability past its first block
    (4096 entries) and raises the general check's message."""
    x = random_logits(rng, (3, 5000), dtype=dtype)
    y = _unnormalised_rows(rng, 3, 5000).astype(dtype)
    y[1, 4000] = bad
    y[2, 7] = -1.0  # a later bad entry is not the one reported
    with pytest.raises(
        ValueError, match=r"labels must be finite probabilities non-negative, got .* at index \(1, 4000\)"
    ):
        sx.softmax_cross_entropy_with_grad(x, y)


@dtypes
def test_strided_probability_labels_equal_contiguous_ones(dtype, rng):
    """Probability labels that are a strided view reach the kernel as a
    contiguous copy: the same bits as contiguous labels."""
    x = random_logits(rng, (50, 40), dtype=dtype)
    wide = _unnormalised_rows(rng, 50, 80).astype(dtype)
    strided = wide[:, ::2]
    assert not strided.flags.c_contiguous
    got = sx.softmax_cross_entropy_with_grad(x, strided, reduction="none")
    want = sx.softmax_cross_entropy_with_grad(x, np.ascontiguousarray(strided), reduction="none")
    assert_identical(got[0], want[0], "loss")
    assert_identical(got[1], want[1], "gradient")
