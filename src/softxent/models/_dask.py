"""Fitting and predicting on Dask collections: the driver side of the estimators' scale-out.

The estimators route here when X, y or ``sample_weight`` is a ``dask.array``
or ``dask.dataframe`` collection (:func:`is_dask`). A fit on Dask is the
in-memory fit with the data left on the workers:

1. the cluster: the active ``distributed.Client``, or a ``LocalCluster``
   started once per process when there is none (:func:`get_client`; the
   verbose output says which);
2. the inputs: X as a 2-D dask array with one column chunk and known row
   chunks, y and ``sample_weight`` rechunked to X's rows (:func:`_matrix`,
   :func:`_rows`); nothing is computed on the client;
3. one read of every row chunk on its worker (:func:`_load`,
   :func:`~._dask_blocks.load_chunk`: X in the working dtype, checked), held
   there; then a pass over the chunks' labels for the classes (and their
   counts, for ``class_weight="balanced"``), or over an indicator matrix for
   its label counts (:func:`_label_pass`, :func:`_indicator_pass`);
4. the blocks: each chunk made into an in-memory problem on the worker that
   read it (:func:`~._dask_blocks.make_block`, sharing its X), then one pass
   for the total weight, the classes with a positive weight, the moments and
   the sigmoid head's label sums;
5. the estimator's own L-BFGS and stopping rule on a
   :class:`~._dask_blocks.DaskObjective` (one distributed pass per evaluation).

Fitted attributes are plain NumPy, so a model fitted on Dask saves, loads and
predicts exactly as one fitted in memory. ``predict``, ``predict_proba``,
``predict_log_proba`` and ``decision_function`` of a Dask collection return
a lazy dask array, chunked like X's rows, whose blocks are the in-memory
method on X's blocks (:func:`predict_dask`, in :mod:`._dask_predict`).
"""

from __future__ import annotations

import atexit
import sys
import time
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import DataConversionWarning

from ._block_lbfgs import solver_for
from ._dask_blocks import BlockSpec, DaskObjective, DaskProblem, gather_clean, load_chunk, load_rows, make_block
from ._dask_predict import is_frame as _is_frame
from ._dask_predict import predict_dask
from ._heads import check_discrete_labels, choice_for_indicator
from ._solvers import lbfgs_detail, progress_factory

__all__ = ["fit_auto_dask", "fit_dask", "get_client", "is_dask", "predict_dask"]

_OWN_CLIENT: Any = None


def is_dask(*values: Any) -> bool:
    """True when any value is a Dask collection (without importing dask when it was never imported)."""
    if "dask" not in sys.modules:
        return False
    import dask

    return any(dask.is_dask_collection(v) for v in values)


def get_client() -> tuple[Any, str]:
    """The active ``distributed.Client``, else a ``LocalCluster`` started once for this process; and a
    sentence that says which."""
    global _OWN_CLIENT
    import distributed

    try:
        client = distributed.default_client()
    except ValueError:
        client = None
    if client is not None and client.status == "running":
        if client is _OWN_CLIENT:
            return client, f"on the LocalCluster softxent started ({_describe(client)})"
        return client, f"on the active distributed.Client ({_describe(client)})"
    cluster = distributed.LocalCluster()
    _OWN_CLIENT = distributed.Client(cluster)
    atexit.register(_close_own)
    return _OWN_CLIENT, f"no distributed.Client was active: started a LocalCluster ({_describe(_OWN_CLIENT)})"


def _close_own() -> None:
    global _OWN_CLIENT
    if _OWN_CLIENT is not None:
        cluster = _OWN_CLIENT.cluster
        _OWN_CLIENT.close()
        if cluster is not None:
            cluster.close()
        _OWN_CLIENT = None


def _describe(client: Any) -> str:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return f"scheduler {client.scheduler.address}, {len(workers)} workers, {threads} threads"


# --------------------------------------------------------------------------- inputs


