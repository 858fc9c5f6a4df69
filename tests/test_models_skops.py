"""Whole pipelines with softxent estimators saved and loaded by skops (scikit-learn's format without pickle)."""

from __future__ import annotations

import numpy as np
import pytest

sio = pytest.importorskip("skops.io", reason="skops is in the dev extra; without it there is nothing to test")
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from softxent.models import (  # noqa: E402
    SKOPS_TRUSTED_TYPES,
    AutoClassifier,
    SigmoidRegression,
    SoftmaxRegression,
)


def _data(kind):
    X, y = load_iris(return_X_y=True)
    if kind == "multilabel":
        return X, np.stack([y == 0, y == 1, y != 1], axis=1).astype(int)
    if kind == "strings":
        return X, np.array(["setosa", "versicolor", "virginica"])[y]
    return X, y


CASES = [
    (lambda: SoftmaxRegression(C=0.5, dtype=np.float32), "classes"),
    (lambda: SoftmaxRegression(class_weight="balanced"), "strings"),
    (lambda: SigmoidRegression(C=2.0), "multilabel"),
    (lambda: AutoClassifier(), "classes"),
    (lambda: AutoClassifier(), "multilabel"),
]


@pytest.mark.parametrize(("make", "kind"), CASES, ids=[f"{i}-{k}" for i, (_, k) in enumerate(CASES)])
def test_pipeline_round_trips_through_skops(make, kind, tmp_path):
    X, y = _data(kind)
    pipe = make_pipeline(StandardScaler(), make()).fit(X, y)
    path = tmp_path / "model.skops"
    sio.dump(pipe, path)
    # The list we publish covers every type skops would ask the user to trust.
    assert set(sio.get_untrusted_types(file=path)) <= set(SKOPS_TRUSTED_TYPES)
    back = sio.load(path, trusted=list(SKOPS_TRUSTED_TYPES))
    np.testing.assert_array_equal(back.predict(X), pipe.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), pipe.predict_proba(X))
    np.testing.assert_array_equal(back[-1].classes_, pipe[-1].classes_)
    assert back[-1].get_params() == pipe[-1].get_params()


def test_skops_refuses_softxent_types_that_are_not_trusted(tmp_path):
    X, y = _data("classes")
    path = tmp_path / "model.skops"
    sio.dump(make_pipeline(StandardScaler(), SoftmaxRegression()).fit(X, y), path)
    with pytest.raises(Exception, match="Untrusted types"):
        sio.load(path)
