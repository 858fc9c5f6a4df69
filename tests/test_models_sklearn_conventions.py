"""scikit-learn 1.9's conventions, end to end: callbacks, pipelines, searches, set_output, routing, threads.

The estimators must behave as ``LogisticRegression`` does inside the
scikit-learn machinery users combine them with: ``set_callbacks`` with the
callbacks of :mod:`sklearn.callback`, ``Pipeline``, ``GridSearchCV`` and
``cross_validate`` with worker processes (``n_jobs=2``), ``set_output``,
``sample_weight`` routed by metadata routing, and a thread count inside
joblib workers that follows the worker's limits instead of every CPU.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sklearn  # noqa: E402
from joblib import Parallel, delayed, parallel_config  # noqa: E402
from sklearn.callback import ProgressBar  # noqa: E402
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from softxent.models import AutoClassifier, SigmoidRegression, SoftmaxRegression  # noqa: E402
from softxent.models._objective import effective_n_threads  # noqa: E402

ESTIMATORS = [SoftmaxRegression, SigmoidRegression, AutoClassifier]


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


class Recorder:
    """A FitCallback that records its hook calls, scores each iteration's estimator, and may ask to stop."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.events: list[tuple[str, str, int]] = []
        self.scores: list[float] = []

    def setup(self, estimator, context):
        self.events.append(("setup", context.task_name, context.task_id))

    def on_fit_task_begin(self, estimator, context):
        self.events.append(("begin", context.task_name, context.task_id))

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, fitted_estimator=None):
        self.events.append(("end", context.task_name, context.task_id))
        if context.task_name in ("lbfgs-iter", "adam-epoch") and fitted_estimator is not None:
            self.scores.append(fitted_estimator.score(X, y))
        ends = sum(1 for e in self.events if e[0] == "end" and e[1] in ("lbfgs-iter", "adam-epoch"))
        return self.stop_after is not None and ends >= self.stop_after

    def teardown(self, estimator, context):
        self.events.append(("teardown", context.task_name, context.task_id))


# ------------------------------------------------------------------ callbacks


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
@pytest.mark.parametrize("estimator", [SoftmaxRegression, SigmoidRegression])
def test_callbacks_see_one_task_per_iteration(iris, estimator, solver):
    recorder = Recorder()
    model = estimator(solver=solver, max_iter=30).set_callbacks(recorder)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # adam at 30 epochs does not converge; not the point here
        model.fit(*iris)
    task = "lbfgs-iter" if solver == "lbfgs" else "adam-epoch"
    begins = [e for e in recorder.events if e[:2] == ("begin", task)]
    ends = [e for e in recorder.events if e[:2] == ("end", task)]
    # Every begin has its end; one subtask more than iterations (the last one is closed empty).
    assert len(begins) == len(ends) == model.n_iter_ + 1
    assert recorder.events[0][0] == "setup" and recorder.events[-1][0] == "teardown"
    assert [e[2] for e in begins] == list(range(len(begins))), "subtasks are numbered in order"
    # Each iteration's fitted estimator predicts with that iteration's coefficients.
    assert len(recorder.scores) == model.n_iter_
    assert recorder.scores[-1] == pytest.approx(model.score(*iris))
    if solver == "lbfgs":
        assert recorder.scores[0] < recorder.scores[-1], "the first iterate is not yet the final model"


def test_a_callback_can_stop_the_fit(iris):
    model = SoftmaxRegression().set_callbacks(Recorder(stop_after=3))
    model.fit(*iris)
    assert model.n_iter_ == 3
    assert SoftmaxRegression().fit(*iris).n_iter_ > 3


def test_callbacks_reach_the_autoclassifier_head(iris):
    """ProgressBar is auto-propagated: the head's iterations become subtasks of AutoClassifier's fit."""
    pytest.importorskip("rich")
    model = AutoClassifier().set_callbacks(ProgressBar())
    model.fit(*iris)  # would raise if the task tree did not fit together
    recorder = Recorder()
    AutoClassifier().set_callbacks(recorder).fit(*iris)
    # A callback that is not auto-propagated stays on the AutoClassifier: it sees its fit task only
    # (the head's task, merged into the subtask, reports to the head's callbacks), as in a Pipeline.
    assert [e[:2] for e in recorder.events] == [("setup", "fit"), ("begin", "fit"), ("end", "fit"), ("teardown", "fit")]


@pytest.mark.parametrize("estimator", [SoftmaxRegression, SigmoidRegression])
def test_progress_bar_runs(iris, estimator):
    pytest.importorskip("rich")
    model = estimator().set_callbacks(ProgressBar()).fit(*iris)
    np.testing.assert_allclose(model.coef_, estimator().fit(*iris).coef_)


def test_set_callbacks_refuses_non_callbacks():
    with pytest.raises(TypeError, match="FitCallback"):
        SoftmaxRegression().set_callbacks(print)


