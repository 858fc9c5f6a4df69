"""Predictions of a fitted estimator on Dask collections: lazy dask arrays, one block per row chunk.

The blocks are the in-memory methods themselves, applied to X's chunks (dask
arrays, by ``map_blocks``) or partitions (dask DataFrames, which keep their
column names for the in-memory feature-name check), so a prediction on Dask
equals the in-memory prediction of the same rows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["is_frame", "predict_dask"]


def is_frame(value: Any) -> bool:
    """A dask DataFrame or Series."""
    return hasattr(value, "to_dask_array") and hasattr(value, "npartitions")


def _apply(block: Any, est: Any, method: str, tail: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if len(block) == 0:  # an empty chunk or partition: the in-memory checks refuse zero rows
        return np.empty((0,) + tail, dtype=dtype)
    return np.asarray(getattr(est, method)(block))


def predict_dask(est: Any, method: str, X: Any) -> Any:
    """``est.<method>`` of a Dask collection: a lazy dask array, one block per row chunk of X."""
    import dask
    import dask.array as da
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    d = est.n_features_in_
    probe = np.zeros((1, d), dtype=np.float64)
    if is_frame(X):
        import pandas as pd

        probe = pd.DataFrame(probe, columns=list(X.columns))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the probe only learns the output's shape and dtype
        sample = np.asarray(getattr(est, method)(probe))
    tail, dtype = sample.shape[1:], sample.dtype
    if is_frame(X):
        parts = [
            da.from_delayed(dask.delayed(_apply)(p, est, method, tail, dtype), shape=(np.nan,) + tail, dtype=dtype)
            for p in X.to_delayed()
        ]
        return da.concatenate(parts, axis=0)
    if not isinstance(X, da.Array) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D dask array or a dask DataFrame, got {type(X).__name__}")
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is expecting {d} features as input")
    X = X.rechunk({1: -1})
    chunks = (X.chunks[0],) + tuple((s,) for s in tail)
    return X.map_blocks(
        _apply, est, method, tail, dtype, dtype=dtype, chunks=chunks, drop_axis=None if tail else 1,
        meta=np.empty((0,) + tail, dtype=dtype),
    )  # fmt: skip
