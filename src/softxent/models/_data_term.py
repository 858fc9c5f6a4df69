"""The data term of the estimators' objective: a fit's rows (:class:`Problem`) and the fused
loss and gradient summed over row blocks (:func:`data_loss_grad`), threaded over ranges of blocks.

:class:`~._objective.Objective` adds the regularisation and the preconditioning on top; the Dask
fit runs :func:`data_loss_grad` on each worker's blocks (:mod:`._dask_blocks`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from scipy import sparse

import softxent as sx
from softxent import kernels
from softxent._contract import XentOptions
from softxent._fused import softmax_xent_rows
from softxent._sigmoid_xent import sigmoid_xent_total
from softxent._xent_common import Labels

__all__ = ["Head", "Problem", "data_loss_grad", "rows_per_block"]

Head = Literal["softmax", "sigmoid"]

# A block of logits stays within the fused kernels' serial size (2**16
# logits, see softxent.kernels._cpu), so that the kernel never wakes its own
# thread pool while ours is running, and a block of X stays near the L2/L3
# boundary so that the second product reads it from cache.
_BLOCK_LOGITS = 1 << 16
_BLOCK_BYTES = 4 << 20

# Below this much work per thread (rows x (features + outputs)), splitting a block costs more than it gives.
_MIN_THREAD_WORK = 80_000

# The softmax head's loss options: a plain sum of the (sample- and class-weighted) rows, no label skipped.
_SUM_OPTIONS = XentOptions(ignore_index=None, reduction="sum")


def rows_per_block(n_features: int, n_outputs: int, itemsize: int, is_sparse: bool) -> int:
    """Rows per block: at most 2**16 logits and (dense X) about 4 MiB of X."""
    by_logits = max(1, _BLOCK_LOGITS // max(n_outputs, 1))
    if is_sparse:
        return min(by_logits, 4096)
    by_bytes = max(16, _BLOCK_BYTES // max(n_features * itemsize, 1))
    return max(1, min(by_logits, by_bytes, 4096))


@dataclass
class Problem:
    """The data of one fit, already validated and in the working dtype.

    Parameters
    ----------
    X : ndarray (C-contiguous) or CSR matrix, shape (n, d), float32 or float64
    targets : ndarray
        ``head="softmax"``: int64 class indices, shape (n,).
        ``head="sigmoid"``: 0/1 indicators in X's dtype, shape (n, K).
    n_outputs : int
        K, the number of logits per row.
    sample_weight : ndarray of float64, shape (n,), or None
    class_weight : ndarray of float64, shape (K,), or None
        Softmax: weight of each class (the kernel's ``weight=``). Sigmoid:
        weight of each label's whole term.
    pos_weight : ndarray of float64, shape (K,), or None
        Sigmoid only: extra weight of each label's positive term.
    """

    X: Any
    targets: np.ndarray
    head: Head
    n_outputs: int
    sample_weight: np.ndarray | None = None
    class_weight: np.ndarray | None = None
    pos_weight: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    def row_weights(self) -> np.ndarray:
        r""":math:`s_i`: sample weight times class weight, float64 (n,).

        For the sigmoid head with label weights the weight is per element, so
        the row weight is the sample weight alone (the label weights live in
        the loss); the total :math:`S` then counts rows, as scikit-learn does
        for each label's own logistic regression.
        """
        s = np.ones(self.n_rows) if self.sample_weight is None else self.sample_weight
        if self.head == "softmax" and self.class_weight is not None:
            s = s * self.class_weight[self.targets]
        return s

    @cached_property
    def dense_head(self) -> _DenseHead | None:
        """The softmax head's one-sweep kernel when it suits this fit, else None (decided once)."""
        return _dense_head_for(self)

    def subset(self, rows: np.ndarray) -> Problem:
        """The same problem on the given rows (a copy: used for minibatches)."""
        return Problem(
            X=self.X[rows],
            targets=self.targets[rows],
            head=self.head,
            n_outputs=self.n_outputs,
            sample_weight=None if self.sample_weight is None else self.sample_weight[rows],
            class_weight=self.class_weight,
            pos_weight=self.pos_weight,
        )


def _block_loss_grad(
    problem: Problem, Wt: np.ndarray, b: np.ndarray | None, lo: int, hi: int, step: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted loss sum and its gradient over rows ``lo:hi``, ``step`` rows at a time.

    ``Wt`` is W transposed, (d, K) C-contiguous in X's dtype; ``b`` the
    intercept in X's dtype or None. Returns ``(loss, grad of W (K, d), grad
    of b (K,))`` accumulated in float64.
    """
    X, k = problem.X, problem.n_outputs
    is_sparse = sparse.issparse(X)
    z_buf = np.empty((min(step, max(hi - lo, 0)), k), dtype=problem.dtype)
    g_w = np.zeros((k, X.shape[1]))
    g_b = np.zeros(k)
    loss = 0.0
    blocks = (_SigmoidBlocks if problem.head == "sigmoid" else _SoftmaxBlocks)(problem, z_buf.shape[0])
    for start in range(lo, hi, step):
        stop = min(start + step, hi)
        xb = X[start:stop]
        z = z_buf[: stop - start]
        if is_sparse:
            z[...] = xb @ Wt
        else:
            np.matmul(xb, Wt, out=z)  # BLAS, into the reused block buffer
        if b is not None:
            z += b
        # Sigmoid: G = s_i w_j ((1 - y) sigma(z) - p_j y sigma(-z)); softmax: G = s_i (softmax(z_i) -
        # e_{y_i}) w_{y_i} (eq. 16), written over z.
        block_loss, g = blocks(z, start, stop)
        loss += float(block_loss)
        # X_blk is still in cache from the product above: dL/dW += G^T X_blk.
        if is_sparse:
            g_w += (xb.T @ g).T
        else:
            # G^T X_blk as a (K, n) C-contiguous G^T times X_blk: on Fashion-MNIST's blocks (668 x 784,
            # K = 10) 27% faster in OpenBLAS than X_blk^T G, which packs the transposed X_blk.
            g_w += np.ascontiguousarray(g.T) @ xb
        g_b += g.sum(axis=0, dtype=np.float64)
    return loss, g_w, g_b


class _SoftmaxBlocks:
    """Loss and gradient of the softmax head on blocks of one fit's logits, the gradient over them.

    The targets and weights were validated once, when the problem was built,
    so the fused kernel is called directly, with reused per-row buffers: on
    digits (1347 x 64, one block) the contract's general entry point
    (:func:`softxent._fused.softmax_xent_rows`, its options, reductions and
    checks) cost as much per evaluation as the kernel. Without the kernels
    (``SOFTXENT_REFERENCE=1`` or no numba) it is that entry point, with the
    same results.
    """

    def __init__(self, problem: Problem, rows: int) -> None:
        self.problem = problem
        self.kernel = kernels.cpu(problem.dtype)
        empty = np.empty(0)
        self.weight = empty if problem.class_weight is None else np.ascontiguousarray(problem.class_weight)
        self.sample_weight = empty if problem.sample_weight is None else problem.sample_weight
        self.row_loss, self.lse = np.empty(rows), np.empty(rows)

    def __call__(self, z: np.ndarray, start: int, stop: int) -> tuple[float, np.ndarray]:
        p = self.problem
        idx = p.targets[start:stop]
        sw = self.sample_weight[start:stop] if self.sample_weight.size else self.sample_weight
        if self.kernel is None:
            w = p.class_weight
            lab = Labels(idx, None, None if w is None else w[idx])
            loss, g, _ = softmax_xent_rows(
                z, 1, lab, _SUM_OPTIONS, weight=w, sample_weight=sw if sw.size else None, target=z, inplace=True
            )
            return float(loss), g
        n = stop - start
        rows = self.row_loss[:n]
        # loss rows, lse, and G written over z; no temperature, no smoothing, no scaling (a sum).
        self.kernel.softmax_xent_index(z, idx, self.weight, 0.0, sw, 1.0, 1.0, z, True, rows, self.lse[:n])
        return float(rows.sum()), z


class _SigmoidBlocks:
    """Loss and gradient of the sigmoid head on blocks of one fit's logits.

    The targets and weights were validated once, when the problem was built,
    so the fused kernel is called directly, into buffers reused from block to
    block; the public :func:`softxent.sigmoid_cross_entropy_with_grad` would
    validate them again on every block (on Yeast, 1500 x 14, that doubled
    the kernel's time). Without the kernels (``SOFTXENT_REFERENCE=1`` or no
    numba) it is the public function, with identical results.
    """

    def __init__(self, problem: Problem, rows: int) -> None:
        self.problem = problem
        self.kernel = kernels.cpu(problem.dtype)
        self.grad = np.empty((rows, problem.n_outputs), dtype=problem.dtype)

    def __call__(self, z: np.ndarray, start: int, stop: int) -> tuple[float, np.ndarray]:
        p = self.problem
        sw = None if p.sample_weight is None else p.sample_weight[start:stop]
        y = p.targets[start:stop]
        if self.kernel is None or not y.flags.c_contiguous or y.dtype != z.dtype:
            return sx.sigmoid_cross_entropy_with_grad(
                z, y, pos_weight=p.pos_weight, weight=p.class_weight, sample_weight=sw, reduction="sum"
            )  # fmt: skip
        g = self.grad[: stop - start]
        # The total only (no row sums); no weights given: the kernel's unweighted sweep.
        total = sigmoid_xent_total(
            z, y, pos_weight=p.pos_weight, weight=p.class_weight,
            sample_weight=None if sw is None else np.ascontiguousarray(sw, dtype=np.float64),
            grad_scale=1.0, grad_out=g,
        )  # fmt: skip
        return total, g


def _dense_head_for(problem: Problem) -> _DenseHead | None:
    """The one-sweep kernel for the softmax head on dense X where it beats the two BLAS products
    (see :func:`softxent.kernels._dense_head.suits`), else None: the evaluation is then
    :func:`_block_loss_grad`."""
    if problem.head != "softmax" or sparse.issparse(problem.X):
        return None
    kernel = kernels.cpu(problem.dtype)
    if kernel is None:
        return None
    from softxent.kernels import _dense_head  # numba is importable: kernels.cpu gave the kernels

    if not _dense_head.suits(problem.n_features, problem.n_outputs, problem.dtype.itemsize):
        return None
    return _DenseHead(problem, kernel, _dense_head.chunk_rows(problem.n_features, problem.dtype.itemsize))


class _DenseHead:
    """The softmax head's one-sweep kernel (:mod:`softxent.kernels._dense_head`) with its fixed arguments.

    Built once per :class:`Problem` (:attr:`Problem.dense_head`), so that an
    evaluation is one call: on digits (1347 x 64) choosing the kernel,
    converting the weights and sizing the chunks on every evaluation took a
    tenth of the kernel's time.
    """

    def __init__(self, problem: Problem, kernel: Any, chunk: int) -> None:
        self.problem, self.kernel, self.chunk = problem, kernel, chunk
        empty = np.empty(0)
        self.weight = empty if problem.class_weight is None else np.ascontiguousarray(problem.class_weight)
        self.sample_weight = empty if problem.sample_weight is None else np.ascontiguousarray(problem.sample_weight)
        self.no_intercept = np.zeros(problem.n_outputs, problem.dtype)

    def __call__(
        self, W: np.ndarray, b: np.ndarray | None, lo: int, hi: int, step: int
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """:func:`_block_loss_grad` by the one-sweep kernel; ``W`` (K, d) C-contiguous in X's dtype.

        The gradient is accumulated in X's dtype over about ``step`` rows,
        then in float64, as the BLAS path does block by block.
        """
        k, d = W.shape
        p, chunk = self.problem, self.chunk
        flush = max(chunk, step - step % chunk)
        g_w, g_b = np.zeros((k, d)), np.zeros(k)
        loss = self.kernel.softmax_head_rows(
            p.X, W, self.no_intercept if b is None else b, b is not None, p.targets, self.weight,
            self.sample_weight, lo, hi, chunk, flush, np.empty((chunk, k), p.dtype), np.zeros((k, d), p.dtype),
            g_w, g_b, np.empty(chunk), np.empty(chunk),
        )  # fmt: skip
        return float(loss), g_w, g_b


def data_loss_grad(
    problem: Problem,
    W: np.ndarray,
    b: np.ndarray | None,
    *,
    executor: ThreadPoolExecutor | None = None,
    n_threads: int = 1,
) -> tuple[float, np.ndarray, np.ndarray]:
    r""":math:`\sum_i s_i \ell_i` and its gradient w.r.t. ``W`` (K, d) and ``b`` (K,), float64.

    Rows are processed in blocks of :func:`rows_per_block`; with an
    ``executor`` and more than one block, contiguous ranges of blocks go to
    ``n_threads`` threads, each with its own buffer and accumulators (summed
    in a fixed order, so the result does not depend on thread timing).
    """
    dtype = problem.dtype
    bt = None if b is None else np.asarray(b, dtype=dtype)
    dense = problem.dense_head
    if dense is not None:
        Wd = np.ascontiguousarray(W, dtype=dtype)

        def block(lo: int, hi: int, step: int) -> tuple[float, np.ndarray, np.ndarray]:
            return dense(Wd, bt, lo, hi, step)
    else:
        Wt = np.ascontiguousarray(W.T, dtype=dtype)

        def block(lo: int, hi: int, step: int) -> tuple[float, np.ndarray, np.ndarray]:
            return _block_loss_grad(problem, Wt, bt, lo, hi, step)

    step = rows_per_block(problem.n_features, problem.n_outputs, dtype.itemsize, sparse.issparse(problem.X))
    n = problem.n_rows
    n_blocks = -(-n // step)
    if executor is not None and 1 < n_threads and n_blocks < n_threads:
        # Fewer blocks than threads: smaller blocks, so that every thread gets work, if there is
        # enough of it to pay for handing it over (about 0.1 ms a thread, a guess measured on
        # two cores: Yeast's 1500 x 103 x 14 gains, digits' 1347 x 64 x 10 loses).
        parts = min(n_threads, n * (problem.n_features + problem.n_outputs) // _MIN_THREAD_WORK)
        if parts > n_blocks:
            step = -(-n // parts)
            n_blocks = -(-n // step)
    if executor is None or n_threads <= 1 or n_blocks <= 1:
        loss, g_w, g_b = block(0, n, step)
    else:
        parts = min(n_threads, n_blocks)
        cuts = [step * (n_blocks * i // parts) for i in range(parts)] + [n]
        # The calling thread takes the first range itself: one hand-over fewer.
        futures = [executor.submit(block, cuts[i], cuts[i + 1], step) for i in range(1, parts)]
        results = [block(cuts[0], cuts[1], step)] + [f.result() for f in futures]
        loss = sum(r[0] for r in results)
        g_w = results[0][1]
        g_b = results[0][2]
        for r in results[1:]:
            g_w += r[1]
            g_b += r[2]
    return loss, g_w, g_b
