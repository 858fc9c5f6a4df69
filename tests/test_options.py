"""Options mean the same everywhere: temperature, z-loss and soft-capping in every front end.

The oracle is written here from the definition (softxent._contract.XentOptions):
cap, then divide by the temperature, then torch's own
``F.cross_entropy`` on the transformed logits in float64, plus
``z_loss * lse^2`` per row not ignored (its mean over those rows' sample
weight); torch's autograd differentiates it. Every front end (the NumPy
kernels, the exact NumPy path, softxent.torch.cross_entropy on the CPU and
linear_cross_entropy) must give its loss and gradient to the dtype's
tolerance, and the gradients also match 4th-order finite differences.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import softxent as sx  # noqa: E402
from softxent.torch import (  # noqa: E402
    CrossEntropyLoss,
    LinearCrossEntropyLoss,
    cross_entropy,
    linear_cross_entropy,
)

from conftest import TOL, finite_difference_grad  # noqa: E402

N, K = 7, 5
IGNORE = -100


def oracle(z, labels, *, weight=None, ignore_index=IGNORE, label_smoothing=0.0, sample_weight=None,
           temperature=1.0, z_loss=0.0, softcap=None, reduction="mean"):  # fmt: skip
    """Loss and gradient (float64 NumPy) from the definition, differentiated by torch's autograd."""
    zt = torch.tensor(np.asarray(z, dtype=np.float64), requires_grad=True)
    u = zt if softcap is None else softcap * torch.tanh(zt / softcap)
    u = u / temperature
    y = torch.as_tensor(np.asarray(labels))
    w = None if weight is None else torch.as_tensor(np.asarray(weight, dtype=np.float64))
    s = torch.ones(len(u), dtype=torch.float64) if sample_weight is None else torch.as_tensor(sample_weight)
    prob = y.is_floating_point()
    if prob:
        y = y.double()
        rows = F.cross_entropy(u, y, weight=w, reduction="none", label_smoothing=label_smoothing)
        kept = torch.ones(len(u), dtype=torch.bool)
        denominator = s.sum()
    else:
        rows = F.cross_entropy(
            u, y, weight=w, ignore_index=ignore_index, reduction="none", label_smoothing=label_smoothing
        )
        kept = y != ignore_index
        w_y = torch.ones(len(u), dtype=torch.float64) if w is None else w[torch.where(kept, y, 0)]
        denominator = (s * torch.where(kept, w_y, 0.0)).sum()
    lse = torch.logsumexp(torch.where(kept[:, None], u, 0.0), dim=1)
    z_rows = torch.where(kept, z_loss * lse * lse, 0.0)
    if reduction == "none":
        loss = s * (rows + z_rows)
        total = loss.sum()
    else:
        ce, zl = (s * rows).sum(), (s * z_rows).sum()
        if reduction == "mean":
            n_kept = (s * kept).sum()
            ce = ce / denominator if denominator > 0 else ce * 0.0
            zl = zl / n_kept if n_kept > 0 else zl * 0.0
        loss = total = ce + zl
    (grad,) = torch.autograd.grad(total, zt)
    return loss.detach().numpy(), grad.numpy()


# --------------------------------------------------------------------------- cases

OPTIONS = [
    dict(temperature=2.5),
    dict(temperature=0.4),
    dict(z_loss=0.01),
    dict(z_loss=0.3, label_smoothing=0.2),
    dict(softcap=2.0),
    dict(softcap=1.5, temperature=0.7),
    dict(softcap=3.0, z_loss=0.05, temperature=1.8),
    dict(temperature=2.0, label_smoothing=0.1, z_loss=0.02, softcap=4.0),
]
LABELS = ["index", "ignored", "weighted", "probs"]


def make_case(kind, seed=0, n=N, k=K):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * 3.0
    weight = None
    if kind == "probs":
        labels = rng.dirichlet(np.ones(k), size=n)
    else:
        labels = rng.integers(0, k, n)
        if kind in ("ignored", "weighted"):
            labels[[1, n - 1]] = IGNORE
        if kind == "weighted":
            weight = rng.uniform(0.2, 2.0, k)
            weight[labels[0]] = 0.0  # a counted row whose class weighs 0 keeps its z-loss
    return z, labels, weight


