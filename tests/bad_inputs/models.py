"""Bad-input rows for the models layer (see tests/bad_inputs/__init__.py for the row types).

Two kinds: calls of the estimators with bad data or parameters (ValueError
or TypeError naming the argument and the value), and model files that are
damaged, edited or hostile (``ModelFileError`` naming the field and the
value). The files are made from a small fitted model: :func:`_tampered`
edits its metadata or arrays and writes a consistent archive again (fresh
checksums), so that each row reaches the check it is about.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import Case

_X = np.array([[0.0, 1, 2], [1, 0, 2], [2, 1, 0], [0, 2, 1], [1, 2, 0], [2, 0, 1]])
_Y = np.array([0, 1, 2, 0, 1, 2])


def _m():
    from softxent import models

    return models


def _err():
    return _m().ModelFileError


def _fitted(kind: str = "softmax") -> Any:
    m = _m()
    if kind == "softmax":
        return m.SoftmaxRegression().fit(_X, _Y)
    if kind == "sigmoid":
        return m.SigmoidRegression().fit(_X, np.eye(3, dtype=int)[_Y])
    return m.AutoClassifier().fit(_X, [{"rock"}, {"jazz"}, set(), {"rock"}, {"jazz"}, set()])


def _parts(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].tobytes())
        return meta, {k: z[k] for k in z.files if k != "__meta__"}


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _archive(meta: Any, arrays: dict[str, np.ndarray], raw: dict[str, bytes] | None = None) -> bytes:
    """An archive as save writes it, the arrays' listing (with checksums) made afresh."""
    from softxent.models._persistence import _checksum

    if isinstance(meta, dict):
        meta["arrays"] = {
            k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _checksum(a)} for k, a in arrays.items()
        }
    document = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    members = {f"{k}.npy": _npy(a) for k, a in arrays.items()}
    members["__meta__.npy"] = _npy(np.frombuffer(document, dtype=np.uint8))
    members.update(raw or {})
    return _zip(members)


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return out.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _tampered(tmp: Path, edit: Callable[[dict, dict], Any] | None = None, kind: str = "softmax") -> Path:
    """Save a fitted model, let ``edit(meta, arrays)`` change it, write it back consistently; return the path."""
    buffer = io.BytesIO()
    _fitted(kind).save(buffer)
    meta, arrays = _parts(buffer.getvalue())
    raw = edit(meta, arrays) if edit else None
    path = tmp / "model.npz"
    path.write_bytes(_archive(meta, arrays, raw))
    return path


def _load(path: Path) -> Any:
    return _m().load(path)


def _file_row(id: str, edit: Callable[[dict, dict], Any], match: str, kind: str = "softmax") -> Case:
    return Case(
        layer="models", id=id, call=lambda tmp: _load(_tampered(tmp, edit, kind)), error=_ModelFileError, match=match,
        needs="sklearn",
    )  # fmt: skip


