"""Reading a user's table: CSV/TSV (delimiter sniffed, optionally gzip'd), Parquet or ``.npz`` → DataFrame.

The first step of the command line's data path (:mod:`softxent.cli._targets`
and :mod:`softxent.cli._features` do the rest: targets and the feature
transform). :func:`read_table` turns
every way a file can be unreadable (missing, a directory, not UTF-8, binary
noise, a damaged gzip stream, ragged rows, no rows, duplicate names) into a
:class:`~softxent.cli._errors.CLIError` that names the argument and the
file. For text files it records the delimiter in ``table.attrs["delimiter"]``:
whether ``1,5`` may be a number written with a decimal comma depends on it.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib

import numpy as np
import pandas as pd

from ._cells import _duplicates, _listing, _short
from ._errors import CLIError

__all__ = ["SUPPORTED_EXTENSIONS", "read_table"]

#: Extensions :func:`read_table` understands (matched case-insensitively).
SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".parquet", ".pq", ".npz")

_TEXT_EXTENSIONS = (".csv.gz", ".tsv.gz", ".csv", ".tsv", ".txt")
_DELIMITERS = ",;\t|"
_SNIFF_BYTES = 64 * 1024
_NPZ_X_KEYS = {"X", "y", "feature_names", "label_names", "target_name"}


# ---------------------------------------------------------------------- reading


def _format_of(path: str) -> str:
    name = os.path.basename(path).lower()
    if name.endswith(_TEXT_EXTENSIONS):
        return "text"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".npz"):
        return "npz"
    return ""


def _sample(path: str) -> str:
    """Up to the first 64 KiB of a text file, cut at the last full line when truncated."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read(_SNIFF_BYTES + 1)
    truncated = len(raw) > _SNIFF_BYTES
    text = raw[:_SNIFF_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    # Line ends as pandas reads them (\r\n, \n, or a lone \r as old Mac files
    # have): the csv module would call a lone \r a newline inside a field.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


def _field_counts(sample: str, delimiter: str) -> list[int]:
    return [len(row) for row in csv.reader(io.StringIO(sample), delimiter=delimiter) if row]


def _consistent(sample: str, delimiter: str) -> bool:
    """Every record of the sample splits into the same number (> 1) of fields."""
    counts = _field_counts(sample, delimiter)
    return bool(counts) and counts[0] > 1 and all(c == counts[0] for c in counts)


def _delimiter(sample: str, default: str) -> str:
    """The delimiter of a text table: csv.Sniffer's guess, checked against the whole sample.

    The Sniffer may pick ``|`` in a comma file whose tag column reads
    ``vocal|pop`` on every row; a guess is kept only when it splits every
    record of the sample into the same number of fields, and the extension's
    own delimiter wins whenever it does so too.
    """
    if _consistent(sample, default):
        return default
    try:
        guess = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        guess = None
    if guess is not None and _consistent(sample, guess):
        return guess
    for candidate in _DELIMITERS:
        if _consistent(sample, candidate):
            return candidate
    return default


def _read_text(path: str, argument: str) -> pd.DataFrame:
    default = "\t" if ".tsv" in os.path.basename(path).lower() else ","
    try:
        sample = _sample(path)
    except PermissionError:
        raise CLIError(f"cannot read {argument} {path!r}: permission denied") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise CLIError(f"cannot read {argument} {path!r}: {_damaged(path, exc)}") from None
    if not sample.strip():
        raise CLIError(f"cannot read {argument} {path!r}: the file is empty")
    if "\x00" in sample:  # text tables hold no NUL bytes; the csv module would fail on them
        raise CLIError(f"cannot read {argument} {path!r}: it holds binary data (NUL bytes), not delimited text")
    try:
        sep = _delimiter(sample, default)
        header = next(csv.reader(io.StringIO(sample), delimiter=sep), [])
    except csv.Error as exc:  # e.g. a bare carriage return inside a field of random bytes
        raise CLIError(f"cannot read {argument} {path!r}: not delimited text ({_short(exc)})") from None
    duplicated = _duplicates(h.strip() for h in header if h.strip())
    if duplicated:  # pandas would rename them 'a.1', ...; say so instead
        raise CLIError(f"{argument} {path!r} has duplicate column names: {_listing(duplicated)}")
    try:
        table = pd.read_csv(path, sep=sep, compression="infer", encoding="utf-8")
    except UnicodeDecodeError:
        raise CLIError(f"cannot read {argument} {path!r}: it is not UTF-8 text") from None
    except pd.errors.EmptyDataError:
        raise CLIError(f"cannot read {argument} {path!r}: the file is empty") from None
    except (ValueError, OSError, EOFError, zlib.error, csv.Error) as exc:  # ParserError is a ValueError
        raise CLIError(f"cannot read {argument} {path!r}: {_damaged(path, exc)}") from None
    # 'a; b' headers: the user types --target b, not ' b'.
    table.columns = [str(c).strip() for c in table.columns]
    # How the file was split decides whether "1,5" may be a number (TablePreprocessor.fit).
    table.attrs["delimiter"] = sep
    return table


def _damaged(path: str, exc: BaseException) -> str:
    """The reason a text file could not be read, saying so when it is a damaged gzip file."""
    if path.lower().endswith(".gz") and isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"the gzip file is damaged or truncated ({_short(exc)})"
    return _short(exc)


def _read_parquet(path: str, argument: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError:
        raise CLIError(f"cannot read {argument} {path!r}: Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, ArrowIOError, ...)
        raise CLIError(f"cannot read {argument} {path!r}: not a readable Parquet file ({_short(exc)})") from None


def _npz_strings(array: np.ndarray, key: str, n: int, bad: str) -> list[str]:
    if array.ndim != 1 or array.shape[0] != n or array.dtype.kind not in "US":
        raise CLIError(f"{bad}: {key!r} must be a 1-D string array of length {n}, got {array.dtype} {array.shape}")
    if array.dtype.kind == "S":
        array = np.char.decode(array, "utf-8")
    return [str(v) for v in array.tolist()]


def _npz_column(array: np.ndarray) -> np.ndarray:
    return np.char.decode(array, "utf-8") if array.dtype.kind == "S" else array


def _npz_x_layout(arrays: dict[str, np.ndarray], bad: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """``X`` (+ ``feature_names``) and an optional ``y`` (+ ``target_name`` or ``label_names``)."""
    extra = sorted(set(arrays) - _NPZ_X_KEYS)
    if extra:
        raise CLIError(
            f"{bad}: with an array 'X' the archive may hold only {', '.join(sorted(_NPZ_X_KEYS))}, "
            f"but it also holds {_listing(extra)}"
        )
    X = arrays["X"]
    if X.ndim != 2:
        raise CLIError(f"{bad}: 'X' must be a 2-D array (rows, features), got shape {X.shape}")
    n, d = X.shape
    if "feature_names" in arrays:
        order = _npz_strings(arrays["feature_names"], "feature_names", d, bad)
    else:
        order = [f"x{j}" for j in range(d)]
    columns = {name: _npz_column(X[:, j]) for j, name in enumerate(order)}
    if "y" not in arrays:
        if "target_name" in arrays or "label_names" in arrays:
            raise CLIError(f"{bad}: it names targets ('target_name'/'label_names') but holds no 'y'")
        return order, columns
    y = arrays["y"]
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise CLIError(f"{bad}: 'y' must have {n} rows like 'X' (1-D, or 2-D 0/1), got shape {y.shape}")
    if y.ndim == 1:
        target = "target"
        if "target_name" in arrays:
            target = _npz_strings(arrays["target_name"].reshape(-1), "target_name", 1, bad)[0]
        order.append(target)
        columns.setdefault(target, _npz_column(y))
        return order, columns
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise CLIError(f"{bad}: a 2-D 'y' must hold only 0/1 (one column per label)")
    if "label_names" in arrays:
        labels = _npz_strings(arrays["label_names"], "label_names", y.shape[1], bad)
    else:
        labels = [f"label{j}" for j in range(y.shape[1])]
    order.extend(labels)
    for j, label in enumerate(labels):
        columns.setdefault(label, y[:, j].astype(np.int8))
    return order, columns


def _npz_column_layout(arrays: dict[str, np.ndarray], bad: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Any number of 1-D arrays of equal length, one column each."""
    n = None
    for key, array in arrays.items():
        if array.ndim != 1:
            raise CLIError(
                f"{bad}: without an array 'X' every array must be one 1-D column, but {key!r} has shape {array.shape}"
            )
        if n is not None and array.shape[0] != n:
            raise CLIError(f"{bad}: the columns differ in length ({key!r} has {array.shape[0]} rows, not {n})")
        n = array.shape[0]
    return list(arrays), {key: _npz_column(array) for key, array in arrays.items()}


def _read_npz(path: str, argument: str) -> pd.DataFrame:
    bad = f"cannot read {argument} {path!r}"
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # not a zip nor .npy: np.load says "pickled data", OSError, EOFError, ...
        raise CLIError(f"{bad}: not a readable .npz file ({_short(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CLIError(f"{bad}: it holds a single .npy array, not an .npz archive of named arrays")
    try:
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise CLIError(f"{bad}: it holds object (pickled) arrays, which softxent does not load") from None
        raise CLIError(f"{bad}: not a readable .npz file ({_short(exc)})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError, ...
        raise CLIError(f"{bad}: not a readable .npz file ({_short(exc)})") from None
    if not arrays:
        raise CLIError(f"{bad}: the archive holds no arrays")
    layout = _npz_x_layout if "X" in arrays else _npz_column_layout
    order, columns = layout(arrays, bad)
    duplicated = _duplicates(order)
    if duplicated:
        raise CLIError(f"{argument} {path!r} has duplicate column names: {_listing(duplicated)}")
    return pd.DataFrame(columns)


def read_table(path: str | os.PathLike, *, argument: str = "DATA") -> pd.DataFrame:
    """Read a user's table; the format comes from the file's extension.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Extensions (any case):

        * ``.csv``, ``.tsv``, ``.txt``, ``.csv.gz``, ``.tsv.gz``: delimited
          text with a header row, UTF-8. The delimiter is sniffed from the
          first 64 KiB among ``,`` ``;`` tab and ``|`` (the extension's own
          delimiter, ``,`` or tab, wins when it splits every row evenly, so a
          tag cell like ``vocal|pop`` does not make ``|`` the delimiter).
        * ``.parquet``, ``.pq``: :func:`pandas.read_parquet`.
        * ``.npz`` (loaded with ``allow_pickle=False``), one of two layouts:

          - a 2-D array ``X`` (columns named from an optional 1-D string
            array ``feature_names``, else ``x0, x1, ...``), with an optional
            ``y``: 1-D gives one column named ``target`` (or the string in
            ``target_name``); 2-D 0/1 gives one column per label, named from
            ``label_names``, else ``label0, label1, ...``;
          - any number of 1-D arrays of equal length, each a column named
            after its key.
    argument : str, default "DATA"
        The command-line argument the path came from, used in messages.

    Returns
    -------
    pandas.DataFrame
        At least one row; column names unique strings.

    Raises
    ------
    CLIError
        The file does not exist, is a directory, has an unknown extension,
        cannot be parsed (with the parser's reason), has no rows, or has
        duplicate column names.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise CLIError(f"cannot read {argument} {name!r}: no such file")
    if os.path.isdir(name):
        raise CLIError(f"cannot read {argument} {name!r}: it is a directory")
    kind = _format_of(name)
    if kind == "text":
        table = _read_text(name, argument)
    elif kind == "parquet":
        table = _read_parquet(name, argument)
    elif kind == "npz":
        table = _read_npz(name, argument)
    else:
        raise CLIError(
            f"cannot read {argument} {name!r}: unknown format; the supported extensions are "
            f"{', '.join(SUPPORTED_EXTENSIONS)}"
        )
    table.columns = [str(c) for c in table.columns]
    duplicated = sorted(set(table.columns[table.columns.duplicated()]))
    if duplicated:
        raise CLIError(f"{argument} {name!r} has duplicate column names: {_listing(duplicated)}")
    if len(table) == 0:
        raise CLIError(f"{argument} {name!r} has no rows (columns: {_listing(table.columns)})")
    return table
