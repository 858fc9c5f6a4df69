"""Softmax or sigmoid? The seed's practical question, answered from the labels.

Labels that exclude each other (a song is classical *or* rock *or* jazz) get
one softmax over the K classes; labels that do not (a song can be vocal *and*
a soundtrack) get one sigmoid per label; exclusive labels with some rows that
carry none of them get a softmax with an added "other" class.

This module reads the three forms scikit-learn users give ``y`` in
(:func:`parse_targets`) and makes the choice (:func:`choose_head`), with a
reason a user can read.

* 1-D class labels, one per row (ints, strings, ...): softmax.
* A 2-D 0/1 indicator matrix (ndarray, list of lists, or sparse) with two or
  more columns, one per label (an (n, 1) column is read as class labels, as
  scikit-learn does): softmax if every row has exactly one label, sigmoid if any row
  has two or more, softmax plus "other" if no row has more than one but some
  have none.
* A list of label sets (``[{"rock"}, {"vocal", "pop"}, set()]``): as the
  indicator matrix of those sets, columns in sorted label order. Elements
  that are ``set``/``frozenset`` are always label sets; lists or tuples are
  label sets unless they form a rectangular 0/1 matrix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

__all__ = [
    "HeadChoice", "ParsedTargets", "check_discrete_labels", "check_other_label", "choose_head", "exact_labels",
    "parse_targets",
]  # fmt: skip


@dataclass(frozen=True)
class HeadChoice:
    """The output head :func:`choose_head` picked, and why.

    Attributes
    ----------
    head : {"softmax", "sigmoid"}
        One softmax over mutually exclusive classes (eq. 1, 7 of the seed),
        or one independent sigmoid per label (eq. 2).
    n_classes : int
        Number of outputs: classes of the softmax (including the added
        "other" class), or labels of the sigmoid head.
    add_other_class : bool
        True when the labels are exclusive but some rows carry none of them:
        the softmax gets one more class for those rows.
    reason : str
        One plain sentence that explains the choice.
    """

    head: Literal["softmax", "sigmoid"]
    n_classes: int
    add_other_class: bool
    reason: str


@dataclass(frozen=True)
class ParsedTargets:
    """``y`` read into one of two forms.

    ``kind="labels"``: ``labels`` is the 1-D array of class labels, one per
    row (``column_vector``: it was given as an (n, 1) column, which
    scikit-learn reads as labels, never as a one-label indicator). ``kind="indicator"``: ``indicator`` is an (n, L) uint8 matrix and
    ``names`` the L label names (column indices, or the sorted labels of
    label sets); ``from_sets`` records which form the user gave.
    """

    kind: Literal["labels", "indicator"]
    labels: np.ndarray | None = None
    indicator: np.ndarray | None = None
    names: np.ndarray | None = None
    from_sets: bool = False
    column_vector: bool = False
    dtype: np.dtype | None = None  # the indicator's dtype as given (int64 for label sets)


def exact_labels(y: Any, name: str = "y") -> Any:
    """A list of 1-D labels as an array that holds them exactly (other inputs unchanged).

    NumPy turns ``[1, "a"]`` into the strings ``["1", "a"]`` and
    ``[2**63 + 1, 1]`` into rounded floats; such lists become object arrays,
    which :func:`check_discrete_labels` then accepts or refuses by name.
    """
    if not isinstance(y, (list, tuple)):
        return y
    try:
        arr = np.asarray(y)
    except ValueError:  # ragged: the caller reports it in its own terms
        return y
    return _exact_array(list(y)) if arr.ndim == 1 else arr


def _exact_array(values: list[Any]) -> np.ndarray:
    try:
        arr = np.array(values)
        exact = arr.ndim == 1 and all(a == b for a, b in zip(arr.tolist(), values))
    except (ValueError, TypeError):  # ragged, or values NumPy cannot compare
        exact = False
    if not exact:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    return arr


def check_discrete_labels(y: np.ndarray, name: str = "y") -> np.ndarray:
    """Refuse labels that are not classes: non-integer floats, NaN, mixed strings and numbers, other objects.

    Integral floats of any size (1e20) are classes; scikit-learn's
    ``type_of_target`` casts them to int64 and calls them continuous.
    """
    kind = y.dtype.kind
    if kind in "biuUS":
        return y
    if kind == "f":
        with np.errstate(invalid="ignore"):
            bad_mask = ~np.isfinite(y) | (y != np.round(y))
        if bad_mask.any():
            i = int(np.argmax(bad_mask))
            _raise_not_a_class(y[i].item(), name, i)
        return y
    if kind != "O":
        raise TypeError(f"Unknown label type: {name} must hold class labels (integers or strings), got dtype {y.dtype}")
    first: dict[str, tuple[int, Any]] = {}
    for i, v in enumerate(y.tolist()):
        if isinstance(v, str):
            first.setdefault("string", (i, v))
        elif isinstance(v, numbers.Integral):  # Python ints of any size, beyond int64 too
            first.setdefault("number", (i, v))
        elif isinstance(v, numbers.Real):
            if not (math.isfinite(v) and float(v).is_integer()):
                _raise_not_a_class(v, name, i)
            first.setdefault("number", (i, v))
        else:
            raise TypeError(
                f"Unknown label type: {name} must hold class labels (integers or strings), got {v!r:.60} at {name}[{i}]"
            )
    if len(first) == 2:
        (i, a), (j, b) = first["string"], first["number"]
        raise TypeError(
            f"{name} mixes strings and numbers ({a!r} at {name}[{i}], {b!r} at {name}[{j}]); use one kind of label"
        )
    return y


def _raise_not_a_class(value: Any, name: str, i: int) -> None:
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{name} must hold class labels, got {value!r} at {name}[{i}]")
    # "Unknown label type: continuous" is the phrase scikit-learn's checks look for.
    raise ValueError(
        f"Unknown label type: continuous: {name} must hold class labels, got the non-integer value "
        f"{value!r} at {name}[{i}] (a regression target?)"
    )


def check_other_label(other_label: Any) -> None:
    """The name of the added class: a string or a finite number (it becomes an entry of ``classes_``)."""
    ok = isinstance(other_label, str) or (
        isinstance(other_label, numbers.Real)
        and not isinstance(other_label, (bool, np.bool_))
        and bool(np.isfinite(other_label))
    )
    if not ok:
        raise ValueError(f"other_label must be a string or a finite number, got {other_label!r}")


def _is_label_set_list(y: Any) -> bool:
    if isinstance(y, np.ndarray) or sparse.issparse(y) or not isinstance(y, Sequence) or isinstance(y, str):
        return False
    if len(y) == 0:
        return False
    first = y[0]
    if isinstance(first, (set, frozenset)):
        return True
    if not isinstance(first, (list, tuple, np.ndarray)):
        return False
    # A rectangular list of 0/1 rows is an indicator matrix written as a list.
    try:
        arr = np.asarray(y)
    except ValueError:  # ragged: label sets of different sizes
        return True
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        return True
    return not np.isin(arr, (0, 1)).all()


def _sets_to_indicator(y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    sets = []
    for i, row in enumerate(y):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__iter__"):
            raise TypeError(
                f"y looks like a list of label sets, but y[{i}] is {row!r}, not a set, list or tuple of labels"
            )
        try:
            sets.append(set(row))
        except TypeError:
            raise TypeError(f"y[{i}] is a label set holding an unhashable label: {row!r:.80}") from None
    labels = set().union(*sets)
    try:
        names = _exact_array(sorted(labels))
    except TypeError:
        raise TypeError(
            f"the labels in y must be comparable to be put in order, got mixed types: {sorted(map(repr, labels))[:6]}"
        ) from None
    index = {label: j for j, label in enumerate(names.tolist())}
    indicator = np.zeros((len(sets), len(names)), dtype=np.uint8)
    for i, row in enumerate(sets):
        for label in row:
            indicator[i, index[label.item() if isinstance(label, np.generic) else label]] = 1
    return indicator, names


def parse_targets(y: Any) -> ParsedTargets:
    """Read ``y`` as 1-D class labels, an indicator matrix, or a list of label sets."""
    if y is None:
        raise ValueError("this classifier requires y to be passed, but the target y is None")
    if _is_label_set_list(y):
        indicator, names = _sets_to_indicator(y)
        return ParsedTargets("indicator", indicator=indicator, names=names, from_sets=True, dtype=np.dtype(np.int64))
    if sparse.issparse(y):
        y = y.toarray()
    arr = np.asarray(exact_labels(y))
    if arr.ndim == 1:
        if arr.shape[0] == 0:
            raise ValueError("y is empty: a classifier needs at least one labelled row")
        return ParsedTargets("labels", labels=arr)
    if arr.ndim != 2:
        raise ValueError(
            f"y must be 1-D class labels, a 2-D 0/1 indicator matrix or a list of label sets, "
            f"got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError("y is empty: a classifier needs at least one labelled row")
    if arr.shape[1] == 1:  # a column vector of class labels, as scikit-learn reads it
        return ParsedTargets("labels", labels=arr.ravel(), column_vector=True)
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        bad = ~np.isin(arr, (0, 1)) if arr.dtype.kind in "biuf" else np.ones(arr.shape, bool)
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"y is 2-D, so it is read as a label indicator matrix (one 0/1 column per label), "
            f"but y[{i}, {j}] is {arr[i, j].item()!r}; pass class labels as a 1-D array"
        )
    return ParsedTargets("indicator", indicator=arr.astype(np.uint8), names=np.arange(arr.shape[1]), dtype=arr.dtype)


def _choose(parsed: ParsedTargets, other_label: Any) -> HeadChoice:
    if parsed.kind == "labels":
        return choice_for_labels(len(np.unique(parsed.labels)))
    Y = parsed.indicator
    counts = Y.sum(axis=1, dtype=np.int64)
    i = int(np.argmax(counts))
    return choice_for_indicator(
        Y.shape[0], Y.shape[1], int((counts >= 2).sum()), int((counts == 0).sum()), (i, int(counts[i])),
        from_sets=parsed.from_sets, other_label=other_label,
    )  # fmt: skip


def choice_for_labels(k: int) -> HeadChoice:
    """The head for 1-D labels of ``k`` distinct classes."""
    if k == 1:
        reason = (
            "y holds one class label per row but only one class occurs, so there is nothing to "
            "classify; a softmax needs at least 2 classes"
        )
    else:
        reason = (
            f"y holds one class label per row ({k} classes): every row belongs to exactly one "
            f"class, so one softmax over {k} classes"
        )
    return HeadChoice("softmax", k, False, reason)


def choice_for_indicator(
    n: int, L: int, multi: int, none: int, fullest: tuple[int, int], *, from_sets: bool, other_label: Any
) -> HeadChoice:
    """The head for an (n, L) indicator from its row counts: ``multi`` rows with two or more labels,
    ``none`` with none, ``fullest`` = (row, count) of the first row with the most labels (a Dask
    fit gets these from a distributed pass)."""
    if none == n:  # a head over no class, or over "other" alone, would learn nothing
        if from_sets:
            raise ValueError(f"y has no labels: all {n} rows are empty label sets, so there is nothing to learn")
        raise ValueError(
            f"y has no labels: its indicator matrix ({n} rows, {L} label columns) holds no 1, so there is "
            "nothing to learn"
        )
    if multi:
        i, count = fullest
        return HeadChoice(
            "sigmoid", L, False,
            f"{multi} of {n} rows carry two or more of the {L} labels (row {i} has {count}): "
            f"the labels are not mutually exclusive, so one sigmoid per label ({L} independent heads)",
        )  # fmt: skip
    if none:
        return HeadChoice(
            "softmax", L + 1, True,
            f"no row carries more than one of the {L} labels but {none} of {n} rows carry none: the "
            f"labels are mutually exclusive, so one softmax over {L + 1} classes, the {L} labels and "
            f"an added {other_label!r} class for the rows without a label",
        )  # fmt: skip
    return HeadChoice(
        "softmax", L, False,
        f"every row has exactly one of the {L} labels: the labels are mutually exclusive, so one "
        f"softmax over {L} classes",
    )  # fmt: skip


def choose_head(y: Any, *, other_label: Any = "other") -> HeadChoice:
    """Choose softmax or sigmoid from the labels: the seed's rule, as software.

    * 1-D class labels (one per row) -> one softmax over the classes;
    * an indicator matrix (or list of label sets) whose rows each carry
      exactly one label -> one softmax over the labels;
    * any row with two or more labels -> one sigmoid per label;
    * no row with more than one label but some with none -> a softmax with
      an added "other" class (``add_other_class=True``).

    Parameters
    ----------
    y : array_like, sparse matrix, or list of label sets
        1-D class labels, a 2-D 0/1 indicator matrix (n_samples, n_labels),
        or a list of label sets such as ``[{"rock"}, {"vocal", "pop"}]``.
    other_label : object, default "other"
        Name of the added class, used in the reason.

    Returns
    -------
    HeadChoice

    Raises
    ------
    ValueError
        If ``y`` is empty, 3-D or more, 2-D with entries other than 0/1, or
        has no label at all (an all-zero indicator, only empty label sets).

    Examples
    --------
    >>> import numpy as np
    >>> from softxent.models import choose_head
    >>> choose_head(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])).reason
    'every row has exactly one of the 4 labels: the labels are mutually exclusive, so one softmax over 4 classes'
    >>> choose_head([{"vocal", "dance"}, {"pop"}, {"soundtrack"}]).head
    'sigmoid'
    >>> choose_head([{"rock"}, {"jazz"}, set()]).add_other_class
    True
    """
    check_other_label(other_label)
    return _choose(parse_targets(y), other_label)
