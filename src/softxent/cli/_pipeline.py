"""A classifier for tables: the table transform, the target's form and the model, in one file.

``softxent fit`` turns a table into features (:class:`TablePreprocessor`:
one-hot encoding, imputation, standardisation) and targets (:class:`TargetSpec`:
a class column, 0/1 label columns, or a column of label sets), lets
:func:`softxent.models.choose_head` pick softmax or sigmoid (or takes the
user's choice), and trains. :class:`TablePipeline` keeps all of it together
so that ``evaluate`` and ``predict`` apply exactly the same transform to new
tables, and saves it as a :mod:`softxent.models` file whose ``extra``
metadata holds the transform (still no pickle).

Predictions are answered in the target's own form: class names for a class
column (the added class ``"other"`` included), label sets for label sets and
0/1 label columns. Metrics compare like with like: the softmax head is scored
on one class per row (rows without a label count as ``"other"``), the sigmoid
head on the 0/1 matrix of labels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..models import AutoClassifier, HeadChoice, ModelFileError, SigmoidRegression, choose_head
from ..models._persistence import load as load_model
from ..models._persistence import save as save_model
from ._data import TablePreprocessor, TargetSpec, select_columns
from ._errors import CLIError
from ._report import sigmoid_metrics, softmax_metrics

__all__ = ["PIPELINE_VERSION", "TablePipeline", "TrainResult", "train"]

# Version of the ``extra["cli"]`` document; bump it when its meaning changes.
PIPELINE_VERSION = 1

Head = Literal["auto", "softmax", "sigmoid"]


def _label_sets(y: Any) -> list[set]:
    """Any target form as one label set per row (1-D classes: sets of one)."""
    if isinstance(y, np.ndarray) and y.ndim == 1:
        return [{v} for v in y.tolist()]
    return [set(s) for s in y]


@dataclass
class TablePipeline:
    """Table → features → model, as trained by ``softxent fit``.

    Attributes
    ----------
    model : AutoClassifier or SigmoidRegression
        The fitted model (``SigmoidRegression`` when ``--head sigmoid`` was
        forced on any labels).
    target : TargetSpec
        Which columns hold the target and in what form.
    preprocessor : TablePreprocessor
        The fitted feature transform.
    features : list of str
        The table columns the features come from.
    choice : HeadChoice
        The head used and why.
    info : dict
        What the command line reports: the training file, row counts, split.
    """

    model: Any
    target: TargetSpec
    preprocessor: TablePreprocessor
    features: list[str]
    choice: HeadChoice
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ outputs

    @property
    def head(self) -> str:
        return self.choice.head

    @property
    def names(self) -> list[Any]:
        """Names of the probability columns: classes (softmax) or labels (sigmoid)."""
        return list(self.model.classes_.tolist())

    @property
    def other_label(self) -> Any:
        return getattr(self.model, "other_label", "other")

    @property
    def loss_curve(self) -> list[float]:
        head = getattr(self.model, "head_", self.model)
        return [float(v) for v in getattr(head, "loss_curve_", [])]

    @property
    def n_iter(self) -> int:
        return int(self.model.n_iter_)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        return self.preprocessor.transform(table)

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """(n_rows, len(names)) probabilities: rows sum to 1 (softmax) or one per label (sigmoid)."""
        return self.model.predict_proba(self.transform(table))

    def decide(self, proba: np.ndarray) -> list[Any]:
        """Predictions from probabilities, in the target's form.

        Softmax on a class column: class names (``other`` for the added class).
        Otherwise label sets (the ``other`` class is the empty set).
        """
        names = self.names
        if self.head == "sigmoid":
            threshold = self.model.threshold
            return [{names[j] for j in np.flatnonzero(row > threshold)} for row in proba]
        best = [names[j] for j in np.argmax(proba, axis=1)]
        if self.target.kind == "classes":  # class names, the added "other" included
            return best
        other = self.other_label if self.choice.add_other_class else object()
        return [set() if b == other else {b} for b in best]

    # ------------------------------------------------------------------ truth and metrics

    def truth(self, table: pd.DataFrame) -> Any:
        """The table's labels in the form the head is scored on.

        Softmax: one class per row (``other`` for rows without a label).
        Sigmoid: the (n_rows, n_labels) 0/1 matrix in the order of ``names``.
        """
        y = self.target.extract(table)
        if self.head == "sigmoid":
            sets = _label_sets(y)
            unknown = sorted({str(v) for s in sets for v in s} - {str(n) for n in self.names})
            if unknown:
                raise CLIError(f"the data has labels the model was not trained on: {', '.join(unknown[:10])}")
            return TargetSpec.indicator(sets, self.names)
        if isinstance(y, np.ndarray) and y.ndim == 1:
            return y
        classes = []
        for i, labels in enumerate(y):
            if len(labels) > 1:
                raise CLIError(
                    f"row {i} of the data carries {len(labels)} labels ({', '.join(map(str, sorted(labels, key=str)))}), "
                    "but this model is a softmax: one class per row"
                )
            classes.append(next(iter(labels)) if labels else self.other_label)
        out = np.empty(len(classes), dtype=object)
        out[:] = classes
        return out

    def metrics(self, table: pd.DataFrame) -> tuple[dict[str, Any], Any, np.ndarray]:
        """Metrics on a labelled table; returns ``(metrics, truth, proba)``."""
        truth = self.truth(table)
        proba = self.predict_proba(table)
        try:
            if self.head == "sigmoid":
                metrics = sigmoid_metrics(truth, proba, self.names, threshold=self.model.threshold)
            else:
                metrics = softmax_metrics(truth, proba, self.names)
        except ValueError as exc:  # classes in the data that the model never saw
            raise CLIError(str(exc)) from None
        return metrics, truth, proba

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        extra = {
            "cli": {
                "version": PIPELINE_VERSION,
                "target": self.target.to_dict(),
                "features": list(self.features),
                "preprocessor": self.preprocessor.to_dict(),
                "choice": {"head": self.choice.head, "n_classes": self.choice.n_classes,
                           "add_other_class": self.choice.add_other_class, "reason": self.choice.reason},
                "info": self.info,
            }
        }  # fmt: skip
        try:
            save_model(self.model, path, extra=extra)
        except OSError as exc:
            raise CLIError(f"cannot write the model to --out {os.fspath(path)!r}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> TablePipeline:
        """Read a model written by ``softxent fit``; every problem is a :class:`CLIError`."""
        name = os.fspath(path)
        if not os.path.exists(name):
            raise CLIError(f"cannot read MODEL {name!r}: no such file")
        if os.path.isdir(name):
            raise CLIError(f"cannot read MODEL {name!r}: it is a directory")
        try:
            model, extra = load_model(name, with_extra=True)
        except ModelFileError as exc:
            raise CLIError(str(exc)) from None
        except OSError as exc:
            raise CLIError(f"cannot read MODEL {name!r}: {exc.strerror or exc}") from None
        cli = (extra or {}).get("cli")
        if not isinstance(cli, dict):
            raise CLIError(
                f"MODEL {name!r} holds a softxent model saved from Python, without the table transform "
                "that `softxent fit` stores; train it with `softxent fit` to use it here"
            )
        version = cli.get("version")
        if not isinstance(version, int) or version > PIPELINE_VERSION:
            raise CLIError(
                f"MODEL {name!r} was written by a newer softxent command line (table format {version!r}; "
                f"this one reads up to {PIPELINE_VERSION}); upgrade softxent"
            )
        try:
            choice = cli["choice"]
            return cls(
                model=model,
                target=TargetSpec.from_dict(cli["target"]),
                preprocessor=TablePreprocessor.from_dict(cli["preprocessor"]),
                features=[str(c) for c in cli["features"]],
                choice=HeadChoice(str(choice["head"]), int(choice["n_classes"]),
                                  bool(choice["add_other_class"]), str(choice["reason"])),  # fmt: skip
                info=dict(cli.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CLIError(f"cannot load MODEL {name!r}: its table transform is damaged ({exc})") from None


# ---------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` produced: the pipeline and the held-out evaluation (None without a split)."""

    pipeline: TablePipeline
    auto_choice: HeadChoice
    train_rows: np.ndarray
    test_rows: np.ndarray
    metrics: dict[str, Any] | None
    truth: Any
    proba: np.ndarray | None
    warnings: list[str]

    @property
    def n_train(self) -> int:
        return len(self.train_rows)

    @property
    def n_test(self) -> int:
        return len(self.test_rows)


