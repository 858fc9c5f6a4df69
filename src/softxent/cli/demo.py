"""``softxent demo``: the seed's derivation, run on numbers and checked.

Prints, for the seed's own music example, the softmax (eq. 1/8), the
cross-entropy loss (eq. 7), the gradient a - y (eq. 16) and a·Σy - y (eq. 15)
beside finite differences, the entropy/KL/cross-entropy identity (eq. 3-6),
and independent sigmoid heads (eq. 2) for labels that are not exclusive.
Returns exit code 0 when every analytic gradient agrees with finite
differences, 1 otherwise.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from .. import (
    cross_entropy,
    entropy,
    kl_divergence,
    logsumexp,
    sigmoid,
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_grad,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
)
from .._gradcheck import finite_difference_grad

__all__ = ["run_demo"]

# Analytic and finite-difference gradients must agree to this (float64, h=1e-3).
AGREEMENT = 1e-8

GENRES = ["classical", "country", "rock", "jazz"]
TAGS = ["vocal", "dance", "soundtrack", "pop"]


def _row(label: str, values, fmt: str = "{:>11.6f}") -> str:
    return f"  {label:<26}" + "".join(fmt.format(v) for v in np.ravel(values))


def _header(names) -> str:
    return f"  {'':<26}" + "".join(f"{n:>11}" for n in names)


def _check(out: TextIO, name: str, analytic: np.ndarray, numeric: np.ndarray) -> float:
    diff = float(np.max(np.abs(analytic - numeric))) if analytic.size else 0.0
    verdict = "agree" if diff <= AGREEMENT else "DISAGREE"
    print(f"  {name}: max |analytic - finite differences| = {diff:.1e}  -> {verdict}", file=out)
    return diff


def run_demo(*, seed: int = 0, out: TextIO) -> int:
    """Print the demonstration to ``out``; return 0 if every gradient check passes."""
    worst = 0.0
    p = lambda *a, **k: print(*a, **k, file=out)  # noqa: E731

    p("softxent demo: softmax + cross-entropy, eq. (1)-(16) of the seed\n")
    p("1. One song, four mutually exclusive genres: one softmax over k = 4 classes.")
    z = np.array([2.0, 0.5, -1.0, 1.0])
    y = 3  # the song is jazz
    a = softmax(z)
    onehot = np.eye(len(GENRES))[y]
    p(_header(GENRES))
    p(_row("logits z", z))
    p(_row("softmax a = e^z / sum e^z", a))
    p(f"  {'':<26}(eq. 1/8: each in [0, 1], sum = {a.sum():.6f})")
    p(_row("label y (one-hot: jazz)", onehot, "{:>11.0f}"))
    loss = softmax_cross_entropy(z, y)
    p(f"  loss L = -sum y log a = {loss:.6f}  (eq. 7), computed as logsumexp(z) - z_y "
      f"= {logsumexp(z):.6f} - {z[y]:.6f}")
    grad = softmax_cross_entropy_grad(z, y)
    p(_row("dL/dz = a - y (eq. 16)", grad))
    fd = finite_difference_grad(lambda v: softmax_cross_entropy(v, y), z)
    p(_row("finite differences", fd))
    worst = max(worst, _check(out, "eq. (16)", grad, fd))

    p("\n2. Soft labels that do not sum to one: eq. (15), dL/dz = a * sum(y) - y.")
    soft = np.array([0.2, 0.0, 0.5, 0.6])
    p(_row(f"label y (sum = {soft.sum():g})", soft))
    grad = softmax_cross_entropy_grad(z, soft)
    p(_row("a * sum(y) - y (eq. 15)", grad))
    fd = finite_difference_grad(lambda v: softmax_cross_entropy(v, soft), z)
    p(_row("finite differences", fd))
    worst = max(worst, _check(out, "eq. (15)", grad, fd))

    p("\n3. Entropy, KL divergence and cross-entropy (eq. 3-6), the seed's example.")
    pt, q = np.array([1.0, 0.0, 0.0]), np.array([0.7, 0.2, 0.1])
    h_p, h_pq, kl = entropy(pt), cross_entropy(pt, q), kl_divergence(pt, q)
    p(f"  p = {pt}, q = {q}")
    p(f"  H(p) = {h_p:.6f}   H(p, q) = {h_pq:.6f}   D_KL(p||q) = {kl:.6f}")
    p(f"  D_KL(p||q) = H(p, q) - H(p) (eq. 5): {kl:.6f} = {h_pq - h_p:.6f}")
    p("  (the seed prints eq. 3 without its minus sign; H(p) = -sum p log p >= 0)")

    p("\n4. Labels that are not exclusive (vocal, dance, soundtrack, pop): one sigmoid each.")
    zs = np.array([1.5, -0.5, 0.3, 2.0])
    ys = np.array([1.0, 0.0, 1.0, 1.0])
    s = sigmoid(zs)
    p(_header(TAGS))
    p(_row("sigmoid(z) (eq. 2)", s))
    p(f"  {'':<26}(each in [0, 1] on its own; sum = {s.sum():.6f}, no reason to be 1)")
    p(_row("labels y", ys, "{:>11.0f}"))
    grad = sigmoid_cross_entropy_grad(zs, ys, reduction="sum")
    p(_row("dL/dz = sigmoid(z) - y", grad))
    fd = finite_difference_grad(lambda v: sigmoid_cross_entropy(v, ys, reduction="sum"), zs)
    worst = max(worst, _check(out, "sigmoid head", grad, fd))

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((5, 7)) * 3.0
    labels = rng.integers(0, 7, size=5)
    p(f"\n5. Random batch (5 rows x 7 classes, seed {seed}), mean reduction, label smoothing 0.1:")
    grad = softmax_cross_entropy_grad(logits, labels, label_smoothing=0.1)
    fd = finite_difference_grad(
        lambda v: softmax_cross_entropy(v, labels, label_smoothing=0.1), logits
    )
    worst = max(worst, _check(out, "batch", grad, fd))

    ok = worst <= AGREEMENT
    p(f"\n{'All gradient checks passed' if ok else 'A gradient check FAILED'} "
      f"(largest difference {worst:.1e}, tolerance {AGREEMENT:.0e}).")
    return 0 if ok else 1
