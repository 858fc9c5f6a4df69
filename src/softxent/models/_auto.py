"""AutoClassifier: choose softmax or sigmoid from the labels, then fit that model."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.callback import CallbackSupportMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from ._base import COMMON_PARAMS
from ._dask import fit_auto_dask, is_dask, predict_dask
from ._heads import _choose, _exact_array, check_other_label, parse_targets
from ._inputs import check_common_params
from ._sigmoid_regression import SigmoidRegression
from ._softmax_regression import SoftmaxRegression

_SHARED = (
    "C", "fit_intercept", "solver", "max_iter", "tol", "class_weight", "batch_size", "learning_rate",
    "early_stopping", "validation_fraction", "n_iter_no_change", "warm_start", "dtype", "random_state",
    "verbose", "callback", "n_jobs",
)  # fmt: skip


def _names_array(values: list[Any]) -> np.ndarray:
    """An array of class names; object dtype when the kinds mix (e.g. 0, 1 and "other")."""
    return _exact_array([v.item() if isinstance(v, np.generic) else v for v in values])


class AutoClassifier(CallbackSupportMixin, ClassifierMixin, BaseEstimator):
    """A classifier that picks its output head from the labels (:func:`choose_head`) and fits it.

    * 1-D class labels, or rows with exactly one label each: a
      :class:`SoftmaxRegression` over the classes;
    * rows with two or more labels: a :class:`SigmoidRegression`, one
      sigmoid per label;
    * rows with at most one label, some with none: a
      :class:`SoftmaxRegression` over the labels plus one more class,
      named ``other_label``, for the rows without a label.

    ``predict`` answers in the form ``y`` was given: class labels for 1-D
    ``y``; an indicator matrix (n_samples, n_labels) for an indicator matrix
    or label sets, where a row predicted as ``other_label`` has no label.
    ``predict_proba`` has one column per entry of ``classes_``, which
    includes ``other_label`` when that class was added.

    Parameters
    ----------{params}    threshold : float, default 0.5
        Sigmoid head: a label is predicted when its probability exceeds this.
    other_label : str, int or float, default "other"
        Name of the added class (softmax with "other" only).

    Attributes
    ----------
    head_choice_ : HeadChoice
        What :func:`choose_head` decided, with its reason.
    head_ : SoftmaxRegression or SigmoidRegression
        The fitted model. For indicator or label-set input with a softmax
        head it is trained on the column index of each row's label (the
        index ``n_labels`` for "other").
    classes_ : ndarray
        Names of the ``predict_proba`` columns (object dtype when
        ``other_label`` is a string and the labels are not).
    labels_ : ndarray or None
        Names of the indicator columns ``predict`` returns (None for 1-D ``y``).
    target_type_ : {"labels", "multilabel-indicator"}
        The form of ``y`` at fit, and so of ``predict``'s answer.
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> import numpy as np
    >>> from softxent.models import AutoClassifier
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1], [2.0], [2.1]])
    >>> y = [{"rock"}, {"rock"}, {"jazz"}, {"jazz"}, set(), set()]
    >>> model = AutoClassifier(C=100.0).fit(X, y)
    >>> model.head_choice_.head, model.head_choice_.add_other_class
    ('softmax', True)
    >>> model.classes_
    array(['jazz', 'rock', 'other'], dtype='<U5')
    >>> model.predict([[2.05]])
    array([[0, 0]])
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
        other_label: Any = "other",
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
        self.other_label = other_label

    # The heads' constraints (it passes them its parameters); other_label by check_other_label.
    _parameter_constraints: dict = {**SigmoidRegression._parameter_constraints, "other_label": "no_validation"}

    def _check_params(self) -> None:
        """Every parameter, with the rules of the heads it passes them to (also run by ``load``)."""
        self._validate_params()
        self._check_rest_params()

    def _check_rest_params(self) -> None:
        check_other_label(self.other_label)
        check_common_params(self)

    def _fit_head(self, head: Any, X: Any, y: Any, sample_weight: Any) -> None:
        """Fit the head as the one subtask of this fit, scikit-learn's auto-propagated callbacks passed on."""
        metadata = {"sample_weight": sample_weight} if sample_weight is not None else None
        context = self._init_callback_context(max_subtasks=1)
        context.call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
        with context.subcontext(task_name="fit-head").propagate_callback_context(head):
            head.fit(X, y, sample_weight=sample_weight)
        context.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata, reconstruction_attributes={})

    def _shared_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SHARED}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> AutoClassifier:
        """Choose the head from ``y`` (:func:`choose_head`) and fit it.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : 1-D class labels, a 0/1 indicator matrix, or a list of label sets
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        if is_dask(X, y, sample_weight):
            return fit_auto_dask(self, X, y, sample_weight)  # the head chosen and fitted on the cluster
        self._check_rest_params()  # _fit_context ran _validate_params
        parsed = parse_targets(y)
        choice = _choose(parsed, self.other_label)
        previous = getattr(self, "head_", None) if self.warm_start else None
        if parsed.kind == "labels":
            if parsed.column_vector:
                warnings.warn(
                    "A column-vector y was passed when a 1d array was expected. Please change the shape "
                    "of y to (n_samples, ), for example using ravel().",
                    DataConversionWarning,
                    stacklevel=2,
                )
            head = self._head(SoftmaxRegression, previous)
            self._fit_head(head, X, parsed.labels, sample_weight)
            self.classes_ = head.classes_
            self.labels_ = None
            self.target_type_ = "labels"
        elif choice.head == "sigmoid":
            head = self._head(SigmoidRegression, previous)
            head.set_params(threshold=self.threshold)
            self._fit_head(head, X, y, sample_weight)
            self.classes_ = parsed.names
            self.labels_ = parsed.names
            self.target_type_ = "multilabel-indicator"
        else:
            Y = parsed.indicator
            n_labels = Y.shape[1]
            codes = np.where(Y.any(axis=1), np.argmax(Y, axis=1), n_labels)  # n_labels = "other"
            present = np.unique(codes)
            if len(present) < 2:  # one label on every row: the head would report a column index
                raise ValueError(
                    f"AutoClassifier needs rows of at least 2 classes, but every row of y carries the one "
                    f"label {parsed.names[present[0]].item()!r}"
                )
            if self.other_label in parsed.names.tolist():
                raise ValueError(
                    f"other_label={self.other_label!r} is already one of the labels "
                    f"{parsed.names.tolist()}; choose another name for the added class"
                )
            names = list(parsed.names.tolist()) + [self.other_label]
            head = self._head(SoftmaxRegression, previous)
            if isinstance(self.class_weight, dict):  # keyed by label names; the head sees column indices
                unknown = [k for k in self.class_weight if k not in names]
                if unknown:
                    raise ValueError(f"class_weight names labels that are not in y: {unknown[:10]}; labels: {names}")
                head.set_params(class_weight={names.index(k): w for k, w in self.class_weight.items()})
            self._fit_head(head, X, codes, sample_weight)
            self.classes_ = _names_array([names[c] for c in head.classes_.tolist()])
            self.labels_ = parsed.names
            self.target_type_ = "multilabel-indicator"
        if self.target_type_ == "multilabel-indicator":
            self._indicator_dtype = parsed.dtype
        self.head_choice_ = choice
        self.head_ = head
        self.n_features_in_ = head.n_features_in_
        if hasattr(head, "feature_names_in_"):
            self.feature_names_in_ = head.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    @property
    def n_iter_(self) -> int:
        """Iterations (L-BFGS) or epochs (adam) the head ran."""
        check_is_fitted(self)
        return self.head_.n_iter_

    def _head(self, cls: type, previous: Any) -> Any:
        if isinstance(previous, cls):  # warm start: the same kind of head continues
            previous.set_params(**self._shared_params())
            return previous
        return cls(**self._shared_params())

    # ------------------------------------------------------------------ predict
    def decision_function(self, X: Any) -> np.ndarray:
        """The head's logits (see :meth:`SoftmaxRegression.decision_function`)."""
        if is_dask(X):
            return predict_dask(self, "decision_function", X)
        check_is_fitted(self)
        return self.head_.decision_function(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities, one column per entry of ``classes_``."""
        if is_dask(X):
            return predict_dask(self, "predict_proba", X)
        check_is_fitted(self)
        return self.head_.predict_proba(X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log-probabilities from ``log_softmax`` / ``log_sigmoid``."""
        if is_dask(X):
            return predict_dask(self, "predict_log_proba", X)
        check_is_fitted(self)
        return self.head_.predict_log_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (1-D ``y`` at fit) or an indicator matrix (indicator or label sets at fit)."""
        if is_dask(X):
            return predict_dask(self, "predict", X)
        check_is_fitted(self)
        pred = self.head_.predict(X)
        if self.target_type_ == "labels" or self.head_choice_.head == "sigmoid":
            return pred
        out = np.zeros((len(pred), len(self.labels_)), dtype=self._indicator_dtype)
        rows = np.flatnonzero(pred < len(self.labels_))  # the "other" class sets no label
        out[rows, pred[rows]] = 1
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (subset accuracy for multi-label ``y``, which may be label sets)."""
        check_is_fitted(self)
        if self.target_type_ == "multilabel-indicator":
            parsed = parse_targets(y)
            if parsed.kind == "indicator" and parsed.from_sets:
                known = {label: j for j, label in enumerate(self.labels_.tolist())}
                Y = np.zeros((parsed.indicator.shape[0], len(known)), dtype=np.uint8)
                for j, name in enumerate(parsed.names.tolist()):
                    if name not in known:
                        raise ValueError(f"y contains a label that was not seen in fit: {name!r}")
                    Y[:, known[name]] = parsed.indicator[:, j]
                y = Y
        return accuracy_score(y, self.predict(X), sample_weight=sample_weight)

    def save(self, path: Any) -> None:
        """Write the fitted model (head included) without pickle; see :func:`softxent.models.load`."""
        from ._persistence import save

        save(self, path)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_label = True
        return tags


AutoClassifier.__doc__ = AutoClassifier.__doc__.replace("{params}", COMMON_PARAMS)
