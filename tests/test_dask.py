"""The estimators on Dask collections: the same fit as in memory, lazy predictions, clear errors.

Every fit here is compared with the in-memory fit of the same data (the
oracle): float64, the objective within 1e-8 relative, the coefficients to the
solver's tolerance. The cluster is one in-process ``LocalCluster`` (two
workers of one thread) for the whole module; the tests that need worker
processes (memory on the client, a killed worker) are in test_dask_cluster.py.
"""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="the dask extra is not installed")
dd = pytest.importorskip("dask.dataframe", reason="the dask extra is not installed")
distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
pd = pytest.importorskip("pandas", reason="pandas is not installed")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from softxent.models import AutoClassifier, SigmoidRegression, SoftmaxRegression, load  # noqa: E402

TOL = 1e-9  # tight: both fits end well within the 1e-8 objective comparison below


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=50
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _data(n=500, d=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 1] = X[:, 0] + 0.01 * X[:, 1]  # strongly correlated: the dense preconditioner is used
    X[:, 2] = 100.0 * X[:, 2] + 5.0  # a badly scaled feature
    W = rng.normal(size=(k, d)) / np.array([1, 1, 100, 1, 1, 1][:d])
    y = np.argmax(X @ W.T + rng.gumbel(size=(n, k)), axis=1)
    return X, y


# Uneven row chunks: one of a single row, one that lacks some classes (the data is sorted by class
# in the "sorted" case, so whole chunks hold one or two classes).
CHUNKINGS = {
    "even": (125, 125, 125, 125),
    "uneven": (1, 200, 37, 262),
    "sorted": (60, 1, 139, 150, 150),
}


def _same_fit(model_dask, model_mem, rtol=1e-8):
    f_dask, f_mem = model_dask.loss_curve_[-1], model_mem.loss_curve_[-1]
    assert abs(f_dask - f_mem) <= rtol * abs(f_mem), (f_dask, f_mem)
    scale = max(1.0, float(np.abs(model_mem.coef_).max()))
    np.testing.assert_allclose(model_dask.coef_, model_mem.coef_, atol=1e-5 * scale)
    np.testing.assert_allclose(model_dask.intercept_, model_mem.intercept_, atol=1e-5 * scale)
    assert type(model_dask.coef_) is np.ndarray and model_dask.coef_.dtype == model_mem.coef_.dtype


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_softmax_integer_labels_match_in_memory(client, chunking):
    X, y = _data()
    if chunking == "sorted":
        order = np.argsort(y, kind="stable")
        X, y = X[order], y[order]
    rows = CHUNKINGS[chunking]
    model = SoftmaxRegression(tol=TOL).fit(da.from_array(X, chunks=(rows, 3)), da.from_array(y, chunks=rows))
    reference = SoftmaxRegression(tol=TOL).fit(X, y)
    _same_fit(model, reference)
    np.testing.assert_array_equal(model.classes_, reference.classes_)


def test_softmax_string_labels_with_class_and_sample_weights(client):
    X, y = _data(seed=1)
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    sw = np.random.default_rng(2).uniform(0.0, 3.0, size=len(y))
    params = dict(tol=TOL, class_weight={"bee": 2.5, "dog": 0.5}, C=0.3)
    rows = CHUNKINGS["uneven"]
    model = SoftmaxRegression(**params).fit(
        da.from_array(X, chunks=(rows, -1)), da.from_array(names, chunks=rows), sample_weight=da.from_array(sw, rows)
    )
    reference = SoftmaxRegression(**params).fit(X, names, sample_weight=sw)
    _same_fit(model, reference)
    np.testing.assert_array_equal(model.classes_, reference.classes_)


@pytest.mark.parametrize("k", [2, 4])
def test_softmax_balanced_class_weight_and_binary(client, k):
    X, y = _data(k=k, seed=3)
    rows = CHUNKINGS["uneven"]
    params = dict(tol=TOL, class_weight="balanced", fit_intercept=k == 2)
    model = SoftmaxRegression(**params).fit(da.from_array(X, chunks=(rows, -1)), da.from_array(y, chunks=rows))
    reference = SoftmaxRegression(**params).fit(X, y)
    _same_fit(model, reference)
    assert model.coef_.shape == reference.coef_.shape


