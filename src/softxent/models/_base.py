"""What the two linear estimators share: parameters, fitting, prediction, saving.

:class:`LinearClassifierBase` holds the scikit-learn side of the estimators
(parameter checks, ``validate_data``, ``fit`` / ``partial_fit`` around the
solvers, ``decision_function``, ``save``). A subclass says only how it reads
``y`` (:meth:`LinearClassifierBase._fit_targets`) and how it turns logits into
probabilities and predictions. The math is in :mod:`._objective`, the
optimisers in :mod:`._solvers`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.callback import CallbackSupportMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from .._validation import check_sample_weight
from ._block_lbfgs import solver_for
from ._callbacks import FitTasks
from ._dask import fit_dask, is_dask
from ._heads import check_discrete_labels, exact_labels
from ._inputs import COMMON_CONSTRAINTS, check_common_params, validated_X
from ._objective import Objective, Problem, effective_n_threads
from ._solvers import Adam, Progress, lbfgs_detail, progress_factory, run_adam

__all__ = ["LinearClassifierBase", "Targets"]


@dataclass
class Targets:
    """``y`` encoded for the objective (see :class:`~._objective.Problem`)."""

    values: np.ndarray  # int64 class indices (softmax) or (n, K) 0/1 in X's dtype (sigmoid)
    head: str
    n_outputs: int
    row_weight: np.ndarray | None = None  # class weights folded into the rows
    label_weight: np.ndarray | None = None  # sigmoid: weight of each label
    pos_weight: np.ndarray | None = None  # sigmoid: extra weight of each label's positive term
    stratify: np.ndarray | None = None  # class per row, for the early-stopping split


_CONTROLLER: ThreadpoolController | None = None


def one_blas_thread() -> Any:
    """A context that holds BLAS to one thread (our own threads run the row blocks).

    The controller that finds the loaded BLAS libraries is built once: scanning
    them costs about 2 ms, a noticeable part of a small fit.
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def _solver_is_adam(estimator: LinearClassifierBase) -> bool:
    if estimator.solver != "adam":
        raise AttributeError(
            f"partial_fit is only available with solver='adam' (L-BFGS needs the whole data at "
            f"once), got solver={estimator.solver!r}"
        )
    return True


