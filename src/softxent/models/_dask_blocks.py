r"""The worker side of a fit on Dask, and the driver's objective over it.

A fit on Dask is the in-memory fit with one thing moved: the data term
:math:`\sum_i s_i \ell_i` and its gradient. The driver keeps L-BFGS, the
preconditioning and the stopping rule of :class:`~._objective.Objective`
(:class:`DaskObjective` is a subclass that overrides only where the data is
read); the workers keep the data.

* :func:`load_chunk` reads one row chunk of (X, y, sample_weight) once, on a
  worker: X in the working dtype (checked finite), the raw labels, the
  checked weights (:class:`RawChunk`). The driver's passes over the labels
  (classes, label counts) read these chunks, not the input collections, so
  the input (a Parquet part, say) is read once per fit, not once for the
  labels and again for the data.
* :func:`make_block` turns a raw chunk into a :class:`~._objective.Problem`
  on the worker that holds it (sharing its X: no copy): the targets encoded
  as the in-memory estimators encode them, the class weights folded into the
  row weights. The blocks stay in worker memory (futures held by the driver)
  for the whole fit.
* Each evaluation runs one task per worker, :func:`worker_loss_grad`, on all
  the blocks that worker holds (the fused in-memory code,
  :func:`~._objective.data_loss_grad`, block after block), with
  :math:`(W, b)` in the task itself: the coefficients travel once per worker
  and evaluation, and an evaluation is one round trip, not a task per block
  plus a reduction tree (on a busy 2-core host those round trips, not the
  arithmetic, were most of an evaluation: 1.2 s against 0.3 s of kernels for
  2M x 101 on 2 workers). The per-worker partial results are summed in a
  tree of :func:`add_parts` tasks (fan-in 8) when there are more than 8 of
  them, as Spark's ``treeAggregate`` does, else on the driver: the driver
  receives at most 8 (loss, K x d, K) triples per evaluation, never a row of X.
* The preconditioner's statistics (weighted means and second moments, the
  sigmoid head's label rates, the covariance of the evenly spaced rows the
  in-memory fit samples) come from the same kind of pass
  (:func:`block_summary`, :func:`block_covariance`).

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

__all__ = [
    "Block", "BlockSpec", "DaskObjective", "DaskProblem", "RawChunk", "gather_clean", "load_chunk", "load_rows",
    "make_block", "tree_sum",
]  # fmt: skip

_FAN_IN = 8  # partial results summed per reduction task

# Coefficients up to this size travel inside each worker's evaluation task (the scheduler passes them
# on); larger ones go once to a task of their own whose result each worker fetches.
_INLINE_COEF_BYTES = 1 << 20


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


@dataclass
class RawChunk:
    """One chunk of rows as read on its worker: X (working dtype, finite), raw labels, checked weights."""

    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray | None
    offset: int

    def __sizeof__(self) -> int:  # as Block: the arrays, for Dask's memory accounting
        arrays = (self.X, self.y, self.sample_weight)
        return object.__sizeof__(self) + sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def load_rows(x: Any, dtype: np.dtype) -> np.ndarray:
    """X's chunk as a C-ordered array of ``dtype`` (a partition of a frame, whose length is learnt
    from it); checked later, by :func:`load_chunk`, once its offset is known."""
    return _owned(x.to_numpy() if hasattr(x, "to_numpy") else x, dtype)


def load_chunk(x: Any, y: Any, sw: Any, offset: int, n_total: int, dtype: np.dtype) -> RawChunk:
    """One chunk read on its worker, X checked as the in-memory fit checks it (row indices global)."""
    X = _owned(x, dtype)
    # A sum in X's own dtype first: NaN and inf carry through it, and it runs at memory speed, where
    # the float64 sum of the in-memory check casts every float32 value (0.05 s a chunk of 125000 x 101,
    # half an evaluation). A non-finite sum (or finite values that overflow it) gets the full check.
    bad_value = None if np.isfinite(np.sum(X)) else _first_non_finite(X)
    if bad_value is not None:
        (i, j), value = bad_value
        raise ValueError(
            f"X must be finite, got {value} at X[{i + offset}, {j}]: NaN or inf values are not accepted; "
            "impute or drop them first"
        )
    if sw is not None:
        sw = np.asarray(sw).ravel()
        try:
            sw = check_sample_weight(sw, (X.shape[0],))
        except ValueError:
            raise _global_row_error("sample_weight", sw.astype(np.float64), offset, n_total) from None
    return RawChunk(X, np.asarray(y), sw, offset)


def make_block(raw: RawChunk, spec: BlockSpec) -> Block:
    """The :class:`~._objective.Problem` of one chunk (its X shared with ``raw``), targets encoded."""
    from ._objective import Problem

    X, y, offset = raw.X, raw.y, raw.offset
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
    sw = raw.sample_weight
    if row_weight is not None:
        sw = row_weight if sw is None else sw * row_weight
    problem = Problem(
        X=X, targets=values, head=spec.head, n_outputs=spec.n_outputs, sample_weight=sw,
        class_weight=spec.label_weight, pos_weight=spec.pos_weight,
    )  # fmt: skip
    return Block(problem, codes, offset)


def block_summary(block: Block) -> tuple[float, int, np.ndarray | None, np.ndarray, np.ndarray, Any, Any]:
    """(weight sum, rows, classes with a positive weight, sum of w x, sum of w x^2, and for the sigmoid
    head sum of w y and that times pos_weight (the label rates' sums; None for softmax)), in float64."""
    problem = block.problem
    w = problem.row_weights()
    X = problem.X
    first = np.zeros(X.shape[1])
    second = np.zeros(X.shape[1])
    step = rows_per_block(X.shape[1], 1, 8, False)
    # One float64 buffer for all row blocks: a fresh 3 MB ``astype`` per block page-faulted on the
    # workers (Dask sets MALLOC_TRIM_THRESHOLD_, so freed blocks go back to the OS): 0.68 s against
    # 0.16 s in the client for 125000 x 101. The same products on the same float64 values.
    buf = np.empty((min(step, X.shape[0]), X.shape[1]))
    for start in range(0, X.shape[0], step):  # in row blocks, in float64, as the in-memory fit
        xb = buf[: min(step, X.shape[0] - start)]
        np.copyto(xb, X[start : start + step])
        wb = w[start : start + step]
        first += wb @ xb
        second += wb @ np.square(xb, out=xb)
    present = None if block.codes is None else np.unique(block.codes[w > 0])
    pos = pos_w = None
    if problem.head == "sigmoid":
        pos = w @ problem.targets.astype(np.float64)
        pos_w = pos if problem.pos_weight is None else pos * problem.pos_weight
    return float(w.sum()), X.shape[0], present, first, second, pos, pos_w


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


def _identity(value: Any) -> Any:
    return value


def worker_loss_grad(coefficients: tuple[np.ndarray, np.ndarray | None], *blocks: Block) -> tuple[float, ...]:
    """The data term and its gradient summed over the blocks one worker holds, in their order (the
    in-memory fused code on each, in float64)."""
    W, b = coefficients
    loss, g_w, g_b = data_loss_grad(blocks[0].problem, W, b)
    for block in blocks[1:]:
        part = data_loss_grad(block.problem, W, b)
        loss += part[0]
        g_w += part[1]
        g_b += part[2]
    return loss, g_w, g_b


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
        summary = self._summary
        return label_rates(summary["total_weight"], summary["positives"], summary["weighted_positives"])

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

    def _by_worker(self) -> list[tuple[str | None, list[Any]]]:
        """The blocks grouped by the worker that holds them, in the blocks' order (asked of the
        scheduler at every evaluation: a block lost with its worker is rebuilt elsewhere)."""
        who = self.client.who_has(self.blocks)
        groups: dict[str | None, list[Any]] = {}
        for block in self.blocks:
            holders = who.get(block.key) or ()
            groups.setdefault(holders[0] if holders else None, []).append(block)
        return list(groups.items())

    def _data_loss_grad(self, W: np.ndarray, b: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray]:
        # One task per worker over all its blocks (allowed elsewhere if that worker is gone: Dask then
        # moves or rebuilds the blocks); the coefficients ride in it, or, when large, in one task
        # whose result each worker fetches once. (A scatter with broadcast=True blocked for minutes in
        # distributed 2026.8 when a worker had just died; a task is rerun elsewhere if its worker dies.)
        coefficients: Any = (W, b)
        if W.nbytes > _INLINE_COEF_BYTES:
            coefficients = self.client.submit(_identity, (W, b), pure=False)
        parts = [
            self.client.submit(
                worker_loss_grad,
                coefficients,
                *blocks,
                pure=False,
                workers=None if address is None else [address],
                allow_other_workers=True,
            )  # fmt: skip
            for address, blocks in self._by_worker()
        ]
        if len(parts) > _FAN_IN:
            parts = [tree_sum(self.client, parts)]
        loss, g_w, g_b = add_parts(*gather_clean(self.client, parts))
        self.n_passes += 1
        return loss, g_w, g_b
