r"""Sigmoid regression: one sigmoid per label for labels that do not exclude each other (eq. 2)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Real
from typing import Any

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.utils._param_validation import Interval

import softxent as sx

from ._base import COMMON_PARAMS, LinearClassifierBase, Targets
from ._dask import is_dask, predict_dask
from ._heads import ParsedTargets, exact_labels, parse_targets


class SigmoidRegression(LinearClassifierBase):
    r"""Multi-label logistic regression: K sigmoid heads on one weight matrix, trained jointly.

    For labels that do not exclude each other (a song can be vocal *and* a
    soundtrack): logits :math:`z = W x + b` for all K labels at once, an
    independent probability :math:`\sigma(z_j)` per label (eq. 2), and the
    sum of the K binary cross-entropies (eq. 7 with two classes),

    .. math::

        F(W, b) = C \sum_i s_i \sum_j w_j \left[-p_j y_{ij} \log \sigma(z_{ij})
                  - (1 - y_{ij}) \log \sigma(-z_{ij})\right] + \tfrac12 \lVert W \rVert_F^2

    This objective separates over labels: each row of ``W`` is exactly the
    ``LogisticRegression(C=C)`` of its label, so the model equals one
    logistic regression per label (``OneVsRestClassifier``,
    ``MultiOutputClassifier``) while making one pass over the data per
    iteration for all labels together.

    ``y`` may be

    * a 0/1 indicator matrix (n_samples, n_labels) or a list of label sets
      (``[{"vocal", "pop"}, {"dance"}, set()]``): multi-label. ``predict``
      returns the indicator matrix (in the dtype of the training
      indicator; int64 for label sets), a label counted when its
      probability exceeds ``threshold``; ``classes_`` names its columns;
    * 1-D class labels: one-vs-rest, one sigmoid per class (one in all for
      two classes, the binary logistic regression). ``predict`` returns the
      class with the largest logit (two classes: probability above
      ``threshold``), ``predict_proba`` the sigmoids normalised to sum to 1
      as ``OneVsRestClassifier`` does. For exclusive classes
      :class:`SoftmaxRegression` is the better model.

    Parameters
    ----------{params}    threshold : float, default 0.5
        A label is predicted when its probability exceeds this (multi-label
        and binary targets).

    ``class_weight`` for multi-label targets: ``"balanced"`` weighs each
    label's positive and negative rows as ``LogisticRegression(
    class_weight="balanced")`` would for that label alone (the negatives by
    ``n / (2 n_neg)``, the positives by ``n / (2 n_pos)``); a dict
    ``{label: weight}`` multiplies a label's whole term.

    Attributes
    ----------
    classes_ : ndarray
        Label names (the indicator's columns, or the sorted labels of the
        label sets), or the classes of 1-D targets.
    target_type_ : {"multilabel-indicator", "multiclass", "binary"}
    coef_ : ndarray of shape (n_labels, n_features)
        One row per label (per class for one-vs-rest; one row for two classes).
    intercept_ : ndarray of shape (n_labels,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
    n_iter_ : int
    loss_curve_ : list of float
    validation_loss_curve_ : list of float or None

    Examples
    --------
    >>> import numpy as np
    >>> from softxent.models import SigmoidRegression
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> y = [{"vocal"}, {"dance"}, {"vocal", "dance"}, set()]
    >>> model = SigmoidRegression(C=100.0).fit(X, y)
    >>> model.classes_
    array(['dance', 'vocal'], dtype='<U5')
    >>> model.predict(X)
    array([[0, 1],
           [1, 0],
           [1, 1],
           [0, 0]])
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        solver: str = "lbfgs",
        max_iter: int = 100,
        tol: float = 1e-4,
        class_weight: Any = None,
        batch_size: int | str = "auto",
        learning_rate: float = 1e-3,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        warm_start: bool = False,
        dtype: Any = np.float64,
        random_state: Any = None,
        verbose: int = 0,
        callback: Any = None,
        n_jobs: int | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.n_jobs = n_jobs
        self.threshold = threshold

    _parameter_constraints: dict = {
        **LinearClassifierBase._parameter_constraints,
        "threshold": [Interval(Real, 0, 1, closed="both")],
    }

    # ------------------------------------------------------------------ targets
    def _fit_targets(self, X: Any, y: Any, *, first: bool, partial: bool, classes: Any = None) -> tuple[Any, Targets]:
        parsed = parse_targets(y)
        kind = "multilabel-indicator" if parsed.kind == "indicator" else None
        if not first and (kind == "multilabel-indicator") != (self.target_type_ == "multilabel-indicator"):
            raise ValueError(
                f"y must keep the form of the first call to partial_fit ({self.target_type_}), got "
                + ("a multi-label y" if kind else "1-D class labels")
            )
        if parsed.kind == "labels":
            return self._one_vs_rest_targets(X, parsed, first=first, partial=partial, classes=classes)
        return self._multilabel_targets(X, parsed, first=first, partial=partial, classes=classes)

    def _one_vs_rest_targets(
        self, X: Any, parsed: ParsedTargets, *, first: bool, partial: bool, classes: Any
    ) -> tuple[Any, Targets]:
        if parsed.column_vector:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change the shape "
                "of y to (n_samples, ), for example using ravel().",
                DataConversionWarning,
                stacklevel=4,
            )
        X, y = self._validate_X_y(X, parsed.labels, first=first, multi_output=False)
        codes = self._class_labels(y, first=first, partial=partial, classes=classes)
        if first:
            self.target_type_ = "binary" if len(self.classes_) == 2 else "multiclass"
        row_weight = self._row_class_weight(y, codes)
        if len(self.classes_) == 2:
            values = codes.astype(X.dtype).reshape(-1, 1)
        else:
            values = np.zeros((len(codes), len(self.classes_)), dtype=X.dtype)
            values[np.arange(len(codes)), codes] = 1
        return X, Targets(values, "sigmoid", values.shape[1], row_weight=row_weight, stratify=codes)

    def _multilabel_targets(
        self, X: Any, parsed: ParsedTargets, *, first: bool, partial: bool, classes: Any
    ) -> tuple[Any, Targets]:
        Y, names = parsed.indicator, parsed.names
        if first:
            if classes is not None:
                self.classes_ = np.asarray(exact_labels(classes, "classes"))
                if self.classes_.ndim != 1 or len(set(self.classes_.tolist())) != len(self.classes_):
                    raise ValueError(f"classes must be a 1-D list of distinct label names, got {classes!r:.80}")
                if parsed.from_sets:
                    Y = self._reindex(Y, names)
                elif len(self.classes_) != Y.shape[1]:
                    raise ValueError(f"classes names {len(self.classes_)} labels but y has {Y.shape[1]} columns")
            else:
                self.classes_ = names
            self.target_type_ = "multilabel-indicator"
            self._indicator_dtype = parsed.dtype
        elif parsed.from_sets:
            Y = self._reindex(Y, names)
        elif Y.shape[1] != len(self.classes_):
            raise ValueError(
                f"y has {Y.shape[1]} label columns but {type(self).__name__} was fitted with "
                f"{len(self.classes_)}: {self.classes_.tolist()}"
            )
        X = self._validate_X(X, reset=first)
        self._check_y_length(X, Y.shape[0])
        label_weight, pos_weight = self._label_weights(Y)
        return X, Targets(Y.astype(X.dtype), "sigmoid", Y.shape[1], label_weight=label_weight, pos_weight=pos_weight)

    def _reindex(self, Y: np.ndarray, names: np.ndarray) -> np.ndarray:
        """Columns of label sets (sorted names) moved to their places in ``classes_``."""
        known = self.classes_.tolist()
        index = {label: j for j, label in enumerate(known)}
        unknown = [n for n in names.tolist() if n not in index]
        if unknown:
            raise ValueError(f"y contains labels that are not in classes_ {known}: {unknown[:10]}")
        out = np.zeros((Y.shape[0], len(known)), dtype=Y.dtype)
        out[:, [index[n] for n in names.tolist()]] = Y
        return out

    def _label_weights(self, Y: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        return self._label_weights_from_counts(Y.shape[0], lambda: Y.sum(axis=0, dtype=np.float64))

    def _label_weights_from_counts(
        self, n: int, positives: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Label and positive weights from the row count and the positives of each label (a
        Dask fit counts them by a distributed pass, asked for only when ``class_weight="balanced"``)."""
        cw = self.class_weight
        if cw is None:
            return None, None
        if isinstance(cw, str):  # "balanced", per label as LogisticRegression would for that label alone
            n_pos = positives()
            n_neg = n - n_pos
            w_neg = np.where(n_neg > 0, n / (2 * np.maximum(n_neg, 1)), 1.0)
            w_pos = np.where(n_pos > 0, n / (2 * np.maximum(n_pos, 1)), 1.0)
            return w_neg, w_pos / w_neg
        known = self.classes_.tolist()
        unknown = [k for k in cw if k not in known]
        if unknown:
            raise ValueError(f"class_weight names labels that are not in classes_ {known}: {unknown[:10]}")
        weight = np.array([float(cw.get(label, 1.0)) for label in known])
        if not np.all(np.isfinite(weight) & (weight >= 0)):
            raise ValueError(f"class_weight values must be finite and >= 0, got {cw!r}")
        return weight, None

    # ------------------------------------------------------------------ predict
    def decision_function(self, X: Any) -> np.ndarray:
        """The logits :math:`z = W x + b`: (n_samples, n_labels), or (n_samples,) for binary 1-D targets."""
        if is_dask(X):
            return predict_dask(self, "decision_function", X)
        Z = self._logits(X)
        return Z[:, 0] if self.target_type_ == "binary" else Z

    def predict_proba(self, X: Any) -> np.ndarray:
        r"""Probabilities :math:`\sigma(z)` (eq. 2) per label, shape (n_samples, n_labels).

        Binary 1-D targets: (n_samples, 2) as ``[σ(-z), σ(z)]``; one-vs-rest:
        the sigmoids normalised to sum to 1 over the classes.
        """
        if is_dask(X):
            return predict_dask(self, "predict_proba", X)
        Z = self._logits(X)
        if self.target_type_ == "binary":
            z = Z[:, 0]
            return np.column_stack([sx.sigmoid(-z), sx.sigmoid(z)])
        P = sx.sigmoid(Z)
        if self.target_type_ == "multiclass":
            P /= P.sum(axis=1, keepdims=True)
        return P

    def predict_log_proba(self, X: Any) -> np.ndarray:
        r"""Logarithm of :meth:`predict_proba`, from ``log_sigmoid`` (no ``log`` of a rounded probability)."""
        if is_dask(X):
            return predict_dask(self, "predict_log_proba", X)
        Z = self._logits(X)
        if self.target_type_ == "binary":
            z = Z[:, 0]
            return np.column_stack([sx.log_sigmoid(-z), sx.log_sigmoid(z)])
        L = sx.log_sigmoid(Z)
        if self.target_type_ == "multiclass":
            L -= sx.logsumexp(L, axis=1, keepdims=True)
        return L

    def predict(self, X: Any) -> np.ndarray:
        """Indicator matrix (multi-label) or class labels (1-D targets)."""
        if is_dask(X):
            return predict_dask(self, "predict", X)
        Z = self._logits(X)
        if self.target_type_ == "multilabel-indicator":
            return (sx.sigmoid(Z) > self.threshold).astype(self._indicator_dtype)
        if self.target_type_ == "binary":
            return self.classes_[(sx.sigmoid(Z[:, 0]) > self.threshold).astype(np.intp)]
        return self.classes_[np.argmax(Z, axis=1)]

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


SigmoidRegression.__doc__ = SigmoidRegression.__doc__.replace("{params}", COMMON_PARAMS)
