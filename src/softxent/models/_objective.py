r"""The training objective of the linear classifiers, its gradient in row blocks.

Design (data -> row blocks -> objective -> solver -> estimator)
---------------------------------------------------------------
A linear classifier is eq. (9)-(10) of the seed followed by a cross-entropy:
logits :math:`z_i = W x_i + b` (:math:`K` outputs), and either one softmax
over the :math:`K` classes (eq. 7-8) or :math:`K` independent sigmoids
(eq. 2). Both heads share everything but the loss, so this module holds one
:class:`Problem` (the data and its weights) and one :class:`Objective`
(penalty, scaling, preconditioning); the solvers in
:mod:`softxent.models._solvers` only see a function of a flat vector, and the
estimators only translate scikit-learn's conventions.

The objective is scikit-learn's ``LogisticRegression(C=C)`` objective,

.. math::

    F(W, b) = C \sum_i s_i\, \ell_i(W x_i + b) + \tfrac12 \lVert W \rVert_F^2

with :math:`s_i` the sample weight times the class weight of row :math:`i`,
:math:`\ell_i` the softmax cross-entropy of its class (eq. 7) or the sum of
its per-label sigmoid cross-entropies, and the intercept :math:`b` not
penalised. The solvers minimise the same function divided by :math:`C S`,
:math:`S = \sum_i s_i`,

.. math::

    f = F / (C S) = \frac1S \sum_i s_i \ell_i + \frac{\lambda}{2} \lVert W \rVert_F^2,
    \qquad \lambda = \frac{1}{C S}

which is exactly what scikit-learn's L-BFGS minimises internally
(``LinearModelLoss`` with ``l2_reg_strength = 1 / (C * sw_sum)``). The two
have the same minimiser; ``f`` keeps values and gradients of order one
whatever the number of rows, so that ``tol`` means what it means in
scikit-learn: the largest absolute entry of :math:`\nabla f`.

Gradient in row blocks (memory O(block x K) beyond the data)
    With :math:`G = \partial \sum_i s_i \ell_i / \partial Z` from the fused
    kernel (eq. 16: :math:`s_i (a_i - y_i)` per row),
    :math:`\nabla_W = G^\top X`, :math:`\nabla_b = G^\top 1`. The rows are
    processed a block at a time: ``Z_blk = X_blk @ W.T + b`` (BLAS) into one
    reused buffer, the kernel writes :math:`G` over it (``inplace=True``),
    and ``X_blk.T @ G`` is accumulated while ``X_blk`` is still in cache, so
    that X is read from memory once per evaluation instead of twice. Blocks
    are split between threads (BLAS and the numba kernels release the GIL);
    BLAS itself is kept to one thread during a fit (two thread pools
    spinning against each other on a small machine cost more than they give).

Preconditioning
    L-BFGS is not invariant to linear changes of the features: raw pixels in
    [0, 255] or counts, and strongly correlated features (neighbouring
    pixels), make the Hessian badly conditioned and the solver slow. The
    solver therefore works in whitened coordinates :math:`\theta = (W', b')`
    with :math:`W = W' P`, :math:`b = b' - W \mu` (:math:`\mu` the weighted
    feature means) and :math:`P \approx (\Sigma + \tfrac{\lambda}{a} I)^{-1/2}`,
    :math:`\Sigma` the weighted covariance of the features and :math:`a =
    p(1-p)` the curvature of one logit's loss at the starting point: at
    :math:`W = 0` the Hessian in :math:`\theta` is then about :math:`a I`
    in every direction (the data's curvature :math:`a \Sigma` and the
    penalty's :math:`\lambda` both mapped to :math:`a`). On Fashion-MNIST
    (60000 x 784, C = 1) L-BFGS then reaches the optimum within 1e-6 in
    about 620 iterations (54 s); with the diagonal scaling alone it was
    still 6e-5 above after 1600 (150 s) and 1e-7 above after 3200. It is
    computed in standardised coordinates, :math:`P = D^{-1} R^{-1/2}` with
    :math:`R = D^{-1} (\Sigma + \tfrac{\lambda}{a} I) D^{-1}` and
    :math:`D = \operatorname{diag}(\sqrt{\operatorname{var} x_j + \lambda /
    a})`, and used only where the features are correlated (see
    ``_whitening``), X is dense and has at most ``_WHITEN_MAX_FEATURES``
    features (float32: see ``_WHITEN_FLOOR32``); the covariance comes from at most ``_WHITEN_ROWS`` evenly
    spaced rows (a preconditioner need not be exact). Otherwise :math:`P =
    D^{-1}`, the diagonal scaling. This is a change of variables only: X is never
    copied or centred, the function and its minimiser are those of
    scikit-learn, and the stopping test is made on the gradient in the
    original coordinates.

Per-label scaling (sigmoid head)
    The multi-label objective separates over labels, so its Hessian is
    block-diagonal: label :math:`j`'s block is about :math:`a_j P^\top
    \Sigma P` with :math:`a_j = \pi_j (1 - \pi_j)` near the optimum,
    :math:`\pi_j` the label's weighted positive rate, not the :math:`a = 1/4`
    of :math:`W = 0`. Rare labels (1% positives: :math:`a_j \approx 0.01`)
    would leave their blocks 25x flatter than the common ones, and one L-BFGS
    run over all labels as slow as its worst block. Each label's row is
    therefore scaled, :math:`W_j = r_j W'_j P`, :math:`r_j = \sqrt{a / a_j}`
    (its intercept too), and a cold start begins at the intercept-only
    optimum :math:`b_j = \operatorname{logit} \pi_j` instead of 0. On a
    synthetic 20000 x 300 set of 50 labels (positive rates 1% to 50%) this
    took L-BFGS from more than 100 iterations (not converged, 15.6 s) to 68
    (4.6 s); on Yeast it changed nothing (26 against 25 iterations). The
    solver then keeps one L-BFGS model per label as well
    (:mod:`softxent.models._block_lbfgs`): 68 -> 19 iterations on that set.
    The time per iteration is the two matrix products (``X W^T`` and
    ``G^T X``, about 90% of a fit on one thread); the fused sigmoid kernel is
    the other 10% (``benchmarks/classifiers_defaults.py``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

from ._data_term import Problem, data_loss_grad, rows_per_block

__all__ = ["Objective", "Problem", "objective_value", "rows_per_block", "effective_n_threads"]


# Dense whitening (see Preconditioning above) up to this many features: its d x d
# eigendecomposition costs well under a second there, and a fit that needs it
# takes far longer. Its covariance comes from at most this many rows.
_WHITEN_MAX_FEATURES = 1024
_WHITEN_ROWS = 20_000
_WHITEN_MIN_CONDITION = 1e3
# float32: the objective's rounding noise, mapped through P, grows along the directions of
# least spread, so their eigenvalues are floored here (P amplifies at most 1/sqrt(floor) =
# 10x). Fashion-MNIST in float32 then comes within 1e-5 of the optimum in 27 s (diagonal
# scaling: never, 1.2e-5 after 2047 iterations); Yeast in float32 pays for it, 0.09 -> 0.19 s,
# with more line-search steps once float32 precision is reached.
_WHITEN_FLOOR32 = 1e-2


def whitening_rows(n_rows: int, count: int = _WHITEN_ROWS) -> np.ndarray | None:
    """The ``count`` evenly spaced rows whose covariance the dense preconditioner uses (None: all of them)."""
    return np.linspace(0, n_rows - 1, count).astype(np.int64) if n_rows > count else None


# Before the covariance of _WHITEN_ROWS rows, a look at this many: a sample covariance spreads
# the eigenvalues (Marchenko-Pastur), so a subsample's condition number is larger than the full
# sample's (the synthetic Fashion-MNIST-shaped set: 834 from 2000 rows, 207 from 20000), and one
# below the threshold says the diagonal will do without the full product (0.6 s there).
_WHITEN_PRECHECK_ROWS = 2_000


# Label rates are clipped to [_MIN_RATE, 1 - _MIN_RATE] for the scaling and the starting intercept:
# a label with no positives has its optimum at b = -inf, approached, never reached.
_MIN_RATE = 1e-4
_PER_LABEL_SCALING = True  # False: one common scaling (benchmarks compare the two)


def centred_gram(X: Any, rows: np.ndarray | None, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
    r""":math:`\sum_r w_r (x_r - \mu)(x_r - \mu)^\top` over ``rows`` of dense ``X`` (None: all), float64.

    ``w`` holds one weight per row taken; the rows go through in blocks, in
    float64. (A float32 product would halve the time, 0.6 -> 0.45 s on
    Fashion-MNIST's 20000 sampled rows, but it moved L-BFGS's path: 80 -> 118
    iterations on a nearly separable set. Not worth it.)
    """
    d = X.shape[1]
    n = X.shape[0] if rows is None else len(rows)
    out = np.zeros((d, d))
    step = rows_per_block(d, 1, 8, False)
    for start in range(0, n, step):
        part = slice(start, start + step)
        xb = (X[part] if rows is None else X[rows[part]]).astype(np.float64)
        xb -= mean
        out += (xb * w[part, None]).T @ xb
    return out


def label_rates(weight_sum: float, positives: np.ndarray, weighted_positives: np.ndarray) -> np.ndarray:
    """pi_j = p_j P_j / (p_j P_j + N_j): the weighted positive rate of each label, pos_weight p_j
    counted (``positives`` P_j, ``weight_sum`` the rows' total weight, N_j = weight_sum - P_j); 1/2
    for a label without weight."""
    total = weighted_positives + (weight_sum - positives)
    return np.where(total > 0, weighted_positives / np.where(total > 0, total, 1.0), 0.5)


def effective_n_threads(n_jobs: int | None) -> int:
    """Threads for the row blocks, as scikit-learn's OpenMP code counts them.

    ``None``: every CPU this process may run on, unless the process is held to
    fewer: ``OMP_NUM_THREADS`` (which joblib sets in its workers from
    ``inner_max_num_threads``, by default CPUs / workers, so that
    ``cross_validate(n_jobs=2)`` does not oversubscribe the cores) or an
    active ``threadpoolctl.threadpool_limits``. A negative ``n`` counts back
    from all CPUs as in joblib (-1 = all, -2 = all but one); a positive one is
    taken as asked.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    if n_jobs is None:
        # omp_get_max_threads() of scikit-learn's OpenMP runtime: it reads OMP_NUM_THREADS and
        # follows threadpoolctl's limits, the same source LogisticRegression's threads use.
        return max(1, min(available, _openmp_effective_n_threads(None)))
    if n_jobs < 0:
        return max(1, available + 1 + n_jobs)
    return max(1, int(n_jobs))


class Objective:
    r"""The scaled objective :math:`f = F / (C S)` of a :class:`Problem`, for a solver.

    ``objective(theta)`` returns :math:`f` and its gradient in the
    (preconditioned) coordinates :math:`\theta`; :meth:`unpack` and
    :meth:`pack` convert between :math:`\theta` and ``(W, b)``. After each
    call, :attr:`last_grad_max` is :math:`\max |\nabla f|` in the original
    coordinates (what ``tol`` is compared with) and :attr:`last_x` the point.

    Use as a context manager: it owns the thread pool of the gradient.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        C: float,
        fit_intercept: bool,
        n_threads: int = 1,
        precondition: bool = True,
        total_weight: float | None = None,
    ) -> None:
        self.problem = problem
        self.C = float(C)
        self.fit_intercept = bool(fit_intercept)
        self.n_threads = int(n_threads)
        weights = problem.row_weights()
        self.total_weight = float(weights.sum()) if total_weight is None else float(total_weight)
        if not self.total_weight > 0:
            raise ValueError(
                "the sample weights (times the class weights) are zero for every row; "
                "at least one row needs a positive weight"
            )
        self.l2 = 1.0 / (self.C * self.total_weight)  # lambda = 1 / (C S)
        k, d = problem.n_outputs, problem.n_features
        self.shape = (k, d)
        self.mean = np.zeros(d)
        self.scale = np.ones(d)
        # W = W' P: P is 1-D (a diagonal, 1 / scale) or a dense symmetric d x d
        # matrix; P_inv its inverse (W' = W P_inv).
        self.P: np.ndarray = np.ones(d)
        self.P_inv: np.ndarray = np.ones(d)
        # Per-output scaling r (W_j = r_j W'_j P): the sigmoid head's curvature is block-diagonal
        # across labels, label j's about a_j = pi_j (1 - pi_j) near the optimum (pi_j its weighted
        # positive rate), so one common scaling leaves rare labels' blocks a_j / a times flatter.
        self.label_rates = self._label_rates(weights) if precondition else None
        self.row_scale = np.ones(k)
        if precondition:
            self.mean, self.scale = self._standardisation(weights)
            self.P, self.P_inv = 1.0 / self.scale, self.scale
            if not sparse.issparse(problem.X) and 1 < d <= _WHITEN_MAX_FEATURES:
                dense = self._whitening(weights)
                if dense is not None:
                    self.P, self.P_inv = dense
        self.last_x: np.ndarray | None = None
        self.last_grad_max = np.inf
        self.n_evaluations = 0
        self._executor: ThreadPoolExecutor | None = None

        if self.label_rates is not None and self.fit_intercept and _PER_LABEL_SCALING:
            rates = np.clip(self.label_rates, _MIN_RATE, 1 - _MIN_RATE)
            self.row_scale = np.sqrt(self._curvature() / (rates * (1 - rates)))
        # The change of coordinates W = diag(r) W' P as one elementwise factor when P is diagonal
        # (r_j P_k; None for a dense P), and whether r is 1: an evaluation on digits-sized data
        # costs about 0.2 ms, so its few small array operations count.
        self._unit_rows = bool(np.all(self.row_scale == 1.0))
        self._factor = self.row_scale[:, None] * self.P if self.P.ndim == 1 else None

    # -- context: the thread pool -------------------------------------------------
    def __enter__(self) -> Objective:
        if self.n_threads > 1 and self.problem.n_rows > 1:
            self._executor = ThreadPoolExecutor(max_workers=self.n_threads - 1, thread_name_prefix="softxent")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- preconditioning ----------------------------------------------------------
    def _standardisation(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted feature means (zero without intercept) and scales sqrt(var + lambda/a)."""
        mean, second = self._moments(weights)
        if self.fit_intercept:
            var = np.maximum(second - mean * mean, 0.0)
        else:
            var, mean = second, np.zeros_like(mean)
        # lambda / a keeps constant features (var = 0) finite: their curvature is the penalty's.
        return mean, np.sqrt(var + self.l2 / self._curvature())

    def _moments(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted first and second moments of the features, float64 (the Dask objective
        computes them by a distributed pass instead)."""
        X = self.problem.X
        w = weights / self.total_weight
        if sparse.issparse(X):
            mean = np.asarray(X.T @ w, dtype=np.float64).ravel()
            second = np.asarray(X.multiply(X).T @ w, dtype=np.float64).ravel()
        else:
            # In row blocks, in float64: no full-size temporary, no float32 sums.
            mean = np.zeros(X.shape[1])
            second = np.zeros(X.shape[1])
            step = rows_per_block(X.shape[1], 1, 8, False)
            for start in range(0, X.shape[0], step):
                xb = X[start : start + step].astype(np.float64)
                wb = w[start : start + step]
                mean += wb @ xb
                second += wb @ np.square(xb, out=xb)
        return mean, second

    def _label_rates(self, weights: Any) -> np.ndarray | None:
        """pi_j, the weighted rate of label j's positives (pos_weight counted), for the sigmoid head;
        None for softmax (the Dask objective computes it by a pass over its blocks)."""
        Y = getattr(self.problem, "targets", None)
        if self.problem.head != "sigmoid" or not isinstance(Y, np.ndarray) or Y.ndim != 2 or weights is None:
            return None
        pos = np.asarray(weights, dtype=np.float64) @ Y.astype(np.float64)  # (K,) weight of the positives
        pos_w = pos if self.problem.pos_weight is None else pos * self.problem.pos_weight
        return label_rates(float(np.sum(weights)), pos, pos_w)

    def initial_intercept(self) -> np.ndarray | None:
        """The intercept-only optimum of the sigmoid head, logit(pi_j): where L-BFGS starts a cold fit
        (the intercept is not penalised, so this is the exact minimiser along b at W = 0)."""
        if self.label_rates is None or not self.fit_intercept:
            return None
        rates = np.clip(self.label_rates, _MIN_RATE, 1 - _MIN_RATE)
        return np.log(rates) - np.log1p(-rates)

    def starting_point(self, W0: np.ndarray, b0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Where L-BFGS starts: ``(W0, b0)`` as given (a warm start), or for a cold start (all
        zeros) of the sigmoid head the intercept-only optimum :meth:`initial_intercept`."""
        start = self.initial_intercept()
        if start is not None and b0 is not None and not W0.any() and not b0.any():
            return W0, start
        return W0, b0

    def _curvature(self) -> float:
        """a = p(1 - p), the curvature of one logit's loss at W = 0: p = 1/K (softmax) or 1/2."""
        k = self.problem.n_outputs
        return (k - 1) / k**2 if self.problem.head == "softmax" and k > 1 else 0.25

    def _whitening(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """P with W = W' P, and its inverse: P = D^-1 R^(-1/2), R = D^-1 (Sigma + lambda/a I) D^-1,
        Sigma the weighted covariance (about the means; the second moment without intercept)
        of at most _WHITEN_ROWS rows; None where the diagonal D^-1 does as well."""
        d = self.problem.n_features

        def covariance(count: int) -> np.ndarray:
            cov = self._covariance(weights, count)
            cov[np.diag_indices(d)] += self.l2 / self._curvature()
            return cov

        if self._precheck and self.problem.n_rows > 2 * _WHITEN_PRECHECK_ROWS:
            if self._condition(covariance(_WHITEN_PRECHECK_ROWS)) < _WHITEN_MIN_CONDITION:
                return None
        cov = covariance(_WHITEN_ROWS)
        if self._condition(cov) < _WHITEN_MIN_CONDITION:
            return None
        # The preconditioner itself, in standardised coordinates (unit diagonal, scale-free).
        eigval, eigvec = np.linalg.eigh(cov / np.outer(self.scale, self.scale))
        floor = _WHITEN_FLOOR32 if self.problem.dtype == np.float32 else 1e-12 * eigval[-1]  # float64: rounding
        root = np.sqrt(np.maximum(eigval, floor))
        P = (eigvec / root) @ eigvec.T / self.scale  # W = W' P
        P_inv = self.scale[:, None] * ((eigvec * root) @ eigvec.T)  # W' = W P_inv
        return P, P_inv

    def _condition(self, cov: np.ndarray) -> float:
        """The condition number of the features' correlation matrix, from ``cov`` (lambda/a added).

        Whitening pays only for correlated features. Measured on scikit-learn's sets and
        Yeast, it cut L-BFGS's iterations 2-5x where this is 4e4-1e6 (breast cancer, Yeast,
        Fashion-MNIST), and cost up to 3x more where it is 50-150 (digits, wine, iris), for
        which the diagonal is kept. Constant features, of zero variance, are left out; fewer
        than two others give 0 (nothing to whiten).
        """
        var = np.diag(cov) - self.l2 / self._curvature()
        live = var > 1e-12 * max(float(var.max()), np.finfo(float).tiny)
        if live.sum() < 2:
            return 0.0
        sd = np.sqrt(var[live])
        corr = cov[np.ix_(live, live)] / np.outer(sd, sd)
        corr[np.diag_indices(len(sd))] = 1.0  # without the added lambda/a
        corr_eig = np.linalg.eigvalsh(corr)
        return float(corr_eig[-1] / max(float(corr_eig[0]), 1e-300))

    # The in-memory objective looks at a small sample first; the Dask one goes straight to the
    # full sample (each look is a pass over the cluster).
    _precheck = True

    def _covariance(self, weights: np.ndarray, count: int = _WHITEN_ROWS) -> np.ndarray:
        """The weighted covariance about ``self.mean`` of at most ``count`` evenly spaced rows
        (the Dask objective takes the same rows by a distributed pass)."""
        X = self.problem.X
        rows = whitening_rows(X.shape[0], count)
        w = weights if rows is None else weights[rows]
        w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
        return centred_gram(X, rows, self.mean, w)  # mean zero without intercept: the second moment

    def _to_theta(self, W: np.ndarray) -> np.ndarray:
        Wp = W * self.P_inv if self.P_inv.ndim == 1 else W @ self.P_inv
        return Wp / self.row_scale[:, None]

    def _from_theta(self, Wp: np.ndarray) -> np.ndarray:
        if self._factor is not None:
            return Wp * self._factor
        W = Wp @ self.P
        return W if self._unit_rows else W * self.row_scale[:, None]

    def pack(self, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """theta from (W, b): W' = diag(r)^-1 W P^-1, b' = diag(r)^-1 (b + W mu)."""
        Wp = self._to_theta(np.asarray(W, dtype=np.float64))
        parts = [Wp.ravel()]
        if self.fit_intercept:
            c = np.asarray(b, dtype=np.float64) + np.asarray(W, dtype=np.float64) @ self.mean
            parts.append(c / self.row_scale)
        return np.concatenate(parts)

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(W, b) from theta: W = diag(r) W' P, b = diag(r) b' - W mu."""
        k, d = self.shape
        W = self._from_theta(theta[: k * d].reshape(k, d))
        if not self.fit_intercept:
            return W, None
        c = theta[k * d :] if self._unit_rows else theta[k * d :] * self.row_scale
        return W, c - W @ self.mean

    # -- values --------------------------------------------------------------------
    def _data_loss_grad(self, W: np.ndarray, b: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray]:
        """The data term and its gradient (the Dask objective sums it over the workers' chunks)."""
        return data_loss_grad(self.problem, W, b, executor=self._executor, n_threads=self.n_threads)

    def loss_grad(self, W: np.ndarray, b: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray | None]:
        """f and its gradient w.r.t. (W, b), in the original coordinates."""
        loss, g_w, g_b = self._data_loss_grad(W, b)
        S = self.total_weight
        f = loss / S + 0.5 * self.l2 * float(np.vdot(W, W))
        g_w = g_w / S + self.l2 * W
        return f, g_w, (g_b / S if self.fit_intercept else None)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        if self.last_x is not None and np.array_equal(theta, self.last_x):
            return self._last_value  # the same point again (the solver's first call after a check)
        W, b = self.unpack(theta)
        f, g_w, g_b = self.loss_grad(W, b)
        self.n_evaluations += 1
        self.last_x = theta.copy()
        grad_max = float(np.abs(g_w).max(initial=0.0))
        self.last_grad_max = grad_max if g_b is None else max(grad_max, float(np.abs(g_b).max(initial=0.0)))
        if not np.isfinite(f):
            # L-BFGS would stop with a cryptic message; say what happened instead.
            raise FloatingPointError(
                f"the objective became {f!r}; the data or the weights hold values too large "
                "for the working dtype (try dtype=np.float64 or scale the features)"
            )
        # Chain rule through W = diag(r) W' P, b = diag(r) b' - W mu:
        #   df/dW' = diag(r) (df/dW - df/db mu^T) P^T,  df/db' = diag(r) df/db.
        # Written into the one gradient vector the solver receives.
        k, d = self.shape
        grad = np.empty(theta.shape[0])
        g_wp = grad[: k * d].reshape(k, d)
        if g_b is not None:
            g_w -= g_b[:, None] * self.mean  # g_w is loss_grad's own array
        if self._factor is not None:
            np.multiply(g_w, self._factor, out=g_wp)
        else:
            np.matmul(g_w, self.P.T, out=g_wp)
            if not self._unit_rows:
                g_wp *= self.row_scale[:, None]
        if g_b is not None:
            np.multiply(g_b, self.row_scale, out=grad[k * d :])
        self._last_value = (f, grad.copy())
        return f, grad

    @property
    def last_grad(self) -> np.ndarray:
        """The gradient of f at :attr:`last_x`, in the solver's (preconditioned) coordinates."""
        return self._last_value[1]

    @property
    def curvature(self) -> float:
        """a = p(1 - p) of one logit at W = 0: the Hessian the preconditioner aims at is about a I."""
        return self._curvature()

    def full_objective(self, f: float) -> float:
        r""":math:`F = C S f`, the objective in scikit-learn's documented form."""
        return f * self.C * self.total_weight


def objective_value(
    coef: Any,
    intercept: Any,
    X: Any,
    y: Any,
    *,
    C: float = 1.0,
    sample_weight: Any = None,
) -> float:
    r"""The penalised objective :math:`F = C \sum_i s_i \ell_i + \tfrac12 \lVert W \rVert_F^2`.

    This is scikit-learn's ``LogisticRegression(C=C)`` objective (eq. 7-10
    of the seed plus an L2 penalty; the intercept is not penalised), the
    function that :class:`SoftmaxRegression` and :class:`SigmoidRegression`
    minimise. Use it to compare fitted models at equal objective, whatever
    library fitted them.

    Parameters
    ----------
    coef : array_like, shape (K, d)
        ``K > 1`` with 1-D ``y``: softmax over K classes. ``K == 1`` with 1-D
        ``y``: one sigmoid (binary logistic regression, ``y`` in {0, 1}).
        2-D ``y``: K independent sigmoids.
    intercept : array_like of shape (K,), or None
    X : array_like or sparse matrix, shape (n, d)
    y : array_like
        Class indices in ``[0, K)`` of shape (n,), or 0/1 indicators of
        shape (n, K).
    C : float, default 1.0
        Inverse regularisation strength.
    sample_weight : array_like of shape (n,), optional
        Include class weights here (multiply them in).

    Returns
    -------
    float
        :math:`F`, computed in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from softxent.models import objective_value
    >>> X = np.array([[0.0], [1.0]]); y = np.array([0, 1])
    >>> round(objective_value(np.zeros((2, 1)), np.zeros(2), X, y, C=1.0), 6)  # 2 log 2
    1.386294
    """
    W = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    Xa = X.astype(np.float64).tocsr() if sparse.issparse(X) else np.ascontiguousarray(X, dtype=np.float64)
    yy = np.asarray(y)
    if yy.ndim == 2:
        problem = Problem(Xa, yy.astype(np.float64), "sigmoid", W.shape[0])
    elif W.shape[0] == 1:
        problem = Problem(Xa, yy.astype(np.float64).reshape(-1, 1), "sigmoid", 1)
    else:
        problem = Problem(Xa, yy.astype(np.int64), "softmax", W.shape[0])
    if sample_weight is not None:
        problem.sample_weight = np.asarray(sample_weight, dtype=np.float64)
    b = None if intercept is None else np.asarray(intercept, dtype=np.float64)
    loss, _, _ = data_loss_grad(problem, W, b)
    return float(C * loss + 0.5 * np.vdot(W, W))
