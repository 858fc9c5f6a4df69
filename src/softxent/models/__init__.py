"""scikit-learn estimators on softxent's fused kernels: softmax or sigmoid, chosen from the labels.

The seed's practical question, as software: labels that exclude each other
get one softmax (:class:`SoftmaxRegression`), labels that do not get one
sigmoid each (:class:`SigmoidRegression`), exclusive labels with unlabelled
rows get a softmax with an added "other" class; :func:`choose_head` makes the
choice and :class:`AutoClassifier` acts on it. Both models minimise
scikit-learn's ``LogisticRegression`` objective (:func:`objective_value`), the
gradient computed in row blocks with the fused loss + gradient kernels.
Models are saved without pickle (:meth:`SoftmaxRegression.save`, :func:`load`).

Needs the ``models`` extra (scipy and scikit-learn >= 1.6):
``pip install "softxent[models]"``.
"""

from __future__ import annotations

try:
    import scipy  # noqa: F401
    import sklearn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"softxent.models needs scipy and scikit-learn (>= 1.6): pip install 'softxent[models]' ({exc})"
    ) from None

if tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit()) < (1, 6):  # pragma: no cover
    raise ImportError(
        f"softxent.models needs scikit-learn >= 1.6 (validate_data, __sklearn_tags__), found "
        f"{sklearn.__version__}: pip install -U scikit-learn"
    )

from ._auto import AutoClassifier
from ._heads import HeadChoice, choose_head
from ._objective import objective_value
from ._persistence import FORMAT_VERSION, SKOPS_TRUSTED_TYPES, ModelFileError, load
from ._sigmoid_regression import SigmoidRegression
from ._softmax_regression import SoftmaxRegression
from ._solvers import Progress

__all__ = [
    "FORMAT_VERSION",
    "SKOPS_TRUSTED_TYPES",
    "AutoClassifier",
    "HeadChoice",
    "ModelFileError",
    "Progress",
    "SigmoidRegression",
    "SoftmaxRegression",
    "choose_head",
    "load",
    "objective_value",
]
