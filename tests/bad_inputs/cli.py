"""Bad-input rows for the cli layer (see tests/bad_inputs/__init__.py for the row types).

Every row runs one ``softxent`` command in a fresh folder and expects exit
code 2, one line on stderr and every file as it was: outputs that would
overwrite an input, report folders that are files, damaged or odd data
files, sizes that cannot fit in memory.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np

from . import CliCase

# A small table a linear model learns in a few iterations: two numeric
# columns, one text column, a class column "genre" with three classes.
_rng = np.random.default_rng(15)
_SONGS = (
    "tempo,acoustic,country,genre\n"
    + "".join(
        f"{t:.3f},{a:.3f},{c},{'rock' if t > 0.5 else ('classical' if a > 0.5 else 'jazz')}\n"
        for t, a, c in zip(_rng.uniform(0, 1, 60), _rng.uniform(0, 1, 60), _rng.choice(["FR", "US"], 60))
    )
).encode()
# The same numbers written the European way: ';' between fields, a decimal comma inside them.
_SONGS_COMMA = _SONGS.decode().replace(",", ";").replace(".", ",").encode()
_GZ = gzip.compress(_SONGS)


def _fitted(data: bytes, *extra: str):
    """A ``files`` entry: a model written by ``softxent fit`` on ``data`` (trained in a folder of its own)."""

    def write(path: Path) -> None:
        from softxent.cli import main

        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "train.csv"
            source.write_bytes(data)
            code = main(["fit", str(source), "--target", "genre", "--out", str(path), "--quiet", *extra])
        assert code == 0, "the model for this row could not be fitted"

    return write


def _corrupt_gzip() -> bytes:
    # A valid gzip header and a deflate stream with flipped bits: zlib.error while reading.
    data = bytearray(_GZ)
    for i in range(20, 40):
        data[i] ^= 0xFF
    return bytes(data)


def _symlink(target: str, link: str):
    def setup(folder: Path) -> None:
        os.symlink(target, folder / link)

    return setup


def _hard_link(target: str, link: str):
    def setup(folder: Path) -> None:
        os.link(folder / target, folder / link)

    return setup


def _folder(name: str):
    def setup(folder: Path) -> None:
        (folder / name).mkdir()

    return setup


_MODEL = {"songs.csv": _SONGS, "m.npz": _fitted(_SONGS, "--test-size", "0")}

CASES: list = [
    # -- an output that is an input: refused before any work (issue 15, 1)
    CliCase("predict_output_is_data", ("predict", "m.npz", "songs.csv", "-o", "songs.csv"),
            r"-o 'songs\.csv' is the same file as DATA 'songs\.csv'", files=_MODEL),
    CliCase("predict_output_is_data_spelled_differently", ("predict", "m.npz", "songs.csv", "-o", "./songs.csv"),
            r"is the same file as DATA", files=_MODEL),
    CliCase("predict_output_is_the_model", ("predict", "m.npz", "songs.csv", "-o", "m.npz"),
            r"-o 'm\.npz' is the same file as MODEL 'm\.npz'", files=_MODEL),
    CliCase("predict_output_is_a_symlink_to_data", ("predict", "m.npz", "songs.csv", "-o", "link.csv"),
            r"-o 'link\.csv' is the same file as DATA", files=_MODEL, setup=_symlink("songs.csv", "link.csv")),
    CliCase("predict_output_is_a_hard_link_to_data", ("predict", "m.npz", "songs.csv", "-o", "copy.csv"),
            r"-o 'copy\.csv' is the same file as DATA", files=_MODEL, setup=_hard_link("songs.csv", "copy.csv")),
    CliCase("fit_out_is_data", ("fit", "songs.csv", "--target", "genre", "--out", "songs.csv"),
            r"--out 'songs\.csv' is the same file as DATA 'songs\.csv'", files={"songs.csv": _SONGS}),
    CliCase("fit_out_is_a_directory", ("fit", "songs.csv", "--target", "genre", "--out", "models"),
            r"--out 'models': it is a directory", files={"songs.csv": _SONGS}, setup=_folder("models")),
    CliCase("fit_out_in_a_missing_folder", ("fit", "songs.csv", "--target", "genre", "--out", "nowhere/m.npz"),
            r"the folder 'nowhere' does not exist", files={"songs.csv": _SONGS}),
    CliCase("predict_output_in_a_missing_folder", ("predict", "m.npz", "songs.csv", "-o", "nowhere/p.csv"),
            r"-o 'nowhere/p\.csv': the folder 'nowhere' does not exist", files=_MODEL),
    # -- report folders that are files: refused before fitting
    CliCase("fit_report_is_a_file", ("fit", "songs.csv", "--target", "genre", "--report", "notes.txt"),
            r"--report 'notes\.txt' is an existing file, not a directory",
            files={"songs.csv": _SONGS, "notes.txt": b"keep me\n"}),
    CliCase("evaluate_report_under_a_file", ("evaluate", "m.npz", "songs.csv", "--report", "notes.txt/eval"),
            r"--report 'notes\.txt/eval': .*notes\.txt' is a file", files={**_MODEL, "notes.txt": b"keep me\n"}),
    CliCase("demo_report_dir_is_a_file", ("demo", "--report-dir", "notes.txt"),
            r"--report-dir 'notes\.txt' is an existing file, not a directory", files={"notes.txt": b"keep me\n"}),
    # -- data files that are not tables (issue 15, 5)
    CliCase("random_bytes_named_csv", ("fit", "noise.csv", "--target", "genre"),
            r"cannot read DATA 'noise\.csv': it holds binary data",
            files={"noise.csv": np.random.default_rng(0).bytes(4000)}),
    CliCase("ragged_rows", ("fit", "ragged.csv", "--target", "genre"),
            r"cannot read DATA 'ragged\.csv': .*Expected 2 fields in line 3, saw 4",
            files={"ragged.csv": b"a,genre\n1,x\n2,y,3,4\n3,x\n"}),
    CliCase("empty_output_name", ("predict", "m.npz", "songs.csv", "-o", ""), r"-o is empty; give a file name",
            files=_MODEL),
    CliCase("empty_report_name", ("fit", "songs.csv", "--target", "genre", "--report", ""),
            r"--report is empty; give a folder name", files={"songs.csv": _SONGS}),
    CliCase("truncated_csv_gz", ("fit", "songs.csv.gz", "--target", "genre"),
            r"songs\.csv\.gz': the gzip file is damaged or truncated", files={"songs.csv.gz": _GZ[: len(_GZ) // 2]}),
    CliCase("corrupt_deflate_stream_csv_gz", ("fit", "songs.csv.gz", "--target", "genre"),
            r"songs\.csv\.gz': the gzip file is damaged or truncated", files={"songs.csv.gz": _corrupt_gzip()}),
    CliCase("not_gzip_at_all_csv_gz", ("fit", "songs.csv.gz", "--target", "genre"),
            r"songs\.csv\.gz': the gzip file is damaged or truncated", files={"songs.csv.gz": _SONGS}),
    CliCase("empty_file", ("fit", "empty.csv", "--target", "genre"), r"'empty\.csv': the file is empty",
            files={"empty.csv": b""}),
    CliCase("header_only", ("fit", "head.csv", "--target", "genre"), r"DATA 'head\.csv' has no rows",
            files={"head.csv": b"tempo,acoustic,genre\n"}),
    CliCase("data_is_a_directory", ("fit", "songs.csv", "--target", "genre"),
            r"cannot read DATA 'songs\.csv': it is a directory", setup=_folder("songs.csv")),
    CliCase("target_column_all_empty", ("fit", "t.csv", "--target", "genre"),
            r"target 'genre' has no label in any of its 3 rows", files={"t.csv": b"a,genre\n1,\n2,\n3,\n"}),
    CliCase("latin1_bytes", ("fit", "t.csv", "--target", "genre"), r"'t\.csv': it is not UTF-8 text",
            files={"t.csv": "a,genre\n1,café\n2,thé\n".encode("latin-1")}),
    # -- model files that are not models
    CliCase("npz_that_is_not_a_model", ("predict", "arrays.npz", "songs.csv"), r"no softxent metadata",
            files={"songs.csv": _SONGS, "arrays.npz": lambda p: np.savez(p, a=np.arange(3))}),
    CliCase("model_and_data_swapped", ("predict", "songs.csv", "m.npz"),
            r"MODEL 'songs\.csv' is not a model file .*the order is MODEL DATA", files=_MODEL),
    CliCase("decimal_point_asked_of_a_decimal_comma_model",
            ("predict", "m.npz", "songs.csv", "--decimal", ".", "-o", "p.csv"),
            r"column 'tempo' held numbers in training but holds '0,\d+' in row 0",
            files={"songs.csv": _SONGS_COMMA, "m.npz": _fitted(_SONGS_COMMA, "--test-size", "0")}),
    # -- sizes that cannot fit (issue 15, 5)
    CliCase("gradcheck_too_many_classes", ("gradcheck", "--classes", "100000"),
            r"--classes 100000: .*100000 x 100000 float64 .*the limit is 2000 classes"),
    CliCase("bench_shape_not_nxv", ("bench", "--shapes", "abc"),
            r"^softxent bench: error: --shapes: 'abc' is not NxV"),
    CliCase("bench_shape_too_large", ("bench", "--shapes", "100000x100000"),
            r"--shapes: '100000x100000' has 10,000,000,000 logits"),
]  # fmt: skip
