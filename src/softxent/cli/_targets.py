"""The target of a table: which columns are labels and features, and the labels as ``y``.

The second step of the command line's data path, after
:func:`softxent.cli._read.read_table` and before the feature transform
(:class:`softxent.cli._features.TablePreprocessor`):
:func:`select_columns` and :class:`TargetSpec` say which columns are the
target and in which form (a class column, several 0/1 label columns, or a
column of label sets joined by a separator), and give the labels as ``y`` in
one of the forms :func:`softxent.models.choose_head` reads. The spec is
stored in the model file (JSON, no pickle), so that ``evaluate`` reads the
labels of new data the same way.

Every problem the user can fix raises :class:`~softxent.cli._errors.CLIError`
with one line that names the argument or column and the value. Rows are
counted from 0 in the table's order (the header is not a row), as pandas does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._cells import _duplicates, _listing, _missing_mask, _not_found, _py, _text
from ._errors import CLIError

__all__ = ["TargetSpec", "select_columns"]


# ---------------------------------------------------------------------- columns


def _check_targets(df: pd.DataFrame, targets: Sequence[str]) -> list[str]:
    targets = [str(t) for t in targets]
    if not targets:
        raise CLIError("no --target given; name the column (or columns) to predict")
    repeated = _duplicates(targets)
    if repeated:
        raise CLIError(f"--target {repeated[0]!r} is given more than once")
    for t in targets:
        if t not in df.columns:
            raise _not_found("target", t, df.columns)
    return targets


def select_columns(df: pd.DataFrame, targets: Sequence[str], features: Sequence[str] | None) -> list[str]:
    """The feature columns: every column that is not a target, unless ``features`` names them.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    targets : sequence of str
        The ``--target`` columns.
    features : sequence of str or None
        The ``--features`` columns (kept in this order, repeats dropped), or
        None for every non-target column in table order.

    Returns
    -------
    list of str

    Raises
    ------
    CLIError
        A target or feature column missing (the message lists the columns),
        a column that is both target and feature, or no feature column left.
    """
    targets = _check_targets(df, targets)
    if features is None:
        columns = [c for c in df.columns if c not in targets]
        if not columns:
            raise CLIError(f"no feature columns left: the table holds only the target column(s) {_listing(targets)}")
        return [str(c) for c in columns]
    columns = list(dict.fromkeys(str(f) for f in features))
    if not columns:
        raise CLIError("--features names no columns; leave it out to use every non-target column")
    for c in columns:
        if c not in df.columns:
            raise _not_found("feature", c, df.columns)
        if c in targets:
            raise CLIError(f"column {c!r} is both a --target and a --features column; a target cannot be a feature")
    return columns


# ---------------------------------------------------------------------- targets

TargetKind = Literal["classes", "indicator", "label_sets"]
_TARGET_KINDS = ("classes", "indicator", "label_sets")
_TRUE_WORDS = {"1", "true", "1.0"}
_FALSE_WORDS = {"0", "false", "0.0"}


def _indicator_column(series: pd.Series, name: str) -> np.ndarray:
    """A 0/1 label column as int8; missing or other values are a CLIError."""
    missing = _missing_mask(series)
    if missing.any():
        raise CLIError(
            f"target column {name!r} has {int(missing.sum())} missing values (of {len(series)} rows); "
            "a 0/1 label column needs a 0 or 1 in every row"
        )
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        bad = np.flatnonzero((values != 0) & (values != 1))
        if len(bad) == 0:
            return values.astype(np.int8)
        i = int(bad[0])
    else:
        out = np.empty(len(series), dtype=np.int8)
        for i, cell in enumerate(series.tolist()):
            word = _text(cell).lower() if not isinstance(cell, bool) else str(int(cell))
            if word in _TRUE_WORDS:
                out[i] = 1
            elif word in _FALSE_WORDS:
                out[i] = 0
            else:
                break
        else:
            return out
    raise CLIError(
        f"target column {name!r} holds {_py(series.iat[i])!r} in row {i}; "
        "a label column must hold only 0/1 or true/false"
    )


def _class_values(series: pd.Series) -> tuple[list[Any], np.ndarray]:
    """A class column's cells as Python values (ints stay ints, text stripped) and its missing mask."""
    missing = _missing_mask(series)
    kept = series[~missing]
    if pd.api.types.is_bool_dtype(series.dtype):
        values = [bool(v) for v in kept.tolist()]
    elif pd.api.types.is_integer_dtype(series.dtype):
        values = [int(v) for v in kept.tolist()]
    elif pd.api.types.is_float_dtype(series.dtype):
        floats = kept.to_numpy(dtype=np.float64)
        # A column of ints with empty cells arrives as float64; give the ints back.
        integral = bool(np.all(np.isfinite(floats) & (floats == np.round(floats))))
        values = [int(v) for v in floats] if integral else floats.tolist()
    else:
        values = [_text(v) for v in kept.tolist()]
    return values, missing