class LinearClassifierBase(CallbackSupportMixin, ClassifierMixin, BaseEstimator):
    """Shared machinery of :class:`SoftmaxRegression` and :class:`SigmoidRegression`."""

    # scikit-learn's parameter validation (``_validate_params``, run by ``fit``); what it cannot
    # say (dtype, the values of a class_weight dict) is checked by check_common_params.
    _parameter_constraints: dict = dict(COMMON_CONSTRAINTS)

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        """Every parameter, with an error that names it and shows the bad value (also run by ``load``)."""
        self._validate_params()
        self._check_rest_params()

    def _check_rest_params(self) -> None:
        """The checks scikit-learn's constraints cannot express (``fit`` has run ``_validate_params``)."""
        check_common_params(self)
        self._check_extra_params()

    def _check_extra_params(self) -> None:
        """Subclass hook for their own parameters."""

    @property
    def _work_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    # ------------------------------------------------------------------ subclass hooks
    def _fit_targets(self, X: Any, y: Any, *, first: bool, partial: bool, classes: Any = None) -> tuple[Any, Targets]:
        """Validate ``X`` (via ``validate_data``) and ``y``; set ``classes_`` when ``first``.

        ``partial``: called from ``partial_fit`` (``classes`` may be needed on
        the first call; later calls must use the classes already known).
        """
        raise NotImplementedError

    def _validate_X_y(self, X: Any, y: Any, *, first: bool, multi_output: bool) -> tuple[Any, np.ndarray]:
        dtype = self._work_dtype if first or not hasattr(self, "coef_") else self.coef_.dtype
        return validated_X(self, X, y, reset=first, dtype=dtype, multi_output=multi_output)

    def _class_labels(self, y: np.ndarray, *, first: bool, partial: bool, classes: Any) -> np.ndarray:
        """Check 1-D class labels; on the first call set ``classes_``; return the class index of each row."""
        check_discrete_labels(y, "y")
        if first:
            if partial:
                if classes is None:
                    raise ValueError(
                        "classes must be passed on the first call to partial_fit: all the classes that "
                        "the stream will ever hold, e.g. classes=[0, 1, 2]"
                    )
                self.classes_ = np.unique(check_discrete_labels(exact_labels(classes, "classes"), "classes"))
                if len(self.classes_) < 2:
                    raise ValueError(
                        f"classes must name at least 2 classes (all the classes the stream will hold), got "
                        f"{self.classes_.tolist()!r}"
                    )
            else:
                # Every label is a class: the codes come with the classes (no isin/searchsorted pass).
                self.classes_, codes = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes, but the data contains "
                    f"only one class: {self.classes_[0].item()!r}"
                    if len(self.classes_)
                    else f"{type(self).__name__} needs samples of at least 2 classes, got none"
                )
            if not partial:
                return codes.reshape(-1)
        unseen = ~np.isin(y, self.classes_)
        if unseen.any():
            raise ValueError(
                f"y contains labels that are not in classes_ {self.classes_.tolist()}: "
                f"{np.unique(y[unseen]).tolist()[:10]}"
                + (" (partial_fit learns only the classes given on its first call)" if partial else "")
            )
        return np.searchsorted(self.classes_, y)

    def _row_class_weight(self, y: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
        """Class weights of 1-D labels, folded into the rows as scikit-learn does."""
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, dict):
            # scikit-learn's compute_class_weight reports an unknown key as the known classes missing.
            known = self.classes_.tolist()
            unknown = [k for k in self.class_weight if k not in known]
            if unknown:
                raise ValueError(
                    f"class_weight names classes that are not in y: {unknown[:10]!r}; the classes are {known[:20]!r}"
                )
            weights = np.array([float(self.class_weight.get(c, 1.0)) for c in known])
        else:
            weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        return weights[codes]

    def _check_y_length(self, X: Any, n_rows: int) -> None:
        if X.shape[0] != n_rows:
            raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} rows in X and {n_rows} in y")

    # ------------------------------------------------------------------ data
    def _validate_X(self, X: Any, *, reset: bool) -> Any:
        dtype = self._work_dtype if reset or not hasattr(self, "coef_") else self.coef_.dtype
        return validated_X(self, X, reset=reset, dtype=dtype)

    def _problem(self, X: Any, targets: Targets, sample_weight: Any) -> Problem:
        if isinstance(sample_weight, (str, bytes)):
            raise TypeError(f"sample_weight must be a number or an array of numbers, got {sample_weight!r:.80}")
        if sample_weight is not None and not isinstance(sample_weight, np.ndarray) and np.isscalar(sample_weight):
            sample_weight = np.full(X.shape[0], sample_weight, dtype=np.float64)  # a scalar weighs every row
        elif sample_weight is not None:
            sample_weight = np.asarray(sample_weight)  # lists and other array-likes
        sw = check_sample_weight(sample_weight, (X.shape[0],))
        if targets.row_weight is not None:
            sw = targets.row_weight if sw is None else sw * targets.row_weight
        if sparse.issparse(X):
            X = X.tocsr()
            X.sort_indices()
        return Problem(
            X=X,
            targets=targets.values,
            head=targets.head,
            n_outputs=targets.n_outputs,
            sample_weight=sw,
            class_weight=targets.label_weight,
            pos_weight=targets.pos_weight,
        )

    def _check_weighted_classes(self, problem: Problem, targets: Targets) -> None:
        """1-D labels: at least two classes must keep a positive weight (else there is nothing to learn)."""
        if targets.stratify is None:
            return
        weights = problem.row_weights()
        if not weights.sum() > 0:
            raise ValueError(
                "the sample weights (times the class weights) are zero for every row; at least one "
                "row needs a positive weight"
            )
        present = np.unique(targets.stratify[weights > 0])
        if len(present) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes with a positive weight, but "
                f"only class {self.classes_[present[0]].item()!r} has any (sample_weight times class_weight)"
            )

    def _initial_params(self, n_outputs: int, n_features: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (n_outputs, n_features):
            W0 = self.coef_.astype(np.float64)
            b0 = self.intercept_.astype(np.float64) if self.fit_intercept else None
            return W0, b0
        return np.zeros((n_outputs, n_features)), (np.zeros(n_outputs) if self.fit_intercept else None)

    def _set_params_from(self, W: np.ndarray, b: np.ndarray | None) -> None:
        dtype = self._work_dtype
        self.coef_ = np.asarray(W, dtype=dtype)
        self.intercept_ = np.zeros(W.shape[0], dtype=dtype) if b is None else np.asarray(b, dtype=dtype)

    # ------------------------------------------------------------------ progress
    def _report(self, tasks: FitTasks | None = None, params: Any = None) -> Callable[[Progress], bool]:
        """The solvers' per-iteration hook: ``verbose``, ``callback=`` and the scikit-learn callbacks.

        ``params()`` returns the iterate's ``(W, b)``; it is called only when a
        scikit-learn callback asks for the fitted estimator of the iteration.
        """
        verbose, callback = self.verbose, self.callback

        def report(progress: Progress) -> bool:
            if verbose:
                print(progress.format(), flush=True)
            stop = bool(callback(progress)) if callback is not None else False
            if tasks is not None:
                stop = tasks.end(params) or stop  # every hook runs, whoever asks to stop
            return stop

        return report

    def _warn_not_converged(self, status: str, detail: str) -> None:
        """A ConvergenceWarning for a fit that ended on ``max_iter`` or a failed line search."""
        if status == "max_iter":
            what = "adam epochs" if self.solver == "adam" else "L-BFGS iterations"
            warnings.warn(
                f"{type(self).__name__} did not converge within max_iter={self.max_iter} {what} "
                f"({detail}); increase max_iter, or scale the features",
                ConvergenceWarning,
                stacklevel=4,
            )
        elif status == "line_search":
            advice = "a larger tol" if self._work_dtype == np.float64 else "dtype=np.float64 or a larger tol"
            warnings.warn(
                f"{type(self).__name__}: L-BFGS stopped because the line search could not lower the "
                f"objective further ({detail}): it is flat to the working precision "
                f"({self._work_dtype.name}); use {advice}",
                ConvergenceWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearClassifierBase:
        """Fit the model by minimising the objective of the class docstring.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, dask DataFrame} of shape (n_samples, n_features)
            Training data (sparse input is used as CSR, never densified).
            Dask collections (X, y or ``sample_weight``) are fitted on the
            cluster of the active ``distributed.Client`` (a ``LocalCluster``
            when there is none) with the same solver and stopping rule, the
            data left on the workers (see :mod:`softxent.models._dask`).
        y : array-like
            The targets; see the class docstring for the accepted forms.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each row (multiplied by ``class_weight``).
            Routed by scikit-learn's metadata routing when the estimator
            requests it (``set_fit_request(sample_weight=True)``).

        Returns
        -------
        self
        """
        if is_dask(X, y, sample_weight):
            return fit_dask(self, X, y, sample_weight)  # the same solver, the data left on the workers
        self._check_rest_params()
        X, targets = self._fit_targets(X, y, first=True, partial=False)
        problem = self._problem(X, targets, sample_weight)
        self._check_weighted_classes(problem, targets)
        W0, b0 = self._initial_params(targets.n_outputs, X.shape[1])
        start = time.perf_counter()
        make = progress_factory(type(self).__name__, self.solver, start)
        tasks = FitTasks(
            self, X, y, sample_weight, max_iter=self.max_iter,
            task_name="lbfgs-iter" if self.solver == "lbfgs" else "adam-epoch",
        )  # fmt: skip
        tasks.begin(lambda: (W0, b0))
        try:
            # One BLAS thread: our own threads run the row blocks (see _objective).
            with one_blas_thread():
                if self.solver == "lbfgs":
                    self._fit_lbfgs(problem, W0, b0, make, tasks)
                else:
                    self._fit_adam(problem, targets, W0, b0, make, tasks)
        finally:
            tasks.close()
        return self

    def _fit_lbfgs(
        self, problem: Problem, W0: np.ndarray, b0: np.ndarray | None, make: Any, tasks: FitTasks | None = None
    ) -> None:
        n_threads = effective_n_threads(self.n_jobs)
        with Objective(problem, C=self.C, fit_intercept=self.fit_intercept, n_threads=n_threads) as objective:
            W0, b0 = objective.starting_point(W0, b0)  # a cold sigmoid fit: the intercept-only optimum
            report = self._report(tasks, lambda: objective.unpack(objective.last_x))
            theta, result = solver_for(objective)(
                objective, objective.pack(W0, b0), tol=self.tol, max_iter=self.max_iter,
                report=report, make_progress=make,
            )  # fmt: skip
            W, b = objective.unpack(theta)
            grad_max = objective.last_grad_max
        self._set_params_from(W, b)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = result.loss_curve
        self.validation_loss_curve_ = None
        if hasattr(self, "_optimizer"):
            del self._optimizer  # adam's state belongs to the old coefficients
        self._warn_not_converged(result.status, lbfgs_detail(grad_max, self.tol))

    def _batch_size(self, n_rows: int) -> int:
        return min(200 if isinstance(self.batch_size, str) else int(self.batch_size), max(n_rows, 1))

    def _fit_adam(
        self, problem: Problem, targets: Targets, W0: np.ndarray, b0: np.ndarray | None, make: Any,
        tasks: FitTasks | None = None,
    ) -> None:  # fmt: skip
        rng = check_random_state(self.random_state)
        train, validation = problem, None
        if self.early_stopping:
            train, validation = self._split(problem, targets, rng)
        optimizer = Adam(W0, b0, learning_rate=self.learning_rate)
        result, val_curve = run_adam(
            optimizer, train, validation, C=self.C, batch_size=self._batch_size(train.n_rows),
            max_iter=self.max_iter, tol=self.tol, n_iter_no_change=self.n_iter_no_change, rng=rng,
            report=self._report(tasks, lambda: (optimizer.W, optimizer.b)), make_progress=make,
        )  # fmt: skip
        optimizer.rows_seen = train.n_rows
        optimizer.weight_seen = float(train.row_weights().sum())
        self._optimizer = optimizer
        self._set_params_from(optimizer.W, optimizer.b)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = result.loss_curve
        self.validation_loss_curve_ = val_curve if validation is not None else None
        self._warn_not_converged(
            result.status,
            "the "
            + ("validation" if validation is not None else "training")
            + f" loss still improved by more than tol={self.tol:g} within n_iter_no_change="
            + f"{self.n_iter_no_change} epochs",
        )

    def _split(self, problem: Problem, targets: Targets, rng: np.random.RandomState) -> tuple[Problem, Problem]:
        n = problem.n_rows
        n_val = int(np.ceil(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 1:
            raise ValueError(
                f"early_stopping needs rows for training and validation: validation_fraction="
                f"{self.validation_fraction!r} of {n} rows leaves {n - n_val} for training and {n_val} "
                "for validation"
            )
        idx = np.arange(n)
        seed = rng.randint(np.iinfo(np.int32).max)
        try:
            tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=targets.stratify)
        except ValueError:  # a class too rare to stratify on: a plain random split
            tr, va = train_test_split(idx, test_size=n_val, random_state=seed)
        return problem.subset(np.sort(tr)), problem.subset(np.sort(va))

    @available_if(_solver_is_adam)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None) -> LinearClassifierBase:
        """One adam epoch over a batch of rows: streaming training (``solver="adam"`` only).

        The objective is that of the class docstring on *all rows seen so
        far*: each call adds its rows to the running total weight :math:`S`
        that scales the penalty, as if they were new rows of the data set.
        One pass over a stream therefore fits ``fit``'s model of the whole
        stream; E passes over the same n rows fit the model of E copies of
        them, which is ``fit`` with ``C * E`` (divide C by the number of
        passes to compensate). ``early_stopping`` does not apply (a stream
        has no held-out set).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like
            Targets of these rows, in the form the first call used.
        classes : array-like, optional
            All the classes (1-D labels) or label names (label sets) that
            will ever occur; required on the first call for 1-D labels,
            ignored afterwards. Labels outside it raise ``ValueError``.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        first = not hasattr(self, "classes_")
        if first:
            self._check_rest_params()  # _fit_context ran _validate_params
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' needs the class counts of the whole data set, which "
                "partial_fit never sees; pass class_weight as a dict of weights instead"
            )
        X, targets = self._fit_targets(X, y, first=first, classes=classes, partial=True)
        problem = self._problem(X, targets, sample_weight)
        optimizer = getattr(self, "_optimizer", None)
        if optimizer is None or first:
            if first:
                W0, b0 = (
                    np.zeros((targets.n_outputs, X.shape[1])),
                    (np.zeros(targets.n_outputs) if self.fit_intercept else None),
                )
            else:
                W0 = self.coef_.astype(np.float64)
                b0 = self.intercept_.astype(np.float64) if self.fit_intercept else None
            optimizer = Adam(W0, b0, learning_rate=self.learning_rate)
            if first:
                self.n_iter_ = 0
                self.loss_curve_ = []
                self.validation_loss_curve_ = None
        optimizer.learning_rate = self.learning_rate
        optimizer.rows_seen += problem.n_rows
        optimizer.weight_seen += float(problem.row_weights().sum())
        if not optimizer.weight_seen > 0:
            raise ValueError(
                "the sample weights seen so far are zero for every row; at least one row needs a positive weight"
            )
        if not hasattr(self, "_partial_rng"):
            self._partial_rng = check_random_state(self.random_state)
        start = time.perf_counter()
        with one_blas_thread():
            loss = optimizer.epoch(
                problem, C=self.C, batch_size=self._batch_size(problem.n_rows), rng=self._partial_rng,
                total_weight=optimizer.weight_seen, total_rows=optimizer.rows_seen,
            )  # fmt: skip
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"adam diverged (objective {loss!r}); lower learning_rate (now {self.learning_rate!r}) "
                "or scale the features"
            )
        self._optimizer = optimizer
        self._set_params_from(optimizer.W, optimizer.b)
        self.n_iter_ += 1
        self.loss_curve_.append(loss)
        make = progress_factory(type(self).__name__, "adam", start)
        self._report()(make(self.n_iter_, self.n_iter_, loss, None, None))
        return self

    # ------------------------------------------------------------------ predict
    def _logits(self, X: Any) -> np.ndarray:
        """``X @ coef_.T + intercept_``, shape (n, K), in the dtype of ``coef_``."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        Z = X @ self.coef_.T
        Z = np.asarray(Z, dtype=self.coef_.dtype)
        Z += self.intercept_
        return Z

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any) -> None:
        """Write the fitted model to ``path`` without pickle; read it back with :func:`softxent.models.load`.

        The file is a NumPy ``.npz`` archive of the arrays plus a JSON
        document (format name, version, class, parameters, checksums); see
        :mod:`softxent.models._persistence`.
        """
        from ._persistence import save

        save(self, path)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


# The parameters both estimators share, substituted into their docstrings.
COMMON_PARAMS = r"""
    C : float, default 1.0
        Inverse regularisation strength, as in ``LogisticRegression``: the
        objective is :math:`C \sum_i s_i \ell_i + \tfrac12 \lVert W \rVert_F^2`.
    fit_intercept : bool, default True
        Learn the intercept :math:`b` (never penalised).
    solver : {"lbfgs", "adam"}, default "lbfgs"
        ``"lbfgs"``: scipy's L-BFGS-B on the whole objective, in standardised
        coordinates (a change of variables; the minimiser is unchanged).
        ``"adam"``: minibatch adam, for large or streaming data
        (``partial_fit``).
    max_iter : int, default 100
        L-BFGS iterations, or adam epochs.
    tol : float, default 1e-4
        L-BFGS stops at the first iterate that passes two tests. (1)
        scikit-learn's: :math:`\max |\nabla f| \le` ``tol``, with
        :math:`f = F / (C S)` the objective divided by C times the total row
        weight, the gradient taken in the original coordinates of
        :math:`(W, b)` (not the preconditioned ones the solver steps in):
        the same function, scaling and max-abs norm as the ``gtol`` of
        ``LogisticRegression``'s lbfgs, so softxent never stops where
        scikit-learn would not. (2) An objective test: L-BFGS's own
        prediction of the decrease still available,
        :math:`\tfrac12 g^\top H g` (its inverse-Hessian model of the
        last 10 steps), is at most ``1e-3 * tol`` times :math:`f` (1e-7
        relative at the default), or at most a tenth of what it predicted
        at the first iterate that passed test (1), whichever is larger.
        Test (1) bounds the gradient, not the distance to the optimum: at
        its defaults ``LogisticRegression`` ends anywhere from 1e-7 to 1e-1
        (relative; 0.8 on a nearly separable set) above the optimum,
        depending on the conditioning. With (2) softxent ends within about
        1e-6 of it where the problem is well conditioned, and otherwise
        about ten times closer to it than scikit-learn's fit (measured on
        scikit-learn's data sets, Yeast and synthetic ones; an estimate,
        not a bound), so at an objective no worse than
        ``LogisticRegression``'s (one-vs-rest for the sigmoid head) at the
        same ``C`` and ``tol``, within 1e-6 relative, whenever the fit
        converges (no ``ConvergenceWarning``). float64 also stops, as
        scikit-learn does, when f no longer changes (64 eps relative).
        Adam stops when the epoch's objective (or validation loss) has not
        improved by ``tol`` for ``n_iter_no_change`` epochs.
    class_weight : None, "balanced" or dict, default None
        Weights that multiply the rows of each class (see the class
        docstring for multi-label targets).
    batch_size : int or "auto", default "auto"
        Adam minibatch rows; "auto" is ``min(200, n_samples)``.
    learning_rate : float, default 1e-3
        Adam step size.
    early_stopping : bool, default False
        Adam only: hold out ``validation_fraction`` of the rows (stratified
        when possible), stop when their mean log loss has not improved by
        ``tol`` for ``n_iter_no_change`` epochs, and keep the best epoch.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 10
    warm_start : bool, default False
        Start ``fit`` from the previous ``coef_`` and ``intercept_``.
    dtype : {np.float64, np.float32}, default np.float64
        Precision of the data and of the fused kernels during training and
        prediction (the solver's own arithmetic is float64). float32 halves
        the memory traffic; the objective then agrees with float64 to about
        1e-7 relative, below which its decrease is rounding noise. The
        objective test of ``tol`` is therefore floored at 1e-6 relative, and
        what float32 promises is an end point within about 1e-5 (relative,
        in the float64 objective) of the optimum: no worse than
        scikit-learn's float64 fit at the same ``C`` by more than 1e-5.
        Very small ``tol`` may end in a ``ConvergenceWarning`` about the
        line search.
    random_state : int, RandomState or None, default None
        Shuffling and the validation split of adam (L-BFGS is deterministic).
    verbose : int, default 0
        > 0: print one line per iteration or epoch (loss, gradient, time).
    callback : callable or None, default None
        Called after every iteration or epoch as ``callback(progress)`` with
        a :class:`~softxent.models.Progress` record (iteration, max_iter,
        loss, grad_max, validation_loss, elapsed); a true return value stops
        training. This is the hook a command line drives a progress bar with.
        scikit-learn's callback API works as well:
        ``set_callbacks(ProgressBar())`` (:mod:`sklearn.callback`) sees the
        fit as one task with one subtask per L-BFGS iteration or adam epoch
        (``"lbfgs-iter"`` / ``"adam-epoch"``), the iterate's coefficients
        available as ``fitted_estimator``; unlike ``LogisticRegression``, a
        callback whose ``on_fit_task_end`` returns True stops the fit there.
        ``callback=`` stays because it adds what those hooks lack: the
        objective and the largest gradient entry the stopping rule compares
        with ``tol``, without rebuilding an estimator per iteration. Dask
        fits and ``partial_fit`` call ``callback=`` only.
    n_jobs : int or None, default None
        Threads that compute the gradient over row blocks during ``fit``.
        None: as scikit-learn's OpenMP code counts them, every CPU this
        process may run on unless it is held to fewer by ``OMP_NUM_THREADS``
        or ``threadpoolctl.threadpool_limits`` (inside joblib workers, e.g.
        ``GridSearchCV(n_jobs=2)``, joblib sets the former to its
        ``inner_max_num_threads``, so the fits do not oversubscribe the
        cores); -1: every CPU; 1: no threads. BLAS is held to one thread
        while fitting.
"""
