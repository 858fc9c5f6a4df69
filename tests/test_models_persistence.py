"""Saving and loading models without pickle: round trips, and every kind of bad file.

A round trip must give identical predictions (bit for bit); a truncated,
modified, foreign or newer-version file must raise ModelFileError naming the
problem; nothing in the file may be unpickled. Standard pickling keeps working.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_iris, make_multilabel_classification  # noqa: E402

from softxent.models import (  # noqa: E402
    FORMAT_VERSION,
    AutoClassifier,
    ModelFileError,
    SigmoidRegression,
    SoftmaxRegression,
    load,
)


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def multilabel():
    return make_multilabel_classification(n_samples=120, n_features=6, n_classes=4, random_state=0)


def _models(iris, multilabel):
    X, y = iris
    Xm, Ym = multilabel
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    sets = [{("a", "b", "c", "d")[j] for j in np.flatnonzero(row)} for row in Ym]
    return {
        "softmax": (SoftmaxRegression(C=0.5, class_weight={0: 2.0, 1: 1.0, 2: 1.0}).fit(X, y), X),
        "softmax, string classes, float32": (SoftmaxRegression(dtype=np.float32).fit(X, names), X),
        "softmax, binary": (SoftmaxRegression().fit(X[50:], y[50:]), X),
        "softmax, adam": (SoftmaxRegression(solver="adam", max_iter=5, random_state=0).fit(X, y), X),
        "sigmoid, indicator": (SigmoidRegression(threshold=0.3).fit(Xm, Ym), Xm),
        "sigmoid, label sets": (SigmoidRegression().fit(Xm, sets), Xm),
        "sigmoid, one-vs-rest": (SigmoidRegression().fit(X, y), X),
        "auto, sigmoid": (AutoClassifier().fit(Xm, sets), Xm),
        "auto, other": (AutoClassifier().fit(X, [set() if c == 2 else {c} for c in y]), X),
    }


CASES = [
    "softmax", "softmax, string classes, float32", "softmax, binary", "softmax, adam",
    "sigmoid, indicator", "sigmoid, label sets", "sigmoid, one-vs-rest", "auto, sigmoid", "auto, other",
]  # fmt: skip


@pytest.fixture(scope="module")
def models(iris, multilabel):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # adam with max_iter=5, on purpose
        return _models(iris, multilabel)


@pytest.mark.parametrize("case", CASES)
def test_round_trip_gives_identical_predictions(models, case, tmp_path):
    model, X = models[case]
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params(deep=False) == model.get_params(deep=False)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
    np.testing.assert_array_equal(np.asarray(loaded.classes_), np.asarray(model.classes_))
    assert loaded.n_features_in_ == model.n_features_in_


@pytest.mark.parametrize("case", CASES)
def test_pickle_still_works(models, case):
    model, X = models[case]
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_any_file_name_works_and_a_crash_leaves_no_partial_file(models, tmp_path):
    model, X = models["softmax"]
    path = tmp_path / "model.softxent"  # np.savez would append .npz to a bare name; save does not
    model.save(str(path))
    assert path.exists() and not (tmp_path / "model.softxent.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.softxent"]
    np.testing.assert_array_equal(load(path).predict(X), model.predict(X))


def test_loaded_adam_model_continues_partial_fit(models, iris):
    model, X = models["softmax, adam"]
    loaded = load(_bytes(model))
    loaded.partial_fit(*iris)
    assert loaded.n_iter_ == model.n_iter_ + 1


def test_feature_names_are_kept(iris):
    """scikit-learn keeps column names as an object array of str: saved as JSON, not pickled."""
    model = SoftmaxRegression().fit(*iris)
    model.feature_names_in_ = np.array(["sepal length", "sepal width", "petal length", "petal width"], dtype=object)
    again = load(_bytes(model))
    assert again.feature_names_in_.dtype == object
    np.testing.assert_array_equal(again.feature_names_in_, model.feature_names_in_)


def test_unfitted_model_cannot_be_saved():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SoftmaxRegression().save(io.BytesIO())


def test_callback_is_dropped_and_listed(iris):
    model = SoftmaxRegression(callback=lambda progress: None).fit(*iris)
    buffer = _bytes(model)
    meta = _meta(buffer.getvalue())
    assert meta["model"]["dropped_params"] == ["callback"]
    assert load(buffer).callback is None


# --------------------------------------------------------------------------- bad files


def _bytes(model) -> io.BytesIO:
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    return buffer


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def _rezip(members: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    out.seek(0)
    return out


def _meta(data: bytes) -> dict:
    return json.loads(np.load(io.BytesIO(data), allow_pickle=False)["__meta__"].tobytes())


def _with_meta(data: bytes, edit) -> io.BytesIO:
    """A copy of the file whose metadata was changed by ``edit`` (the arrays untouched)."""
    members = _members(data)
    meta = _meta(data)
    edit(meta)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    members["__meta__.npy"] = buf.getvalue()
    return _rezip(members)


@pytest.fixture
def saved(models) -> bytes:
    return _bytes(models["softmax"][0]).getvalue()


def test_truncated_file(saved):
    for cut in (len(saved) // 2, len(saved) - 10, 30):
        with pytest.raises(ModelFileError, match="truncated or is not an .npz archive"):
            load(io.BytesIO(saved[:cut]))


def test_empty_and_foreign_files(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ModelFileError, match="truncated"):
        load(tmp_path / "empty.npz")
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    with pytest.raises(ModelFileError, match="no softxent metadata"):
        load(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_modified_array_fails_its_checksum(saved):
    members = _members(saved)
    raw = bytearray(members["coef_.npy"])
    raw[-3] ^= 0x01  # one bit of one coefficient
    members["coef_.npy"] = bytes(raw)
    with pytest.raises(ModelFileError, match="'coef_' does not match its SHA-256 checksum"):
        load(_rezip(members))


def test_removed_or_added_array(saved):
    members = _members(saved)
    del members["intercept_.npy"]
    with pytest.raises(ModelFileError, match="differ from those the metadata lists"):
        load(_rezip(members))
    members = _members(saved)
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    members["extra.npy"] = buf.getvalue()
    with pytest.raises(ModelFileError, match="differ from those the metadata lists"):
        load(_rezip(members))


def test_pickled_object_array_is_never_loaded(saved):
    """An attacker's object array (a pickle inside the .npy) is refused by allow_pickle=False."""
    members = _members(saved)
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    members["coef_.npy"] = buf.getvalue()
    with pytest.raises(ModelFileError, match="pickle"):
        load(_rezip(members))