@dataclass(frozen=True)
class TargetSpec:
    """Where the target is and in which form; ``extract`` turns a table into ``y``.

    Attributes
    ----------
    kind : {"classes", "indicator", "label_sets"}
        ``"classes"``: one column, one class per row (an empty cell: no
        label). ``"indicator"``: several 0/1 (or true/false) columns, one per
        label, named after the columns. ``"label_sets"``: one column whose
        cells hold labels joined by ``label_sep`` (``vocal|pop``).
    columns : tuple of str
        The target column(s).
    label_sep : str or None
        The separator of ``"label_sets"``; None for the other kinds.
    """

    kind: TargetKind
    columns: tuple[str, ...]
    label_sep: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _TARGET_KINDS:
            raise ValueError(f"TargetSpec kind must be one of {', '.join(_TARGET_KINDS)}, got {self.kind!r}")
        strings = isinstance(self.columns, tuple) and all(isinstance(c, str) for c in self.columns)
        if not strings or not self.columns:
            raise ValueError(f"TargetSpec columns must be a non-empty tuple of strings, got {self.columns!r}")
        if self.kind == "indicator" and len(self.columns) < 2:
            raise ValueError(f"an indicator target needs two or more columns, got {list(self.columns)}")
        if self.kind != "indicator" and len(self.columns) != 1:
            raise ValueError(f"a {self.kind} target has one column, got {list(self.columns)}")
        if self.kind == "label_sets":
            if not isinstance(self.label_sep, str) or not self.label_sep:
                raise ValueError(f"a label_sets target needs a non-empty label_sep, got {self.label_sep!r}")
        elif self.label_sep is not None:
            raise ValueError(f"label_sep applies to label_sets targets only, got {self.label_sep!r} for {self.kind}")

    @property
    def name(self) -> str:
        """How messages name the target: ``target 'genre'`` or ``target columns a, b``."""
        if len(self.columns) == 1:
            return f"target {self.columns[0]!r}"
        return f"target columns {_listing(self.columns)}"

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (see :meth:`from_dict`)."""
        return {"kind": self.kind, "columns": list(self.columns), "label_sep": self.label_sep}

    @classmethod
    def from_dict(cls, d: Any) -> TargetSpec:
        """The spec written by :meth:`to_dict`; ``ValueError`` says what is wrong with a damaged one."""
        if not isinstance(d, dict):
            raise ValueError(f"a target spec must be a dict, got {type(d).__name__}")
        missing = [k for k in ("kind", "columns", "label_sep") if k not in d]
        if missing:
            raise ValueError(f"the target spec lacks {', '.join(missing)}")
        columns = d["columns"]
        if not isinstance(columns, list):
            raise ValueError(f"the target spec's columns must be a list, got {columns!r}")
        return cls(d["kind"], tuple(columns), d["label_sep"])

    # ------------------------------------------------------------------ reading targets

    @classmethod
    def infer(cls, df: pd.DataFrame, targets: Sequence[str], label_sep: str | None) -> TargetSpec:
        """The target's form from the ``--target`` columns and ``--label-sep``.

        One column → ``"classes"`` (``"label_sets"`` with a separator);
        several → ``"indicator"``, whose columns must hold only 0/1 or
        true/false, with no missing cell.

        Raises
        ------
        CLIError
            A target column is missing, ``label_sep`` is empty or given with
            several columns, or an indicator column holds a missing or
            other value (the message names the column, and the count or the
            value and its row).
        """
        targets = _check_targets(df, targets)
        if label_sep is not None and not label_sep:
            raise CLIError("--label-sep must not be empty")
        if len(targets) == 1:
            if label_sep is None:
                return cls("classes", (targets[0],), None)
            return cls("label_sets", (targets[0],), label_sep)
        if label_sep is not None:
            raise CLIError(
                f"--label-sep {label_sep!r} splits one target column of label sets, but {len(targets)} "
                f"--target columns were given ({_listing(targets)}); several columns are read as 0/1 labels"
            )
        for t in targets:
            _indicator_column(df[t], t)
        return cls("indicator", tuple(targets), None)

    def extract(self, df: pd.DataFrame) -> np.ndarray | list[set]:
        """``y`` in a form :meth:`softxent.models.AutoClassifier.fit` accepts.

        * ``"classes"``: a 1-D array of the class values (ints stay ints,
          text becomes ``str``, stripped). If some cells are empty, those
          rows have no label and the result is a list of label sets instead
          (``[{"jazz"}, set(), ...]``), for which ``choose_head`` picks a
          softmax with an added "other" class.
        * ``"label_sets"``: a list of sets: each cell split on
          ``label_sep``, pieces stripped, empty pieces dropped; an empty
          cell is the empty set.
        * ``"indicator"``: a list of sets of the column names whose cell is 1.

        Raises
        ------
        CLIError
            A target column is missing from ``df``, or an indicator column
            holds something other than 0/1.
        """
        for c in self.columns:
            if c not in df.columns:
                raise _not_found("target", c, df.columns)
        if self.kind == "indicator":
            Y = np.column_stack([_indicator_column(df[c], c) for c in self.columns])
            names = self.columns
            return [{names[j] for j in np.flatnonzero(row)} for row in Y]
        series = df[self.columns[0]]
        values, missing = _class_values(series)
        if self.kind == "label_sets":
            sep = self.label_sep
            cells = iter(values)
            sets: list[set] = []
            for m in missing:
                if m:
                    sets.append(set())
                else:
                    pieces = (p.strip() for p in _text(next(cells)).split(sep))
                    sets.append({p for p in pieces if p})
            return sets
        if missing.any():
            cells = iter(values)
            return [set() if m else {next(cells)} for m in missing]
        if values and all(isinstance(v, str) for v in values):
            return np.array(values, dtype=str)
        out = np.asarray(values)
        if out.dtype == object or out.ndim != 1:  # mixed kinds: the names as text
            out = np.array([str(v) for v in values], dtype=str)
        return out

    @staticmethod
    def labels_of(y: np.ndarray | Sequence[set]) -> list[Any]:
        """The sorted distinct labels (classes) of ``y`` as returned by :meth:`extract`."""
        if isinstance(y, np.ndarray):
            distinct = {_py(v) for v in y.tolist()}
        else:
            distinct = {_py(v) for s in y for v in s}
        try:
            return sorted(distinct)
        except TypeError:  # mixed kinds (ints and text): order as text
            return sorted(distinct, key=str)

    def check_learnable(self, y: np.ndarray | Sequence[set]) -> None:
        """Raise CLIError unless ``y`` has something to learn: two classes, or one label and rows without it.

        Rows without a label count as a class of their own (the "other" class
        of a softmax, or the 0 of a single sigmoid).
        """
        n = len(y)
        labels = self.labels_of(y)
        unlabelled = 0 if isinstance(y, np.ndarray) else sum(1 for s in y if not s)
        if not labels:
            raise CLIError(f"{self.name} has no label in any of its {n} rows; a classifier needs labelled rows")
        if len(labels) == 1 and unlabelled == 0:
            word = "class" if self.kind == "classes" else "label"
            raise CLIError(
                f"{self.name} has a single {word} {labels[0]!r} in {n} rows; a classifier needs at least two"
            )

    @staticmethod
    def indicator(y: np.ndarray | Sequence[Iterable], labels: Sequence[Any]) -> np.ndarray:
        """Rows of label sets (or 1-D classes) as an (n, k) int8 0/1 matrix, columns in the order of ``labels``.

        Raises
        ------
        ValueError
            A row carries a label that is not in ``labels``.
        """
        index = {_py(label): j for j, label in enumerate(labels)}
        by_text = {str(label): j for label, j in index.items()}
        rows = [{v} for v in y.tolist()] if isinstance(y, np.ndarray) and y.ndim == 1 else y
        out = np.zeros((len(rows), len(index)), dtype=np.int8)
        for i, row in enumerate(rows):
            for label in row:
                label = _py(label)
                j = index.get(label, by_text.get(str(label)))
                if j is None:
                    raise ValueError(f"row {i} carries the label {label!r}, which is not one of {_listing(labels)}")
                out[i, j] = 1
        return out
