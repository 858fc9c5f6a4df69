"""Checks of what users hand the estimators: parameters, X, sample and class weights.

Every check raises ``ValueError``/``TypeError`` in one line that names the
argument and shows the bad value. The parameters go through scikit-learn's
own ``_parameter_constraints`` (:data:`COMMON_CONSTRAINTS`: its
``InvalidParameterError`` is both a ``ValueError`` and a ``TypeError`` and
names the parameter and the value); :func:`check_common_params` adds what
those constraints cannot say. The estimators run both at ``fit``, and
:func:`softxent.models.load` runs the same checks on a model file, so a file
can never hold a model that ``fit`` would have refused.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

__all__ = [
    "COMMON_CONSTRAINTS",
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


# The parameters both linear estimators share, in scikit-learn's constraint language. The
# upper bound np.inf with an open interval keeps C, tol and learning_rate finite.
COMMON_CONSTRAINTS: dict = {
    "C": [Interval(numbers.Real, 0, np.inf, closed="neither")],
    "fit_intercept": ["boolean"],
    "solver": [StrOptions(set(SOLVERS))],
    "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    "tol": [Interval(numbers.Real, 0, np.inf, closed="left")],
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
    "learning_rate": [Interval(numbers.Real, 0, np.inf, closed="neither")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    "warm_start": ["boolean"],
    "dtype": "no_validation",  # a dtype-like; checked by check_common_params
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "callback": [callable, None],
    "n_jobs": [
        Interval(numbers.Integral, None, -1, closed="right"),
        Interval(numbers.Integral, 1, None, closed="left"),
        None,
    ],
}


def check_common_params(est: Any) -> None:
    """What :data:`COMMON_CONSTRAINTS` cannot say: the dtype, and the weights of a class_weight dict."""
    check_class_weight_param(est.class_weight)
    try:
        dtype = np.dtype(est.dtype)
    except TypeError:
        dtype = None
    if dtype not in DTYPES:
        raise bad("dtype", est.dtype, "np.float32 or np.float64")


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