def test_float32_matches_in_memory_float32(client):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 6))  # well scaled: float32 reaches its documented end point
    y = np.argmax(X @ rng.normal(size=(6, 4)) + rng.gumbel(size=(500, 4)), axis=1)
    Xd = da.from_array(X.astype(np.float32), chunks=(100, -1))
    model = SoftmaxRegression(dtype=np.float32).fit(Xd, da.from_array(y, chunks=100))
    reference = SoftmaxRegression(dtype=np.float32).fit(X.astype(np.float32), y)
    _same_fit(model, reference, rtol=1e-5)  # float32: the documented 1e-5 end point
    assert model.coef_.dtype == np.float32


def _indicator(n=400, L=4, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    Y = (X @ rng.normal(size=(5, L)) + rng.normal(size=(n, L)) > 0.5).astype(np.int64)
    return X, Y


@pytest.mark.parametrize("class_weight", [None, "balanced", {1: 3.0}])
def test_sigmoid_indicator_matches_in_memory(client, class_weight):
    X, Y = _indicator()
    rows = (1, 150, 49, 200)
    model = SigmoidRegression(tol=TOL, class_weight=class_weight).fit(
        da.from_array(X, chunks=(rows, -1)), da.from_array(Y, chunks=(rows, -1))
    )
    reference = SigmoidRegression(tol=TOL, class_weight=class_weight).fit(X, Y)
    _same_fit(model, reference)
    assert model.target_type_ == "multilabel-indicator"
    pred = model.predict(da.from_array(X, chunks=(rows, -1)))
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), reference.predict(X))


def _as_sets(Y, names=("dance", "pop", "rock", "vocal")):
    return [{names[j] for j in np.flatnonzero(row)} for row in Y]


def test_sigmoid_label_sets_match_in_memory(client):
    X, Y = _indicator(seed=19)
    sets = _as_sets(Y)
    model = SigmoidRegression(tol=TOL).fit(da.from_array(X, chunks=((1, 199, 200), -1)), sets)
    reference = SigmoidRegression(tol=TOL).fit(X, sets)
    _same_fit(model, reference)
    np.testing.assert_array_equal(model.classes_, reference.classes_)
    np.testing.assert_array_equal(model.predict(da.from_array(X, chunks=100)).compute(), reference.predict(X))


def test_sigmoid_one_vs_rest_labels(client):
    X, y = _data(seed=6)
    model = SigmoidRegression(tol=TOL).fit(da.from_array(X, chunks=(77, -1)), da.from_array(y, chunks=77))
    reference = SigmoidRegression(tol=TOL).fit(X, y)
    _same_fit(model, reference)
    assert model.target_type_ == reference.target_type_ == "multiclass"


def _other_indicator(n=400, L=3, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    codes = np.argmax(X[:, :4] @ rng.normal(size=(4, L + 1)), axis=1)  # L + 1: the last is "no label"
    Y = np.zeros((n, L), dtype=np.int64)
    rows = codes < L
    Y[np.flatnonzero(rows), codes[rows]] = 1
    return X, Y


@pytest.mark.parametrize("case", ["labels", "exclusive", "other", "multi", "other_sets", "multi_sets"])
def test_auto_classifier_chooses_each_head_as_in_memory(client, case):
    if case == "labels":
        X, y = _data(seed=8)
    elif case == "multi":
        X, y = _indicator(seed=9)
    else:
        X, y = _other_indicator(seed=10)
        if case == "exclusive":
            keep = y.any(axis=1)
            X, y = X[keep], y[keep]
    if case == "other_sets":
        X, y = _other_indicator(seed=10)
    elif case == "multi_sets":
        X, y = _indicator(seed=9)
    rows = (1, 99, len(X) - 100)
    Xd = da.from_array(X, chunks=(rows, -1))
    yd = da.from_array(y, chunks=(rows,) + ((y.shape[1],) if y.ndim == 2 else ()))
    if case.endswith("_sets"):  # a list of label sets stays on the client, as lists do
        y = yd = _as_sets(y)
    model = AutoClassifier(tol=TOL).fit(Xd, yd)
    reference = AutoClassifier(tol=TOL).fit(X, y)
    assert model.head_choice_ == reference.head_choice_
    _same_fit(model.head_, reference.head_)
    np.testing.assert_array_equal(model.classes_, reference.classes_)
    pred = model.predict(Xd)
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), reference.predict(X))
    np.testing.assert_allclose(model.predict_proba(Xd).compute(), reference.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "decision_function"])