def _choose(y: Any, head: Head, target: TargetSpec) -> tuple[HeadChoice, HeadChoice]:
    """The head to train and the one ``choose_head`` recommends (they differ only when forced)."""
    try:
        auto = choose_head(y)
    except ValueError as exc:
        raise CLIError(f"target {', '.join(target.columns)}: {exc}") from None
    if head == "auto" or head == auto.head:
        return auto, auto
    if head == "softmax":
        sets = _label_sets(y)
        several = next(i for i, s in enumerate(sets) if len(s) > 1)
        raise CLIError(
            f"--head softmax: row {several} carries {len(sets[several])} labels, and a softmax gives "
            "each row one class; use --head sigmoid (one sigmoid per label) or --head auto"
        )
    n_labels = len({v for s in _label_sets(y) for v in s})
    forced = HeadChoice(
        "sigmoid", n_labels, False,
        f"--head sigmoid asked for one independent sigmoid per label ({n_labels} labels); "
        f"choose_head would have said: {auto.reason}",
    )  # fmt: skip
    return forced, auto


def _split(n: int, test_size: float, seed: int, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and held-out parts (stratified by class when every class has 2+ rows)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    if test_size == 0:
        return rows, rows[:0]
    n_test = int(np.ceil(test_size * n))
    if n_test < 1 or n - n_test < 2:
        raise CLIError(f"--test-size {test_size} leaves {n - n_test} training and {n_test} held-out rows of {n}")
    if strata is not None:
        _, counts = np.unique(strata.astype(str), return_counts=True)
        if counts.min() < 2 or n_test < len(counts) or n - n_test < len(counts):
            strata = None
    train, test = train_test_split(rows, test_size=n_test, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(test)


def _take(y: Any, rows: np.ndarray) -> Any:
    if isinstance(y, np.ndarray):
        return y[rows]
    return [y[i] for i in rows]


def train(
    table: pd.DataFrame,
    *,
    targets: Sequence[str],
    features: Sequence[str] | None = None,
    label_sep: str | None = None,
    head: Head = "auto",
    C: float = 1.0,
    solver: str = "lbfgs",
    max_iter: int = 100,
    test_size: float = 0.2,
    seed: int = 0,
    impute: str | None = None,
    other_label: str = "other",
    callback: Callable[[Any], Any] | None = None,
    on_choice: Callable[[HeadChoice, HeadChoice, TablePreprocessor], None] | None = None,
    source: str = "",
) -> TrainResult:
    """Fit a classifier on ``table`` (see ``softxent fit --help`` for the options).

    ``on_choice(choice, auto_choice, preprocessor)`` is called once the head
    is known, before training starts, so a front end can print it first.
    """
    if not 0 <= test_size < 1:
        raise CLIError(f"--test-size must be in [0, 1), got {test_size}")
    columns = select_columns(table, targets, features)
    target = TargetSpec.infer(table, targets, label_sep)
    y = target.extract(table)
    target.check_learnable(y)
    choice, auto = _choose(y, head, target)

    strata = None
    if choice.head == "softmax":
        sets = None if isinstance(y, np.ndarray) else _label_sets(y)
        strata = y if sets is None else np.array([str(next(iter(s))) if s else other_label for s in sets])
    preprocessor = TablePreprocessor(impute=impute)
    preprocessor.check_missing(table, columns)  # counts of the whole file, not of the training part
    train_rows, test_rows = _split(len(table), test_size, seed, strata)
    part = table.iloc[train_rows]
    X = preprocessor.fit_transform(part, columns)
    y_train = _take(y, train_rows)
    if on_choice is not None:
        on_choice(choice, auto, preprocessor)

    common = dict(C=C, solver=solver, max_iter=max_iter, random_state=seed, callback=callback)
    if choice.head == "sigmoid" and auto.head != "sigmoid":
        model: Any = SigmoidRegression(**common)
        y_fit: Any = _label_sets(y_train)
    else:
        model = AutoClassifier(other_label=other_label, **common)
        y_fit = y_train
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            model.fit(X, y_fit)
        except ValueError as exc:  # e.g. a single class left in the training part
            raise CLIError(f"cannot fit: {exc}") from None
    for record in records:
        message = str(record.message).splitlines()[0]
        if message not in caught:
            caught.append(message)

    info = {
        "trained_on": source,
        "n_rows": len(table),
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "test_size": test_size,
        "seed": seed,
        "solver": solver,
        "C": C,
    }
    pipeline = TablePipeline(model, target, preprocessor, list(columns), choice, info)
    metrics = truth = proba = None
    if len(test_rows):
        metrics, truth, proba = pipeline.metrics(table.iloc[test_rows])
    return TrainResult(pipeline, auto, train_rows, test_rows, metrics, truth, proba, caught)
