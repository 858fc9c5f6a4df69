"""scikit-learn's own estimator checks over SoftmaxRegression, SigmoidRegression and AutoClassifier.

``parametrize_with_checks`` runs the API contract (clone, get/set_params,
fit returns self, n_features_in_, NotFittedError, sample_weight semantics,
pickling, sparse input, dtypes, multi-label output formats, ...). Each
estimator is checked with both solvers where the solver changes the code
path (partial_fit exists only for adam).
"""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from softxent.models import AutoClassifier, SigmoidRegression, SoftmaxRegression  # noqa: E402

ESTIMATORS = [
    SoftmaxRegression(),
    SoftmaxRegression(solver="adam", batch_size=16, learning_rate=0.02, max_iter=1000, random_state=0),
    SigmoidRegression(),
    SigmoidRegression(solver="adam", batch_size=16, learning_rate=0.02, max_iter=1000, random_state=0),
    AutoClassifier(),
]


def expected_failed_checks(estimator):
    """Checks that cannot apply, with the reason (xfail, not skipped: they still run)."""
    if getattr(estimator, "solver", None) == "adam":
        reason = (
            "adam is stochastic: a row of weight 2 and the same row repeated give different "
            "minibatch sequences, so the two fits agree in expectation at convergence, not to 1e-7 "
            "(scikit-learn marks SGDClassifier the same way); the lbfgs instances pass this check"
        )
        return {
            "check_sample_weight_equivalence_on_dense_data": reason,
            "check_sample_weight_equivalence_on_sparse_data": reason,
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
