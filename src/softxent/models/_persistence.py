"""Saving and loading fitted models without pickle.

Format (version 1)
------------------
One NumPy ``.npz`` archive (a zip of ``.npy`` files), written with
``np.savez`` and read with ``np.load(allow_pickle=False)``:

* ``__meta__``: a uint8 array holding a UTF-8 JSON document::

      {"format": "softxent.models", "format_version": 1, "softxent_version": "0.1.0",
       "model": {"estimator": "SoftmaxRegression",
                 "params": {"C": 1.0, ..., "dtype": "float64"},
                 "dropped_params": ["callback"],
                 "attributes": {"n_iter_": 12, "coef_": {"array": "coef_"}, ...}},
       "arrays": {"coef_": {"dtype": "<f8", "shape": [3, 4], "sha256": "..."}, ...}}

* ``extra`` (optional): a JSON object the caller stored beside the model
  with ``save(model, path, extra=...)`` and reads back with
  ``load(path, with_extra=True)``; the command line keeps the table
  transform (columns, one-hot categories, standardisation) there.
* one array per numeric or string attribute (``coef_``, ``intercept_``,
  ``classes_``, ``feature_names_in_``), named as in ``attributes``; the model
  of an :class:`~softxent.models.AutoClassifier` nests its head under
  ``attributes["head_"]`` with array names prefixed ``head_.``.

Values that JSON cannot hold are never pickled: object arrays (mixed class
labels) are stored as JSON lists of str/int/float/bool; parameters that are
neither (a ``callback``, a ``RandomState``) are dropped, listed in
``dropped_params``, and get their defaults on load. The optimiser state of
adam is not saved: a loaded model continues ``partial_fit`` with fresh
moments.

Loading executes no code from the file and trusts none of it: the estimator
class is looked up in a fixed table; each member's ``.npy`` header is
checked against the metadata and the file's size before anything is
allocated (:mod:`._archive`); every array must match its SHA-256; the
parameters pass the estimator's own ``_check_params`` (the rules of ``fit``)
and the fitted attributes the checks of :mod:`._model_checks` (types,
shapes, finite coefficients, classes that match the coefficient rows). A
truncated, damaged, modified or foreign file, or one from a newer format
version, raises :class:`ModelFileError` naming the field and its value.

Saving to a path is atomic: the archive is written to a temporary file in
the destination folder and renamed over the target, so a failed save leaves
neither a partial file nor a damaged older model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import zipfile
from typing import Any

import numpy as np

import softxent

from ._archive import FileProblem, ModelArchive, check_listing, short
from ._heads import HeadChoice
from ._model_checks import check_fitted

__all__ = ["FORMAT_VERSION", "SKOPS_TRUSTED_TYPES", "ModelFileError", "load", "save"]

#: The types a skops file of softxent models holds beyond scikit-learn's and
#: NumPy's own (``skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)``): the
#: three estimators, the head choice an AutoClassifier keeps, and the dtype
#: parameter (a NumPy scalar type). skops, the scikit-learn project's format,
#: saves whole pipelines without pickle; :func:`save`/:func:`load` save one
#: softxent model with its checks and the command line's table transform.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "softxent.models._softmax_regression.SoftmaxRegression",
    "softxent.models._sigmoid_regression.SigmoidRegression",
    "softxent.models._auto.AutoClassifier",
    "softxent.models._heads.HeadChoice",
    "numpy.dtype",
)

FORMAT = "softxent.models"
FORMAT_VERSION = 1
_META = "__meta__"


class ModelFileError(ValueError):
    """A model file that cannot be loaded: truncated, modified, or from a newer format."""


def _registry() -> dict[str, type]:
    from ._auto import AutoClassifier
    from ._sigmoid_regression import SigmoidRegression
    from ._softmax_regression import SoftmaxRegression

    return {c.__name__: c for c in (SoftmaxRegression, SigmoidRegression, AutoClassifier)}


# Fitted attributes each class may carry (a file naming others is refused).
_LINEAR = {
    "classes_", "coef_", "intercept_", "n_features_in_", "feature_names_in_", "n_iter_",
    "loss_curve_", "validation_loss_curve_",
}  # fmt: skip
_ALLOWED = {
    "SoftmaxRegression": _LINEAR,
    "SigmoidRegression": _LINEAR | {"target_type_", "_indicator_dtype"},
    "AutoClassifier": {
        "classes_",
        "n_features_in_",
        "feature_names_in_",
        "head_",
        "head_choice_",
        "target_type_",
        "labels_",
        "_indicator_dtype",
    },  # fmt: skip
}


# --------------------------------------------------------------------------- encoding


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(type(value).__name__)


def _encode_value(value: Any, name: str, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufU":
            key = prefix + name
            arrays[key] = np.ascontiguousarray(value)
            return {"array": key}
        try:  # object arrays (mixed labels): a JSON list of plain values
            return {"object_array": [_json_scalar(v) for v in value.ravel().tolist()], "shape": list(value.shape)}
        except TypeError as exc:
            raise TypeError(f"cannot save attribute {name}: it holds a {exc} value, which JSON cannot store") from None
    if isinstance(value, HeadChoice):
        return {"head_choice": {"head": value.head, "n_classes": value.n_classes,
                                "add_other_class": value.add_other_class, "reason": value.reason}}  # fmt: skip
    if isinstance(value, np.dtype):
        return {"dtype": value.str}
    if hasattr(value, "get_params") and type(value).__name__ in _ALLOWED:
        return {"model": _encode_model(value, arrays, prefix + name + ".")}
    if isinstance(value, list):
        return {"list": [_json_scalar(v) for v in value]}
    try:
        return {"value": _json_scalar(value)}
    except TypeError:
        raise TypeError(f"cannot save attribute {name} of type {type(value).__name__}") from None


def _encode_params(est: Any) -> tuple[dict[str, Any], list[str]]:
    params, dropped = {}, []
    for key, value in est.get_params(deep=False).items():
        if key == "dtype":
            params[key] = np.dtype(value).name
        elif key == "class_weight" and isinstance(value, dict):
            params[key] = {"pairs": [[_json_scalar(k), float(v)] for k, v in value.items()]}
        else:
            try:
                params[key] = _json_scalar(value)
            except TypeError:
                dropped.append(key)
    return params, dropped


def _encode_model(est: Any, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
    name = type(est).__name__
    params, dropped = _encode_params(est)
    attributes = {}
    for attr in sorted(_ALLOWED[name]):
        if hasattr(est, attr):
            attributes[attr] = _encode_value(getattr(est, attr), attr, arrays, prefix)
    return {"estimator": name, "params": params, "dropped_params": dropped, "attributes": attributes}


def _checksum(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(arr.dtype.str.encode())
    h.update(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _target_path(path: Any, verb: str) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(
            f"path must be a file path or a binary file object opened for {verb}, got {short(path)}"
        ) from None


def save(estimator: Any, path: Any, *, extra: dict[str, Any] | None = None) -> None:
    """Write a fitted estimator to ``path`` (a path or a binary file object); see the module docstring.

    ``extra`` is an optional JSON-serialisable dict stored beside the model
    (read back with ``load(path, with_extra=True)``). A path is written
    atomically: the archive goes to a temporary file in the same folder,
    which then replaces ``path``; if anything fails, ``path`` is untouched
    (an older model there survives) and no temporary file is left.
    """
    from sklearn.utils.validation import check_is_fitted

    if type(estimator).__name__ not in _ALLOWED:
        raise TypeError(f"save handles {sorted(_ALLOWED)}, got {type(estimator).__name__}")
    check_is_fitted(estimator)
    target = None if hasattr(path, "write") else _target_path(path, "writing")
    arrays: dict[str, np.ndarray] = {}
    model = _encode_model(estimator, arrays, "")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "softxent_version": softxent.__version__,
        "model": model,
        "arrays": {
            k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _checksum(a)} for k, a in arrays.items()
        },
    }
    if extra is not None:
        if not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict of JSON values, got {type(extra).__name__}")
        meta["extra"] = extra
    try:
        document = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot save: extra holds a value JSON cannot store ({exc})") from None
    payload = dict(arrays)
    payload[_META] = np.frombuffer(document.encode("utf-8"), dtype=np.uint8)
    if target is None:
        np.savez(path, **payload)
        return
    # Write beside the target, then rename: a crash never leaves a half-written model, and a
    # failed save never replaces a good one. O_EXCL with a random name: no clash with another
    # writer; mode 0o666 lets the umask decide the permissions, as for any new file.
    folder = os.path.dirname(os.path.abspath(target))
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot save a model to {target!r}: {exc.strerror}", target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------------- decoding

_TOP_KEYS = {"format", "format_version", "softxent_version", "model", "arrays", "extra"}
_MODEL_KEYS = {"estimator", "params", "dropped_params", "attributes"}
_LINEAR_NAMES = {"SoftmaxRegression", "SigmoidRegression"}


def _fail(source: str, what: str) -> ModelFileError:
    return ModelFileError(f"cannot load a softxent model from {source}: {what}")


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class _Decoder:
    """Builds the model from checked metadata and arrays; each mistake is a FileProblem naming its field."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def model(self, model: Any, field: str, allowed: set[str]) -> Any:
        if not isinstance(model, dict):
            raise FileProblem(f"the model description {field} is {short(model)}, not a JSON object")
        missing = {"estimator", "params", "attributes"} - set(model)
        if missing:
            raise FileProblem(f"the model description is incomplete: {field} lacks {sorted(missing)}")
        if set(model) - _MODEL_KEYS:
            raise FileProblem(f"{field} has unknown entries {sorted(set(model) - _MODEL_KEYS)}")
        registry = _registry()
        name = model["estimator"]
        if not isinstance(name, str) or name not in registry:
            raise FileProblem(f"unknown estimator {short(name)}; this softxent knows {sorted(registry)}")
        if name not in allowed:
            raise FileProblem(f"{field}.estimator is {name!r}; here it must be one of {sorted(allowed)}")
        cls = registry[name]
        est = cls(**self.params(model["params"], model.get("dropped_params", []), cls, f"{field}.params"))
        try:  # the estimator's own parameter rules, those of fit
            est._check_params()
        except (TypeError, ValueError) as exc:
            raise FileProblem(f"{field}.params: {exc}") from None
        attributes = model["attributes"]
        if not isinstance(attributes, dict):
            raise FileProblem(f"{field}.attributes is {short(attributes)}, not a JSON object")
        unknown = set(attributes) - _ALLOWED[name]
        if unknown:
            raise FileProblem(f"{name} has no fitted attributes {sorted(unknown)}")
        for attr, value in attributes.items():
            nested = _LINEAR_NAMES if (name, attr) == ("AutoClassifier", "head_") else None
            setattr(est, attr, self.value(value, f"{field}.attributes.{attr}", nested))
        try:
            check_fitted(est, name)
        except FileProblem as exc:
            raise FileProblem(f"{field}: {exc}") from None
        return est

    def params(self, params: Any, dropped: Any, cls: type, field: str) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise FileProblem(f"{field} is {short(params)}, not a JSON object")
        allowed = set(cls().get_params(deep=False))
        unknown = set(params) - allowed
        if unknown:
            raise FileProblem(f"{cls.__name__} has no parameters {sorted(unknown)}")
        if not isinstance(dropped, list) or not all(isinstance(d, str) and d in allowed for d in dropped):
            raise FileProblem(
                f"{field[: -len('params')]}dropped_params is {short(dropped)}, not a list of parameter names"
            )
        out = {}
        for key, value in params.items():
            if key == "dtype" and value in ("float32", "float64"):
                value = np.dtype(value).type
            elif key == "class_weight" and isinstance(value, dict):
                pairs = value.get("pairs") if set(value) == {"pairs"} else None
                if not isinstance(pairs, list) or not all(
                    isinstance(p, list) and len(p) == 2 and isinstance(p[0], (bool, int, float, str)) for p in pairs
                ):
                    raise FileProblem(
                        f"{field}.class_weight is {short(value)}, not {{'pairs': [[class, weight], ...]}}"
                    )
                value = {k: w for k, w in pairs}
            elif not _is_json_scalar(value):
                raise FileProblem(f"{field}.{key} is {short(value)}, not a number, string, boolean or null")
            out[key] = value
        return out

    def value(self, value: Any, field: str, nested: set[str] | None) -> Any:
        if not isinstance(value, dict) or not value:
            raise FileProblem(f"{field} is {short(value)}, not an encoded value")
        keys = set(value)
        if keys == {"array"}:
            key = value["array"]
            if not isinstance(key, str) or key not in self.arrays:
                raise FileProblem(f"{field} names the array {short(key)}, which the file does not hold")
            if key in self.used:
                raise FileProblem(f"{field} names the array {key!r}, which another attribute already uses")
            self.used.add(key)
            return self.arrays[key]
        if keys == {"object_array", "shape"}:
            items, shape = value["object_array"], value["shape"]
            if not isinstance(items, list) or not all(isinstance(v, (bool, int, float, str)) for v in items):
                raise FileProblem(f"{field} is {short(items)}, not a list of numbers and strings")
            if shape != [len(items)]:
                raise FileProblem(f"{field} has shape {short(shape)} for {len(items)} values")
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out
        if keys == {"head_choice"}:
            hc = value["head_choice"]
            fields = {"head", "n_classes", "add_other_class", "reason"}
            if not isinstance(hc, dict) or set(hc) != fields:
                raise FileProblem(f"{field} is {short(hc)}, not an object of {sorted(fields)}")
            return HeadChoice(hc["head"], hc["n_classes"], hc["add_other_class"], hc["reason"])
        if keys == {"dtype"}:
            try:
                dtype = np.dtype(value["dtype"]) if isinstance(value["dtype"], str) else None
            except TypeError:
                dtype = None
            if dtype is None or dtype.kind not in "biuf":
                raise FileProblem(
                    f"{field} is the dtype {short(value['dtype'])}, not a boolean, integer or float dtype"
                )
            return dtype
        if keys == {"model"}:
            if nested is None:
                raise FileProblem(f"{field} holds a model, which only AutoClassifier.head_ may")
            return self.model(value["model"], field, nested)
        if keys == {"list"}:
            items = value["list"]
            if not isinstance(items, list) or not all(_is_json_scalar(v) for v in items):
                raise FileProblem(f"{field} is {short(items)}, not a list of numbers")
            return list(items)
        if keys == {"value"}:
            if not _is_json_scalar(value["value"]):
                raise FileProblem(f"{field} is {short(value['value'])}, not a number, string, boolean or null")
            return value["value"]
        raise FileProblem(f"{field} has an unknown encoding {short(sorted(keys))}")


