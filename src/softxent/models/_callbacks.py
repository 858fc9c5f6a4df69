"""scikit-learn's callback API (``set_callbacks``, :mod:`sklearn.callback`) for the estimators' solvers.

scikit-learn 1.9 reports a fit to callbacks as a tree of tasks: the fit is
the root task, each L-BFGS iteration (or adam epoch) one subtask. At the
start and end of every task the callbacks' hooks run; a ``fitted_estimator``
made from the task's ``coef_`` / ``intercept_`` can be handed to them
(e.g. ``ScoringMonitor`` scores it). :class:`FitTasks` turns the solvers'
per-iteration :class:`~._solvers.Progress` reports into those hook calls,
the way ``LogisticRegression``'s L-BFGS bridge does, with one difference:
a callback that asks to stop (its ``on_fit_task_end`` returns True) stops
the solver at that iteration, as the estimators' own ``callback=`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FitTasks"]


class FitTasks:
    """The callback context of one ``fit``: the root task and one subtask per iteration.

    Parameters
    ----------
    estimator : LinearClassifierBase
        The estimator being fitted (``classes_`` and ``n_features_in_`` already set).
    X, y, sample_weight
        What the hooks receive as the task's data and metadata.
    max_iter : int
        The most subtasks (iterations or epochs) the solver may run.
    task_name : str
        Name of each subtask ("lbfgs-iter" or "adam-epoch").
    """

    def __init__(self, estimator: Any, X: Any, y: Any, sample_weight: Any, *, max_iter: int, task_name: str) -> None:
        self.estimator = estimator
        self.X, self.y = X, y
        self.metadata = {"sample_weight": sample_weight} if sample_weight is not None else None
        self.task_name = task_name
        # One more subtask than iterations: the last one begun is ended empty by close(), as
        # LogisticRegression's bridge does (every begin has its end).
        self.root = estimator._init_callback_context(max_subtasks=max_iter + 1)
        self.root.call_on_fit_task_begin(estimator=estimator, X=X, y=y, metadata=self.metadata)
        self._task = None
        # No callback set (the usual fit): no subtask contexts. Making one per iteration costs
        # about 20 us, a tenth of an iteration on digits-sized data, and no hook would see it.
        self._silent = not self.root._callbacks

    def begin(self, params: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Begin the next iteration's subtask at the parameters ``params()`` returns (evaluated lazily)."""
        if self._silent:
            return
        self._task = self.root.subcontext(task_name=self.task_name)
        self._task.call_on_fit_task_begin(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes=self._attributes(params),
        )  # fmt: skip

    def end(self, params: Callable[[], tuple[np.ndarray, np.ndarray]]) -> bool:
        """End the running subtask at ``params()`` and begin the next; True when a callback asks to stop."""
        if self._silent:
            return False
        stop = bool(
            self._task.call_on_fit_task_end(
                estimator=self.estimator,
                X=self.X,
                y=self.y,
                metadata=self.metadata,
                reconstruction_attributes=self._attributes(params),
            )  # fmt: skip
        )
        self.begin(params)
        return stop

    def close(self) -> None:
        """End the subtask that never ran, then the fit's root task."""
        if self._task is not None:
            self._task.call_on_fit_task_end(estimator=self.estimator)
        self.root.call_on_fit_task_end(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata, reconstruction_attributes={}
        )

    def _attributes(self, params: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Callable[[], dict]:
        dtype = self.estimator._work_dtype

        def attributes() -> dict:  # called only when a callback asks for fitted_estimator
            W, b = params()
            # Copies: the solver goes on updating its arrays in place, a callback may keep the estimator.
            coef = np.array(W, dtype=dtype)
            intercept = np.zeros(W.shape[0], dtype=dtype) if b is None else np.array(b, dtype=dtype)
            return {"coef_": coef, "intercept_": intercept}

        return attributes