def _matrix(X: Any, known_rows: bool = True) -> tuple[Any, np.ndarray | None]:
    """X as a 2-D numeric dask array, one column chunk, known row chunks (``known_rows=False``: a
    frame's row chunks may be left unknown, for :func:`_load_rows` to learn); and its string column names."""
    import dask.array as da

    names = None
    if _is_frame(X):
        if X.ndim == 1:
            X = X.to_frame()
        columns = list(X.columns)
        if columns and all(isinstance(c, str) for c in columns):
            names = np.asarray(columns, dtype=object)
        bad = [f"{c!r} ({t})" for c, t in X.dtypes.items() if getattr(t, "kind", "O") not in "biuf"]
        if bad:
            raise ValueError(f"X must hold numbers: the columns {', '.join(bad[:5])} are not numeric")
        X = X.to_dask_array()  # lengths below (lengths=True fails on some optimised read_parquet graphs)
    elif not isinstance(X, da.Array):
        X = da.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got a {X.ndim}-D array of shape {X.shape}")
    if X.dtype.kind == "c":
        raise ValueError(f"X must hold real numbers: Complex data not supported (dtype {X.dtype})")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must hold numbers, got dtype {X.dtype}")
    if any(np.isnan(c) for c in X.chunks[0]):
        if known_rows:
            X = X.compute_chunk_sizes()
        else:
            return X.rechunk({1: -1}), names
    _check_size(X)
    return X.rechunk({1: -1}), names


def _check_size(X: Any) -> None:
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must have at least one row and one feature, got shape {X.shape}")


def _load_rows(client: Any, X: Any, dtype: np.dtype) -> list[Any]:
    """X's chunks of unknown length (a dask.dataframe's partitions) read into the workers' memory, once,
    in the working dtype; X's row chunks set from their lengths.

    ``compute_chunk_sizes`` would read every partition (all its columns) only to count its rows, and
    the partitions' index alone is no guide: dask.dataframe merges the partitions of a selection
    that small (16 partitions of X had 4 of its index). So the read that the fit needs anyway
    tells the lengths.
    """
    import dask

    xs = X.to_delayed(optimize_graph=False).ravel()
    loaded = client.compute([dask.delayed(load_rows, pure=True)(x, dtype) for x in xs])
    lengths = gather_clean(client, [client.submit(len, f, pure=False) for f in loaded])
    X._chunks = (tuple(int(n) for n in lengths), X.chunks[1])  # as compute_chunk_sizes sets them
    _check_size(X)
    return loaded


def _rows(value: Any, chunks: tuple[int, ...], name: str) -> Any:
    """y or sample_weight as a dask array chunked like X's rows."""
    import dask.array as da

    if value is None:
        return None
    if _is_frame(value):
        dtypes = [value.dtype] if value.ndim == 1 else list(value.dtypes)
        if any(not isinstance(t, np.dtype) for t in dtypes):
            value = value.astype(object)  # pandas' string (and other extension) dtypes: as NumPy objects
        value = value.to_dask_array()
    elif not isinstance(value, da.Array):
        value = np.asarray(value)
        if value.ndim == 0 and name == "sample_weight":
            value = np.full(sum(chunks), float(value))  # a scalar weighs every row
        value = da.from_array(value, chunks=(chunks,) + value.shape[1:])
    if any(np.isnan(c) for c in value.chunks[0]):
        value = value.compute_chunk_sizes()
    if value.shape[0] != sum(chunks):
        what = "y" if name == "y" else name
        raise ValueError(
            f"X and {what} must have the same number of rows, got {sum(chunks)} rows in X and {value.shape[0]} in {what}"
        )
    if value.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {value.shape}")
    return value.rechunk((chunks,) + tuple((s,) for s in value.shape[1:]))


def _label_sets(y: Any) -> tuple[Any, np.ndarray | None]:
    """A list of label sets (held by the client, as lists are) as its indicator matrix and label names."""
    from ._heads import _is_label_set_list, parse_targets

    if is_dask(y) or not _is_label_set_list(y):
        return y, None
    parsed = parse_targets(y)
    return parsed.indicator, parsed.names