def _read_meta(archive: ModelArchive) -> dict[str, Any]:
    if _META not in archive.keys:
        raise FileProblem("no softxent metadata (__meta__): not a model file written by save")
    raw = archive.read(_META, np.dtype(np.uint8), None)
    if raw.ndim != 1:
        raise FileProblem(f"the metadata is an array of shape {raw.shape}, not bytes")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileProblem(f"the metadata is not valid JSON ({exc}); the file was modified") from None
    except RecursionError:
        raise FileProblem("the metadata is not valid JSON: it is nested too deeply; the file was modified") from None
    if not isinstance(meta, dict):
        raise FileProblem(f"the metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise FileProblem(f"the metadata names format {short(meta.get('format'))}, not {FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FileProblem(f"the format version {short(version)} is not an integer >= 1")
    if version > FORMAT_VERSION:
        raise FileProblem(
            f"it was written in format version {version} (by softxent {short(meta.get('softxent_version', '?'))}), "
            f"newer than the versions this softxent {softxent.__version__} reads (up to {FORMAT_VERSION}); "
            "upgrade softxent"
        )
    if set(meta) - _TOP_KEYS:
        raise FileProblem(f"the metadata has unknown entries {sorted(set(meta) - _TOP_KEYS)}")
    if not isinstance(meta.get("softxent_version"), str):
        raise FileProblem(f"softxent_version is {short(meta.get('softxent_version'))}, not a string")
    extra = meta.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise FileProblem(f"the extra metadata is a {type(extra).__name__}, not a JSON object")
    return meta


def _read_arrays(archive: ModelArchive, listed: Any) -> dict[str, np.ndarray]:
    if not isinstance(listed, dict):
        raise FileProblem(f"the metadata's arrays entry is {short(listed)}, not a JSON object")
    members = archive.keys - {_META}
    if set(listed) != members:
        raise FileProblem(
            f"the arrays {sorted(members)} differ from those the metadata lists {sorted(listed)}: "
            f"missing {sorted(set(listed) - members)}, not listed {sorted(members - set(listed))}"
        )
    arrays = {}
    for key, entry in listed.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "sha256"}:
            raise FileProblem(f"the metadata lists array {key!r} as {short(entry)}, not {{dtype, shape, sha256}}")
        dtype, shape = check_listing(key, entry["dtype"], entry["shape"])
        arr = archive.read(key, dtype, shape)  # checked against the listing and the file before allocation
        if _checksum(arr) != entry["sha256"]:
            raise FileProblem(f"array {key!r} does not match its SHA-256 checksum: the file was modified or damaged")
        arrays[key] = arr
    return arrays


def _file_size(fh: Any) -> int:
    try:
        return os.fstat(fh.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # a file object without a descriptor (BytesIO)
        here = fh.tell()
        end = fh.seek(0, os.SEEK_END)
        fh.seek(here)
        return end


def load(path: Any, *, with_extra: bool = False) -> Any:
    """Read a model written by ``save``: a path or a binary file object.

    Never unpickles or imports anything from the file, and allocates nothing
    before the sizes the file declares have been checked against the file.
    Every parameter and fitted attribute is checked with the rules of
    ``fit``. With ``with_extra=True`` returns ``(model, extra)``, where
    ``extra`` is the dict given to ``save`` (None when there was none).

    Raises
    ------
    ModelFileError
        If the file is truncated, not a softxent model, modified (a checksum,
        a shape, a parameter or an attribute is wrong), or written in a newer
        format version; the message names the field and its value.
    FileNotFoundError
        If ``path`` does not exist.
    TypeError
        If ``path`` is neither a path nor a file object.

    Examples
    --------
    >>> import io
    >>> from sklearn.datasets import load_iris
    >>> from softxent.models import SoftmaxRegression, load
    >>> X, y = load_iris(return_X_y=True)
    >>> model = SoftmaxRegression().fit(X, y)
    >>> buffer = io.BytesIO(); model.save(buffer); _ = buffer.seek(0)
    >>> (load(buffer).predict(X) == model.predict(X)).all()
    np.True_
    """
    is_file = hasattr(path, "read")
    source = "the given file object" if is_file else repr(_target_path(path, "reading"))
    try:
        with contextlib.ExitStack() as stack:
            fh = path if is_file else stack.enter_context(open(os.fspath(path), "rb"))
            try:
                archive = ModelArchive(fh, _file_size(fh))
            except FileProblem:
                raise
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                EOFError,
                OSError,
                ValueError,
                NotImplementedError,
            ) as exc:
                raise FileProblem(
                    f"the file is truncated or is not an .npz archive ({type(exc).__name__}: {exc})"
                ) from None
            stack.callback(archive.close)
            try:
                meta = _read_meta(archive)
                arrays = _read_arrays(archive, meta.get("arrays"))
            except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
                # a member whose data is cut short or damaged (CRC), at an offset outside the file,
                # or that zipfile cannot read
                raise FileProblem(f"the file is truncated or damaged ({type(exc).__name__}: {exc})") from None
            decoder = _Decoder(arrays)
            model = decoder.model(meta.get("model"), "model", set(_ALLOWED))
            unused = set(arrays) - decoder.used
            if unused:
                raise FileProblem(f"the arrays {sorted(unused)} are listed but no attribute uses them")
    except FileProblem as exc:
        raise _fail(source, str(exc)) from None
    except IsADirectoryError as exc:
        raise _fail(source, f"it is a folder, not a file ({exc.strerror})") from None
    return (model, meta.get("extra")) if with_extra else model
