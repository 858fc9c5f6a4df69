"""Feature columns of a table → a standardised float64 matrix, with a transform that can be stored.

The third step of the command line's data path, after
:func:`softxent.cli._read.read_table` and :func:`softxent.cli._targets.select_columns`:
:class:`TablePreprocessor` reads numbers as they are, one-hot encodes text,
optionally imputes missing values and standardises every output column. The
fitted transform is JSON (:meth:`TablePreprocessor.to_dict`), stored in the
model file, so that ``evaluate`` and ``predict`` repeat it on new data.

Every problem the user can fix raises :class:`~softxent.cli._errors.CLIError`
with one line that names the argument or column and the value. Rows are
counted from 0 in the table's order (the header is not a row), as pandas does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._cells import _is_text_dtype, _listing, _missing_mask, _not_found, _py, _text
from ._errors import CLIError

__all__ = ["TablePreprocessor"]

Impute = Literal["mean", "median", "most_frequent"]
_IMPUTE = ("mean", "median", "most_frequent")
_PREPROCESSOR_FORMAT = "softxent.TablePreprocessor"
# Version 2 adds a column's decimal mark ("decimal": ","). A transform that
# reads no decimal comma is still written as version 1, which older softxent
# versions read; one that does is version 2, which they refuse by name rather
# than misread "1,5" as a category.
_PREPROCESSOR_VERSION = 2


def _is_real(value: Any) -> bool:
    """A JSON number (bools are ints in Python, but not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        return self.check_missing_counts({c: int(_missing_mask(df[c]).sum()) for c in columns}, len(df))

    def check_missing_counts(self, counts: dict[str, int], n: int) -> dict[str, int]:
        """:meth:`check_missing` from counts already made (a Dask pass counts them per partition).

        Raises
        ------
        CLIError
            As :meth:`check_missing`, with ``n`` the number of rows counted.
        """
        missing = {c: m for c, m in counts.items() if m}
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
