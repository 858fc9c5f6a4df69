"""The short path of the commonest NumPy call (softxent._fused.plain_index_call).

It must return exactly what the general path returns for the calls it takes
(the same kernel, the same arguments), take the calls it is meant for, and
hand every other call to the general path untouched (results and errors).
"""

from __future__ import annotations

import numpy as np
import pytest

import softxent as sx
from softxent import _fused, _losses, kernels

pytestmark = pytest.mark.skipif(
    kernels.cpu(np.dtype(np.float32)) is None, reason="the short path runs the compiled kernels only"
)

FUNCS = {
    "loss": sx.softmax_cross_entropy,
    "grad": sx.softmax_cross_entropy_grad,
    "with_grad": sx.softmax_cross_entropy_with_grad,
}


def _data(n, v, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, v)) * scale).astype(dtype), rng.integers(0, v, n)


def _outcome(fn, *args, **kw):
    try:
        return "ok", fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - the test compares what each path raises
        return "raised", (type(exc), str(exc))


def _same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    x, y = np.asarray(a), np.asarray(b)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


@pytest.fixture
def spy(monkeypatch):
    """Records what the short path returned (None: the call went on to the general path)."""
    seen = []

    def recording(*args):
        out = _fused.plain_index_call(*args)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(_losses, "plain_index_call", recording)
    return seen


def _general(monkeypatch, fn, *args, **kw):
    with monkeypatch.context() as m:
        m.setattr(_losses, "plain_index_call", lambda *a: None)
        return _outcome(fn, *args, **kw)


TAKEN = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(ignore_index=None),
    dict(ignore_index=-1),
    dict(label_smoothing=0, temperature=1, z_loss=0),  # ints equal to the defaults
    dict(axis=1),
]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 10), (300, 100), (40, 1000), (20000, 7)])
@pytest.mark.parametrize("kw", TAKEN, ids=str)
def test_the_short_path_takes_the_plain_call_and_matches_the_general_path(monkeypatch, spy, func, dtype, shape, kw):
    z, y = _data(*shape, dtype)
    got = _outcome(FUNCS[func], z, y, **kw)
    assert spy == [True]
    want = _general(monkeypatch, FUNCS[func], z, y, **kw)
    assert got[0] == want[0] == "ok"
    _same(got[1], want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["huge", "tiny", "masked classes", "one class far ahead", "equal logits"])
def test_the_short_path_on_extreme_logits(monkeypatch, spy, dtype, case):
    z, y = _data(257, 12, dtype, seed=3)
    big = np.finfo(dtype).max / 4
    if case == "huge":
        z[::2] *= big / 10
    elif case == "tiny":
        z *= np.finfo(dtype).tiny
    elif case == "masked classes":
        z[:, ::3] = -np.inf
        y = np.full_like(y, 1)
    elif case == "one class far ahead":
        z[np.arange(len(y)), y] = 1e4
    else:
        z[:] = 1.5
    got = _outcome(sx.softmax_cross_entropy_with_grad, z, y)
    assert spy == [True]
    want = _general(monkeypatch, sx.softmax_cross_entropy_with_grad, z, y)
    assert got[0] == want[0] == "ok"
    _same(got[1], want[1])
    assert np.isfinite(got[1][1]).all()


def _not_plain_cases():
    z, y = _data(50, 6, np.float32, seed=1)
    nan_row = z.copy()
    nan_row[7, 2] = np.nan
    masked_row = z.copy()
    masked_row[4] = -np.inf
    ignored = y.copy()
    ignored[[3, 9]] = -100
    bad = y.copy()
    bad[11] = 6
    negative = y.copy()
    negative[2] = -1
    return {
        "ignored rows": (z, ignored, {}),
        "label out of range": (z, bad, {}),
        "negative label without ignore_index": (z, negative, dict(ignore_index=None)),
        "negative label not the ignore_index": (z, negative, {}),
        "NaN in a row": (nan_row, y, {}),
        "every class masked": (masked_row, y, {}),
        "every class masked, row ignored": (masked_row, np.where(np.arange(50) == 4, -100, y), {}),
        "int32 labels": (z, y.astype(np.int32), {}),
        "float labels": (z, y.astype(np.float64), {}),
        "list labels": (z, y.tolist(), {}),
        "list logits": (z.tolist(), y, {}),
        "float16 logits": (z.astype(np.float16), y, {}),
        "Fortran logits": (np.asfortranarray(z), y, {}),
        "strided labels": (z, np.repeat(y, 2)[::2], {}),
        "3-D logits": (z.reshape(5, 10, 6), y.reshape(5, 10), {}),
        "classes first": (np.ascontiguousarray(z.T), y, dict(axis=0)),
        "probability labels": (z, np.eye(6, dtype=np.float32)[y], {}),
        "numpy axis": (z, y, dict(axis=np.int64(-1))),
        "ignore_index 0": (z, y, dict(ignore_index=0)),
        "ignore_index a numpy int": (z, ignored, dict(ignore_index=np.int64(-100))),
        "ignore_index True": (z, y, dict(ignore_index=True)),
        "label_smoothing False": (z, y, dict(label_smoothing=False)),
        "label_smoothing 0.1": (z, y, dict(label_smoothing=0.1)),
        "temperature 2": (z, y, dict(temperature=2.0)),
        "temperature a numpy float": (z, y, dict(temperature=np.float32(1.0))),
        "z_loss": (z, y, dict(z_loss=1e-3)),
        "softcap": (z, y, dict(softcap=5.0)),
        "class weights": (z, y, dict(weight=np.ones(6))),
        "sample weights": (z, y, dict(sample_weight=np.ones(50))),
        "reduction MEAN": (z, y, dict(reduction="MEAN")),
        "reduction None": (z, y, dict(reduction=None)),
        "empty batch": (z[:0], y[:0], {}),
        "no classes": (z[:, :0], y, {}),
        "labels too short": (z, y[:-1], {}),
    }