def _chunk_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = check_discrete_labels(np.asarray(y).ravel(), "y")
    return np.unique(labels, return_counts=True)


def _raw_labels(raw: Any) -> tuple[np.ndarray, np.ndarray]:
    return _chunk_labels(raw.y)


def _raw_indicator(raw: Any) -> tuple[int, np.ndarray, int, int, tuple[int, int]]:
    return _chunk_indicator(raw.y, raw.offset)


def _label_pass(client: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """The sorted classes of 1-D labels and the count of each, from a pass over y's chunks (a dask
    array) or over the chunks :func:`_load` read (a list of futures)."""
    import dask

    if isinstance(y, list):
        parts = gather_clean(client, [client.submit(_raw_labels, r, pure=False) for r in y])
    else:
        parts = gather_clean(client, client.compute([dask.delayed(_chunk_labels)(c) for c in y.to_delayed().ravel()]))
    try:
        classes = np.unique(np.concatenate([p[0] for p in parts]))
    except TypeError:
        raise TypeError("y mixes strings and numbers across its chunks; use one kind of label") from None
    counts = np.zeros(len(classes), dtype=np.int64)
    for labels, n in parts:
        counts[np.searchsorted(classes, labels)] += n
    return classes, counts


def _chunk_indicator(Y: np.ndarray, offset: int) -> tuple[int, np.ndarray, int, int, tuple[int, int]]:
    Y = np.asarray(Y)
    bad = ~np.isin(Y, (0, 1)) if Y.dtype.kind in "biuf" else np.ones(Y.shape, bool)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"y is 2-D, so it is read as a label indicator matrix (one 0/1 column per label), "
            f"but y[{i + offset}, {j}] is {Y[i, j].item()!r}; pass class labels as a 1-D array"
        )
    counts = Y.sum(axis=1, dtype=np.int64)
    i = int(np.argmax(counts)) if len(counts) else 0
    fullest = (i + offset, int(counts[i]) if len(counts) else -1)
    return len(Y), Y.sum(axis=0, dtype=np.float64), int((counts >= 2).sum()), int((counts == 0).sum()), fullest


def _indicator_pass(client: Any, Y: Any) -> dict[str, Any]:
    """Rows, positives per label, rows with two or more labels, rows with none, the fullest row (over
    Y's chunks, a dask array, or the chunks :func:`_load` read, a list of futures)."""
    import dask

    if isinstance(Y, list):
        parts = gather_clean(client, [client.submit(_raw_indicator, r, pure=False) for r in Y])
    else:
        offsets = np.cumsum((0,) + Y.chunks[0][:-1])
        tasks = [dask.delayed(_chunk_indicator)(c, int(o)) for c, o in zip(Y.to_delayed().ravel(), offsets)]
        parts = gather_clean(client, client.compute(tasks))
    fullest = max((p[4] for p in parts), key=lambda rc: (rc[1], -rc[0]))  # the first row with the most labels
    return {
        "n": sum(p[0] for p in parts),
        "positives": np.sum([p[1] for p in parts], axis=0),
        "multi": sum(p[2] for p in parts),
        "none": sum(p[3] for p in parts),
        "fullest": fullest,
    }


# --------------------------------------------------------------------------- targets


