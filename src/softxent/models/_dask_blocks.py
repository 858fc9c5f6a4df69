r"""The worker side of a fit on Dask, and the driver's objective over it.

A fit on Dask is the in-memory fit with one thing moved: the data term
:math:`\sum_i s_i \ell_i` and its gradient. The driver keeps L-BFGS, the
preconditioning and the stopping rule of :class:`~._objective.Objective`
(:class:`DaskObjective` is a subclass that overrides only where the data is
read); the workers keep the data.

* :func:`make_block` turns one row chunk of (X, y, sample_weight) into a
  :class:`~._objective.Problem` on the worker that holds it: X in the working
  dtype, the targets encoded as the in-memory estimators encode them, the
  class weights folded into the row weights. The blocks stay in worker memory
  (futures held by the driver) for the whole fit.
* Each evaluation sends :math:`(W, b)` to every worker once (one small task
  whose result each worker fetches once), runs :func:`block_loss_grad` on every block (the fused
  in-memory code, :func:`~._objective.data_loss_grad`, one block per worker
  thread) and sums the partial results in a tree of :func:`add_parts` tasks
  (fan-in 8), as Spark's ``treeAggregate`` does: the driver receives one
  (loss, K x d, K) triple per evaluation, never a row of X.
* The preconditioner's statistics (weighted means and second moments, the
  covariance of the evenly spaced rows the in-memory fit samples) come from
  the same kind of pass (:func:`block_summary`, :func:`block_covariance`).

Errors raised in a task (a NaN in X, a negative weight) reach the driver as the
exception the worker raised; :func:`gather_clean` re-raises them without
the remote traceback, with the in-memory fit's message (row indices global).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_sample_weight, format_index
from ._inputs import _first_non_finite
from ._objective import Objective, centred_gram, data_loss_grad, label_rates, rows_per_block, whitening_rows

__all__ = ["Block", "BlockSpec", "DaskObjective", "DaskProblem", "gather_clean", "make_block", "tree_sum"]

_FAN_IN = 8  # partial results summed per reduction task


@dataclass(frozen=True)
class BlockSpec:
    """How a chunk's targets are encoded (decided on the driver from a pass over y).

    ``target``: ``"codes"`` (softmax over class indices), ``"binary"`` (two
    classes: the class index as one 0/1 column, one sigmoid), ``"one_hot"``
    (one-vs-rest sigmoids) or ``"indicator"`` (multi-label 0/1 matrix).
    """

    dtype: np.dtype
    head: str
    n_outputs: int
    target: str
    classes: np.ndarray | None = None
    class_row_weight: np.ndarray | None = None  # weight of each class, folded into the rows
    label_weight: np.ndarray | None = None
    pos_weight: np.ndarray | None = None


@dataclass
class Block:
    """One chunk of rows on a worker: its problem, the class index of each row (1-D labels), its offset."""

    problem: Any
    codes: np.ndarray | None
    offset: int

    def __sizeof__(self) -> int:
        # What Dask's sizeof sees (it falls back to sys.getsizeof): the arrays, not the ~50-byte
        # object. With the object's size the scheduler thought a block free to move and work
        # stealing shipped blocks between workers; the memory limits also need the real size.
        p = self.problem
        arrays = (p.X, p.targets, p.sample_weight, self.codes)
        return object.__sizeof__(self) + sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def _global_row_error(name: str, values: np.ndarray, offset: int, n_total: int) -> ValueError:
    bad = ~np.isfinite(values) | (values < 0)
    i = int(np.argmax(bad))
    return ValueError(
        f"{name} must be finite and non-negative, got {values[i].item()!r} at index "
        f"{format_index(i + offset, (n_total,))}"
    )


def _owned(x: Any, dtype: np.dtype) -> np.ndarray:
    """``x`` as a C-ordered array of ``dtype`` at an aligned address, copied only when needed.

    A chunk deserialised on a worker can be a view into the received network buffer at any byte
    offset (5 bytes past a 64-byte boundary was measured for float32): there the BLAS products and
    the fused kernel ran 3x slower (1.9-3.6 s against 0.6-0.8 s for the same pass over 1M x 100
    x 20 on one worker), so such chunks are copied once, when the block is made.
    """
    arr = np.asarray(x)
    if arr.dtype == dtype and arr.flags.c_contiguous and arr.ctypes.data % 16 == 0:
        return arr
    return np.array(arr, dtype=dtype, order="C")


def make_block(x: Any, y: Any, sw: Any, offset: int, n_total: int, spec: BlockSpec) -> Block:
    """The :class:`~._objective.Problem` of one chunk, checked as the in-memory fit checks it."""
    from ._objective import Problem

    X = _owned(x, spec.dtype)
    bad_value = _first_non_finite(X)
    if bad_value is not None:
        (i, j), value = bad_value
        raise ValueError(
            f"X must be finite, got {value} at X[{i + offset}, {j}]: NaN or inf values are not accepted; "
            "impute or drop them first"
        )
    n = X.shape[0]
    codes = None
    row_weight = None
    if spec.target == "indicator":
        Y = np.asarray(y)
        bad = ~np.isin(Y, (0, 1))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"y is 2-D, so it is read as a label indicator matrix (one 0/1 column per label), "
                f"but y[{i + offset}, {j}] is {Y[i, j].item()!r}; pass class labels as a 1-D array"
            )
        values = _owned(Y, spec.dtype)
    else:
        # The classes came from a pass over this same y: every label is among them.
        codes = np.searchsorted(spec.classes, np.asarray(y).ravel())
        if spec.target == "codes":
            values = codes.astype(np.int64)
        elif spec.target == "binary":
            values = codes.astype(spec.dtype).reshape(-1, 1)
        else:
            values = np.zeros((n, spec.n_outputs), dtype=spec.dtype)
            values[np.arange(n), codes] = 1
        if spec.class_row_weight is not None:
            row_weight = spec.class_row_weight[codes]
    if sw is not None:
        sw = np.asarray(sw).ravel()
        try:
            sw = check_sample_weight(sw, (n,))
        except ValueError:
            raise _global_row_error("sample_weight", sw.astype(np.float64), offset, n_total) from None
    if row_weight is not None:
        sw = row_weight if sw is None else sw * row_weight
    problem = Problem(
        X=X, targets=values, head=spec.head, n_outputs=spec.n_outputs, sample_weight=sw,
        class_weight=spec.label_weight, pos_weight=spec.pos_weight,
    )  # fmt: skip
    return Block(problem, codes, offset)


def block_summary(block: Block) -> tuple[float, int, np.ndarray | None, np.ndarray, np.ndarray]:
    """(weight sum, rows, classes with a positive weight, sum of w x, sum of w x^2), in float64."""
    problem = block.problem
    w = problem.row_weights()
    X = problem.X
    first = np.zeros(X.shape[1])
    second = np.zeros(X.shape[1])
    step = rows_per_block(X.shape[1], 1, 8, False)
    for start in range(0, X.shape[0], step):  # in row blocks, in float64, as the in-memory fit
        xb = X[start : start + step].astype(np.float64)
        wb = w[start : start + step]
        first += wb @ xb
        second += wb @ np.square(xb, out=xb)
    present = None if block.codes is None else np.unique(block.codes[w > 0])
    return float(w.sum()), X.shape[0], present, first, second


def block_covariance(block: Block, n_total: int, mean: np.ndarray) -> tuple[float, int, np.ndarray, np.ndarray]:
    """Over this block's share of the rows the in-memory preconditioner samples: (sum w, count,
    sum w (x - mean)(x - mean)^T, sum (x - mean)(x - mean)^T)."""
    X = block.problem.X
    d = X.shape[1]
    rows = whitening_rows(n_total)
    lo, hi = block.offset, block.offset + X.shape[0]
    local = np.arange(X.shape[0]) if rows is None else rows[(rows >= lo) & (rows < hi)] - lo
    w = block.problem.row_weights()[local]
    cov_w = centred_gram(X, local, mean, w)
    cov_1 = centred_gram(X, local, mean, np.ones(len(local))) if not w.sum() > 0 else np.zeros((d, d))
    return float(w.sum()), len(local), cov_w, cov_1


def block_label_sums(block: Block) -> tuple[float, np.ndarray, np.ndarray]:
    """The sigmoid head's label statistics of one block: (sum w, sum w y, pos_weight * sum w y)."""
    problem = block.problem
    w = problem.row_weights()
    pos = w @ problem.targets.astype(np.float64)
    return float(w.sum()), pos, pos if problem.pos_weight is None else pos * problem.pos_weight


