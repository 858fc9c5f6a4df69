"""``softxent gradcheck``: the seed's derivatives, printed beside finite differences.

For one random row of K logits it prints the softmax Jacobian of eq. (13)/(14),
J_ij = a_i (δ_ij − a_j), beside 4th-order central differences of the softmax,
then dL/dz of the cross-entropy, a − y for a one-hot label (eq. 16) or
a·Σy − y for probability labels that need not sum to one (eq. 15), beside
differences of the loss, and the largest difference of each. Exit code 0
when every difference is below :data:`AGREEMENT`, 1 otherwise.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from .. import softmax, softmax_cross_entropy, softmax_cross_entropy_grad, softmax_jacobian
from .._gradcheck import finite_difference_grad
from ._errors import CLIError

__all__ = ["AGREEMENT", "MAX_CLASSES", "run_gradcheck"]

# float64 with h = 1e-3: the 4th-order differences are good to ~1e-10 here, so
# a disagreement above 1e-6 is a wrong formula, never rounding.
AGREEMENT = 1e-6
#: The largest K checked. The Jacobian and its finite-difference copy are two
#: K x K float64 matrices (2 x 32 MB at K = 2000), and the differences take
#: 4 K softmax calls of length K; past a few thousand classes the check runs
#: for minutes and then exhausts memory (K = 100000 would need 2 x 80 GB),
#: while what it shows is already visible at K = 5.
MAX_CLASSES = 2000
_MAX_PRINTED = 8  # classes shown in full; beyond that only the largest differences are printed


def _vector(label: str, values: np.ndarray) -> str:
    shown = values[:_MAX_PRINTED]
    more = f"  ... ({values.size - _MAX_PRINTED} more)" if values.size > _MAX_PRINTED else ""
    return f"  {label:<30}" + "".join(f"{v:>12.8f}" for v in shown) + more


def _matrix(out: TextIO, title: str, m: np.ndarray) -> None:
    print(f"  {title}", file=out)
    k = min(len(m), _MAX_PRINTED)
    for i in range(k):
        print("    " + "".join(f"{v:>12.8f}" for v in m[i, :k]), file=out)
    if len(m) > k:
        print(f"    ... ({len(m)} x {len(m)} in all)", file=out)


def _verdict(out: TextIO, name: str, diff: float) -> float:
    word = "agree" if diff <= AGREEMENT else "DISAGREE"
    print(f"  {name}: max |analytic - finite differences| = {diff:.2e}  -> {word}\n", file=out)
    return diff


def run_gradcheck(*, classes: int = 4, soft_labels: bool = False, seed: int = 0, out: TextIO) -> int:
    """Print the checks to ``out``; return 0 when all agree within :data:`AGREEMENT`.

    Raises
    ------
    CLIError
        ``classes`` is above :data:`MAX_CLASSES`.
    """
    if classes > MAX_CLASSES:
        gib = 2 * classes * classes * 8 / 2**30
        raise CLIError(
            f"--classes {classes}: the check builds two {classes} x {classes} float64 Jacobians "
            f"({gib:.3g} GiB); the limit is {MAX_CLASSES} classes"
        )
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(classes) * 2.0
    a = softmax(z)
    print(f"softxent gradcheck: K = {classes} classes, seed {seed}, float64, "
          "4th-order central differences (h = 1e-3)\n", file=out)  # fmt: skip
    print(_vector("logits z", z), file=out)
    print(_vector("a = softmax(z)   (eq. 1)", a), file=out)
    print(f"  {'':<30}sum(a) = {a.sum():.15f}\n", file=out)

    print("1. Softmax Jacobian, J_ij = da_i/dz_j = a_i (delta_ij - a_j)   (eq. 13: i = j, eq. 14: i != j)", file=out)
    jac = softmax_jacobian(z)
    numeric = np.stack([finite_difference_grad(lambda v, i=i: float(softmax(v)[i]), z) for i in range(classes)])
    _matrix(out, "analytic (eq. 13/14):", jac)
    _matrix(out, "finite differences:", numeric)
    worst = _verdict(out, "Jacobian", float(np.max(np.abs(jac - numeric))))

    if soft_labels:
        y = rng.uniform(0.0, 1.0, classes)  # deliberately not normalised: eq. (15) holds for any y
        formula, label = "a * sum(y) - y   (eq. 15)", f"y (soft, sum = {y.sum():.4f})"
    else:
        y = np.eye(classes)[rng.integers(classes)]
        formula, label = "a - y   (eq. 16)", f"y (one-hot, class {int(np.argmax(y))})"
    print(f"2. Cross-entropy L = -sum y log a, gradient dL/dz = {formula}", file=out)
    print(_vector(label, y), file=out)
    grad = softmax_cross_entropy_grad(z, y)
    numeric_grad = finite_difference_grad(lambda v: float(softmax_cross_entropy(v, y)), z)
    print(_vector("analytic", grad), file=out)
    print(_vector("finite differences", numeric_grad), file=out)
    print(_vector("a * sum(y) - y by hand", a * y.sum() - y), file=out)
    worst = max(worst, _verdict(out, "dL/dz", float(np.max(np.abs(grad - numeric_grad)))))

    ok = worst <= AGREEMENT
    print(f"{'all checks agree' if ok else 'A CHECK FAILED'}: largest difference {worst:.2e} "
          f"(tolerance {AGREEMENT:.0e})", file=out)  # fmt: skip
    return 0 if ok else 1