def test_metadata_that_is_not_json(saved):
    members = _members(saved)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(b"{not json", dtype=np.uint8))
    members["__meta__.npy"] = buf.getvalue()
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(_rezip(members))


def test_newer_format_version(saved):
    def newer(meta):
        meta["format_version"] = FORMAT_VERSION + 1
        meta["softxent_version"] = "9.0.0"

    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1} .*upgrade softxent"):
        load(_with_meta(saved, newer))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(format="something.else"), "names format 'something.else'"),
        (lambda m: m.update(format_version="1"), "not an integer"),
        (lambda m: m["model"].update(estimator="os.system"), "unknown estimator 'os.system'"),
        (lambda m: m["model"]["params"].update(C=-1.0, evil=1), r"has no parameters \['evil'\]"),
        (lambda m: m["model"]["attributes"].update(__class__={"value": 1}), "no fitted attributes"),
        (lambda m: m["model"]["attributes"].update(n_features_in_={"value": 5}), "disagree"),
        (lambda m: m["model"].pop("attributes"), "incomplete"),
    ],
    ids=["format", "version type", "estimator", "parameter", "attribute", "shapes", "incomplete"],
)
def test_tampered_metadata(saved, edit, match):
    with pytest.raises(ModelFileError, match=match):
        load(_with_meta(saved, edit))


def test_metadata_records_what_the_format_promises(saved):
    meta = _meta(saved)
    assert meta["format"] == "softxent.models" and meta["format_version"] == FORMAT_VERSION
    assert meta["model"]["estimator"] == "SoftmaxRegression"
    assert meta["model"]["params"]["dtype"] == "float64"
    assert set(meta["arrays"]) == {"classes_", "coef_", "intercept_"}
    assert all(len(a["sha256"]) == 64 for a in meta["arrays"].values())


# --------------------------------------------------------------------------- atomic save, checked load


def test_a_failed_save_keeps_the_old_model_and_leaves_no_temporary_file(models, tmp_path, monkeypatch):
    import softxent.models._persistence as persistence

    model, X = models["softmax"]
    path = tmp_path / "model.npz"
    model.save(path)
    good = path.read_bytes()

    def savez_that_fails_midway(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persistence.np, "savez", savez_that_fails_midway)
    with pytest.raises(OSError, match="No space left on device"):
        models["softmax, binary"][0].save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path).predict(X), model.predict(X))


def test_save_replaces_a_model_and_creates_files_as_open_does(models, tmp_path):
    (model, X), (other, _) = models["softmax"], models["softmax, binary"]
    path = tmp_path / "model.npz"
    model.save(path)
    other.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    np.testing.assert_array_equal(load(path).predict(X), other.predict(X))
    # The permissions are those of any new file (the umask decides), not mkstemp's 0600.
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode


def test_labels_beyond_int64_and_float_labels_round_trip_exactly(tmp_path):
    """2**63 + 1 is not reported as -9223372036854775808, nor rounded to 2**63, before or after a save."""
    X = np.array([[0.0], [0.1], [1.0], [1.1], [2.0], [2.1]])
    for labels in ([2**63 + 1, 2**63 + 1, 5, 5, -(2**63) - 5, -(2**63) - 5], [1e20, 1e20, 1.0, 1.0, 2.0, 2.0]):
        model = SoftmaxRegression(C=100.0).fit(X, labels)
        assert model.predict(X).tolist() == labels
        model.save(tmp_path / "m.npz")
        again = load(tmp_path / "m.npz")
        assert again.predict(X).tolist() == labels
        assert again.classes_.tolist() == sorted(set(labels))


def test_a_loaded_model_passes_the_checks_of_fit(models, tmp_path):
    """Every model that save writes is accepted by load's checks, parameters and attributes alike."""
    for case in CASES:
        model, X = models[case]
        model.save(tmp_path / "m.npz")
        loaded = load(tmp_path / "m.npz")
        loaded._check_params()
        assert loaded.get_params(deep=False).keys() == model.get_params(deep=False).keys()
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_a_header_that_lies_is_refused_before_any_allocation(saved, monkeypatch):
    """The data of a member is read into a buffer only after its header matched the metadata and its size."""
    import softxent.models._archive as archive

    members = _members(saved)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**13,)})
    members["coef_.npy"] = head.getvalue() + members["coef_.npy"][-96:]
    sizes = []
    real = bytearray
    monkeypatch.setattr(archive, "bytearray", lambda n: sizes.append(n) or real(n), raising=False)
    with pytest.raises(ModelFileError, match=r"member 'coef_' has shape \(10000000000000,\), the metadata lists"):
        load(_rezip(members))
    assert max(sizes) < len(saved)


def test_the_extra_document_must_be_an_object(saved):
    with pytest.raises(ModelFileError, match="the extra metadata is a list, not a JSON object"):
        load(_with_meta(saved, lambda m: m.update(extra=[1, 2])), with_extra=True)
