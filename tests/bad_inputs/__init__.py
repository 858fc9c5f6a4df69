"""Rows of the bad-input table (run by ``tests/test_bad_input.py``), one module per layer.

A row is data: the input, the error expected and a fragment of its message.
Add a row to the module of its layer; the table picks it up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """A call of the library that must raise ``error`` with a message matching ``match``.

    ``call`` receives a fresh temporary folder (for rows that read or write files).
    ``needs`` names an optional module the row imports (skipped, saying so, without it).
    """

    layer: str
    id: str
    call: Callable[[Path], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str
    needs: str | None = None
    multiline: bool = False


@dataclass(frozen=True)
class CliCase:
    """A ``softxent`` command that must exit 2 with one clear line and leave every file as it was.

    ``files`` maps names (relative to the run's folder) to bytes, or to a
    function that writes the file at the path it is given; ``setup`` may do
    more (links, folders). ``creates`` names files the command may legitimately
    leave (none, for most rows).
    """

    id: str
    argv: tuple[str, ...]
    match: str
    files: Mapping[str, bytes | Callable[[Path], None]] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None
    creates: tuple[str, ...] = ()


def _collect():
    from . import cli, models, numpy_api, torch_api

    cases = [*numpy_api.CASES, *models.CASES, *torch_api.CASES]
    return cases, list(cli.CASES)


ALL_CASES, ALL_CLI_CASES = _collect()
