"""Table cells and column names as the command line's data path reads them.

Small helpers shared by :mod:`softxent.cli._read` (tables in),
:mod:`softxent.cli._targets` (the labels) and :mod:`softxent.cli._features`
(the feature transform): which cells are missing, a cell as a label or
category name, and column names listed in one error line.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._errors import CLIError

_MAX_LISTED = 12  # column names listed in an error before "... and N more"


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