def _id(opts):
    return ",".join(f"{k}={v}" for k, v in opts.items())


# --------------------------------------------------------------------------- NumPy


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", LABELS)
@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_numpy_matches_the_oracle(backend, dtype, opts, kind, reduction):
    z, labels, weight = make_case(kind)
    z = z.astype(dtype)
    expected, expected_grad = oracle(z, labels, weight=weight, reduction=reduction, **opts)
    args = dict(weight=weight, reduction=reduction, **opts)
    loss, grad = sx.softmax_cross_entropy_with_grad(z, labels, **args)
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(loss, expected, **TOL[dtype])
    np.testing.assert_allclose(grad, expected_grad, **TOL[dtype])
    np.testing.assert_allclose(sx.softmax_cross_entropy(z, labels, **args), loss, **TOL[dtype])
    np.testing.assert_allclose(sx.softmax_cross_entropy_grad(z, labels, **args), grad, **TOL[dtype])


@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
def test_numpy_sample_weights_scale_the_rows_and_the_z_loss_mean(backend, opts):
    z, labels, weight = make_case("weighted", seed=3)
    sw = np.random.default_rng(1).uniform(0.0, 3.0, N)
    sw[2] = 0.0
    expected, expected_grad = oracle(z, labels, weight=weight, sample_weight=sw, **opts)
    loss, grad = sx.softmax_cross_entropy_with_grad(z, labels, weight=weight, sample_weight=sw, **opts)
    np.testing.assert_allclose(loss, expected, **TOL[np.float64])
    np.testing.assert_allclose(grad, expected_grad, **TOL[np.float64])


@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
@pytest.mark.parametrize("kind", ["ignored", "probs"])
def test_numpy_gradient_matches_finite_differences(backend, opts, kind):
    z, labels, weight = make_case(kind, seed=5, n=4, k=4)
    args = dict(weight=weight, **opts)
    _, grad = sx.softmax_cross_entropy_with_grad(z, labels, **args)
    fd = finite_difference_grad(lambda v: float(sx.softmax_cross_entropy(v, labels, **args)), z)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)


def test_numpy_options_on_another_axis_and_in_buffers(backend):
    z, labels, _ = make_case("ignored", seed=7)
    opts = dict(temperature=1.5, z_loss=0.1, softcap=2.5)
    expected, expected_grad = oracle(z, labels, **opts)
    loss, grad = sx.softmax_cross_entropy_with_grad(np.ascontiguousarray(z.T), labels, axis=0, **opts)
    np.testing.assert_allclose(loss, expected, **TOL[np.float64])
    np.testing.assert_allclose(grad.T, expected_grad, **TOL[np.float64])
    out = np.empty_like(z)
    _, got = sx.softmax_cross_entropy_with_grad(z, labels, out=out, **opts)
    assert got is out
    np.testing.assert_allclose(out, expected_grad, **TOL[np.float64])
    buf = z.copy()
    _, got = sx.softmax_cross_entropy_with_grad(buf, labels, inplace=True, **opts)
    assert got is buf
    np.testing.assert_allclose(buf, expected_grad, **TOL[np.float64])


def test_numpy_return_lse_is_of_the_transformed_logits(backend):
    z, labels, _ = make_case("index", seed=2)
    _, _, lse = sx.softmax_cross_entropy_with_grad(z, labels, temperature=2.0, softcap=3.0, return_lse=True)
    np.testing.assert_allclose(lse, np.log(np.exp(3.0 * np.tanh(z / 3.0) / 2.0).sum(axis=1)), rtol=1e-14)


def test_numpy_ignored_rows_with_bad_logits_stay_zero(backend):
    z, labels, _ = make_case("ignored", seed=4)
    z[1] = np.nan
    z[N - 1] = -np.inf
    opts = dict(z_loss=0.1, softcap=2.0)
    loss, grad = sx.softmax_cross_entropy_with_grad(z, labels, reduction="none", **opts)
    assert loss[1] == 0 and loss[N - 1] == 0 and not grad[[1, N - 1]].any()
    assert np.isfinite(loss).all() and np.isfinite(grad).all()