NOT_PLAIN = _not_plain_cases()


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_every_other_call_goes_to_the_general_path_unchanged(monkeypatch, spy, name):
    z, y, kw = NOT_PLAIN[name]
    got = _outcome(sx.softmax_cross_entropy_with_grad, z, y, **kw)
    assert not any(spy), "the short path took a call it must leave alone"
    want = _general(monkeypatch, sx.softmax_cross_entropy_with_grad, z, y, **kw)
    assert got[0] == want[0]
    if got[0] == "ok":
        _same(got[1], want[1])
    else:
        assert got[1] == want[1]


def test_inplace_and_lse_never_reach_the_short_path(spy):
    z, y = _data(30, 4, np.float32)
    sx.softmax_cross_entropy_with_grad(z.copy(), y, inplace=True)
    sx.softmax_cross_entropy_with_grad(z, y, return_lse=True)
    assert spy == []


@pytest.mark.parametrize("func", ["grad", "with_grad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (64, 10), (300, 100), (20000, 7)])
def test_out_takes_the_short_path_and_comes_back_filled(monkeypatch, spy, func, dtype, shape):
    """``out=`` is the way to reuse a gradient buffer; it must not cost the
    general path's checks (it did: slower than letting softxent allocate)."""
    z, y = _data(*shape, dtype)
    buf = np.full_like(z, np.nan)
    got = FUNCS[func](z, y, out=buf)
    assert spy == [True]
    want_buf = np.full_like(z, np.nan)
    want = _general(monkeypatch, FUNCS[func], z, y, out=want_buf)
    assert want[0] == "ok"
    grad = got[1] if func == "with_grad" else got
    assert grad is buf
    _same(got, want[1])
    _same(buf, want_buf)


def _out_cases():
    nan_row, y, _ = NOT_PLAIN["NaN in a row"]
    masked_row, _, _ = NOT_PLAIN["every class masked"]
    z = NOT_PLAIN["int32 labels"][0]  # the plain logits
    read_only = np.empty_like(z)
    read_only.flags.writeable = False

    def shifted(logits):  # a buffer over the logits' own memory, one row further on
        whole = np.empty((logits.shape[0] + 1, logits.shape[1]), logits.dtype)
        whole[:-1] = logits
        return whole[:-1], whole[1:]

    return {
        "out float64 for float32 logits": (z, y, lambda lg: (lg, np.empty(lg.shape))),
        "out of another shape": (z, y, lambda lg: (lg, np.empty_like(lg[1:]))),
        "Fortran-ordered out": (z, y, lambda lg: (lg, np.asfortranarray(np.empty_like(lg)))),
        "read-only out": (z, y, lambda lg: (lg, read_only)),
        "out a list": (z, y, lambda lg: (lg, lg.tolist())),
        "out is the logits": (z, y, lambda lg: (lg, lg)),
        "out overlaps the logits": (z, y, shifted),
        "NaN in a row": (nan_row, y, lambda lg: (lg, np.empty_like(lg))),
        "every class masked": (masked_row, y, lambda lg: (lg, np.empty_like(lg))),
    }


OUT_CASES = _out_cases()


@pytest.mark.parametrize("name", OUT_CASES)
def test_out_the_short_path_cannot_take_goes_to_the_general_path_unchanged(monkeypatch, spy, name):
    """Each call gets fresh logits (an ``out`` over them overwrites them)."""
    z, y, make = OUT_CASES[name]
    logits, out = make(z.copy())
    got = _outcome(sx.softmax_cross_entropy_with_grad, logits, y, out=out)
    got_out = np.array(out, copy=True)
    logits, out = make(z.copy())
    want = _general(monkeypatch, sx.softmax_cross_entropy_with_grad, logits, y, out=out)
    assert got[0] == want[0]
    if got[0] == "ok":
        _same(got[1], want[1])
        _same(got_out, np.asarray(out))
    else:
        assert got[1] == want[1]
    # A bad ``out`` is declined before anything runs; a NaN row reaches the
    # kernel, whose NaN sum sends the call on (``out`` is then written again).
    assert spy == [False]
