r"""Softmax regression: one softmax over mutually exclusive classes, eq. (7)-(10) and (16)."""

from __future__ import annotations

from typing import Any

import numpy as np

import softxent as sx

from ._base import COMMON_PARAMS, LinearClassifierBase, Targets
from ._dask import is_dask, predict_dask
from ._heads import exact_labels


class SoftmaxRegression(LinearClassifierBase):
    r"""Multinomial logistic regression trained on softxent's fused kernels.

    For classes that exclude each other: logits :math:`z = W x + b`
    (eq. 9-10 of the seed), probabilities :math:`a = \operatorname{softmax}(z)`
    (eq. 1), loss :math:`\ell = -\log a_y` (eq. 7), gradient
    :math:`\partial \ell / \partial z = a - y` (eq. 16). The model minimises
    scikit-learn's ``LogisticRegression(C=C)`` objective

    .. math::

        F(W, b) = C \sum_i s_i\, \ell_i + \tfrac12 \lVert W \rVert_F^2

    (:math:`s_i` the sample weight times the class weight, the intercept not
    penalised), so the two can be compared at equal objective; see
    :func:`~softxent.models.objective_value`.

    Two classes are fitted as scikit-learn does, with one sigmoid over one
    logit (``coef_`` of shape (1, n_features)): a softmax over the logits
    :math:`(0, z)` is :math:`\sigma(z)`, and this keeps the objective equal
    to ``LogisticRegression``'s for binary problems too.

    Parameters
    ----------{params}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    coef_ : ndarray of shape (n_classes, n_features), or (1, n_features) for two classes
    intercept_ : ndarray of shape (n_classes,), or (1,)
        Zeros when ``fit_intercept=False``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    n_iter_ : int
        L-BFGS iterations or adam epochs run.
    loss_curve_ : list of float
        The objective :math:`f = F / (C S)` after each iteration (L-BFGS) or
        averaged over each epoch's minibatches (adam).
    validation_loss_curve_ : list of float or None
        Adam with ``early_stopping``: mean log loss of the held-out rows per epoch.

    See Also
    --------
    SigmoidRegression : independent labels (multi-label), one sigmoid each.
    AutoClassifier : chooses between the two from the labels.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from softxent.models import SoftmaxRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = SoftmaxRegression(C=1.0).fit(X, y)
    >>> model.predict(X[:3])
    array([0, 0, 0])
    >>> model.predict_proba(X[:1]).sum()
    np.float64(1.0)
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

    def _fit_targets(self, X: Any, y: Any, *, first: bool, partial: bool, classes: Any = None) -> tuple[Any, Targets]:
        X, y = self._validate_X_y(X, exact_labels(y), first=first, multi_output=False)
        codes = self._class_labels(y, first=first, partial=partial, classes=classes)
        row_weight = self._row_class_weight(y, codes)
        k = len(self.classes_)
        if k == 2:  # one logit, sigmoid: scikit-learn's binary model (see the class docstring)
            values = codes.astype(X.dtype).reshape(-1, 1)
            return X, Targets(values, "sigmoid", 1, row_weight=row_weight, stratify=codes)
        return X, Targets(codes.astype(np.int64), "softmax", k, row_weight=row_weight, stratify=codes)

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits :math:`z = W x + b` (eq. 9-10): shape (n_samples, n_classes), or (n_samples,) for two classes."""
        if is_dask(X):
            return predict_dask(self, "decision_function", X)
        Z = self._logits(X)
        return Z[:, 0] if len(self.classes_) == 2 else Z

    def predict_proba(self, X: Any) -> np.ndarray:
        r"""Class probabilities :math:`\operatorname{softmax}(z)` (eq. 1), shape (n_samples, n_classes)."""
        if is_dask(X):
            return predict_dask(self, "predict_proba", X)
        Z = self._logits(X)
        if len(self.classes_) == 2:
            z = Z[:, 0]
            return np.column_stack([sx.sigmoid(-z), sx.sigmoid(z)])  # softmax of (0, z)
        return sx.softmax(Z)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        r"""Log-probabilities from ``log_softmax`` (eq. 8), never ``log(predict_proba)``."""
        if is_dask(X):
            return predict_dask(self, "predict_log_proba", X)
        Z = self._logits(X)
        if len(self.classes_) == 2:
            z = Z[:, 0]
            return np.column_stack([sx.log_sigmoid(-z), sx.log_sigmoid(z)])
        return sx.log_softmax(Z)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row: ``classes_[argmax z]``."""
        if is_dask(X):
            return predict_dask(self, "predict", X)
        Z = self._logits(X)
        if len(self.classes_) == 2:
            return self.classes_[(Z[:, 0] > 0).astype(np.intp)]
        return self.classes_[np.argmax(Z, axis=1)]


SoftmaxRegression.__doc__ = SoftmaxRegression.__doc__.replace("{params}", COMMON_PARAMS)
