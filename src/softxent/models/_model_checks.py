"""What a loaded model must satisfy before ``load`` returns it: the state ``fit`` leaves, nothing else.

A model file's metadata can be edited by hand, or written by someone else:
each fitted attribute is checked for its type, shape and range, and the
attributes against each other, so that a loaded model predicts what ``fit``
would have made it predict, or is refused with the attribute and its value
named. (The parameters are checked by the estimators' own ``_check_params``.)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ._archive import FileProblem, short
from ._heads import HeadChoice, check_discrete_labels
from ._inputs import is_int

__all__ = ["check_fitted"]

_TARGET_TYPES = ("binary", "multiclass", "multilabel-indicator")


def _require(est: Any, *names: str) -> None:
    missing = [n for n in names if not hasattr(est, n)]
    if missing:
        raise FileProblem(f"the fitted attributes {missing} are missing")


def _int(est: Any, name: str, low: int) -> int:
    value = getattr(est, name)
    if not is_int(value) or value < low:
        raise FileProblem(f"{name} must be an integer >= {low}, got {short(value)}")
    return value


def _labels(name: str, value: Any, *, at_least: int, in_order: bool) -> np.ndarray:
    """Class labels or label names: 1-D, discrete, distinct, sorted where ``fit`` sorts them."""
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise FileProblem(f"{name} must be a 1-D array of labels, got {short(value)}")
    try:
        check_discrete_labels(value, name)
    except (TypeError, ValueError) as exc:
        raise FileProblem(str(exc)) from None
    if len(value) < at_least:
        raise FileProblem(f"{name} must hold at least {at_least} labels, got {short(value.tolist())}")
    distinct = np.unique(value)
    if len(distinct) != len(value):
        raise FileProblem(f"{name} holds a label twice: {short(value.tolist())}")
    # The class index of a label is found by binary search (searchsorted) in classes_.
    if in_order and not np.array_equal(distinct, value):
        raise FileProblem(f"{name} must be sorted, as fit leaves it, got {short(value.tolist())}")
    return value


def _curve(est: Any, name: str, *, optional: bool) -> None:
    if not hasattr(est, name):
        return
    value = getattr(est, name)
    if value is None and optional:
        return
    if not isinstance(value, list) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise FileProblem(f"{name} must be a list of numbers, got {short(value)}")


def _feature_names(est: Any) -> None:
    if not hasattr(est, "feature_names_in_"):
        return
    names = est.feature_names_in_
    if (
        not isinstance(names, np.ndarray)
        or names.ndim != 1
        or len(names) != est.n_features_in_
        or not all(isinstance(n, str) for n in names.tolist())
    ):
        raise FileProblem(f"feature_names_in_ must be {est.n_features_in_} column names (strings), got {short(names)}")


def _indicator_dtype(est: Any) -> None:
    _require(est, "_indicator_dtype")
    dtype = est._indicator_dtype
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise FileProblem(f"_indicator_dtype must be a boolean, integer or float dtype, got {short(dtype)}")


def _check_linear(est: Any, name: str) -> None:
    _require(est, "classes_", "coef_", "intercept_", "n_features_in_", "n_iter_")
    n_features = _int(est, "n_features_in_", 1)
    _int(est, "n_iter_", 0)
    target_type = "multiclass"
    if name == "SigmoidRegression":
        _require(est, "target_type_")
        target_type = est.target_type_
        if not isinstance(target_type, str) or target_type not in _TARGET_TYPES:
            raise FileProblem(f"target_type_ must be one of {_TARGET_TYPES}, got {short(target_type)}")
    multilabel = target_type == "multilabel-indicator"
    classes = _labels("classes_", est.classes_, at_least=1 if multilabel else 2, in_order=not multilabel)
    k = len(classes)
    if target_type == "binary" and k != 2 or target_type == "multiclass" and name == "SigmoidRegression" and k < 3:
        raise FileProblem(f"target_type_ {target_type!r} does not fit {k} classes {short(classes.tolist())}")
    coef, intercept = est.coef_, est.intercept_
    for attr, arr, ndim in (("coef_", coef, 2), ("intercept_", intercept, 1)):
        if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float32, np.float64) or arr.ndim != ndim:
            raise FileProblem(f"{attr} must be a {ndim}-D float32 or float64 array, got {short(arr)}")
        if not np.isfinite(arr).all():
            raise FileProblem(f"{attr} must be finite, got {short(arr[~np.isfinite(arr)][0].item())} in it")
    if intercept.dtype != coef.dtype:
        raise FileProblem(f"coef_ and intercept_ must share a dtype, got {coef.dtype} and {intercept.dtype}")
    if coef.shape[1] != n_features or intercept.shape != (coef.shape[0],):
        raise FileProblem(f"coef_ {coef.shape}, intercept_ {intercept.shape} and n_features_in_={n_features} disagree")
    rows = 1 if k == 2 and not multilabel else k  # two classes: one logit, as fit leaves it
    if coef.shape[0] != rows:
        raise FileProblem(f"coef_ has {coef.shape[0]} rows for {k} classes {short(classes.tolist())}")
    if multilabel:
        _indicator_dtype(est)
    _feature_names(est)
    _curve(est, "loss_curve_", optional=False)
    _curve(est, "validation_loss_curve_", optional=True)
    if isinstance(est.class_weight, dict):
        unknown = [c for c in est.class_weight if c not in classes.tolist()]
        if unknown:
            raise FileProblem(f"class_weight names classes that are not in classes_: {short(unknown)}")


def _check_auto(est: Any) -> None:
    from ._sigmoid_regression import SigmoidRegression
    from ._softmax_regression import SoftmaxRegression

    _require(est, "classes_", "head_", "head_choice_", "target_type_", "labels_", "n_features_in_")
    head, choice = est.head_, est.head_choice_
    if not isinstance(head, (SoftmaxRegression, SigmoidRegression)):
        raise FileProblem(f"head_ must be a SoftmaxRegression or SigmoidRegression, got {short(head)}")
    if not isinstance(choice, HeadChoice):
        raise FileProblem(f"head_choice_ must be a HeadChoice, got {short(choice)}")
    if choice.head not in ("softmax", "sigmoid") or (choice.head == "sigmoid") != isinstance(head, SigmoidRegression):
        raise FileProblem(f"head_choice_.head {choice.head!r} does not name the head, a {type(head).__name__}")
    if not is_int(choice.n_classes) or choice.n_classes < 1:
        raise FileProblem(f"head_choice_.n_classes must be an integer >= 1, got {short(choice.n_classes)}")
    if not isinstance(choice.add_other_class, bool) or not isinstance(choice.reason, str):
        raise FileProblem(f"head_choice_ is malformed: {short(choice)}")
    if not isinstance(est.target_type_, str) or est.target_type_ not in ("labels", "multilabel-indicator"):
        raise FileProblem(f"target_type_ must be 'labels' or 'multilabel-indicator', got {short(est.target_type_)}")
    if _int(est, "n_features_in_", 1) != head.n_features_in_:
        raise FileProblem(f"n_features_in_={est.n_features_in_} but the head has {head.n_features_in_}")
    _feature_names(est)
    classes = est.classes_
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) != len(head.classes_):
        raise FileProblem(f"classes_ {short(classes)} does not match the head's {len(head.classes_)} classes")
    if est.target_type_ == "labels":
        if est.labels_ is not None or choice.head != "softmax" or not np.array_equal(classes, head.classes_):
            raise FileProblem(
                "an AutoClassifier of 1-D labels must have labels_ None and the classes of its softmax head"
            )
        return
    labels = _labels("labels_", est.labels_, at_least=1, in_order=False)
    _indicator_dtype(est)
    if choice.head == "sigmoid":
        if head.target_type_ != "multilabel-indicator" or len(head.classes_) != len(labels):
            raise FileProblem(f"the sigmoid head has {len(head.classes_)} outputs for the {len(labels)} labels_")
        return
    # Softmax over label indices, index len(labels_) the added "other" class: predict indexes labels_ with them.
    codes = head.classes_.tolist()
    if not all(is_int(c) and 0 <= c <= len(labels) for c in codes):
        raise FileProblem(f"the softmax head's classes {short(codes)} are not indices of the {len(labels)} labels_")


def check_fitted(est: Any, name: str) -> None:
    """Raise :class:`FileProblem` unless ``est`` holds the fitted state of a ``name`` that ``fit`` could leave."""
    if name == "AutoClassifier":
        _check_auto(est)
    else:
        _check_linear(est, name)
