"""Checks of what users hand the estimators: parameters, X, sample and class weights.

Every check raises ``ValueError``/``TypeError`` in one line that names the
argument and shows the bad value. The estimators run these at ``fit``, and
:func:`softxent.models.load` runs the same parameter checks on a model file,
so a file can never hold a model that ``fit`` would have refused.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils.validation import validate_data

__all__ = [
    "check_class_weight_param",
    "check_common_params",
    "check_y_length",
    "is_int",
    "is_real",
    "validated_X",
]

SOLVERS = ("lbfgs", "adam")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def bad(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"{name} must be {expected}, got {value!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)


# --------------------------------------------------------------------------- parameters


def check_class_weight_param(cw: Any) -> None:
    """None, "balanced", or a dict of hashable labels to finite weights >= 0 (the keys are checked at fit)."""
    if cw is None or (isinstance(cw, str) and cw == "balanced"):
        return
    if not isinstance(cw, dict):
        raise bad("class_weight", cw, "None, 'balanced' or a dict {class: weight}")
    for label, weight in cw.items():
        if not is_real(weight) or weight < 0:
            raise ValueError(f"class_weight[{label!r}] must be a finite number >= 0, got {weight!r}")


def check_common_params(est: Any) -> None:
    """The parameters both linear estimators share, each with an error that names it."""
    if not is_real(est.C) or est.C <= 0:
        raise bad("C", est.C, "a finite number > 0 (the inverse of the regularisation strength)")
    for name in ("fit_intercept", "early_stopping", "warm_start"):
        if not isinstance(getattr(est, name), (bool, np.bool_)):
            raise bad(name, getattr(est, name), "True or False")
    if not isinstance(est.solver, str) or est.solver not in SOLVERS:
        raise bad("solver", est.solver, f"one of {SOLVERS}")
    if not is_int(est.max_iter) or est.max_iter < 1:
        raise bad("max_iter", est.max_iter, "an integer >= 1")
    if not is_real(est.tol) or est.tol < 0:
        raise bad("tol", est.tol, "a finite number >= 0")
    check_class_weight_param(est.class_weight)
    bs = est.batch_size
    if not ((isinstance(bs, str) and bs == "auto") or (is_int(bs) and bs >= 1)):
        raise bad("batch_size", bs, "'auto' or an integer >= 1")
    if not is_real(est.learning_rate) or est.learning_rate <= 0:
        raise bad("learning_rate", est.learning_rate, "a finite number > 0")
    if not is_real(est.validation_fraction) or not 0 < est.validation_fraction < 1:
        raise bad("validation_fraction", est.validation_fraction, "a number in (0, 1)")
    if not is_int(est.n_iter_no_change) or est.n_iter_no_change < 1:
        raise bad("n_iter_no_change", est.n_iter_no_change, "an integer >= 1")
    try:
        dtype = np.dtype(est.dtype)
    except TypeError:
        dtype = None
    if dtype not in DTYPES:
        raise bad("dtype", est.dtype, "np.float32 or np.float64")
    rs = est.random_state
    # The forms check_random_state accepts; anything else would fail only later, inside adam.
    if not (rs is None or (is_int(rs) and 0 <= rs < 2**32) or isinstance(rs, np.random.RandomState)):
        raise bad("random_state", rs, "None, an integer in [0, 2**32) or a numpy RandomState")
    if not (is_int(est.verbose) or isinstance(est.verbose, (bool, np.bool_))) or est.verbose < 0:
        raise bad("verbose", est.verbose, "an integer >= 0")
    if est.callback is not None and not callable(est.callback):
        raise bad("callback", est.callback, "None or a callable taking a Progress record")
    if not (est.n_jobs is None or (is_int(est.n_jobs) and est.n_jobs != 0)):
        raise bad("n_jobs", est.n_jobs, "None or a non-zero integer")


# --------------------------------------------------------------------------- X


def _check_X_form(X: Any) -> Any:
    """Shape and kind of X before scikit-learn converts it: its own messages span lines or name no argument."""
    if sparse.issparse(X):
        return X
    if X is None or isinstance(X, (str, bytes, dict)) or np.isscalar(X):
        raise TypeError(f"X must be a 2-D array-like of numbers (n_samples, n_features), got {X!r:.80}")
    if not hasattr(X, "ndim"):  # lists and other sequences: convert once here, validate_data keeps it
        try:
            X = np.asarray(X)
        except ValueError:
            raise ValueError("X must be a rectangular 2-D array of numbers, got rows of different lengths") from None
    if X.ndim != 2:
        hint = (
            "; Reshape your data with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample"
            if X.ndim < 2
            else ""
        )
        raise ValueError(f"X must be 2-D (n_samples, n_features), got a {X.ndim}-D array of shape {X.shape}{hint}")
    dtype = getattr(X, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        # scikit-learn's estimator checks look for this phrase.
        raise ValueError(f"X must hold real numbers: Complex data not supported (dtype {dtype})")
    return X


def _first_non_finite(X: Any) -> tuple[tuple[int, int], float] | None:
    data = X.data if sparse.issparse(X) else X
    # One sum first: finite data (the common case) needs no n-by-d mask.
    if data.size == 0 or np.isfinite(np.sum(data, dtype=np.float64)):
        return None
    bad_mask = ~np.isfinite(data)
    if not bad_mask.any():
        return None  # the sum overflowed on finite values
    if sparse.issparse(X):
        k = int(np.argmax(bad_mask))
        row = int(np.searchsorted(X.indptr, k, side="right")) - 1
        return (row, int(X.indices[k])), float(data[k])
    i, j = np.argwhere(bad_mask)[0]
    return (int(i), int(j)), float(data[i, j])


_NO_Y = object()


def validated_X(est: Any, X: Any, y: Any = _NO_Y, *, reset: bool, dtype: Any, multi_output: bool = False) -> Any:
    """``validate_data`` (CSR or C-ordered ``dtype``), with one-line errors that name X.

    Returns X, or ``(X, y)`` when ``y`` is given (``y=None`` is refused by name).
    """
    X = _check_X_form(X)
    if y is not _NO_Y:
        check_y_length(X, y)
    kwargs = dict(reset=reset, accept_sparse="csr", dtype=dtype, order="C", ensure_all_finite=False)
    try:
        if y is _NO_Y:
            out = validate_data(est, X, **kwargs)
        else:
            out = validate_data(est, X, y, multi_output=multi_output, **kwargs)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        if "convert" in text or "argument must be" in text:  # strings or objects that are not numbers
            raise type(exc)(f"X must hold numbers: {text}") from None
        raise
    X_out = out if y is _NO_Y else out[0]
    bad_value = _first_non_finite(X_out)
    if bad_value is not None:
        (i, j), value = bad_value
        raise ValueError(
            f"X must be finite, got {value} at X[{i}, {j}]: NaN or inf values are not accepted; "
            "impute or drop them first"
        )
    return out


def check_y_length(X: Any, y: Any) -> None:
    """The rows of X and y must pair up (checked before conversion, for a message that names both)."""
    n_X = X.shape[0] if hasattr(X, "shape") and len(X.shape) else None
    try:
        n_y = y.shape[0] if hasattr(y, "shape") else len(y)
    except (TypeError, IndexError):
        return
    if n_X is not None and n_X != n_y:
        raise ValueError(f"X and y must have the same number of rows, got {n_X} rows in X and {n_y} in y")
