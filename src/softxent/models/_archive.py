"""Reading a model archive (an ``.npz`` zip of ``.npy`` members) without trusting it.

``np.load`` trusts each member's ``.npy`` header: a header that claims 10**13
elements makes it allocate that much before it reads a byte of data. Here
each header is read with :mod:`numpy.lib.format` (its data left unread) and
compared with what the metadata lists and with the bytes the member holds;
only then is the data read, into a buffer of exactly that size. Members must
be stored uncompressed (as ``np.savez`` writes them), so that no member can
hold more bytes than the file itself.

Everything wrong with the archive is a :class:`FileProblem` with a short
description; :mod:`._persistence` turns it into the documented
``ModelFileError``.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["FileProblem", "ModelArchive", "check_listing", "short"]

ARRAY_KINDS = "biufU"  # what save writes: numbers, booleans and fixed-width strings, never objects
MAX_DIMS = 2  # save writes 1-D and 2-D arrays only


class FileProblem(Exception):
    """What is wrong with the archive, in a few words (the caller adds the file's name)."""


def short(value: Any) -> str:
    """A value for a one-line message: arrays by dtype and shape, anything else by a repr cut to 80 characters."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def check_listing(key: str, dtype: Any, shape: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape the metadata lists for array ``key``, checked for form only."""
    if not isinstance(dtype, str):
        raise FileProblem(f"the metadata lists array {key!r} with dtype {short(dtype)}, not a dtype string")
    try:
        parsed = np.dtype(dtype)
    except (TypeError, ValueError):
        raise FileProblem(f"the metadata lists array {key!r} with an unknown dtype {short(dtype)}") from None
    if parsed.kind not in ARRAY_KINDS or parsed.str != dtype or parsed.itemsize == 0:
        raise FileProblem(f"the metadata lists array {key!r} with dtype {dtype!r}, which save never writes")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise FileProblem(
            f"the metadata lists array {key!r} with shape {short(shape)}, not a list of at most {MAX_DIMS} sizes >= 0"
        )
    return parsed, tuple(shape)


class ModelArchive:
    """The members of an open archive, each read only after its header has been checked."""

    def __init__(self, fh: Any, file_size: int) -> None:
        self._zip = zipfile.ZipFile(fh)
        self.file_size = file_size
        infos = self._zip.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise FileProblem(f"the archive holds the member {twice[0]!r} more than once")
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise FileProblem(f"the archive holds {info.filename!r}, which is not a .npy array")
            if info.flag_bits & 0x1:
                raise FileProblem(f"member {info.filename!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED:
                raise FileProblem(
                    f"member {info.filename!r} is compressed; save stores members uncompressed, so its "
                    "size can be checked against the file's"
                )
            if info.file_size > file_size:
                raise FileProblem(
                    f"member {info.filename!r} claims {info.file_size} bytes, more than the whole file "
                    f"({file_size} bytes)"
                )
            self._members[info.filename[: -len(".npy")]] = info

    def close(self) -> None:
        self._zip.close()

    @property
    def keys(self) -> set[str]:
        return set(self._members)

    def read(self, key: str, dtype: np.dtype, shape: tuple[int, ...] | None) -> np.ndarray:
        """Member ``key`` as an array of ``dtype`` (and ``shape``, unless None), checked before it is allocated."""
        info = self._members[key]
        with self._zip.open(info) as f:
            try:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    found_shape, fortran, found = npy_format.read_array_header_1_0(f)
                elif version == (2, 0):
                    found_shape, fortran, found = npy_format.read_array_header_2_0(f)
                else:
                    raise FileProblem(f"member {key!r} is in .npy format version {version}, which save never writes")
            except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as exc:  # a damaged header
                raise FileProblem(f"member {key!r} has no valid .npy header ({exc})") from None
            header_size = f.tell()
            if found.kind == "O" or found.hasobject:
                raise FileProblem(f"member {key!r} holds Python objects (a pickle), which load never reads")
            if found.str != dtype.str:
                raise FileProblem(f"member {key!r} holds dtype {found.str!r}, the metadata lists {dtype.str!r}")
            if shape is not None and tuple(found_shape) != shape:
                raise FileProblem(f"member {key!r} has shape {tuple(found_shape)}, the metadata lists {shape}")
            if any(n < 0 for n in found_shape):
                raise FileProblem(f"member {key!r} has the impossible shape {tuple(found_shape)}")
            if fortran:
                raise FileProblem(f"member {key!r} is in Fortran order, which save never writes")
            nbytes = math.prod(found_shape) * found.itemsize  # Python ints: no overflow on a hostile shape
            if header_size + nbytes != info.file_size:
                raise FileProblem(
                    f"member {key!r} claims shape {tuple(found_shape)} ({nbytes} bytes of data) but holds "
                    f"{info.file_size - header_size} bytes"
                )
            buffer = bytearray(nbytes)  # bounded by the member's size, itself bounded by the file's
            if f.readinto(buffer) != nbytes:
                raise FileProblem(f"member {key!r} ends early")
            f.read(1)  # reach the end of the member, where zipfile checks its CRC-32
        return np.frombuffer(buffer, dtype=found).reshape(found_shape)