class _LazyError(type):
    """ModelFileError, found when the row runs (the table is built before sklearn may be imported)."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _err())

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _err())


class _ModelFileError(Exception, metaclass=_LazyError):
    pass


def _params(**values: Any) -> Callable[[dict, dict], None]:
    return lambda meta, arrays: meta["model"]["params"].update(values)


def _attr(name: str, encoded: Any) -> Callable[[dict, dict], None]:
    return lambda meta, arrays: meta["model"]["attributes"].update({name: encoded})


def _drop_attr(name: str) -> Callable[[dict, dict], None]:
    return lambda meta, arrays: meta["model"]["attributes"].pop(name) and None


def _set_array(name: str, value: np.ndarray) -> Callable[[dict, dict], None]:
    return lambda meta, arrays: arrays.update({name: value})


def _npy_header(header: dict) -> bytes:
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, header)
    return head.getvalue()


def _huge_header(meta: dict, arrays: dict) -> dict[str, bytes]:
    """coef_.npy whose header claims 10**13 float64 elements (80 TB) over 96 bytes of data."""
    return {"coef_.npy": _npy_header({"descr": "<f8", "fortran_order": False, "shape": (10**13,)}) + bytes(96)}


def _huge_listed(tmp: Path) -> Any:
    """Metadata and header agree on 10**13 elements: only the member's size gives the lie away."""
    path = _tampered(tmp, _huge_header)
    members = _members(path.read_bytes())
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes())
    meta["arrays"]["coef_"]["shape"] = [10**13]
    members["__meta__.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    path.write_bytes(_zip(members))
    return _load(path)


def _meta_document(document: bytes) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        buffer = io.BytesIO()
        _fitted().save(buffer)
        _, arrays = _parts(buffer.getvalue())
        path = tmp / "model.npz"
        path.write_bytes(_archive(document, arrays))
        return _load(path)

    return call


def _saved_bytes(tmp: Path) -> bytes:
    path = tmp / "good.npz"
    _fitted().save(path)
    return path.read_bytes()


def _write_and_load(tmp: Path, make: Callable[[bytes], bytes]) -> Any:
    path = tmp / "model.npz"
    path.write_bytes(make(_saved_bytes(tmp)))
    return _load(path)


def _drop_member(name: str) -> Callable[[bytes], bytes]:
    return lambda data: _zip({n: p for n, p in _members(data).items() if n != name})


def _add_member(name: str, payload: bytes) -> Callable[[bytes], bytes]:
    return lambda data: _zip({**_members(data), name: payload})


def _recompressed(data: bytes) -> bytes:
    return _zip(_members(data), zipfile.ZIP_DEFLATED)


def _head_choice(meta: dict, arrays: dict) -> None:
    meta["model"]["attributes"]["head_choice_"]["head_choice"]["head"] = "tanh"


def _fit(estimator: str, X: Any = _X, y: Any = _Y, **kwargs: Any) -> Callable[[Path], Any]:
    fit_kwargs = {k: kwargs.pop(k) for k in ("sample_weight",) if k in kwargs}
    return lambda tmp: getattr(_m(), estimator)(**kwargs).fit(X, y, **fit_kwargs)


def _row(id: str, call: Callable[[Path], Any], error: Any, match: str) -> Case:
    return Case(layer="models", id=id, call=call, error=error, match=match, needs="sklearn")


_X_nan = _X.copy()
_X_nan[4, 2] = np.nan


CASES: list = [
    # ------------------------------------------------------------------ labels and heads
    _row("choose_head: only empty label sets", lambda tmp: _m().choose_head([set(), set()]), ValueError,
         r"y has no labels: all 2 rows are empty label sets"),
    _row("choose_head: all-zero indicator", lambda tmp: _m().choose_head(np.zeros((3, 2), dtype=int)), ValueError,
         r"y has no labels: its indicator matrix \(3 rows, 2 label columns\) holds no 1"),
    _row("AutoClassifier.fit: no row has a label", _fit("AutoClassifier", _X, [set()] * 6), ValueError,
         r"y has no labels: all 6 rows are empty label sets"),
    _row("AutoClassifier: other_label nan", _fit("AutoClassifier", other_label=float("nan")), ValueError,
         r"other_label must be a string or a finite number, got nan"),
    _row("y: continuous values", _fit("SoftmaxRegression", _X, _Y + 0.5), ValueError,
         r"Unknown label type: continuous: y must hold class labels, got the non-integer value 0.5 at y\[0\]"),
    _row("y: strings and numbers mixed", _fit("SoftmaxRegression", _X, [0, 1, "b", 0, 1, "b"]), TypeError,
         r"y mixes strings and numbers \('b' at y\[2\], 0 at y\[0\]\)"),
    _row("y: None among the labels", _fit("SigmoidRegression", _X, [0, 1, None, 0, 1, 2]), TypeError,
         r"y must hold class labels \(integers or strings\), got None at y\[2\]"),
    _row("y: one class", _fit("SoftmaxRegression", _X, ["a"] * 6), ValueError, r"only one class: 'a'"),
    _row("y: wrong length", _fit("SoftmaxRegression", _X, _Y[:5]), ValueError,
         r"X and y must have the same number of rows, got 6 rows in X and 5 in y"),
    _row("partial_fit: classes of one class",
         lambda tmp: _m().SoftmaxRegression(solver="adam").partial_fit(_X, _Y * 0, classes=[0]), ValueError,
         r"classes must name at least 2 classes .*got \[0\]"),
    # ------------------------------------------------------------------ X
    _row("X: NaN", _fit("SoftmaxRegression", _X_nan), ValueError, r"X must be finite, got nan at X\[4, 2\]"),
    _row("X: 0 rows", _fit("SoftmaxRegression", _X[:0], _Y[:0]), ValueError, r"0 sample\(s\) \(shape=\(0, 3\)\)"),
    _row("X: 0 features", _fit("SoftmaxRegression", _X[:, :0]), ValueError, r"0 feature\(s\) \(shape=\(6, 0\)\)"),
    _row("X: 1-D", _fit("SoftmaxRegression", _X[:, 0]), ValueError,
         r"X must be 2-D \(n_samples, n_features\), got a 1-D array of shape \(6,\)"),
    _row("X: strings", _fit("SoftmaxRegression", [["a", "b", "c"]] * 6), ValueError,
         r"X must hold numbers: could not convert string to float: .*'a'"),
    _row("X: ragged rows", _fit("SoftmaxRegression", [[1.0, 2.0], [3.0]], [0, 1]), ValueError,
         r"X must be a rectangular 2-D array of numbers, got rows of different lengths"),
    _row("predict: wrong number of features", lambda tmp: _fitted().predict(_X[:, :2]), ValueError,
         r"X has 2 features, but SoftmaxRegression is expecting 3 features"),
    # ------------------------------------------------------------------ weights and parameters
    _row("sample_weight: negative", _fit("SoftmaxRegression", sample_weight=-np.ones(6)), ValueError,
         r"sample_weight must be finite and non-negative, got -1.0"),
    _row("sample_weight: NaN", _fit("SigmoidRegression", sample_weight=np.full(6, np.nan)), ValueError,
         r"sample_weight must be finite and non-negative, got nan"),
    _row("sample_weight: wrong length", _fit("SoftmaxRegression", sample_weight=np.ones(4)), ValueError,
         r"sample_weight must have shape \(6,\) \(one per row\), got shape \(4,\)"),
    _row("sample_weight: a string", _fit("SoftmaxRegression", sample_weight="heavy"), TypeError,
         r"sample_weight must be a number or an array of numbers, got 'heavy'"),
    _row("class_weight: unknown class", _fit("SoftmaxRegression", class_weight={7: 2.0}), ValueError,
         r"class_weight names classes that are not in y: \[7\]; the classes are \[0, 1, 2\]"),
    _row("class_weight: negative weight", _fit("SoftmaxRegression", class_weight={0: -2.0}), ValueError,
         r"class_weight\[0\] must be a finite number >= 0, got -2.0"),
    _row("C: zero", _fit("SoftmaxRegression", C=0.0), ValueError, r"The 'C' parameter of SoftmaxRegression must be a float in the range \(0.0, inf\)\. Got 0.0 instead"),
    _row("random_state: a string", _fit("SoftmaxRegression", random_state="seed"), ValueError,
         r"The 'random_state' parameter of SoftmaxRegression must be an int in the range \[0, 4294967295\], an "
         r"instance of 'numpy.random.mtrand.RandomState' or None\. Got 'seed' instead"),
    # ------------------------------------------------------------------ model files: parameters and attributes
    _file_row("load: threshold 5.0", _params(threshold=5.0),
              r"model.params: The 'threshold' parameter of SigmoidRegression must be a float in the range "
              r"\[0.0, 1.0\]\. Got 5.0 instead", kind="sigmoid"),
    _file_row("load: threshold 'abc'", _params(threshold="abc"),
              r"model.params: The 'threshold' parameter of SigmoidRegression must be a float in the range "
              r"\[0.0, 1.0\]\. Got 'abc' instead", kind="sigmoid"),
    _file_row("load: dtype int8", _params(dtype="int8"),
              r"model.params: dtype must be np.float32 or np.float64, got 'int8'"),
    _file_row("load: NaN coefficient", lambda meta, arrays: arrays["coef_"].__setitem__((1, 2), np.nan),
              r"model: coef_ must be finite, got nan in it"),
    _file_row("load: coef_ of the wrong shape", _set_array("coef_", np.zeros((3, 2))),
              r"coef_ \(3, 2\), intercept_ \(3,\) and n_features_in_=3 disagree"),
    _file_row("load: classes_ do not match the coefficient rows", _set_array("classes_", np.arange(4)),
              r"coef_ has 3 rows for 4 classes \[0, 1, 2, 3\]"),
    _file_row("load: classes_ out of order", _set_array("classes_", np.array([2, 0, 1])),
              r"classes_ must be sorted, as fit leaves it, got \[2, 0, 1\]"),
    _file_row("load: unknown head", _head_choice, r"head_choice_.head 'tanh' does not name the head", kind="auto"),
    _file_row("load: n_iter_ a string", _attr("n_iter_", {"value": "many"}),
              r"n_iter_ must be an integer >= 0, got 'many'"),
    _file_row("load: fitted attribute missing", _drop_attr("n_iter_"),
              r"the fitted attributes \['n_iter_'\] are missing"),
    _file_row("load: class_weight not pairs", _params(class_weight={"pairs": [[0]]}),
              r"model.params.class_weight is .*, not \{'pairs': \[\[class, weight\], ...\]\}"),
    _file_row("load: params not an object", lambda meta, arrays: meta["model"].update(params=[1, 2]),
              r"model.params is \[1, 2\], not a JSON object"),
    _file_row("load: array listed but unused", _set_array("evil", np.arange(3)),
              r"the arrays \['evil'\] are listed but no attribute uses them"),
    _file_row("load: format version 0", lambda meta, arrays: meta.update(format_version=0),
              r"the format version 0 is not an integer >= 1"),
    # ------------------------------------------------------------------ model files: hostile archives
    _file_row("load: .npy header claims 10**13 elements", _huge_header,
              r"member 'coef_' has shape \(10000000000000,\), the metadata lists \(3, 3\)"),
    _row("load: header and metadata claim 10**13 elements", _huge_listed, _ModelFileError,
         r"member 'coef_' claims shape \(10000000000000,\) \(80000000000000 bytes of data\) but holds 96 bytes"),
    _file_row("load: .npy header that does not parse",
              lambda meta, arrays: {"coef_.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': <f8" + bytes(80)},
              r"member 'coef_' has no valid .npy header"),
    _file_row("load: member holding a pickle",
              lambda meta, arrays: {"coef_.npy": _npy_header({"descr": "|O", "fortran_order": False, "shape": (3, 3)})},
              r"member 'coef_' holds Python objects \(a pickle\), which load never reads"),
    _file_row("load: head_ that is not a model", _attr("head_", {"value": 3}),
              r"head_ must be a SoftmaxRegression or SigmoidRegression, got 3", kind="auto"),
    _file_row("load: target_type_ an array", _attr("target_type_", {"object_array": ["binary"], "shape": [1]}),
              r"target_type_ must be one of .*, got an array of dtype object and shape \(1,\)", kind="sigmoid"),
    _row("load: metadata nested 100000 levels", _meta_document(b"[" * 100_000 + b"]" * 100_000), _ModelFileError,
         r"the metadata is not valid JSON: it is nested too deeply"),
    _row("load: metadata not an object", _meta_document(b"[1, 2]"), _ModelFileError,
         r"the metadata is a JSON list, not an object"),
    _row("load: not a zip", lambda tmp: _write_and_load(tmp, lambda data: b"not a zip at all"), _ModelFileError,
         r"the file is truncated or is not an .npz archive"),
    _row("load: truncated", lambda tmp: _write_and_load(tmp, lambda data: data[: len(data) // 2]), _ModelFileError,
         r"the file is truncated or is not an .npz archive"),
    _row("load: member missing", lambda tmp: _write_and_load(tmp, _drop_member("intercept_.npy")), _ModelFileError,
         r"missing \['intercept_'\], not listed \[\]"),
    _row("load: extra member", lambda tmp: _write_and_load(tmp, _add_member("evil.npy", _npy(np.arange(3)))),
         _ModelFileError, r"missing \[\], not listed \['evil'\]"),
    _row("load: member that is not .npy", lambda tmp: _write_and_load(tmp, _add_member("run.py", b"print(1)")),
         _ModelFileError, r"the archive holds 'run.py', which is not a .npy array"),
    _row("load: compressed members", lambda tmp: _write_and_load(tmp, _recompressed), _ModelFileError,
         r"member '.*\.npy' is compressed"),
    _row("load: a path that is a number", lambda tmp: _m().load(5), TypeError,
         r"path must be a file path or a binary file object opened for reading, got 5"),
    _row("save: into a folder that does not exist", lambda tmp: _fitted().save(tmp / "no" / "m.npz"),
         FileNotFoundError, r"cannot save a model to '.*m.npz': No such file or directory"),
]  # fmt: skip