def _identity(value: Any) -> Any:
    return value


def block_loss_grad(block: Block, coefficients: tuple[np.ndarray, np.ndarray | None]) -> tuple[float, ...]:
    """The data term of one block and its gradient: the in-memory fused code, on one worker thread."""
    W, b = coefficients
    return data_loss_grad(block.problem, W, b)


def add_parts(*parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """Elementwise sum of tuples of numbers and arrays (one node of the reduction tree)."""
    return tuple(
        sum(p[i] for p in parts) if not isinstance(parts[0][i], np.ndarray) else np.sum([p[i] for p in parts], axis=0)
        for i in range(len(parts[0]))
    )


def tree_sum(client: Any, futures: list[Any]) -> Any:
    """One future holding the sum of ``futures``' tuples, reduced on the workers, ``_FAN_IN`` at a time."""
    while len(futures) > 1:
        futures = [
            client.submit(add_parts, *futures[i : i + _FAN_IN], pure=False) for i in range(0, len(futures), _FAN_IN)
        ]
    return futures[0]


def gather_clean(client: Any, futures: Any) -> Any:
    """``client.gather``, with the errors of the checks re-raised as the in-memory fit raises them."""
    try:
        return client.gather(futures)
    except (ValueError, TypeError, FloatingPointError) as exc:
        # A new exception of the same type and message: the remote traceback says nothing to the user.
        raise type(exc)(*exc.args) from None


@dataclass
class DaskProblem:
    """What :class:`~._objective.Objective` and the solver read of a problem whose rows are on the workers."""

    n_rows: int
    n_features: int
    n_outputs: int
    head: str
    dtype: np.dtype
    X: Any = None  # never the data: the objective reads it through the blocks

    def row_weights(self) -> None:
        return None  # the total weight and the moments come from block_summary


class DaskObjective(Objective):
    """:class:`~._objective.Objective` whose data passes run on the blocks held by a Dask cluster."""

    def __init__(
        self, client: Any, blocks: list[Any], problem: DaskProblem, summary: dict[str, Any], *, C: float,
        fit_intercept: bool,
    ) -> None:  # fmt: skip
        self.client = client
        self.blocks = blocks
        self._summary = summary
        self.n_passes = 0
        super().__init__(problem, C=C, fit_intercept=fit_intercept, n_threads=1, total_weight=summary["total_weight"])

    def _label_rates(self, weights: Any) -> np.ndarray | None:
        if self.problem.head != "sigmoid":
            return None
        parts = [self.client.submit(block_label_sums, blk, pure=False) for blk in self.blocks]
        return label_rates(*gather_clean(self.client, tree_sum(self.client, parts)))

    def _moments(self, weights: Any) -> tuple[np.ndarray, np.ndarray]:
        S = self.total_weight
        return self._summary["first"] / S, self._summary["second"] / S

    _precheck = False

    def _covariance(self, weights: Any, count: int = 0) -> np.ndarray:
        parts = [
            self.client.submit(block_covariance, blk, self.problem.n_rows, self.mean, pure=False) for blk in self.blocks
        ]
        w_sum, count, cov_w, cov_1 = gather_clean(self.client, tree_sum(self.client, parts))
        # As the in-memory fit: the rows' weights normalised, or equal weights when they are all zero.
        return cov_w / w_sum if w_sum > 0 else cov_1 / count

    def _data_loss_grad(self, W: np.ndarray, b: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray]:
        # The coefficients travel to each worker once per evaluation, not once per block: one small
        # task holds them and each worker fetches its result once for all its blocks. (A scatter with
        # broadcast=True does the same, but blocked for minutes in distributed 2026.8 when a worker had
        # just died; a task is rerun elsewhere if its worker dies.)
        coefficients = self.client.submit(_identity, (W, b), pure=False)
        parts = [self.client.submit(block_loss_grad, blk, coefficients, pure=False) for blk in self.blocks]
        loss, g_w, g_b = gather_clean(self.client, tree_sum(self.client, parts))
        self.n_passes += 1
        return loss, g_w, g_b