def _class_spec(est: Any, client: Any, raw: list[Any], *, one_vs_rest: bool) -> tuple[BlockSpec, bool]:
    """1-D labels: set ``classes_``; the encoding of a block's targets."""
    classes, counts = _label_pass(client, raw)
    name = type(est).__name__
    if len(classes) < 2:
        raise ValueError(
            f"{name} needs samples of at least 2 classes, but the data contains only one class: {classes[0].item()!r}"
        )
    est.classes_ = classes
    weights = None
    if isinstance(est.class_weight, dict):
        known = classes.tolist()
        unknown = [k for k in est.class_weight if k not in known]
        if unknown:
            raise ValueError(
                f"class_weight names classes that are not in y: {unknown[:10]!r}; the classes are {known[:20]!r}"
            )
        weights = np.array([float(est.class_weight.get(c, 1.0)) for c in known])
    elif est.class_weight is not None:  # "balanced", scikit-learn's n / (k * count)
        weights = counts.sum() / (len(classes) * counts.astype(np.float64))
    k = len(classes)
    dtype = est._work_dtype  # fit always converts to the working dtype (partial_fit is not routed here)
    if k == 2:
        spec = BlockSpec(dtype, "sigmoid", 1, "binary", classes, weights)
    elif one_vs_rest:
        spec = BlockSpec(dtype, "sigmoid", k, "one_hot", classes, weights)
    else:
        spec = BlockSpec(dtype, "softmax", k, "codes", classes, weights)
    if one_vs_rest:
        est.target_type_ = "binary" if k == 2 else "multiclass"
    return spec, True


def _targets_spec(est: Any, client: Any, y: Any, raw: list[Any]) -> tuple[BlockSpec, bool]:
    """The encoding of the targets, from y's shape and a pass over the labels of the chunks read (``raw``)."""
    from ._sigmoid_regression import SigmoidRegression

    sigmoid = isinstance(est, SigmoidRegression)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the shape "
            "of y to (n_samples, ), for example using ravel().",
            DataConversionWarning,
            stacklevel=4,
        )
        y = y[:, 0]  # the chunks' labels are raveled where they are read
    if y.ndim == 1:
        return _class_spec(est, client, raw, one_vs_rest=sigmoid)
    if not sigmoid:
        raise ValueError(
            f"y must be 1-D class labels for {type(est).__name__}, got a dask array of shape {y.shape}; "
            "for multi-label targets use SigmoidRegression or AutoClassifier"
        )
    stats = _indicator_pass(client, raw)
    est.classes_ = np.arange(y.shape[1])
    est.target_type_ = "multilabel-indicator"
    est._indicator_dtype = y.dtype
    label_weight, pos_weight = est._label_weights_from_counts(stats["n"], lambda: stats["positives"])
    dtype = est._work_dtype
    return BlockSpec(dtype, "sigmoid", y.shape[1], "indicator", None, None, label_weight, pos_weight), False


# --------------------------------------------------------------------------- fit


def _load(client: Any, X: Any, y: Any, sw: Any, dtype: np.dtype, loaded: list[Any] | None = None) -> list[Any]:
    """Futures of the row chunks, each read once on a worker (:func:`~._dask_blocks.load_chunk`);
    ``loaded``: X's chunks already in the workers' memory (:func:`_load_rows`)."""
    import dask

    # Unoptimised graphs: optimising X's and y's graphs separately fuses a task they share (one read
    # of a file that yields both) into each of them, and every chunk was then read twice.
    xs = X.to_delayed(optimize_graph=False).ravel() if loaded is None else loaded
    ys = y.to_delayed(optimize_graph=False).ravel()
    sws = [None] * len(xs) if sw is None else list(sw.to_delayed(optimize_graph=False).ravel())
    offsets = np.cumsum((0,) + X.chunks[0][:-1])
    n = X.shape[0]
    tasks = [
        dask.delayed(load_chunk, pure=True)(x, yy, s, int(o), n, dtype) for x, yy, s, o in zip(xs, ys, sws, offsets)
    ]
    return client.compute(tasks)


def _summary(client: Any, blocks: list[Any], name: str, est: Any, stratified: bool) -> dict[str, Any]:
    from ._dask_blocks import block_summary

    parts = gather_clean(client, [client.submit(block_summary, b, pure=False) for b in blocks])
    total = float(sum(p[0] for p in parts))
    sigmoid = parts[0][5] is not None
    if not total > 0:
        raise ValueError(
            "the sample weights (times the class weights) are zero for every row; at least one row needs a "
            "positive weight"
        )
    if stratified:
        present = np.unique(np.concatenate([p[2] for p in parts]))
        if len(present) < 2:
            raise ValueError(
                f"{name} needs samples of at least 2 classes with a positive weight, but only class "
                f"{est.classes_[present[0]].item()!r} has any (sample_weight times class_weight)"
            )
    return {
        "total_weight": total,
        "first": np.sum([p[3] for p in parts], axis=0),
        "second": np.sum([p[4] for p in parts], axis=0),
        "positives": np.sum([p[5] for p in parts], axis=0) if sigmoid else None,
        "weighted_positives": np.sum([p[6] for p in parts], axis=0) if sigmoid else None,
    }


