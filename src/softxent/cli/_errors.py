"""The one error type of the command line: a message for the user, not a traceback.

Anything the user can fix (a missing file, a column that does not exist, a
single class, NaN without ``--impute``, a damaged model file) is raised as
:class:`CLIError` with one plain line that names the argument and the value;
:func:`softxent.cli.main` prints it on stderr and exits with code 2
(``--debug`` shows the traceback as well).
"""

from __future__ import annotations

__all__ = ["EXIT_USAGE", "CLIError"]

# argparse uses 2 for usage errors; every user-fixable error exits the same way.
EXIT_USAGE = 2


class CLIError(Exception):
    """A user-fixable problem; ``str(error)`` is the one line printed on stderr."""
