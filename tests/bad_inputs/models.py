"""Bad-input rows for the models layer (see tests/bad_inputs/__init__.py for the row types)."""

from __future__ import annotations

CASES: list = []
