"""``softxent fit --dask`` and ``predict --dask`` on folders of parts, against the in-memory command.

One in-process ``LocalCluster`` (threads, module scope) serves every test:
the command connects to it with ``--dask ADDRESS``, as it would to a real
scheduler. Each table is written twice, as parts (4 Parquet or CSV files
of uneven sizes) and whole (one file): the model fitted on the parts must be
the model the in-memory command fits on the whole file (``--test-size 0``,
so both train on every row): the same transform (categories, fills, means
and scales) and the same optimum (objective within 1e-8 relative,
probabilities within 1e-8).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.array", reason="the dask extra is needed for --dask")
distributed = pytest.importorskip("distributed", reason="the dask extra is needed for --dask")
pytest.importorskip("matplotlib", reason="the cli extra (matplotlib) is needed for reports")

from softxent.cli import main  # noqa: E402
from softxent.cli._pipeline import TablePipeline  # noqa: E402

SIZES = (37, 150, 1, 0, 112)  # uneven parts, one of a single row, one empty (writers of partitioned data leave some)


@pytest.fixture(scope="module")
def address():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c:
        with distributed.Client(c):
            yield c.scheduler_address


def _table(kind: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = sum(SIZES)
    t = pd.DataFrame({
        "tempo": rng.normal(120, 20, n),
        "loud": rng.normal(-10, 3, n),
        "ac": rng.uniform(0, 1, n),
        "country": rng.choice(["FR", "US", "JP"], n),
        "year": rng.integers(1990, 2020, n),
    })  # fmt: skip
    score = (t["tempo"] - 120) / 20
    genre = np.where(score > 0.5, "rock", np.where(t["ac"] > 0.5, "classical", "jazz"))
    if kind == "classes":
        t["genre"] = genre
    elif kind == "missing":  # holes in features (imputed) and in the target ("other" class)
        t.loc[rng.random(n) < 0.1, "loud"] = np.nan
        t["country"] = t["country"].astype(object)
        t.loc[rng.random(n) < 0.1, "country"] = None
        t["genre"] = pd.Series(genre, dtype=object).where(rng.random(n) > 0.15, None)
    elif kind == "ints":
        t["genre"] = np.searchsorted(["classical", "jazz", "rock"], genre)
    elif kind == "tags":  # overlapping labels: a sigmoid head
        # Noisy, not separable: a separable label leaves the optimum in a flat valley where two runs
        # whose inputs differ in the last bits (sums in another order) stop at visibly different points.
        flips = rng.random((n, 3)) < 0.1
        t["tags"] = [
            "|".join(tag for (tag, on), f in zip((("vocal", a > 0.4), ("dance", s > 0), ("live", a < 0.2)), fl) if on != f)
            for a, s, fl in zip(t["ac"], score, flips, strict=True)
        ]  # fmt: skip
    return t


def _write(t: pd.DataFrame, folder: Path, fmt: str) -> tuple[Path, Path]:
    parts = folder / "parts"
    parts.mkdir(parents=True)
    start = 0
    for i, size in enumerate(SIZES):
        piece = t.iloc[start : start + size].reset_index(drop=True)
        start += size
        if fmt == "parquet":
            piece.to_parquet(parts / f"part-{i}.parquet", index=False)
        else:
            piece.to_csv(parts / f"part-{i}.csv", index=False)
    whole = folder / f"whole.{fmt}"
    if fmt == "parquet":
        t.to_parquet(whole, index=False)
    else:
        t.to_csv(whole, index=False)
    return parts, whole


CASES = {
    "classes-parquet": ("classes", "parquet", ["--target", "genre"]),
    "missing-impute-mean": ("missing", "parquet", ["--target", "genre", "--impute", "mean"]),
    "missing-most-frequent": ("missing", "parquet", ["--target", "genre", "--impute", "most_frequent"]),
    "ints-csv": ("ints", "csv", ["--target", "genre"]),
    "label-sets-sigmoid": ("tags", "parquet", ["--target", "tags", "--label-sep", "|"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_on_parts_equals_the_in_memory_fit(case, address, tmp_path, capsys):
    kind, fmt, options = CASES[case]
    parts, whole = _write(_table(kind), tmp_path, fmt)
    on_dask, in_memory = tmp_path / "dask.npz", tmp_path / "memory.npz"
    common = [*options, "--test-size", "0", "--quiet"]
    assert main(["fit", str(parts), *common, "--dask", address, "--out", str(on_dask)]) == 0
    assert main(["fit", str(whole), *common, "--out", str(in_memory)]) == 0
    capsys.readouterr()
    a, b = TablePipeline.load(on_dask), TablePipeline.load(in_memory)
    assert a.head == b.head and a.choice.reason == b.choice.reason
    assert list(a.names) == list(b.names)
    pa, pb = a.preprocessor.to_dict(), b.preprocessor.to_dict()
    # Kinds, categories, missing counts exactly; a mean fill to rounding (the sums run in another order).
    fills = [(ca.pop("fill"), cb.pop("fill")) for ca, cb in zip(pa["columns"], pb["columns"], strict=True)]
    assert pa["columns"] == pb["columns"] and pa["n_rows"] == pb["n_rows"]
    for fa, fb in fills:
        assert fa == pytest.approx(fb, rel=1e-12) if isinstance(fb, float) else fa == fb
    np.testing.assert_allclose(pa["mean"], pb["mean"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pa["scale"], pb["scale"], rtol=1e-12)
    fa, fb = a.loss_curve[-1], b.loss_curve[-1]
    assert abs(fa - fb) <= 1e-8 * abs(fb)
    table = pd.read_parquet(whole) if fmt == "parquet" else pd.read_csv(whole)
    np.testing.assert_allclose(a.predict_proba(table), b.predict_proba(table), atol=1e-8)


def test_fit_writes_model_report_and_progress(address, tmp_path, capsys):
    parts, whole = _write(_table("classes"), tmp_path, "parquet")
    model, report = tmp_path / "m.npz", tmp_path / "report"
    glob = str(parts / "part-*.parquet")
    code = main(["fit", glob, "--target", "genre", "--dask", address, "--out", str(model), "--report", str(report),
                 "--test-size", "0.3", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["head"] == "softmax" and document["n_train"] + document["n_test"] == sum(SIZES)
    assert document["n_test"] > 0 and document["metrics"]["accuracy"] > 0.7
    assert f"connected to the Dask scheduler at {address}" in captured.err
    assert "iteration 1/200: objective" in captured.err  # the progress, one line per iteration off a terminal
    for name in ("metrics.json", "report.html", "confusion_matrix.png", "loss_curve.png"):
        assert (report / name).is_file(), name
    # The model is an ordinary softxent model: the in-memory evaluate reads it, and evaluate --dask
    # on the parts gives the metrics it gives on the whole table.
    assert main(["evaluate", str(model), str(whole), "--json"]) == 0
    in_memory = json.loads(capsys.readouterr().out)["metrics"]
    assert in_memory["accuracy"] > 0.7
    assert (
        main(["evaluate", str(model), str(parts), "--dask", address, "--json", "--report", str(tmp_path / "ev")]) == 0
    )
    on_dask = json.loads(capsys.readouterr().out)["metrics"]
    assert on_dask.keys() == in_memory.keys() and on_dask["n_rows"] == sum(SIZES)
    assert on_dask["accuracy"] == in_memory["accuracy"] and on_dask["confusion_matrix"] == in_memory["confusion_matrix"]
    assert on_dask["log_loss"] == pytest.approx(in_memory["log_loss"], rel=1e-12)
    assert (tmp_path / "ev" / "report.html").is_file()


def test_predict_writes_parts_and_never_overwrites(address, tmp_path, capsys):
    parts, whole = _write(_table("classes"), tmp_path, "parquet")
    model, out = tmp_path / "m.npz", tmp_path / "predictions"
    assert main(["fit", str(parts), "--target", "genre", "--dask", address, "--out", str(model), "--quiet"]) == 0
    assert main(["predict", str(model), str(parts), "--dask", address, "-o", str(out), "--proba"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"part-{i:05d}.parquet" for i, size in enumerate(SIZES) if size]  # an empty part: no file
    assert [len(pd.read_parquet(out / name)) for name in written] == [size for size in SIZES if size]
    got = pd.concat([pd.read_parquet(out / name) for name in written], ignore_index=True)
    csv = tmp_path / "memory.csv"
    assert main(["predict", str(model), str(whole), "--proba", "-o", str(csv)]) == 0
    expected = pd.read_csv(csv)
    assert got["genre"].tolist() == expected["genre"].tolist()
    np.testing.assert_allclose(got.filter(like="proba_").to_numpy(), expected.filter(like="proba_").to_numpy(),
                               atol=1e-12)  # fmt: skip
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["predict", str(model), str(parts), "--dask", address, "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".predictions")]  # no staging folder left


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    return err[-1]


def test_bad_inputs_are_one_line_errors(address, tmp_path, capsys):
    parts, _ = _write(_table("classes"), tmp_path, "parquet")
    nowhere = str(tmp_path / "nowhere" / "part-*.parquet")
    assert "no files match DATA" in _error(capsys, "fit", nowhere, "--target", "genre", "--dask", address)
    message = _error(capsys, "fit", str(parts), "--target", "nope", "--dask", address)
    assert "'nope'" in message and "genre" in message  # names the column and lists the real ones
    message = _error(capsys, "fit", str(parts), "--target", "genre", "--impute", "median", "--dask", address)
    assert "--impute median" in message
    pd.DataFrame({"tempo": [1.0], "other": [2.0], "genre": ["rock"]}).to_parquet(parts / "part-9.parquet")
    message = _error(capsys, "fit", str(parts), "--target", "genre", "--dask", address,
                     "--out", str(tmp_path / "m.npz"))  # fmt: skip
    assert "part-9.parquet" in message and "lacks" in message
    assert not (tmp_path / "m.npz").exists()
    message = _error(capsys, "predict", str(tmp_path / "none.npz"), str(parts), "--dask", address)
    assert "-o DIR" in message
