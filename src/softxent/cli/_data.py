"""User tables in, ``(X, y)`` for the estimators out, with a transform that can be stored.

The command line reads whatever table a user has and hands the estimators of
:mod:`softxent.models` a float matrix and labels in one of the forms
:func:`softxent.models.choose_head` reads. Three steps, each its own object so
that ``evaluate`` and ``predict`` can repeat the training-time transform from
the model file (JSON, no pickle):

1. :func:`softxent.cli._read.read_table` (its own module): CSV/TSV
   (delimiter sniffed, optionally gzip'd), Parquet or ``.npz`` →
   :class:`pandas.DataFrame`.
2. :func:`select_columns` and :class:`TargetSpec`: which columns are the
   target and in which form (a class column, several 0/1 label columns, or a
   column of label sets joined by a separator), and the labels as ``y``.
3. :class:`TablePreprocessor`: feature columns → a standardised float64
   matrix (numbers as they are, text one-hot encoded, optional imputation).

Every problem the user can fix raises :class:`~softxent.cli._errors.CLIError`
with one line that names the argument or column and the value. Rows are
counted from 0 in the table's order (the header is not a row), as pandas does.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._errors import CLIError

__all__ = [
    "TablePreprocessor",
    "TargetSpec",
    "select_columns",
]

_MAX_LISTED = 12  # column names listed in an error before "... and N more"

Impute = Literal["mean", "median", "most_frequent"]
_IMPUTE = ("mean", "median", "most_frequent")
_PREPROCESSOR_FORMAT = "softxent.TablePreprocessor"
# Version 2 adds a column's decimal mark ("decimal": ","). A transform that
# reads no decimal comma is still written as version 1, which older softxent
# versions read; one that does is version 2, which they refuse by name rather
# than misread "1,5" as a category.
_PREPROCESSOR_VERSION = 2


# ---------------------------------------------------------------------- small helpers


def _listing(names: Iterable[Any], limit: int = _MAX_LISTED) -> str:
    """``a, b, c`` or ``a, b, ... and 40 more``: a column list that fits on one line."""
    names = [str(n) for n in names]
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... and {len(names) - limit} more"


def _not_found(what: str, name: str, columns: Sequence[Any]) -> CLIError:
    """``target column 'genre' not found; the columns are: a, b, c`` (+ a close match if any)."""
    names = [str(c) for c in columns]
    hint = difflib.get_close_matches(name, names, n=1)
    if not hint:  # a difference of case only, e.g. 'Genre' for 'genre'
        hint = [c for c in names if c.lower() == name.lower()][:1]
    message = f"{what} column {name!r} not found; the columns are: {_listing(names)}"
    return CLIError(message + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _short(reason: BaseException | str, limit: int = 160) -> str:
    """The first line of a parser's message, shortened to fit in an error line."""
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _duplicates(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _py(value: Any) -> Any:
    """A NumPy scalar as the Python scalar (labels in sets and JSON must be plain)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_real(value: Any) -> bool:
    """A JSON number (bools are ints in Python, but not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text_dtype(dtype: Any) -> bool:
    return pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)


def _missing_mask(series: pd.Series) -> np.ndarray:
    """NaN/None/NA, and in text columns also empty or blank strings."""
    mask = np.array(series.isna().to_numpy(dtype=bool))  # a copy: pandas' array is read-only
    if _is_text_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
        blank = series.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
        mask |= blank.fillna(False).to_numpy(dtype=bool)
    return mask


def _text(value: Any) -> str:
    """A cell as a category/label name: strings stripped; 3.0 → '3' (a float column with NaN held ints)."""
    value = _py(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_float(series: pd.Series, decimal: str = ".") -> tuple[np.ndarray, int | None]:
    """A column as float64 (true/false as 1/0, missing as NaN).

    ``decimal=","`` reads text cells written with a decimal comma (``1,5``
    is 1.5); cells pandas already parsed as numbers are taken as they are.
    Returns the values and the row of the first non-missing cell that is not
    a number (None when every cell is a number or missing).
    """
    # Copies: pandas may hand out a read-only view of the table's own data.
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return np.array(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64), None
    missing = _missing_mask(series)
    cells = series.where(~missing)
    if decimal == ",":
        # Only strings change: "1,5" -> "1.5". A cell with a comma and a dot
        # ("1.234,5", thousands grouped) becomes "1.234.5", which is not a number.
        cells = cells.map(lambda v: v.strip().replace(",", ".") if isinstance(v, str) else v)
    numbers = pd.to_numeric(cells, errors="coerce")
    values = np.array(numbers.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    # to_numeric takes Python bools but not the words; 'true'/'false' cells are 1/0 like a bool column.
    rest = np.flatnonzero(np.isnan(values) & ~missing)
    for i in rest:
        word = str(series.iat[i]).strip().lower()
        if word in ("true", "false"):
            values[i] = 1.0 if word == "true" else 0.0
        else:
            return values, int(i)
    return values, None


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


# ---------------------------------------------------------------------- features


def _kind_of(series: pd.Series, name: str, decimal_comma: bool = False) -> tuple[str, str]:
    """How a feature column is read: ``(kind, decimal mark)``.

    ``kind`` is ``"numeric"`` (numbers, bools, or text that is all numbers)
    or ``"categorical"``; the mark is ``","`` for text that is all numbers
    only once a decimal comma is read as a point (``1,5``), which is tried
    when ``decimal_comma`` allows it, else ``"."``.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical", "."  # an explicit categorical dtype is the user's word
    if pd.api.types.is_bool_dtype(dtype):
        return "numeric", "."
    if pd.api.types.is_complex_dtype(dtype):
        raise CLIError(f"column {name!r} holds complex numbers; leave it out with --features")
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric", "."
    if not _is_text_dtype(dtype):
        raise CLIError(
            f"column {name!r} holds {dtype} values, which softxent does not turn into features; "
            "convert them to numbers or leave the column out with --features"
        )
    # A number column with a blank cell (' ') or true/false words is read as text by pandas.
    if _missing_mask(series).all():
        return "categorical", "."
    if _to_float(series)[1] is None:
        return "numeric", "."
    # Numbers written 1,5 in a file whose fields are split by ';' (or tab):
    # pandas keeps them as text, and one-hot encoding them would make every
    # distinct number a category of its own.
    if decimal_comma and _to_float(series, ",")[1] is None:
        return "numeric", ","
    return "categorical", "."


def _most_frequent(values: Sequence[Any]) -> Any:
    """The most frequent value; ties go to the smallest (as scikit-learn's SimpleImputer)."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


class TablePreprocessor:
    """Feature columns → a standardised float64 matrix; the fitted transform is JSON.

    Numeric columns (ints, floats, bools as 1/0) are used as they are;
    every other column (text, categorical) is one-hot encoded, one output
    per category seen in fit (sorted as strings); a category not seen in
    fit encodes as all zeros and is counted in :attr:`unseen_`. Then every
    output column is standardised with the mean and standard deviation of
    the fit rows (a constant column gets scale 1):

    .. math:: x' = (x - \\mu_j) / \\sigma_j

    Missing values (NaN, None, empty or blank text) are an error unless
    ``impute`` is given: numeric columns then take the ``impute`` statistic
    of the fit rows, text columns always their most frequent value. The same
    fill values are used at transform.

    Parameters
    ----------
    impute : {"mean", "median", "most_frequent"} or None, default None

    Attributes
    ----------
    columns_ : list of str
        The fit columns.
    kinds_ : dict of str to {"numeric", "categorical"}
    decimal_ : dict of str to str
        ``","`` for the numeric columns whose text is read with a decimal
        comma (``1,5`` = 1.5); the others read a decimal point.
    categories_ : dict of str to list of str
        Sorted categories of each categorical column.
    fill_ : dict of str to float or str
        Fill value of every column (only with ``impute``).
    missing_ : dict of str to int
        Missing values per column in the fit rows (columns with any).
    mean_, scale_ : numpy.ndarray of shape (n_outputs,)
    output_names : list of str
        ``age``, ``city=Paris``, ...
    unseen_ : dict of str to int
        Values of each categorical column that the last :meth:`transform`
        had not seen in fit (columns with at least one).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"age": [20, 30, 40], "city": ["Paris", "Oslo", "Paris"]})
    >>> pre = TablePreprocessor().fit(df, ["age", "city"])
    >>> pre.output_names
    ['age', 'city=Oslo', 'city=Paris']
    >>> pre.transform(df).round(3)[:, 0].tolist()
    [-1.225, 0.0, 1.225]
    """

    def __init__(self, impute: Impute | None = None) -> None:
        if impute is not None and impute not in _IMPUTE:
            raise CLIError(f"--impute must be one of {', '.join(_IMPUTE)}, got {impute!r}")
        self.impute = impute
        self.unseen_: dict[str, int] = {}

    # ------------------------------------------------------------------ fitting

    def fit(self, df: pd.DataFrame, columns: Sequence[str], *, decimal_comma: bool = False) -> TablePreprocessor:
        """Learn the column kinds, categories, fill values, means and scales from ``df``.

        With ``decimal_comma``, a text column whose cells are all numbers once
        a decimal comma is read as a point (``1,5``) is a numeric column read
        that way, at fit and at every later :meth:`transform`
        (``softxent fit`` allows it for files whose delimiter is not a comma,
        or with ``--decimal ,``).

        Raises
        ------
        CLIError
            A column is missing, ``df`` has no rows, a column has missing
            values and ``impute`` is None (or only missing values), or a
            value is infinite.
        """
        self.__dict__.pop("mean_", None)  # a failed refit leaves the transform unfitted, not half-fitted
        columns = [str(c) for c in columns]
        if not columns:
            raise CLIError("no feature columns to fit on")
        for c in columns:
            if c not in df.columns:
                raise _not_found("feature", c, df.columns)
        n = len(df)
        if n == 0:
            raise CLIError("no rows to fit the feature transform on")
        read = {c: _kind_of(df[c], c, decimal_comma) for c in columns}
        kinds = {c: kind for c, (kind, _) in read.items()}
        missing = self.check_missing(df, columns)
        self.columns_ = columns
        self.kinds_ = kinds
        self.decimal_ = {c: mark for c, (_, mark) in read.items() if mark != "."}
        self._decimal = None
        self.missing_ = missing
        self.categories_: dict[str, list[str]] = {}
        self.fill_: dict[str, float | str] = {}
        for c in columns:
            series = df[c]
            if kinds[c] == "numeric":
                values = _to_float(series, self.decimal_.get(c, "."))[0]
                present = values[~np.isnan(values)]
                self._check_finite(c, values)
                if self.impute == "mean":
                    self.fill_[c] = float(np.mean(present))
                elif self.impute == "median":
                    self.fill_[c] = float(np.median(present))
                elif self.impute == "most_frequent":
                    self.fill_[c] = float(_most_frequent(present.tolist()))
            else:
                mask = _missing_mask(series)
                texts = [_text(v) for v in series[~mask].tolist()]
                self.categories_[c] = sorted(set(texts))
                if self.impute is not None:  # text columns: the most frequent value, whatever impute says
                    self.fill_[c] = _most_frequent(texts)
        self.n_rows_ = n
        raw = self._raw(df, count_unseen=False)
        self.mean_ = raw.mean(axis=0)
        scale = raw.std(axis=0)
        # A constant column (max == min) gets scale 1: its std may be a rounding residue, not 0.
        constant = (raw.max(axis=0) == raw.min(axis=0)) | (scale == 0)
        self.scale_ = np.where(constant, 1.0, scale)
        self.unseen_ = {}
        return self

    def check_missing(self, df: pd.DataFrame, columns: Sequence[str]) -> dict[str, int]:
        """The number of missing cells per column of ``columns`` that has any.

        ``softxent fit`` calls it on the whole table before the held-out
        split, so that the counts in its message are those of the user's file.

        Raises
        ------
        CLIError
            A column has only missing values, or some and ``impute`` is None.
        """
        n = len(df)
        missing = {c: int(_missing_mask(df[c]).sum()) for c in columns}
        missing = {c: m for c, m in missing.items() if m}
        empty = [c for c, m in missing.items() if m == n]
        if empty:
            raise CLIError(
                f"column {empty[0]!r} has no values (all {n} rows are missing); leave it out with --features"
            )
        if missing and self.impute is None:
            first, *rest = missing
            also = f", and {len(rest)} more columns have some ({_listing(rest)})" if rest else ""
            raise CLIError(
                f"column {first!r} has {missing[first]} missing values (of {n} rows){also}; "
                "pass --impute mean|median|most_frequent or remove them"
            )
        return missing

    def fit_transform(self, df: pd.DataFrame, columns: Sequence[str], *, decimal_comma: bool = False) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same rows."""
        return self.fit(df, columns, decimal_comma=decimal_comma).transform(df)

    @staticmethod
    def _check_finite(name: str, values: np.ndarray) -> None:
        infinite = np.flatnonzero(np.isinf(values))
        if len(infinite):
            raise CLIError(f"column {name!r} holds an infinite value in row {int(infinite[0])}")

    # ------------------------------------------------------------------ transforming

    def _fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise RuntimeError("this TablePreprocessor is not fitted; call fit first")

    @property
    def output_names(self) -> list[str]:
        """Names of the output columns: ``age``, ``city=Paris``, ..."""
        self._fitted()
        return self._names()

    def _names(self) -> list[str]:
        names: list[str] = []
        for c in self.columns_:
            if self.kinds_[c] == "numeric":
                names.append(c)
            else:
                names.extend(f"{c}={v}" for v in self.categories_[c])
        return names

    @property
    def n_outputs(self) -> int:
        """Number of output columns."""
        return len(self.output_names)

    def _missing_error(self, name: str, count: int, n: int) -> CLIError:
        return CLIError(
            f"column {name!r} has {count} missing values (of {n} rows); the model was trained without "
            "--impute, so every value must be present"
        )

    def _raw(self, df: pd.DataFrame, *, count_unseen: bool) -> np.ndarray:
        """The unstandardised outputs: numbers (filled) and one-hot columns."""
        n = len(df)
        out = np.zeros((n, len(self._names())), dtype=np.float64)
        unseen: dict[str, int] = {}
        j = 0
        for c in self.columns_:
            series = df[c]
            if self.kinds_[c] == "numeric":
                mark = self._decimal or self.decimal_.get(c, ".")
                values, bad = _to_float(series, mark)
                if bad is not None:
                    hint = ""
                    if mark == "." and _to_float(series, ",")[1] is None:
                        hint = " (numbers with a decimal comma? pass --decimal ,)"
                    elif mark == ",":
                        hint = " (read with a decimal comma, as in training; --decimal . reads points)"
                    raise CLIError(
                        f"column {c!r} held numbers in training but holds {_py(series.iat[bad])!r} in row {bad}{hint}"
                    )
                self._check_finite(c, values)
                holes = np.isnan(values)
                if holes.any():
                    if c not in self.fill_:
                        raise self._missing_error(c, int(holes.sum()), n)
                    values[holes] = self.fill_[c]
                out[:, j] = values
                j += 1
                continue
            categories = self.categories_[c]
            mask = _missing_mask(series)
            texts = np.array([_text(v) for v in series.tolist()], dtype=object)
            if mask.any():
                if c not in self.fill_:
                    raise self._missing_error(c, int(mask.sum()), n)
                texts[mask] = self.fill_[c]
            codes = pd.Index(categories, dtype=object).get_indexer(texts)  # -1: not seen in fit
            seen = codes >= 0
            if not seen.all():
                unseen[c] = int((~seen).sum())
            out[np.flatnonzero(seen), j + codes[seen]] = 1.0  # a category not seen in fit: all zeros
            j += len(categories)
        if count_unseen:
            self.unseen_ = unseen
        return out

    def transform(self, df: pd.DataFrame, *, decimal: str | None = None) -> np.ndarray:
        """The standardised feature matrix of ``df``.

        Columns not seen in fit are ignored; the fit columns must all be
        there. Numeric text is read with each column's decimal mark from fit
        (:attr:`decimal_`), or with ``decimal`` (``"."`` or ``","``) for
        every numeric column when given (``--decimal``).

        Returns
        -------
        numpy.ndarray of shape (n_rows, n_outputs), float64, C-contiguous

        Raises
        ------
        CLIError
            Fit columns missing from ``df`` (all named), a numeric column
            holding text (the first bad value and its row), missing values
            without ``impute``, or an infinite value.
        """
        self._fitted()
        if decimal not in (None, ".", ","):
            raise CLIError(f"--decimal must be '.' or ',', got {decimal!r}")
        lacking = [c for c in self.columns_ if c not in df.columns]
        if lacking:
            raise CLIError(f"the data lacks columns the model was trained on: {_listing(lacking, limit=30)}")
        self._decimal = decimal
        try:
            raw = self._raw(df, count_unseen=True)
        finally:
            self._decimal = None
        raw -= self.mean_
        raw /= self.scale_
        return np.ascontiguousarray(raw)

    # ------------------------------------------------------------------ reporting

    def summary(self) -> list[str]:
        """Short plain lines that say what the transform does, for the command line."""
        self._fitted()
        numeric = [c for c in self.columns_ if self.kinds_[c] == "numeric"]
        text = [c for c in self.columns_ if self.kinds_[c] == "categorical"]
        lines = []
        if numeric:
            plural = "column" if len(numeric) == 1 else "columns"
            lines.append(f"{len(numeric)} numeric {plural} used as they are")
        commas = [c for c in numeric if c in self.decimal_]
        if commas:
            lines.append(f"numbers written with a decimal comma (1,5 = 1.5): {_listing(commas)}")
        if text:
            parts = []
            for c in text:
                k = len(self.categories_[c])
                note = ""
                if k == self.n_rows_ and k >= 20:  # every row its own category: an ID, which one-hot cannot use
                    note = "; one per row: an identifier? leave it out with --features"
                parts.append(f"{c} ({k} value{'s' if k != 1 else ''}{note})")
            lines.append(f"one-hot encoded: {_listing(parts, limit=8)}")
        lines.append("standardised: every column to mean 0, variance 1 (stored in the model)")
        if self.impute is not None:
            how = {"mean": "mean", "median": "median", "most_frequent": "most frequent value"}
            done = [
                f"{c} ({how[self.impute] if self.kinds_[c] == 'numeric' else 'most frequent value'}, "
                f"{m} of {self.n_rows_} rows)"
                for c, m in self.missing_.items()
            ]
            if done:
                lines.append(f"imputed: {_listing(done, limit=8)}")
            else:
                lines.append(f"--impute {self.impute}: no missing values in the training rows")
            if text and self.impute != "most_frequent":
                lines.append("text columns are always imputed with their most frequent value")
        return lines

    def column_kinds(self) -> dict[str, str]:
        """How each fit column was read: ``"number"``, ``"decimal-comma number"`` or ``"category"``."""
        self._fitted()
        return {
            c: ("category" if self.kinds_[c] == "categorical" else
                "decimal-comma number" if c in self.decimal_ else "number")
            for c in self.columns_
        }  # fmt: skip

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fitted transform (floats as lists: JSON keeps float64 exactly)."""
        self._fitted()
        return {
            "format": _PREPROCESSOR_FORMAT,
            "version": 2 if self.decimal_ else 1,
            "impute": self.impute,
            "n_rows": int(self.n_rows_),
            "columns": [
                {
                    "name": c,
                    "kind": self.kinds_[c],
                    "categories": list(self.categories_.get(c, [])),
                    "fill": self.fill_.get(c),
                    "missing": int(self.missing_.get(c, 0)),
                    **({"decimal": self.decimal_[c]} if c in self.decimal_ else {}),
                }
                for c in self.columns_
            ],
            "mean": [float(v) for v in self.mean_],
            "scale": [float(v) for v in self.scale_],
        }

    @classmethod
    def from_dict(cls, d: Any) -> TablePreprocessor:
        """The transform written by :meth:`to_dict`; ``ValueError`` says what is wrong with a damaged one."""
        if not isinstance(d, dict):
            raise ValueError(f"a table transform must be a dict, got {type(d).__name__}")
        if d.get("format") != _PREPROCESSOR_FORMAT:
            raise ValueError(f"not a table transform: format is {d.get('format')!r}, not {_PREPROCESSOR_FORMAT!r}")
        version = d.get("version")
        if not _is_whole(version) or not 1 <= version <= _PREPROCESSOR_VERSION:
            raise ValueError(f"table transform version {version!r} is not one this softxent reads (1, 2)")
        missing = [k for k in ("impute", "n_rows", "columns", "mean", "scale") if k not in d]
        if missing:
            raise ValueError(f"the table transform lacks {', '.join(missing)}")
        impute = d["impute"]
        if impute is not None and impute not in _IMPUTE:
            raise ValueError(f"impute must be one of {', '.join(_IMPUTE)} or null, got {impute!r}")
        n_rows = d["n_rows"]
        if not _is_whole(n_rows) or n_rows < 1:
            raise ValueError(f"n_rows must be a whole number >= 1, got {n_rows!r}")
        columns = d["columns"]
        if not isinstance(columns, list) or not columns:
            raise ValueError("columns must be a non-empty list")
        pre = cls(impute)
        pre.columns_, pre.kinds_, pre.categories_, pre.fill_, pre.missing_ = [], {}, {}, {}, {}
        pre.decimal_, pre._decimal = {}, None
        for i, col in enumerate(columns):
            if not isinstance(col, dict):
                raise ValueError(f"columns[{i}] must be a dict, got {col!r}")
            name, kind, fill = col.get("name"), col.get("kind"), col.get("fill")
            if not isinstance(name, str) or name in pre.kinds_:
                raise ValueError(f"columns[{i}] has a bad or repeated name {name!r}")
            if kind not in ("numeric", "categorical"):
                raise ValueError(f"column {name!r} has kind {kind!r}, not 'numeric' or 'categorical'")
            categories = col.get("categories", [])
            if kind == "categorical":
                texts = isinstance(categories, list) and all(isinstance(v, str) for v in categories)
                if not texts or not categories or categories != sorted(set(categories)):
                    raise ValueError(f"column {name!r} needs a sorted list of distinct string categories")
                pre.categories_[name] = list(categories)
            elif categories:
                raise ValueError(f"numeric column {name!r} has categories")
            if fill is not None:
                if impute is None:
                    raise ValueError(f"column {name!r} has a fill value but impute is null")
                if kind == "categorical":
                    ok = isinstance(fill, str) and fill in categories
                else:
                    ok = _is_real(fill) and math.isfinite(fill)
                if not ok:
                    raise ValueError(f"column {name!r} has a bad fill value {fill!r}")
                pre.fill_[name] = fill if kind == "categorical" else float(fill)
            elif impute is not None:
                raise ValueError(f"column {name!r} has no fill value but impute is {impute!r}")
            m = col.get("missing", 0)
            if not _is_whole(m) or not 0 <= m <= n_rows:
                raise ValueError(f"column {name!r} has a bad missing count {m!r}")
            if m:
                pre.missing_[name] = m
            mark = col.get("decimal", ".")
            if mark not in (".", ",") or (mark == "," and (kind != "numeric" or version < 2)):
                raise ValueError(f"column {name!r} has a bad decimal mark {mark!r}")
            if mark == ",":
                pre.decimal_[name] = mark
            pre.columns_.append(name)
            pre.kinds_[name] = kind
        n_out = sum(1 if pre.kinds_[c] == "numeric" else len(pre.categories_[c]) for c in pre.columns_)
        arrays = {}
        for key in ("mean", "scale"):
            values = d[key]
            if not isinstance(values, list) or len(values) != n_out or not all(_is_real(v) for v in values):
                raise ValueError(f"{key} must be a list of {n_out} numbers (one per output column)")
            arrays[key] = np.array(values, dtype=np.float64)
            if not np.isfinite(arrays[key]).all():
                raise ValueError(f"{key} holds a value that is not finite")
        if not (arrays["scale"] > 0).all():
            raise ValueError("scale must be > 0 everywhere")
        pre.n_rows_ = n_rows
        pre.mean_, pre.scale_ = arrays["mean"], arrays["scale"]
        return pre

    def __repr__(self) -> str:
        state = f", {len(self.columns_)} columns -> {self.n_outputs} outputs" if hasattr(self, "mean_") else ""
        return f"TablePreprocessor(impute={self.impute!r}{state})"