def test_numpy_z_loss_names_a_kept_masked_row(backend):
    z, labels, weight = make_case("weighted", seed=0)
    z[0] = -np.inf  # its class weighs 0: no cross-entropy, but the z-loss needs its lse
    with pytest.raises(ValueError, match=r"logits row \(0,\) is -inf for every class"):
        sx.softmax_cross_entropy(z, labels, weight=weight, z_loss=0.1)
    sx.softmax_cross_entropy(z, labels, weight=weight)  # without the z-loss the row takes no part


def test_numpy_all_ignored_batch_is_zero(backend):
    z, labels, _ = make_case("index")
    labels[:] = IGNORE
    loss, grad = sx.softmax_cross_entropy_with_grad(z, labels, z_loss=0.2, softcap=2.0, temperature=3.0)
    assert loss == 0 and not grad.any()


# --------------------------------------------------------------------------- torch


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", LABELS)
@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_torch_cross_entropy_matches_the_oracle(dtype, opts, kind, reduction):
    z, labels, weight = make_case(kind)
    zt = torch.tensor(z, dtype=dtype, requires_grad=True)
    z_np = zt.detach().double().numpy()
    expected, expected_grad = oracle(z_np, labels, weight=weight, reduction=reduction, **opts)
    target = torch.as_tensor(labels, dtype=dtype if kind == "probs" else torch.int64)
    w = None if weight is None else torch.tensor(weight, dtype=dtype)
    loss = cross_entropy(zt, target, w, reduction=reduction, **opts)
    (loss.sum() if reduction == "none" else loss).backward()
    tol = TOL[np.float64 if dtype == torch.float64 else np.float32]
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.detach().double().numpy(), expected, **tol)
    np.testing.assert_allclose(zt.grad.double().numpy(), expected_grad, **tol)
    module = CrossEntropyLoss(w, reduction=reduction, **opts)
    torch.testing.assert_close(module(zt, target), loss, rtol=0, atol=0)


@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
def test_torch_gradient_matches_finite_differences(opts):
    z, labels, _ = make_case("ignored", seed=6, n=4, k=4)
    target = torch.as_tensor(labels)
    zt = torch.tensor(z, requires_grad=True)
    cross_entropy(zt, target, **opts).backward()
    fd = finite_difference_grad(lambda v: float(cross_entropy(torch.from_numpy(v), target, **opts)), z)
    np.testing.assert_allclose(zt.grad.numpy(), fd, rtol=1e-7, atol=1e-9)


