"""Many files as one lazy table for ``--dask``: a glob or a folder of Parquet (or CSV) parts, one partition per file.

Each part is read on a worker by the in-memory command's own readers
(those of :func:`softxent.cli._read.read_table`, which also accept a part without rows), so every cell is read exactly as
``softxent fit`` without ``--dask`` reads it (same dtypes, same missing
values, same delimiter sniffing for text), and a part is one partition. The
client only lists the files and reads the first one's column names (the
Parquet schema, or the header line of a text file); the rest waits until a
Dask pass asks for it. Parts must share their columns: a part that differs is
a :class:`~softxent.cli._errors.CLIError` naming the file, raised by the
first pass that reads it (:func:`read_part`).
"""

from __future__ import annotations

import csv
import glob
import io
import os
from typing import Any

import pandas as pd

from ._cells import _listing
from ._errors import CLIError
from ._read import _delimiter, _format_of, _read_parquet, _read_text, _sample

__all__ = ["DaskTable", "open_parts", "read_part"]

_PART_PATTERNS = ("*.parquet", "*.pq", "*.csv", "*.csv.gz", "*.tsv", "*.tsv.gz")


class DaskTable:
    """The parts of a table: their paths, their format, the columns, and a lazy read of each.

    Attributes
    ----------
    spec : str
        The DATA argument as given (a glob or a folder).
    files : list of str
        The parts, sorted by name (rows are in this order).
    kind : {"parquet", "text"}
    columns : list of str
        The column names of the first part.
    delimiter : str or None
        The first text part's delimiter (None for Parquet): as in memory, it
        decides whether ``1,5`` may be a number with a decimal comma.
    """

    def __init__(self, spec: str, files: list[str], kind: str, columns: list[str], delimiter: str | None) -> None:
        self.spec, self.files, self.kind, self.columns = spec, files, kind, columns
        self.delimiter = delimiter

    @property
    def header(self) -> pd.DataFrame:
        """An empty frame with the columns, for the column checks that need only names."""
        return pd.DataFrame(columns=self.columns)

    @property
    def text(self) -> bool:
        return self.kind == "text"

    def delayed_parts(self) -> list[Any]:
        """One ``dask.delayed`` pandas DataFrame per part (nothing is read yet)."""
        from dask import delayed

        return [delayed(read_part, pure=True)(path, self.columns) for path in self.files]

    def describe(self) -> str:
        return f"{len(self.files)} {self.kind} part{'s' if len(self.files) != 1 else ''}"


def read_part(path: str, columns: list[str]) -> pd.DataFrame:
    """Read one part on a worker, as the in-memory command reads a file; its columns must be ``columns``."""
    # Not read_table: it refuses a file without rows, and writers of partitioned data (Spark, Dask) leave
    # empty parts; a part with no rows (a header alone, for text) is a partition with no rows.
    if _format_of(path) == "parquet":
        table = _read_parquet(path, "DATA part")
    else:
        table = _read_text(path, "DATA part")
    table.columns = [str(c) for c in table.columns]
    if list(table.columns) != list(columns):
        lacking = [c for c in columns if c not in table.columns]
        extra = [c for c in table.columns if c not in columns]
        what = f"lacks {_listing(lacking)}" if lacking else f"has other columns ({_listing(extra)})"
        if not lacking and not extra:
            what = "has the same columns in another order"
        raise CLIError(f"DATA part {path!r} {what}; every part must have the columns of the first part")
    return table


def _list_files(spec: str) -> list[str]:
    if os.path.isdir(spec):
        found = sorted({f for pattern in _PART_PATTERNS for f in glob.glob(os.path.join(spec, pattern))})
        if not found:
            raise CLIError(
                f"DATA {spec!r} is a folder without Parquet or CSV parts (*.parquet, *.pq, *.csv, *.tsv, "
                "optionally .gz)"
            )
        return found
    found = sorted(f for f in glob.glob(spec) if os.path.isfile(f))
    if not found:
        if os.path.exists(spec):
            raise CLIError(f"DATA {spec!r} is not a file or a folder of parts")
        raise CLIError(f"no files match DATA {spec!r} (a glob such as 'data/part-*.parquet', or a folder)")
    return found


def _columns_of(path: str, kind: str) -> tuple[list[str], str | None]:
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names if c != "__index_level_0__"], None
        sample = _sample(path)
    except ImportError:
        raise CLIError(f"cannot read DATA part {path!r}: Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as exc:  # pyarrow's own types, OSError, a damaged gzip stream
        raise CLIError(f"cannot read DATA part {path!r}: {exc}") from None
    if not sample.strip():
        raise CLIError(f"cannot read DATA part {path!r}: the file is empty")
    default = "\t" if ".tsv" in os.path.basename(path).lower() else ","
    sep = _delimiter(sample, default)
    header = next(csv.reader(io.StringIO(sample), delimiter=sep), [])
    return [h.strip() for h in header], sep


def open_parts(spec: str) -> DaskTable:
    """The parts DATA names (a glob or a folder), checked for a common format, with the first part's columns.

    Raises
    ------
    CLIError
        No file matches, the files mix formats, or a format is not one of
        Parquet and CSV/TSV (``.npz`` parts are not read with ``--dask``).
    """
    if not spec:
        raise CLIError("DATA is empty; give a glob such as 'data/part-*.parquet' or a folder")
    files = _list_files(spec)
    kinds = {_format_of(f) for f in files}
    if "" in kinds or "npz" in kinds:
        bad = next(f for f in files if _format_of(f) in ("", "npz"))
        raise CLIError(
            f"DATA part {bad!r} is not a Parquet or CSV/TSV file; --dask reads .parquet, .pq, .csv, .tsv (.gz) parts"
        )
    if len(kinds) > 1:
        raise CLIError(f"DATA {spec!r} mixes Parquet and text parts; give one format")
    kind = kinds.pop()
    columns, delimiter = _columns_of(files[0], kind)
    if not columns:
        raise CLIError(f"DATA part {files[0]!r} has no columns")
    return DaskTable(spec, files, kind, columns, delimiter)
