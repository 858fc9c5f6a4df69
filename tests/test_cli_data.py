"""Tables in, ``(X, y)`` out: :mod:`softxent.cli._read`, ``_targets`` and ``_features`` on files written here.

Each reader is checked on a file whose content is known cell by cell; each
user-fixable problem on the message it prints (it must name the argument or
column and the value); the target forms against what ``choose_head`` and
``AutoClassifier`` make of them; the feature transform against hand
computations, and bit for bit after a trip through JSON.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from softxent.cli._errors import CLIError
from softxent.cli._features import TablePreprocessor
from softxent.cli._read import SUPPORTED_EXTENSIONS, read_table
from softxent.cli._targets import TargetSpec, select_columns
from softxent.models import AutoClassifier

# ---------------------------------------------------------------------- reading: formats

EXPECTED = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, -1.5, 2.0], "genre": ["rock", "jazz", "rock"]})


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def check_expected(df: pd.DataFrame) -> None:
    assert df.columns.tolist() == ["a", "b", "genre"]
    assert df["a"].tolist() == [1, 2, 3]
    assert df["b"].tolist() == [0.5, -1.5, 2.0]
    assert df["genre"].tolist() == ["rock", "jazz", "rock"]


@pytest.mark.parametrize(
    ("name", "sep"),
    [("t.csv", ","), ("t.csv", ";"), ("t.csv", "\t"), ("t.tsv", "\t"), ("t.tsv", ","), ("t.txt", "|"),
     ("T.CSV", ";"), ("t.csv", "|")],
)  # fmt: skip
def test_text_delimiter_is_sniffed(tmp_path, name, sep):
    text = (
        sep.join(EXPECTED.columns)
        + "\n"
        + "".join(sep.join(str(v) for v in row) + "\n" for row in EXPECTED.itertuples(index=False))
    )
    check_expected(read_table(write(tmp_path / name, text)))


def test_semicolon_file_with_decimal_commas_is_not_read_as_commas(tmp_path):
    df = read_table(write(tmp_path / "t.csv", "a;b;genre\n1;0,5;rock\n2;1,5;jazz\n"))
    assert df.columns.tolist() == ["a", "b", "genre"]
    assert df["b"].tolist() == ["0,5", "1,5"]


def test_old_mac_line_ends_are_lines(tmp_path):
    (tmp_path / "mac.csv").write_bytes(b"a;b;genre\r1;0,5;rock\r2;-1,5;jazz\r3;2,0;rock\r")
    df = read_table(tmp_path / "mac.csv")
    assert df.columns.tolist() == ["a", "b", "genre"] and df["genre"].tolist() == ["rock", "jazz", "rock"]


def test_decimal_commas_are_numbers_only_where_allowed_and_the_mark_is_stored(tmp_path):
    df = read_table(write(tmp_path / "t.csv", "a;b;c;genre\n1;0,5;1.234,5;rock\n2;-1,5;2.000,25;jazz\n"))
    assert df.attrs["delimiter"] == ";"
    assert TablePreprocessor().fit(df, ["a", "b", "c"]).column_kinds()["b"] == "category"
    pre = TablePreprocessor().fit(df, ["a", "b", "c"], decimal_comma=True)
    # "1.234,5" groups thousands with a point: not read as a number (it would be ambiguous).
    assert pre.column_kinds() == {"a": "number", "b": "decimal-comma number", "c": "category"}
    assert pre.transform(df)[:, 1].tolist() == [1.0, -1.0]  # 0.5 and -1.5, standardised
    assert any("decimal comma" in line and ": b" in line for line in pre.summary())
    d = pre.to_dict()
    assert d["version"] == 2 and d["columns"][1]["decimal"] == ","
    loaded = TablePreprocessor.from_dict(json.loads(json.dumps(d)))
    assert loaded.column_kinds() == pre.column_kinds()
    np.testing.assert_array_equal(loaded.transform(df), pre.transform(df))
    with pytest.raises(CLIError, match=r"held numbers in training but holds '0,5' in row 0"):
        loaded.transform(df, decimal=".")
    # A transform without decimal commas stays version 1, which older softxent versions read.
    assert TablePreprocessor().fit(df, ["a"]).to_dict()["version"] == 1


@pytest.mark.parametrize(
    "rows",
    [
        # one '|' on every row: as consistent as the commas, so only the extension's rule saves it
        ["1,2,vocal|pop", "3,4,rock|jazz", "5,6,soundtrack|vocal"],
        ["1,2,vocal|pop", "3,4,rock", "5,6,a|b|c"],
        ['1,2,"vocal|pop, live"', "3,4,rock|jazz", "5,6,x|y"],
    ],
)
def test_pipe_inside_a_tag_column_is_not_the_delimiter(tmp_path, rows):
    df = read_table(write(tmp_path / "tags.csv", "x,z,tags\n" + "\n".join(rows) + "\n"))
    assert df.columns.tolist() == ["x", "z", "tags"]
    assert df["tags"].tolist()[1:] == [r.split(",", 2)[2] for r in rows[1:]]
    assert df["x"].tolist() == [1, 3, 5]


def test_single_tag_column_stays_one_column(tmp_path):
    # csv.Sniffer alone answers '|' here; the header has no '|', so it is not the delimiter
    df = read_table(write(tmp_path / "tags.csv", "tags\n" + "vocal|pop\n" * 30))
    assert df.columns.tolist() == ["tags"] and df["tags"].iloc[0] == "vocal|pop"


def test_bom_crlf_and_quoted_delimiters(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeffa;b;genre\r\n1;"x, y";rock\r\n2;"z";jazz\r\n'.encode())
    df = read_table(path)
    assert df.columns.tolist() == ["a", "b", "genre"]
    assert df["b"].tolist() == ["x, y", "z"] and df["genre"].tolist() == ["rock", "jazz"]


def test_sniffing_reads_only_the_first_64_kib(tmp_path):
    body = "".join(f"{i};{i * 0.5};c{i % 3}\n" for i in range(8000))  # ~100 KiB
    df = read_table(write(tmp_path / "big.csv", "a;b;genre\n" + body))
    assert df.shape == (8000, 3)
    assert df["b"].iloc[-1] == 7999 * 0.5


@pytest.mark.parametrize(("name", "sep"), [("t.csv.gz", ";"), ("t.tsv.gz", "\t"), ("T.CSV.GZ", ",")])
def test_gzip_text(tmp_path, name, sep):
    text = EXPECTED.to_csv(sep=sep, index=False)
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    check_expected(read_table(path))


def test_header_names_are_stripped_and_blank_cells_are_missing(tmp_path):
    df = read_table(write(tmp_path / "t.csv", "a; b ;genre\n1;;rock\n2;3;\n"))
    assert df.columns.tolist() == ["a", "b", "genre"]
    assert np.isnan(df["b"].iloc[0]) and pd.isna(df["genre"].iloc[1])


@pytest.mark.parametrize("name", ["t.parquet", "t.PQ"])
def test_parquet(tmp_path, name):
    pytest.importorskip("pyarrow")
    EXPECTED.to_parquet(tmp_path / name)
    check_expected(read_table(tmp_path / name))


def test_npz_x_convention_with_names_and_1d_target(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "d.npz", X=X, y=np.array(["a", "b", "a", "c"]),
             feature_names=np.array(["f", "g", "h"]), target_name=np.array("kind"))  # fmt: skip
    df = read_table(tmp_path / "d.npz")
    assert df.columns.tolist() == ["f", "g", "h", "kind"]
    np.testing.assert_array_equal(df[["f", "g", "h"]].to_numpy(), X)
    assert df["kind"].tolist() == ["a", "b", "a", "c"]


def test_npz_x_convention_default_names_and_2d_labels(tmp_path):
    X = np.arange(6).reshape(3, 2)
    Y = np.array([[1, 0], [1, 1], [0, 0]])
    np.savez(tmp_path / "d.npz", X=X, y=Y)
    df = read_table(tmp_path / "d.npz")
    assert df.columns.tolist() == ["x0", "x1", "label0", "label1"]
    assert df["label1"].tolist() == [0, 1, 0]
    np.savez(tmp_path / "n.npz", X=X, y=Y, label_names=np.array([b"vocal", b"pop"]))  # bytes: decoded
    assert read_table(tmp_path / "n.npz").columns.tolist() == ["x0", "x1", "vocal", "pop"]
    np.savez(tmp_path / "x.npz", X=X)
    assert read_table(tmp_path / "x.npz").columns.tolist() == ["x0", "x1"]


def test_npz_columns_convention(tmp_path):
    np.savez(tmp_path / "d.npz", age=np.array([20, 30]), city=np.array(["Paris", "Oslo"]))
    df = read_table(tmp_path / "d.npz")
    assert df.columns.tolist() == ["age", "city"]
    assert df["age"].tolist() == [20, 30] and df["city"].tolist() == ["Paris", "Oslo"]


# ---------------------------------------------------------------------- reading: errors


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text  # one plain line
    return text


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CLIError) as e:
        read_table(tmp_path / "nope.csv")
    assert message(e) == f"cannot read DATA {str(tmp_path / 'nope.csv')!r}: no such file"
    with pytest.raises(CLIError) as e:
        read_table(tmp_path, argument="TRAIN")
    assert message(e).startswith("cannot read TRAIN ") and "is a directory" in message(e)


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    with pytest.raises(CLIError) as e:
        read_table(write(tmp_path / "t.xlsx", "a,b\n1,2\n"))
    assert "'" + str(tmp_path / "t.xlsx") + "'" in message(e) and "unknown format" in message(e)
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in message(e)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("t.csv", b"", "the file is empty"),
        ("t.csv", b"\n\n", "the file is empty"),
        ("t.csv", "a,genre\ncaf\xe9,rock\n".encode("latin-1"), "not UTF-8"),
        ("t.csv", b"a,b\n1,2\n3,4,5,6\n", "Expected 2 fields"),
        ("t.csv.gz", b"a,b\n1,2\n", "Not a gzipped file"),
        ("t.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        ("t.npz", b"not a zip at all", "not a readable .npz file"),
    ],
)
def test_unreadable_files_say_why(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CLIError) as e:
        read_table(tmp_path / name)
    assert message(e).startswith(f"cannot read DATA {str(tmp_path / name)!r}: ")
    assert reason in message(e)


def test_header_only_has_no_rows(tmp_path):
    with pytest.raises(CLIError, match=r"has no rows \(columns: a, b\)"):
        read_table(write(tmp_path / "t.csv", "a,b\n"))


def test_duplicate_column_names(tmp_path):
    with pytest.raises(CLIError, match=r"DATA '.*t\.csv' has duplicate column names: a$"):
        read_table(write(tmp_path / "t.csv", "a,b,a\n1,2,3\n"))
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 2)), y=np.array([0, 1]),
             feature_names=np.array(["target", "b"]))  # fmt: skip
    with pytest.raises(CLIError, match="duplicate column names: target"):
        read_table(tmp_path / "d.npz")


def test_npz_layout_errors(tmp_path):
    cases = {
        "objects": dict(a=np.array([{"x": 1}, None], dtype=object)),
        "ragged": dict(a=np.zeros(3), b=np.zeros(4)),
        "twod": dict(a=np.zeros((3, 2))),
        "xextra": dict(X=np.zeros((2, 2)), junk=np.zeros(2)),
        "x1d": dict(X=np.zeros(2)),
        "ylen": dict(X=np.zeros((2, 2)), y=np.zeros(3)),
        "y2d": dict(X=np.zeros((2, 2)), y=np.array([[0, 2], [1, 0]])),
        "names": dict(X=np.zeros((2, 2)), feature_names=np.array(["only"])),
        "noy": dict(X=np.zeros((2, 2)), target_name=np.array("t")),
        "empty": {},
    }
    expected = {
        "objects": "object (pickled) arrays", "ragged": "'b' has 4 rows, not 3", "twod": "'a' has shape (3, 2)",
        "xextra": "it also holds junk", "x1d": "'X' must be a 2-D array", "ylen": "'y' must have 2 rows",
        "y2d": "must hold only 0/1", "names": "'feature_names' must be a 1-D string array of length 2",
        "noy": "holds no 'y'", "empty": "holds no arrays",
    }  # fmt: skip
    for key, arrays in cases.items():
        path = tmp_path / f"{key}.npz"
        np.savez(path, **arrays)
        with pytest.raises(CLIError) as e:
            read_table(path)
        assert expected[key] in message(e), key
        assert str(path) in message(e)
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    with pytest.raises(CLIError, match="single .npy array"):
        read_table(tmp_path / "single.npz")


# ---------------------------------------------------------------------- columns

TABLE = pd.DataFrame({"a": [1, 2], "b": [3, 4], "c": ["x", "y"], "genre": ["rock", "jazz"]})


def test_select_columns():
    assert select_columns(TABLE, ["genre"], None) == ["a", "b", "c"]
    assert select_columns(TABLE, ["genre", "c"], None) == ["a", "b"]
    assert select_columns(TABLE, ["genre"], ["c", "a", "c"]) == ["c", "a"]


def test_select_columns_errors():
    with pytest.raises(CLIError) as e:
        select_columns(TABLE, ["mood"], None)
    assert message(e) == "target column 'mood' not found; the columns are: a, b, c, genre"
    with pytest.raises(CLIError) as e:
        select_columns(TABLE, ["Genre"], None)
    assert message(e).endswith("(did you mean 'genre'?)")
    with pytest.raises(CLIError) as e:
        select_columns(TABLE, ["genre"], ["a", "tempo"])
    assert message(e) == "feature column 'tempo' not found; the columns are: a, b, c, genre"
    with pytest.raises(CLIError, match="column 'genre' is both a --target and a --features column"):
        select_columns(TABLE, ["genre"], ["a", "genre"])
    with pytest.raises(CLIError, match="no feature columns left: the table holds only the target column"):
        select_columns(TABLE[["genre"]], ["genre"], None)
    with pytest.raises(CLIError, match="--features names no columns"):
        select_columns(TABLE, ["genre"], [])
    with pytest.raises(CLIError, match="no --target given"):
        select_columns(TABLE, [], None)
    with pytest.raises(CLIError, match="--target 'genre' is given more than once"):
        select_columns(TABLE, ["genre", "genre"], None)


def test_long_column_lists_are_truncated():
    wide = pd.DataFrame({f"col{i}": [0] for i in range(100)})
    with pytest.raises(CLIError) as e:
        select_columns(wide, ["zzz"], None)
    assert "col0, col1," in message(e) and "... and 88 more" in message(e) and "col99" not in message(e)
    assert len(message(e)) < 300


# ---------------------------------------------------------------------- targets


def test_classes_keep_ints_and_strings():
    df = pd.DataFrame({"k": [3, 1, 3], "s": ["rock ", "jazz", "rock"]})
    spec = TargetSpec.infer(df, ["k"], None)
    assert spec == TargetSpec("classes", ("k",), None)
    y = spec.extract(df)
    assert y.dtype.kind == "i" and y.tolist() == [3, 1, 3]
    y = TargetSpec.infer(df, ["s"], None).extract(df)
    assert y.dtype.kind == "U" and y.tolist() == ["rock", "jazz", "rock"]  # stripped


def test_classes_with_empty_cells_become_label_sets():
    df = pd.DataFrame({"s": ["jazz", None, "rock", " "], "k": [1.0, np.nan, 2.0, 1.0]})
    assert TargetSpec.infer(df, ["s"], None).extract(df) == [{"jazz"}, set(), {"rock"}, set()]
    y = TargetSpec.infer(df, ["k"], None).extract(df)
    assert y == [{1}, set(), {2}, {1}]
    assert all(type(v) is int for s in y for v in s)  # a float column with NaN held ints


def test_label_sets():
    df = pd.DataFrame({"tags": ["vocal|pop", " rock | | jazz ", None, "", "solo", 7]})
    spec = TargetSpec.infer(df, ["tags"], "|")
    assert spec == TargetSpec("label_sets", ("tags",), "|")
    assert spec.extract(df) == [{"vocal", "pop"}, {"rock", "jazz"}, set(), set(), {"solo"}, {"7"}]


def test_indicator_columns():
    df = pd.DataFrame({
        "vocal": [1, 0, 1, 0], "pop": [True, False, True, False], "live": ["true", "0", "FALSE", "1"],
    })  # fmt: skip
    spec = TargetSpec.infer(df, ["vocal", "pop", "live"], None)
    assert spec == TargetSpec("indicator", ("vocal", "pop", "live"), None)
    y = spec.extract(df)
    assert y == [{"vocal", "pop", "live"}, set(), {"vocal", "pop"}, {"live"}]
    labels = spec.labels_of(y)
    assert labels == ["live", "pop", "vocal"]
    np.testing.assert_array_equal(
        TargetSpec.indicator(y, labels), np.array([[1, 1, 1], [0, 0, 0], [0, 1, 1], [1, 0, 0]], dtype=np.int8)
    )
    assert TargetSpec.indicator(y, labels).dtype == np.int8


def test_indicator_errors():
    df = pd.DataFrame({"a": [1, 0, np.nan, np.nan], "b": [0, 1, 2, 0], "c": ["1", "0", "maybe", "1"],
                       "d": [1, 0, 1, 0]})  # fmt: skip
    with pytest.raises(CLIError) as e:
        TargetSpec.infer(df, ["a", "d"], None)
    assert message(e).startswith("target column 'a' has 2 missing values (of 4 rows)")
    with pytest.raises(CLIError) as e:
        TargetSpec.infer(df, ["d", "b"], None)
    assert message(e).startswith("target column 'b' holds 2 in row 2")
    with pytest.raises(CLIError) as e:
        TargetSpec.infer(df, ["d", "c"], None)
    assert message(e).startswith("target column 'c' holds 'maybe' in row 2")
    with pytest.raises(CLIError, match="--label-sep '|' splits one target column"):
        TargetSpec.infer(df, ["d", "b"], "|")
    with pytest.raises(CLIError, match="--label-sep must not be empty"):
        TargetSpec.infer(df, ["d"], "")
    with pytest.raises(CLIError, match="target column 'zz' not found; the columns are: a, b, c, d"):
        TargetSpec.infer(df, ["zz", "d"], None)


def test_extract_names_a_missing_column():
    spec = TargetSpec("label_sets", ("tags",), ";")
    with pytest.raises(CLIError, match="target column 'tags' not found; the columns are: a"):
        spec.extract(pd.DataFrame({"a": [1]}))


def test_labels_of_and_indicator_of_classes():
    y = np.array(["b", "a", "b"])
    assert TargetSpec.labels_of(y) == ["a", "b"]
    np.testing.assert_array_equal(TargetSpec.indicator(y, ["a", "b"]), [[0, 1], [1, 0], [0, 1]])
    assert TargetSpec.labels_of([{2}, set(), {"other"}]) == [2, "other"]  # mixed kinds: ordered as text
    with pytest.raises(ValueError, match="row 1 carries the label 'c'"):
        TargetSpec.indicator([{"a"}, {"c"}], ["a", "b"])


def test_check_learnable():
    df = pd.DataFrame({"genre": ["rock"] * 120, "tags": ["vocal"] * 120, "half": ["vocal", ""] * 60,
                       "none": [None] * 120})  # fmt: skip
    spec = TargetSpec.infer(df, ["genre"], None)
    with pytest.raises(CLIError) as e:
        spec.check_learnable(spec.extract(df))
    assert message(e) == "target 'genre' has a single class 'rock' in 120 rows; a classifier needs at least two"
    spec = TargetSpec.infer(df, ["tags"], "|")
    with pytest.raises(CLIError, match="target 'tags' has a single label 'vocal' in 120 rows"):
        spec.check_learnable(spec.extract(df))
    spec = TargetSpec.infer(df, ["none"], None)
    with pytest.raises(CLIError, match="target 'none' has no label in any of its 120 rows"):
        spec.check_learnable(spec.extract(df))
    # one label and rows without it: "vocal" against "other" is something to learn
    spec = TargetSpec.infer(df, ["half"], "|")
    spec.check_learnable(spec.extract(df))
    spec = TargetSpec.infer(pd.DataFrame({"g": ["a", "b"]}), ["g"], None)
    spec.check_learnable(spec.extract(pd.DataFrame({"g": ["a", "b"]})))


@pytest.mark.parametrize(
    "spec",
    [TargetSpec("classes", ("genre",), None), TargetSpec("label_sets", ("tags",), "|"),
     TargetSpec("indicator", ("a", "b", "c"), None)],
)  # fmt: skip
def test_target_spec_round_trip(spec):
    assert TargetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ([], "must be a dict"),
        ({"kind": "classes", "columns": ["g"]}, "lacks label_sep"),
        ({"kind": "regression", "columns": ["g"], "label_sep": None}, "kind must be one of"),
        ({"kind": "classes", "columns": "g", "label_sep": None}, "columns must be a list"),
        ({"kind": "classes", "columns": [], "label_sep": None}, "non-empty tuple of strings"),
        ({"kind": "classes", "columns": [3], "label_sep": None}, "non-empty tuple of strings"),
        ({"kind": "classes", "columns": ["a", "b"], "label_sep": None}, "has one column"),
        ({"kind": "indicator", "columns": ["a"], "label_sep": None}, "two or more columns"),
        ({"kind": "label_sets", "columns": ["a"], "label_sep": None}, "non-empty label_sep"),
        ({"kind": "classes", "columns": ["a"], "label_sep": "|"}, "label_sets targets only"),
    ],
)
def test_target_spec_from_malformed_dict(d, match):
    with pytest.raises(ValueError, match=match):
        TargetSpec.from_dict(d)


# ---------------------------------------------------------------------- features

PEOPLE = pd.DataFrame({
    "age": [20, 30, 40, 50],
    "city": ["Paris", "Oslo", "Paris", "Rome"],
    "smoker": [True, False, False, False],
    "ignored": ["x", "y", "z", "w"],
})  # fmt: skip


def standardise(column) -> np.ndarray:
    column = np.asarray(column, dtype=np.float64)
    std = column.std()
    return (column - column.mean()) / (std if std > 0 else 1.0)


def test_numeric_categorical_and_bool_by_hand():
    pre = TablePreprocessor()
    X = pre.fit_transform(PEOPLE, ["age", "city", "smoker"])
    assert pre.output_names == ["age", "city=Oslo", "city=Paris", "city=Rome", "smoker"]
    assert X.dtype == np.float64 and X.flags.c_contiguous and X.shape == (4, 5)
    expected = np.column_stack([
        standardise([20, 30, 40, 50]), standardise([0, 1, 0, 0]), standardise([1, 0, 1, 0]),
        standardise([0, 0, 0, 1]), standardise([1, 0, 0, 0]),
    ])  # fmt: skip
    np.testing.assert_allclose(X, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-15)
    np.testing.assert_allclose(X.std(axis=0), 1, rtol=1e-15)
    assert pre.summary() == [
        "2 numeric columns used as they are",
        "one-hot encoded: city (3 values)",
        "standardised: every column to mean 0, variance 1 (stored in the model)",
    ]
    assert pre.unseen_ == {}


def test_categories_sorted_as_strings_and_constant_column():
    df = pd.DataFrame({"code": pd.Series(["10", "9", "b", "B"], dtype=object), "one": [7.0] * 4})
    df["code"] = df["code"].astype("category")  # an explicit category dtype stays categorical
    pre = TablePreprocessor().fit(df, ["code", "one"])
    assert pre.output_names == ["code=10", "code=9", "code=B", "code=b", "one"]
    assert pre.scale_[-1] == 1.0
    assert np.all(pre.transform(df)[:, -1] == 0.0)


def test_unseen_category_gives_zeros_and_is_counted():
    pre = TablePreprocessor().fit(PEOPLE, ["city", "age"])
    new = pd.DataFrame({"age": [30, 30, 30], "city": ["Berlin", "Oslo", "Berlin"], "extra": [1, 2, 3]})
    X = pre.transform(new)
    assert pre.unseen_ == {"city": 2}
    raw = X * pre.scale_ + pre.mean_  # undo the standardisation: the one-hot part
    np.testing.assert_allclose(raw[:, :3], [[0, 0, 0], [1, 0, 0], [0, 0, 0]], atol=1e-15)
    pre.transform(PEOPLE)
    assert pre.unseen_ == {}


@pytest.mark.parametrize(
    ("impute", "fill"),
    [("mean", (1 + 2 + 2 + 10) / 4), ("median", 2.0), ("most_frequent", 2.0)],
)
def test_impute_numeric_by_hand(impute, fill):
    df = pd.DataFrame({"v": [1.0, np.nan, 2.0, 2.0, 10.0, np.nan], "t": ["a", "b", "b", None, "a", "b"]})
    pre = TablePreprocessor(impute=impute).fit(df, ["v", "t"])
    assert pre.fill_ == {"v": fill, "t": "b"}  # text: the most frequent value, whatever impute says
    filled = [1.0, fill, 2.0, 2.0, 10.0, fill]
    X = pre.transform(df)
    np.testing.assert_allclose(X[:, 0], standardise(filled), rtol=0, atol=1e-15)
    np.testing.assert_allclose(X[:, 2], standardise([0, 1, 1, 1, 0, 1]), rtol=0, atol=1e-15)
    assert any(line.startswith("imputed: v (") and "2 of 6 rows" in line for line in pre.summary())
    assert np.isnan(df["v"].iloc[1])  # the caller's table is left as it was
    # missing values at transform are filled the same way
    X_new = pre.transform(pd.DataFrame({"v": [np.nan], "t": [np.nan]}))
    np.testing.assert_allclose(X_new[0], (np.array([fill, 0.0, 1.0]) - pre.mean_) / pre.scale_, atol=1e-15)


def test_most_frequent_ties_go_to_the_smallest():
    df = pd.DataFrame({"v": [5.0, 3.0, 5.0, 3.0, np.nan], "t": ["z", "y", "z", "y", ""]})
    pre = TablePreprocessor(impute="most_frequent").fit(df, ["v", "t"])
    assert pre.fill_ == {"v": 3.0, "t": "y"}


def test_number_column_with_a_blank_cell_from_csv(tmp_path):
    df = read_table(write(tmp_path / "t.csv", "age,flag,g\n20,true,a\n ,,b\n40,false,a\n"))
    pre = TablePreprocessor(impute="mean").fit(df, ["age", "flag"])
    assert pre.kinds_ == {"age": "numeric", "flag": "numeric"}
    assert pre.fill_ == {"age": 30.0, "flag": 0.5}


def test_missing_values_without_impute():
    df = pd.DataFrame({"age": [1.0, np.nan, np.nan, 4.0], "city": ["a", "", "b", None], "ok": [1, 2, 3, 4]})
    with pytest.raises(CLIError) as e:
        TablePreprocessor().fit(df, ["ok", "age"])
    assert message(e) == (
        "column 'age' has 2 missing values (of 4 rows); pass --impute mean|median|most_frequent or remove them"
    )
    with pytest.raises(CLIError) as e:
        TablePreprocessor().fit(df, ["age", "city"])
    assert message(e).startswith("column 'age' has 2 missing values (of 4 rows), and 1 more columns have some (city)")
    pre = TablePreprocessor().fit(df.iloc[[0, 3]], ["age"])
    with pytest.raises(CLIError, match=r"column 'age' has 2 missing values \(of 4 rows\); the model was trained"):
        pre.transform(df)
    with pytest.raises(CLIError, match=r"column 'x' has no values \(all 2 rows are missing\)"):
        TablePreprocessor(impute="mean").fit(pd.DataFrame({"x": [None, None]}), ["x"])


def test_transform_errors():
    pre = TablePreprocessor().fit(PEOPLE, ["age", "city", "smoker"])
    with pytest.raises(CLIError) as e:
        pre.transform(PEOPLE[["smoker"]])
    assert message(e) == "the data lacks columns the model was trained on: age, city"
    bad = PEOPLE.assign(age=["20", "abc", "3", "x"])
    with pytest.raises(CLIError) as e:
        pre.transform(bad)
    assert message(e) == "column 'age' held numbers in training but holds 'abc' in row 1"
    # numbers that arrive as text are fine
    np.testing.assert_array_equal(pre.transform(PEOPLE.assign(age=["20", "30", "40", "50"])), pre.transform(PEOPLE))
    with pytest.raises(CLIError, match="column 'age' holds an infinite value in row 2"):
        pre.transform(PEOPLE.assign(age=[1, 2, np.inf, 3]))
    with pytest.raises(CLIError, match="column 'when' holds datetime64"):
        TablePreprocessor().fit(pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-02-01"])}), ["when"])
    with pytest.raises(CLIError, match="feature column 'nope' not found"):
        TablePreprocessor().fit(PEOPLE, ["nope"])
    with pytest.raises(RuntimeError, match="not fitted"):
        TablePreprocessor().transform(PEOPLE)


def test_json_round_trip_is_bit_identical():
    rng = np.random.default_rng(7)
    n = 200
    df = pd.DataFrame({
        "x": rng.standard_normal(n) * 1e-7 + 1 / 3,
        "y": rng.lognormal(5, 3, n),
        "z": np.where(rng.random(n) < 0.1, np.nan, rng.standard_normal(n)),
        "c": rng.choice(["alpha", "beta", "gamma", "δ"], n),
        "b": rng.random(n) < 0.3,
    })  # fmt: skip
    pre = TablePreprocessor(impute="mean").fit(df, ["x", "y", "z", "c", "b"])
    loaded = TablePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert loaded.to_dict() == pre.to_dict()
    assert loaded.output_names == pre.output_names and loaded.summary() == pre.summary()
    new = df.sample(frac=1.0, random_state=1)
    a, b = pre.transform(new), loaded.transform(new)
    assert a.tobytes() == b.tobytes()


def malformed(**changes):
    d = TablePreprocessor(impute="median").fit(PEOPLE, ["age", "city"]).to_dict()
    for key, value in changes.items():
        if key.startswith("col_"):
            d["columns"][1][key[4:]] = value
        else:
            d[key] = value
    return d


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ("nope", "must be a dict"),
        (malformed(format="other"), "not a table transform"),
        (malformed(version=3), "version 3"),
        (malformed(col_decimal=","), "column 'city' has a bad decimal mark ','"),  # a category has no decimals
        (malformed(col_decimal=";"), "column 'city' has a bad decimal mark ';'"),
        (malformed(impute="max"), "impute must be one of"),
        (malformed(columns=[]), "non-empty list"),
        (malformed(mean=[0.0]), "mean must be a list of 4 numbers"),
        (malformed(scale=[1.0, 1.0, 0.0, 1.0]), "scale must be > 0"),
        (malformed(scale=[1.0, 1.0, "1", 1.0]), "scale must be a list of 4 numbers"),
        (malformed(col_kind="text"), "column 'city' has kind 'text'"),
        (malformed(col_categories=["b", "a"]), "sorted list of distinct string categories"),
        (malformed(col_fill="Berlin"), "column 'city' has a bad fill value 'Berlin'"),
        (malformed(col_name="age"), "bad or repeated name 'age'"),
        (malformed(n_rows=0), "n_rows must be a whole number"),
    ],
)
def test_preprocessor_from_malformed_dict(d, match):
    with pytest.raises(ValueError, match=match):
        TablePreprocessor.from_dict(d)


def test_identifier_column_is_flagged_in_the_summary():
    df = pd.DataFrame({"id": [f"u{i}" for i in range(30)], "v": range(30)})
    line = TablePreprocessor().fit(df, ["id", "v"]).summary()[1]
    assert line.startswith("one-hot encoded: id (30 values; one per row: an identifier?")


# ---------------------------------------------------------------------- what the estimators make of it


def music(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    genre = np.array(["rock", "jazz", "pop"])[np.arange(n) % 3]
    tempo = np.where(genre == "rock", 140.0, np.where(genre == "jazz", 90.0, 120.0)) + rng.normal(0, 5, n)
    vocal = (np.arange(n) % 2).astype(int)
    live = (np.arange(n) % 5 < 2).astype(int)
    tags = ["|".join(t for t, on in (("vocal", v), ("live", lv)) if on) for v, lv in zip(vocal, live)]
    return pd.DataFrame({
        "tempo": tempo, "country": rng.choice(["FR", "US"], n), "loud": rng.normal(0, 1, n) + vocal,
        "genre": genre, "some": np.where(np.arange(n) % 4 == 0, None, genre), "vocal": vocal, "live": live,
        "tags": tags,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("targets", "sep", "head", "other"),
    [(["genre"], None, "softmax", False), (["some"], None, "softmax", True),
     (["tags"], "|", "sigmoid", False), (["vocal", "live"], None, "sigmoid", False)],
)  # fmt: skip
def test_auto_classifier_accepts_every_target_form(targets, sep, head, other):
    df = music()
    features = select_columns(df, targets, ["tempo", "country", "loud"])
    spec = TargetSpec.infer(df, targets, sep)
    y = spec.extract(df)
    spec.check_learnable(y)
    X = TablePreprocessor().fit_transform(df, features)
    model = AutoClassifier(max_iter=200).fit(X, y)
    assert model.head_choice_.head == head and model.head_choice_.add_other_class is other
    expected = spec.labels_of(y) + (["other"] if other else [])
    assert model.classes_.tolist() == expected
    if head == "softmax" and not other:
        assert model.score(X, y) > 0.9  # tempo separates the genres