def fit_dask(est: Any, X: Any, y: Any, sample_weight: Any = None) -> Any:
    """``fit`` of :class:`SoftmaxRegression` / :class:`SigmoidRegression` on Dask collections."""
    est._check_params()
    name = type(est).__name__
    if est.solver != "lbfgs":
        raise ValueError(
            f"{name} fits Dask collections with solver='lbfgs' only, got solver={est.solver!r}; for adam, "
            "stream the chunks through partial_fit"
        )
    if y is None:
        raise ValueError("this classifier requires y to be passed, but the target y is None")
    if isinstance(sample_weight, (str, bytes)):
        raise TypeError(f"sample_weight must be a number or an array of numbers, got {sample_weight!r:.80}")
    client, where = get_client()
    if est.verbose:
        print(f"[{name}] fitting on Dask {where}", flush=True)
    dtype = np.dtype(est._work_dtype)
    Xd, names = _matrix(X, known_rows=False)
    raw: list[Any] = []
    blocks: list[Any] = []
    try:
        loaded = _load_rows(client, Xd, dtype) if any(np.isnan(c) for c in Xd.chunks[0]) else None
        raw = loaded or []
        chunks = Xd.chunks[0]
        y, set_names = _label_sets(y)
        yd = _rows(y, chunks, "y")
        swd = _rows(sample_weight, chunks, "sample_weight")
        if swd is not None and swd.ndim != 1:
            raise ValueError(f"sample_weight must have shape ({Xd.shape[0]},) (one per row), got shape {swd.shape}")
        raw = _load(client, Xd, yd, swd, dtype, loaded)
        loaded = None
        spec, stratified = _targets_spec(est, client, yd, raw)
        if set_names is not None and spec.target == "indicator":
            est.classes_, est._indicator_dtype = set_names, np.dtype(np.int64)  # as in memory for label sets
        est.n_features_in_ = Xd.shape[1]
        if names is not None:
            est.feature_names_in_ = names
        elif hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        # Each block is made where its chunk was read and shares its X. The raw chunks' futures are
        # released, not cancelled (a cancel would cancel the blocks that depend on them): Dask keeps
        # a raw chunk until its block exists, and knows how to rebuild a block lost with its worker.
        blocks = [client.submit(make_block, r, spec, pure=False) for r in raw]
        raw = []
        summary = _summary(client, blocks, name, est, stratified)
        problem = DaskProblem(Xd.shape[0], Xd.shape[1], spec.n_outputs, spec.head, np.dtype(spec.dtype))
        W0, b0 = est._initial_params(spec.n_outputs, Xd.shape[1])
        start = time.perf_counter()
        make = progress_factory(name, "lbfgs", start)
        objective = DaskObjective(client, blocks, problem, summary, C=est.C, fit_intercept=est.fit_intercept)
        W0, b0 = objective.starting_point(W0, b0)  # as in memory
        theta, result = solver_for(objective)(
            objective, objective.pack(W0, b0), tol=est.tol, max_iter=est.max_iter,
            report=est._report(), make_progress=make,
        )  # fmt: skip
        W, b = objective.unpack(theta)
    finally:
        client.cancel(raw + blocks)  # the data leaves the workers' memory with the fit
    est._set_params_from(W, b)
    est.n_iter_ = result.n_iter
    est.loss_curve_ = result.loss_curve
    est.validation_loss_curve_ = None
    if hasattr(est, "_optimizer"):
        del est._optimizer
    est._warn_not_converged(result.status, lbfgs_detail(objective.last_grad_max, est.tol))
    return est