@pytest.mark.parametrize("k", [2, 4])
def test_predictions_are_lazy_and_equal_in_memory(client, method, k):
    X, y = _data(k=k, seed=11)
    model = SoftmaxRegression().fit(X, y)
    Xd = da.from_array(X, chunks=((1, 250, 249), -1))
    out = getattr(model, method)(Xd)
    assert isinstance(out, da.Array)
    assert out.chunks[0] == (1, 250, 249)
    np.testing.assert_allclose(out.compute(), getattr(model, method)(X), rtol=1e-12, atol=1e-12)


def test_dataframe_inputs_and_feature_names(client):
    X, y = _data(seed=12)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    frame["label"] = np.array(["no", "yes", "maybe", "never"])[y]
    ddf = dd.from_pandas(frame, npartitions=3)
    features = [c for c in frame.columns if c != "label"]
    model = SoftmaxRegression(tol=TOL).fit(ddf[features], ddf["label"])
    reference = SoftmaxRegression(tol=TOL).fit(frame[features], frame["label"])
    _same_fit(model, reference)
    np.testing.assert_array_equal(model.feature_names_in_, reference.feature_names_in_)
    pred = model.predict(ddf[features])
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), reference.predict(frame[features]))


def test_saved_model_of_a_dask_fit_loads_and_predicts(client, tmp_path):
    X, y = _data(seed=13)
    model = SoftmaxRegression().fit(da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100))
    model.save(tmp_path / "m.npz")
    again = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_verbose_names_the_cluster(client, capsys):
    X, y = _data(seed=14)
    with pytest.warns(ConvergenceWarning):
        SoftmaxRegression(verbose=1, max_iter=2).fit(da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100))
    first = capsys.readouterr().out.splitlines()[0]
    assert "active distributed.Client" in first and client.scheduler.address in first


def test_warm_start_continues_from_the_dask_fit(client):
    X, y = _data(seed=15)
    Xd, yd = da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100)
    model = SoftmaxRegression(tol=TOL, warm_start=True).fit(Xd, yd)
    coef = model.coef_.copy()
    model.fit(Xd, yd)
    assert model.n_iter_ <= 2
    np.testing.assert_allclose(model.coef_, coef, atol=1e-6)


_READS: list[int] = []


def _read_part(i, X, y):
    """A stand-in for reading one Parquet part: X and y of one chunk from one call (counted)."""
    _READS.append(i)
    return X, y


def test_each_input_chunk_is_read_once(client):
    # X and y of a chunk come from one read, as from a Parquet part: the pass over the labels and the
    # blocks must share it (before, the labels' pass read every part and the blocks read them again).
    import dask

    X, y = _data(n=400, seed=19)
    rows = (150, 50, 200)
    bounds = np.cumsum((0,) + rows)
    xs, ys = [], []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = dask.delayed(_read_part, nout=2, pure=False)(i, X[lo:hi], y[lo:hi])
        xs.append(da.from_delayed(part[0], shape=(hi - lo, X.shape[1]), dtype=X.dtype))
        ys.append(da.from_delayed(part[1], shape=(hi - lo,), dtype=y.dtype))
    _READS.clear()
    model = SigmoidRegression(tol=TOL).fit(da.concatenate(xs), da.concatenate(ys) == 0)
    assert sorted(_READS) == [0, 1, 2]  # the client's process runs these in-process workers' tasks
    reference = SigmoidRegression(tol=TOL).fit(X, y == 0)
    _same_fit(model, reference)


