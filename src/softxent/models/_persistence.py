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

Loading executes no code from the file: the estimator class is looked up in
a fixed table, attributes must be among those the class defines, every array
must match its SHA-256 and the shapes must agree with each other. A
truncated file, a modified array or document, or a file from a newer format
version raises :class:`ModelFileError` with what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from typing import Any

import numpy as np

import softxent

__all__ = ["FORMAT_VERSION", "ModelFileError", "load", "save"]

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
        "classes_", "n_features_in_", "feature_names_in_", "head_", "head_choice_", "target_type_",
        "labels_", "_indicator_dtype",
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
    from ._heads import HeadChoice

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


def save(estimator: Any, path: Any, *, extra: dict[str, Any] | None = None) -> None:
    """Write a fitted estimator to ``path`` (a path or a binary file object); see the module docstring.

    ``extra`` is an optional JSON-serialisable dict stored beside the model
    (read back with ``load(path, with_extra=True)``).
    """
    from sklearn.utils.validation import check_is_fitted

    if type(estimator).__name__ not in _ALLOWED:
        raise TypeError(f"save handles {sorted(_ALLOWED)}, got {type(estimator).__name__}")
    check_is_fitted(estimator)
    arrays: dict[str, np.ndarray] = {}
    model = _encode_model(estimator, arrays, "")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "softxent_version": softxent.__version__,
        "model": model,
        "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _checksum(a)} for k, a in arrays.items()},
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
    if hasattr(path, "write"):
        np.savez(path, **payload)
        return
    # Write beside the target, then rename: a crash never leaves a half-written model.
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------- decoding


def _fail(source: str, what: str) -> ModelFileError:
    return ModelFileError(f"cannot load a softxent model from {source}: {what}")


def _decode_value(value: Any, attr: str, arrays: dict[str, np.ndarray], source: str) -> Any:
    from ._heads import HeadChoice

    if not isinstance(value, dict) or len(value) not in (1, 2):
        raise _fail(source, f"attribute {attr!r} is malformed")
    if "array" in value:
        key = value["array"]
        if key not in arrays:
            raise _fail(source, f"array {key!r} of attribute {attr!r} is missing")
        return arrays[key]
    if "object_array" in value:
        items = value["object_array"]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(value.get("shape", [len(items)]))
    if "head_choice" in value:
        hc = value["head_choice"]
        return HeadChoice(hc["head"], int(hc["n_classes"]), bool(hc["add_other_class"]), str(hc["reason"]))
    if "dtype" in value:
        return np.dtype(str(value["dtype"]))
    if "model" in value:
        return _decode_model(value["model"], arrays, source)
    if "list" in value:
        return list(value["list"])
    if "value" in value:
        return value["value"]
    raise _fail(source, f"attribute {attr!r} has an unknown encoding {sorted(value)}")


def _decode_model(model: Any, arrays: dict[str, np.ndarray], source: str) -> Any:
    if not isinstance(model, dict) or not {"estimator", "params", "attributes"} <= set(model):
        raise _fail(source, "the model description is incomplete")
    registry = _registry()
    name = model["estimator"]
    if name not in registry:
        raise _fail(source, f"unknown estimator {name!r}; this softxent knows {sorted(registry)}")
    cls = registry[name]
    params = dict(model["params"])
    allowed_params = set(cls().get_params(deep=False))
    unknown = set(params) - allowed_params
    if unknown:
        raise _fail(source, f"{name} has no parameters {sorted(unknown)}")
    if "dtype" in params:
        params["dtype"] = np.dtype(params["dtype"]).type
    cw = params.get("class_weight")
    if isinstance(cw, dict):
        params["class_weight"] = {k: v for k, v in cw["pairs"]}
    est = cls(**params)
    extra = set(model["attributes"]) - _ALLOWED[name]
    if extra:
        raise _fail(source, f"{name} has no fitted attributes {sorted(extra)}")
    for attr, value in model["attributes"].items():
        setattr(est, attr, _decode_value(value, attr, arrays, source))
    _check_consistent(est, source)
    return est


def _check_consistent(est: Any, source: str) -> None:
    """Shapes and dtypes that must agree: a document edited by hand fails here."""
    if hasattr(est, "coef_"):
        coef, intercept = est.coef_, est.intercept_
        if coef.dtype not in (np.float32, np.float64) or intercept.dtype != coef.dtype:
            raise _fail(source, f"coef_ and intercept_ must be float32 or float64, got {coef.dtype} and {intercept.dtype}")
        if coef.ndim != 2 or coef.shape[1] != est.n_features_in_ or intercept.shape != (coef.shape[0],):
            raise _fail(
                source,
                f"coef_ {coef.shape}, intercept_ {intercept.shape} and n_features_in_={est.n_features_in_} disagree",
            )
        n_classes = len(est.classes_)
        expected = 1 if n_classes == 2 and getattr(est, "target_type_", "binary") == "binary" else n_classes
        if coef.shape[0] != expected:
            raise _fail(source, f"coef_ has {coef.shape[0]} rows for {n_classes} classes")


def load(path: Any, *, with_extra: bool = False) -> Any:
    """Read a model written by ``save``: a path or a binary file object.

    Never unpickles or imports anything from the file. With
    ``with_extra=True`` returns ``(model, extra)``, where ``extra`` is the
    dict given to ``save`` (None when there was none).

    Raises
    ------
    ModelFileError
        If the file is truncated, not a softxent model, modified (a checksum
        or a shape does not match), or written in a newer format version.
    FileNotFoundError
        If ``path`` does not exist.

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
    source = repr(os.fspath(path)) if not hasattr(path, "read") else "the given file object"
    try:
        # The file is opened here, not by np.load: np.load leaks its own file
        # handle when the zip directory of a truncated file fails to parse.
        with contextlib.ExitStack() as stack:
            fh = path if hasattr(path, "read") else stack.enter_context(open(os.fspath(path), "rb"))
            with np.load(fh, allow_pickle=False) as npz:
                if _META not in npz.files:
                    raise _fail(source, "no softxent metadata (__meta__): not a model file written by save")
                arrays = {k: npz[k] for k in npz.files}
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise _fail(source, f"the file is truncated or is not an .npz archive ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(source, f"the metadata is not valid JSON ({exc}); the file was modified") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(source, f"the metadata names format {meta.get('format') if isinstance(meta, dict) else None!r}, not {FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(source, f"the format version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise _fail(
            source,
            f"it was written in format version {version} (by softxent {meta.get('softxent_version', '?')}), "
            f"newer than the versions this softxent {softxent.__version__} reads (up to {FORMAT_VERSION}); "
            "upgrade softxent",
        )
    listed = meta.get("arrays", {})
    if set(listed) != set(arrays):
        raise _fail(source, f"the arrays {sorted(arrays)} differ from those the metadata lists {sorted(listed)}")
    for key, arr in arrays.items():
        if _checksum(arr) != listed[key].get("sha256"):
            raise _fail(source, f"array {key!r} does not match its SHA-256 checksum: the file was modified or damaged")
    try:
        model = _decode_model(meta.get("model"), arrays, source)
    except ModelFileError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _fail(source, f"the model description is invalid ({type(exc).__name__}: {exc})") from None
    if not with_extra:
        return model
    extra = meta.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise _fail(source, f"the extra metadata is a {type(extra).__name__}, not a JSON object")
    return model, extra