def test_torch_temperature_on_a_spatial_batch_in_bfloat16():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 3, 4, generator=g).bfloat16().requires_grad_()
    y = torch.randint(0, 5, (2, 3, 4), generator=g)
    loss = cross_entropy(z, y, temperature=0.6, reduction="none")
    assert loss.dtype == torch.bfloat16 and loss.shape == (2, 3, 4)
    expected = F.cross_entropy(z.detach().double() / 0.6, y, reduction="none")
    torch.testing.assert_close(loss.double(), expected, rtol=2**-7, atol=2**-7)
    loss.sum().backward()
    assert z.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_linear_cross_entropy_matches_the_oracle(opts, reduction, chunk_size):
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.standard_normal((N, 6)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((K, 6)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(K), requires_grad=True)
    y = torch.as_tensor(rng.integers(0, K, N))
    y[2] = IGNORE
    loss = linear_cross_entropy(x, w, y, b, reduction=reduction, chunk_size=chunk_size, **opts)
    grads = torch.autograd.grad(loss.sum(), (x, w, b))
    # The oracle's (N, K) gradient, chained through the linear layer by hand.
    z = (x @ w.T + b).detach().numpy()
    expected, dz = oracle(z, y.numpy(), reduction=reduction, **opts)
    dz = torch.from_numpy(dz)
    np.testing.assert_allclose(loss.detach().numpy(), expected, **TOL[np.float64])
    for got, want in zip(grads, (dz @ w.detach(), dz.T @ x.detach(), dz.sum(0))):
        np.testing.assert_allclose(got.numpy(), want.numpy(), **TOL[np.float64])
    module = LinearCrossEntropyLoss(reduction=reduction, chunk_size=chunk_size, **opts)
    torch.testing.assert_close(module(x, w, y, b), loss, rtol=0, atol=0)


def test_linear_cross_entropy_temperature_with_shift_and_float32():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    w = torch.randn(11, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 11, (2, 5), generator=g)
    loss = linear_cross_entropy(x, w, y, temperature=1.7, softcap=2.0, shift=True)
    z = (x @ w.T)[:, :-1].reshape(-1, 11)
    expected = F.cross_entropy(2.0 * torch.tanh(z / 2.0) / 1.7, y[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    dx, dw = torch.autograd.grad(loss, (x, w))
    ex, ew = torch.autograd.grad(expected, (x, w))
    torch.testing.assert_close(dx, ex)
    torch.testing.assert_close(dw, ew)


def test_the_default_temperature_adds_no_operation():
    z = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    plain = cross_entropy(z, y)
    assert plain.grad_fn.name() == cross_entropy(z, y, temperature=1.0).grad_fn.name()
    assert "Div" not in plain.grad_fn.name()
    assert "Div" in str(cross_entropy(z, y, temperature=2.0).grad_fn.next_functions)


# --------------------------------------------------------------------------- checks


BAD = [
    ("temperature", 0.0, ValueError, "temperature must be > 0, got 0.0"),
    ("temperature", -1.0, ValueError, "temperature must be > 0"),
    ("temperature", float("inf"), ValueError, "temperature must be finite"),
    ("temperature", "2", TypeError, "temperature must be a real number"),
    ("temperature", True, TypeError, "temperature must be a real number"),
    ("z_loss", -0.1, ValueError, "z_loss must be >= 0, got -0.1"),
    ("z_loss", float("nan"), ValueError, "z_loss must be finite"),
    ("softcap", 0.0, ValueError, "softcap must be > 0, got 0.0"),
    ("softcap", "x", TypeError, "softcap must be a real number"),
]


@pytest.mark.parametrize(("name", "value", "error", "text"), BAD, ids=lambda v: str(v)[:20])
def test_bad_options_are_named_in_every_front_end(name, value, error, text):
    z = np.zeros((2, 3))
    y = np.array([0, 1])
    zt, yt = torch.zeros(2, 3), torch.tensor([0, 1])
    calls = [
        lambda: sx.softmax_cross_entropy(z, y, **{name: value}),
        lambda: sx.softmax_cross_entropy_grad(z, y, **{name: value}),
        lambda: sx.softmax_cross_entropy_with_grad(z, y, **{name: value}),
        lambda: cross_entropy(zt, yt, **{name: value}),
        lambda: CrossEntropyLoss(**{name: value}),
        lambda: linear_cross_entropy(zt, torch.zeros(4, 3), yt, **{name: value}),
        lambda: LinearCrossEntropyLoss(**{name: value}),
    ]
    for call in calls:
        with pytest.raises(error, match=text.replace("(", r"\(").replace(".", r"\.")):
            call()


def test_options_accept_numbers_of_any_kind():
    z, labels, _ = make_case("index")
    zt, yt = torch.tensor(z), torch.as_tensor(labels)
    base = cross_entropy(zt, yt, temperature=2.0, z_loss=0.1, softcap=3.0)
    for t, zl, c in itertools.product((2, np.float32(2.0), torch.tensor(2.0)), (np.float64(0.1),), (3,)):
        torch.testing.assert_close(cross_entropy(zt, yt, temperature=t, z_loss=zl, softcap=c), base)
    np.testing.assert_allclose(
        sx.softmax_cross_entropy(z, labels, temperature=np.float32(2.0), z_loss=np.float64(0.1), softcap=3),
        base.item(),
        rtol=1e-14,
    )
