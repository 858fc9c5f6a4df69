"""The table of bad inputs: what softxent withstands, one row per case.

Each row names the layer, the input, the error type and a fragment of its
message. The rows live beside each other in ``tests/bad_inputs/`` (one module
per layer: ``numpy_api``, ``models``, ``torch_api``, ``cli``), and this module
runs them all:

* library rows (:class:`Case`) call the public function and expect the error
  type with a message that matches ``match`` (a regular expression, searched);
* command-line rows (:class:`CliCase`) write their input files into a fresh
  folder, run ``softxent`` there (in process, as :func:`softxent.cli.main`),
  and expect exit code 2, one line on stderr matching ``match``, no
  ``Traceback``, every input file byte for byte unchanged and no new file left
  behind (a temporary file included) unless the row names it in ``creates``.

``python -m pytest tests/test_bad_input.py -q`` prints the count per layer.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from bad_inputs import ALL_CASES, ALL_CLI_CASES, Case, CliCase


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: f"{c.layer}:{c.id}")
def test_library_rejects_bad_input_clearly(case: Case, tmp_path: Path):
    if case.needs:
        pytest.importorskip(case.needs, reason=f"row {case.id!r} needs {case.needs}, which is not installed")
    with pytest.raises(case.error) as info:
        case.call(tmp_path)
    message = str(info.value)
    assert re.search(case.match, message), f"{case.id}: message {message!r} lacks {case.match!r}"
    assert "\n" not in message.strip() or case.multiline, f"{case.id}: message is not one line: {message!r}"


@pytest.mark.parametrize("case", ALL_CLI_CASES, ids=lambda c: f"cli:{c.id}")
def test_command_line_rejects_bad_input_clearly(case: CliCase, tmp_path: Path, capsys, monkeypatch):
    pytest.importorskip("pandas", reason="the cli extra is needed for the command line")
    from softxent.cli import main

    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
    if case.setup is not None:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    rc = main(list(case.argv))
    out, err = capsys.readouterr()
    assert rc == 2, f"{case.id}: exit code {rc}, stderr {err!r}"
    assert "Traceback" not in err, f"{case.id}: a traceback on stderr:\n{err}"
    assert re.search(case.match, err), f"{case.id}: stderr {err!r} lacks {case.match!r}"
    after = _snapshot(tmp_path)
    for name, data in before.items():
        assert after.get(name) == data, f"{case.id}: {name} was changed or removed"
    new = sorted(set(after) - set(before) - set(case.creates))
    assert not new, f"{case.id}: files left behind: {new}"


def test_the_table_covers_every_layer():
    """The table is the project's count of what it withstands; it must hold rows for every layer."""
    layers = Counter(c.layer for c in ALL_CASES) + Counter(cli=len(ALL_CLI_CASES))
    assert set(layers) >= {"numpy", "models", "torch", "cli"}, layers
    assert all(n >= 5 for n in layers.values()), layers
    ids = [f"{c.layer}:{c.id}" for c in ALL_CASES] + [f"cli:{c.id}" for c in ALL_CLI_CASES]
    assert len(ids) == len(set(ids)), "duplicate row ids"
