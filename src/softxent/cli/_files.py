"""Where the command line writes: checks before any work, and files replaced whole or not at all.

Two rules keep a user's files safe:

1. **Check first.** :func:`check_output_file` and :func:`check_output_dir`
   run before a command reads or trains anything: an output that is one of
   the command's inputs (the same file under another name: ``./a.csv``, a
   symlink, a hard link), a folder where a file is wanted (or the reverse),
   or a folder that does not exist is a :class:`CLIError` at once, not after
   minutes of training.
2. **Write whole.** :func:`replacing` (and :func:`write_atomically` on top
   of it) writes to a temporary file in the destination folder and renames it
   into place with :func:`os.replace`, which is atomic on one file system: an
   interrupted or failed write leaves the old file as it was and no
   temporary file behind. Every file the command line writes (models,
   predictions, ``metrics.json``, ``report.html``, plots) goes through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO

from ._errors import CLIError

__all__ = ["check_output_dir", "check_output_file", "replacing", "write_atomically"]


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be looked at): not the same file
        return False


def _existing_ancestor(path: str) -> str:
    """The nearest part of ``path`` (itself included) that exists."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _check_not_an_input(path: str, argument: str, inputs: Mapping[str, str | None], what: str) -> None:
    for name, source in inputs.items():
        if source is not None and _same_file(path, source):
            raise CLIError(
                f"{argument} {path!r} is the same file as {name} {source!r}; writing {what} there would "
                f"destroy it: choose another {argument}"
            )


def check_output_file(path: str, argument: str, inputs: Mapping[str, str | None], *, what: str) -> None:
    """Raise :class:`CLIError` unless ``path`` can take a new file without harm.

    Parameters
    ----------
    path : str
        The output file as the user gave it.
    argument : str
        The option it came from (``-o``, ``--out``), for the message.
    inputs : mapping of str to str or None
        The command's input files by argument name (``{"DATA": "songs.csv"}``);
        the output must not be any of them (compared with
        :func:`os.path.samefile`, so other spellings and links count).
    what : str
        What would be written (``"the model"``), for the message.
    """
    if not path:
        raise CLIError(f"{argument} is empty; give a file name")
    _check_not_an_input(path, argument, inputs, what)
    if os.path.isdir(path):
        raise CLIError(f"cannot write {what} to {argument} {path!r}: it is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        found = _existing_ancestor(folder)
        why = "does not exist" if not os.path.exists(folder) and os.path.isdir(found) else "is not a directory"
        raise CLIError(f"cannot write {what} to {argument} {path!r}: the folder {os.path.dirname(path)!r} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write {what} to {argument} {path!r}: no permission to write in its folder")
    _check_writable(path, argument, what)


def _check_writable(path: str, argument: str, what: str) -> None:
    # A rename replaces a read-only file as easily as any other; open(path, "w")
    # would have refused, and a read-only file is its owner's word that it must not change.
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CLIError(f"cannot write {what} to {argument} {path!r}: the file is read-only")


def check_output_dir(path: str, argument: str, inputs: Mapping[str, str | None] | None = None, *,
                     files: Iterable[str] = (), subdirs: Iterable[str] = ()) -> None:  # fmt: skip
    """Raise :class:`CLIError` unless ``path`` is, or can become, a folder for ``files``.

    ``files`` are the names the command writes in the folder (each checked
    against ``inputs`` like :func:`check_output_file`); ``subdirs`` are
    folders it creates inside it (each must not be an existing file).
    """
    if not path:
        raise CLIError(f"{argument} is empty; give a folder name")
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{argument} {path!r} is an existing file, not a directory; choose a folder for the report")
    found = _existing_ancestor(path)
    if not os.path.isdir(found):
        raise CLIError(f"{argument} {path!r}: {found!r} is a file, so the folder cannot be created")
    for sub in subdirs:
        inner = os.path.join(path, sub)
        if os.path.exists(inner) and not os.path.isdir(inner):
            raise CLIError(f"{argument} {path!r}: {inner!r} is an existing file, where the report needs a folder")
    for name in files:
        _check_not_an_input(os.path.join(path, name), argument, inputs or {}, "the report")
        _check_writable(os.path.join(path, name), argument, "the report")
    if not os.access(found, os.W_OK | os.X_OK):
        raise CLIError(f"{argument} {path!r}: no permission to write in {found!r}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write that becomes ``path`` only when the ``with`` block ends without an error.

    The temporary file lies in ``path``'s folder (a rename across file
    systems would not be atomic), is flushed to disk before the rename (so a
    crash right after cannot leave an empty file under the final name), and
    is removed if anything fails, KeyboardInterrupt included. The new file
    gets the permissions a plain ``open(path, "w")`` would give it (or those
    of the file it replaces), not :func:`tempfile.mkstemp`'s private 0600.
    A symbolic link is written through, as ``open(path, "w")`` would: the
    file it points to is replaced and the link stays.
    """
    target = os.path.realpath(os.fspath(path))
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            mode = os.stat(target).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_atomically(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`replacing`."""
    with replacing(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