def test_large_coefficients_travel_in_a_task_of_their_own(client, monkeypatch):
    # Above _INLINE_COEF_BYTES the coefficients go to one task whose result each worker fetches,
    # instead of riding in every worker's evaluation task: the same fit either way.
    from softxent.models import _dask_blocks

    X, y = _data(seed=20)
    Xd, yd = da.from_array(X, chunks=(CHUNKINGS["uneven"], -1)), da.from_array(y, chunks=CHUNKINGS["uneven"])
    inline = SoftmaxRegression(tol=TOL).fit(Xd, yd)
    monkeypatch.setattr(_dask_blocks, "_INLINE_COEF_BYTES", 0)
    separate = SoftmaxRegression(tol=TOL).fit(Xd, yd)
    _same_fit(separate, inline, rtol=1e-12)
    _same_fit(separate, SoftmaxRegression(tol=TOL).fit(X, y))


# --------------------------------------------------------------------------- errors


def _in_memory_error(fit, *args, **kwargs):
    with pytest.raises((ValueError, TypeError)) as info:
        fit(*args, **kwargs)
    return info.type, str(info.value)


def test_nan_in_a_later_chunk_is_the_in_memory_error(client):
    X, y = _data(seed=16)
    X[321, 4] = np.nan
    kind, message = _in_memory_error(SoftmaxRegression().fit, X, y)
    with pytest.raises(kind) as info:
        SoftmaxRegression().fit(da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100))
    assert str(info.value) == message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no Dask traceback chained


def test_negative_sample_weight_names_the_row(client):
    X, y = _data(seed=17)
    sw = np.ones(len(y))
    sw[250] = -1.0
    kind, message = _in_memory_error(SoftmaxRegression().fit, X, y, sample_weight=sw)
    with pytest.raises(kind) as info:
        SoftmaxRegression().fit(
            da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100), sample_weight=da.from_array(sw, 100)
        )
    assert "sample_weight must be finite and non-negative" in str(info.value) and "250" in str(info.value)
    assert "250" in message


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one_class", "at least 2 classes"),
        ("indicator_value", "y[7, 1] is 2"),
        ("rows", "same number of rows"),
        ("softmax_2d", "must be 1-D class labels"),
        ("adam", "solver='lbfgs' only"),
        ("zero_weights", "zero for every row"),
        ("strings_in_X", "X must hold numbers"),
        ("one_class_weighted", "with a positive weight"),
    ],
)
def test_bad_inputs(client, case, expected):
    X, y = _data(n=200, seed=18)
    Xd, yd = da.from_array(X, chunks=(50, -1)), da.from_array(y, chunks=50)
    est, sw = SoftmaxRegression(), None
    if case == "one_class":
        yd = da.zeros(200, chunks=50, dtype=int)
    elif case == "indicator_value":
        Y = np.zeros((200, 3), dtype=int)
        Y[7, 1] = 2
        est, yd = SigmoidRegression(), da.from_array(Y, chunks=(50, -1))
    elif case == "rows":
        yd = da.from_array(y[:-1], chunks=50)
    elif case == "softmax_2d":
        yd = da.from_array(np.eye(4, dtype=int)[y], chunks=(50, -1))
    elif case == "adam":
        est = SoftmaxRegression(solver="adam")
    elif case == "zero_weights":
        sw = da.zeros(200, chunks=50)
    elif case == "strings_in_X":
        Xd = da.from_array(X.astype(str), chunks=(50, -1))
    elif case == "one_class_weighted":
        sw = da.from_array((y == 0).astype(float), chunks=50)
    with pytest.raises((ValueError, TypeError), match=None) as info:
        est.fit(Xd, yd, sample_weight=sw)
    assert expected in str(info.value)