def fit_auto_dask(auto: Any, X: Any, y: Any, sample_weight: Any = None) -> Any:
    """``AutoClassifier.fit`` on Dask collections: the head chosen from a pass over y, then fitted on Dask."""
    from ._auto import _names_array
    from ._heads import choice_for_labels
    from ._sigmoid_regression import SigmoidRegression
    from ._softmax_regression import SoftmaxRegression

    auto._check_params()
    if y is None:
        raise ValueError("this classifier requires y to be passed, but the target y is None")
    client, _ = get_client()
    Xd, _ = _matrix(X)
    y, set_names = _label_sets(y)
    yd = _rows(y, Xd.chunks[0], "y")
    previous = getattr(auto, "head_", None) if auto.warm_start else None
    if yd.ndim == 1 or yd.shape[1] == 1:
        head = auto._head(SoftmaxRegression, previous)
        head.fit(X, y, sample_weight=sample_weight)
        choice = choice_for_labels(len(head.classes_))
        auto.classes_, auto.labels_, auto.target_type_ = head.classes_, None, "labels"
    else:
        stats = _indicator_pass(client, yd)
        n_labels = yd.shape[1]
        choice = choice_for_indicator(
            stats["n"], n_labels, stats["multi"], stats["none"], stats["fullest"], from_sets=set_names is not None,
            other_label=auto.other_label,
        )  # fmt: skip
        names = np.arange(n_labels) if set_names is None else set_names
        if choice.head == "sigmoid":
            head = auto._head(SigmoidRegression, previous)
            head.set_params(threshold=auto.threshold)
            head.fit(X, yd, sample_weight=sample_weight)
            if set_names is not None:  # the head, too, names its columns as in memory
                head.classes_, head._indicator_dtype = set_names, np.dtype(np.int64)
            auto.classes_ = names
        else:
            positives = stats["positives"]
            present = int((positives > 0).sum()) + (1 if stats["none"] else 0)
            if present < 2:
                raise ValueError(
                    f"AutoClassifier needs rows of at least 2 classes, but every row of y carries the one "
                    f"label {names.tolist()[int(np.argmax(positives))]!r}"
                )
            if auto.other_label in names.tolist():
                raise ValueError(
                    f"other_label={auto.other_label!r} is already one of the labels "
                    f"{names.tolist()}; choose another name for the added class"
                )
            all_names = list(names.tolist()) + [auto.other_label]
            head = auto._head(SoftmaxRegression, previous)
            if isinstance(auto.class_weight, dict):
                unknown = [k for k in auto.class_weight if k not in all_names]
                if unknown:
                    raise ValueError(
                        f"class_weight names labels that are not in y: {unknown[:10]}; labels: {all_names}"
                    )
                head.set_params(class_weight={all_names.index(k): w for k, w in auto.class_weight.items()})
            codes = yd.map_blocks(_indicator_codes, n_labels, drop_axis=1, dtype=np.int64)
            head.fit(X, codes, sample_weight=sample_weight)
            auto.classes_ = _names_array([all_names[c] for c in head.classes_.tolist()])
        auto.labels_, auto.target_type_ = names, "multilabel-indicator"
        auto._indicator_dtype = yd.dtype if set_names is None else np.dtype(np.int64)
    auto.head_choice_ = choice
    auto.head_ = head
    auto.n_features_in_ = head.n_features_in_
    if hasattr(head, "feature_names_in_"):
        auto.feature_names_in_ = head.feature_names_in_
    elif hasattr(auto, "feature_names_in_"):
        del auto.feature_names_in_
    return auto


def _indicator_codes(Y: np.ndarray, n_labels: int) -> np.ndarray:
    """The column of each row's one label, ``n_labels`` ("other") for rows without one."""
    return np.where(Y.any(axis=1), np.argmax(Y, axis=1), n_labels).astype(np.int64)