# ------------------------------------------------------------------ pipelines and searches


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_grid_search_and_cross_validate_in_two_workers(estimator):
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    pipe = make_pipeline(StandardScaler(), estimator(max_iter=200))
    name = pipe.steps[-1][0]
    search = GridSearchCV(pipe, {f"{name}__C": [0.01, 1.0]}, cv=3, n_jobs=2).fit(X, y)
    serial = GridSearchCV(pipe, {f"{name}__C": [0.01, 1.0]}, cv=3, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    assert search.best_score_ > 0.8, "a model was learned (the folds are not shuffled: they differ in style)"
    scores = cross_validate(pipe, X, y, cv=3, n_jobs=2, scoring="neg_log_loss", return_estimator=True)
    alone = cross_validate(pipe, X, y, cv=3, n_jobs=1, scoring="neg_log_loss")
    np.testing.assert_allclose(scores["test_score"], alone["test_score"])
    assert all(est[-1].n_iter_ > 1 for est in scores["estimator"]), "fitted in the workers, sent back fitted"


def test_set_output_pandas_carries_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True, as_frame=True)
    pipe = make_pipeline(StandardScaler(), SoftmaxRegression()).set_output(transform="pandas")
    pipe.fit(X, y)
    model = pipe[-1]
    assert list(model.feature_names_in_) == list(X.columns)
    assert isinstance(pipe[:-1].transform(X), pd.DataFrame)
    np.testing.assert_array_equal(
        pipe.predict(X), make_pipeline(StandardScaler(), SoftmaxRegression()).fit(X, y).predict(X)
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_sample_weight_is_routed(iris, estimator):
    """With metadata routing on, a requested sample_weight reaches fit and score through cross_validate and Pipeline."""
    X, y = iris
    w = np.random.default_rng(0).uniform(0.1, 3.0, len(y))
    cv = KFold(3, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        scaler = StandardScaler().set_fit_request(sample_weight=False)  # the weights are for the classifier
        requested = make_pipeline(
            scaler, estimator(C=0.5).set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        )
        routed = cross_validate(requested, X, y, cv=cv, params={"sample_weight": w}, return_estimator=True)
    for k, (train, test) in enumerate(cv.split(X, y)):
        by_hand = make_pipeline(StandardScaler(), estimator(C=0.5)).fit(X[train], y[train], **{
            f"{estimator.__name__.lower()}__sample_weight": w[train]
        })  # fmt: skip
        np.testing.assert_allclose(
            routed["estimator"][k].predict_proba(X), by_hand.predict_proba(X), rtol=1e-4, atol=1e-6
        )
        # The weights reach score as well: a weighted accuracy of the held-out rows.
        assert routed["test_score"][k] == pytest.approx(by_hand.score(X[test], y[test], sample_weight=w[test]))
        unweighted = make_pipeline(StandardScaler(), estimator(C=0.5)).fit(X[train], y[train])
        assert not np.allclose(routed["estimator"][k].predict_proba(X), unweighted.predict_proba(X), atol=1e-3)


# ------------------------------------------------------------------ threads under joblib


def _softxent_threads_during_fit(n_rows: int) -> tuple[int, int]:
    """Fit a model big enough to use threads; return (effective_n_threads(None), softxent threads seen)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, 50))
    y = rng.integers(0, 5, n_rows)
    seen = []
    # Threads alive before the fit are not the fit's: softxent.torch keeps a pool of helper
    # threads for the linear head's column sweeps once an earlier test has used it.
    before = set(threading.enumerate())

    def count(progress):
        seen.append(sum(t.name.startswith("softxent") and t not in before for t in threading.enumerate()))

    SoftmaxRegression(max_iter=3, callback=count).fit(X, y)
    return effective_n_threads(None), max(seen)


needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or effective_n_threads(None) < 2,
    reason="needs a process that may run 2 threads (to see a limit lower it)",
)


@needs_two_cpus
def test_fit_follows_threadpool_limits():
    n_threads, seen = _softxent_threads_during_fit(40000)
    assert n_threads >= 2 and seen >= 1, "the control: without a limit the fit uses its own threads"
    with threadpool_limits(limits=1, user_api="openmp"):
        assert effective_n_threads(None) == 1
        n_threads, seen = _softxent_threads_during_fit(40000)
    assert (n_threads, seen) == (1, 0)
    assert effective_n_threads(2) == 2, "an explicit n_jobs is taken as asked"


@needs_two_cpus
def test_fit_in_joblib_workers_follows_inner_max_num_threads():
    with parallel_config(backend="loky", inner_max_num_threads=1):
        results = Parallel(n_jobs=2)(delayed(_softxent_threads_during_fit)(40000) for _ in range(2))
    assert results == [(1, 0), (1, 0)]
    with parallel_config(backend="loky", inner_max_num_threads=2):
        results = Parallel(n_jobs=2)(delayed(_softxent_threads_during_fit)(40000) for _ in range(2))
    assert all(n == 2 and seen >= 1 for n, seen in results), results
