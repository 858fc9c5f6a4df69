"""The ``softxent`` command line, end to end: fit -> evaluate -> predict on files written here.

Round trips run the real console entry point in a subprocess (``python -m
softxent``), as a user would; error cases call :func:`softxent.cli.main` in
process (same code, faster) and one of them again as a subprocess to see the
real stderr. Data are small synthetic tables whose answers are known: classes
that a linear model separates, labels that overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from softxent.cli import main

pytest.importorskip("matplotlib", reason="the cli extra (matplotlib) is needed for reports")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    return subprocess.run([sys.executable, "-m", "softxent", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


def _features(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "tempo": rng.normal(120, 20, n),
        "loudness": rng.normal(-10, 3, n),
        "acoustic": rng.uniform(0, 1, n),
        "country": rng.choice(["FR", "US", "JP"], n),
    })  # fmt: skip


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory) -> Path:
    """Three genres decided by tempo and acoustic-ness (a linear model gets most right)."""
    rng = np.random.default_rng(0)
    table = _features(rng, 240)
    score = (table["tempo"] - 120) / 20
    genre = np.where(score > 0.5, "rock", np.where(table["acoustic"] > 0.5, "classical", "jazz"))
    table["genre"] = genre
    path = tmp_path_factory.mktemp("mc") / "songs.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory) -> Path:
    """Overlapping 0/1 tags: vocal and dance both often on."""
    rng = np.random.default_rng(1)
    table = _features(rng, 240)
    table["vocal"] = (table["acoustic"] + rng.normal(0, 0.1, 240) > 0.4).astype(int)
    table["dance"] = (table["tempo"] + rng.normal(0, 5, 240) > 115).astype(int)
    table["pop"] = (table["loudness"] > -11).astype(int)
    path = tmp_path_factory.mktemp("ml") / "tags.tsv"
    table.to_csv(path, index=False, sep="\t")
    return path


def _tags_table(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t")
    table["tags"] = ["|".join(t for t in ("vocal", "dance", "pop") if r[t]) for _, r in table.iterrows()]
    return table.drop(columns=["vocal", "dance", "pop"])


# ---------------------------------------------------------------------- round trips (subprocess)


def test_multiclass_fit_evaluate_predict_round_trip(multiclass, tmp_path):
    fit = run_cli("fit", str(multiclass), "--target", "genre", "--out", "m.npz", "--report", "rep", "--json",
                  cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    doc = json.loads(fit.stdout)  # --json: one JSON object and nothing else
    assert doc["head"] == "softmax" and "exactly one" in doc["reason"]
    assert sorted(doc["outputs"]) == ["classical", "jazz", "rock"]
    assert doc["n_train"] + doc["n_test"] == 240 and doc["n_test"] == 48
    assert doc["metrics"]["accuracy"] > 0.8
    assert any("one-hot" in line and "country" in line for line in doc["features"])
    for name in ("metrics.json", "loss_curve.png", "confusion_matrix.png", "reliability.png", "report.html"):
        assert (tmp_path / "rep" / name).is_file(), name
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "confusion_matrix.png" in html and "data:image/png;base64," in html
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "rep" / "confusion_matrix.png")
    assert image.shape[0] > 200 and image.shape[1] > 200

    evaluate = run_cli("evaluate", "m.npz", str(multiclass), "--json", "--report", "ev", cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr
    metrics = json.loads(evaluate.stdout)["metrics"]
    assert metrics["n_rows"] == 240 and set(metrics["per_class"]) == {"classical", "jazz", "rock"}
    assert (tmp_path / "ev" / "report.html").is_file()

    predict = run_cli("predict", "m.npz", str(multiclass), "-o", "pred.csv", "--proba", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["genre", "proba_classical", "proba_jazz", "proba_rock"]
    np.testing.assert_allclose(pred.filter(like="proba_").sum(axis=1), 1.0, atol=1e-9)
    truth = pd.read_csv(multiclass)["genre"]
    assert (pred["genre"] == truth).mean() == pytest.approx(metrics["accuracy"])


def test_multilabel_indicator_columns_round_trip(multilabel, tmp_path):
    fit = run_cli("fit", str(multilabel), "--target", "vocal", "--target", "dance", "--target", "pop",
                  "--out", "m.npz", "--json", cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    doc = json.loads(fit.stdout)
    assert doc["head"] == "sigmoid" and doc["outputs"] == ["dance", "pop", "vocal"]
    assert 0 <= doc["metrics"]["hamming_loss"] < 0.2
    predict = run_cli("predict", "m.npz", str(multilabel), cwd=tmp_path)  # CSV on stdout
    assert predict.returncode == 0, predict.stderr
    pred = pd.read_csv(pd.io.common.StringIO(predict.stdout))
    assert list(pred.columns) == ["vocal", "dance", "pop"]
    assert set(np.unique(pred.to_numpy())) <= {0, 1} and len(pred) == 240


def test_label_set_column_and_parquet_round_trip(multilabel, tmp_path):
    table = _tags_table(multilabel)
    path = tmp_path / "tags.parquet"
    table.to_parquet(path)
    fit = run_cli("fit", str(path), "--target", "tags", "--label-sep", "|", "--report", "rep", "--json",
                  cwd=tmp_path)  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    doc = json.loads(fit.stdout)
    assert doc["head"] == "sigmoid" and doc["model"] == "tags.softxent.npz"
    assert (tmp_path / "rep" / "per_label.png").is_file()
    evaluate = run_cli("evaluate", "tags.softxent.npz", str(path), "--json", cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr
    assert set(json.loads(evaluate.stdout)["metrics"]["per_label"]) == {"dance", "pop", "vocal"}
    predict = run_cli("predict", "tags.softxent.npz", str(path), cwd=tmp_path)
    pred = pd.read_csv(pd.io.common.StringIO(predict.stdout), keep_default_na=False)
    assert list(pred.columns) == ["tags"]
    assert all(set(cell.split("|")) <= {"vocal", "dance", "pop", ""} for cell in pred["tags"])


def test_text_output_names_head_reason_metrics_and_paths(multiclass, tmp_path):
    fit = run_cli("fit", str(multiclass), "--target", "genre", "--out", "m.npz", "--report", "rep", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    out = fit.stdout
    assert "head: softmax" in out and "why:" in out and "accuracy" in out
    assert "model: m.npz" in out and "report.html" in out
    assert "\x1b[" not in out  # not a terminal: no progress bar, no colour codes


# ---------------------------------------------------------------------- heads and the "other" class (in process)


def test_rows_without_a_class_become_other(tmp_path, capsys):
    rng = np.random.default_rng(2)
    table = _features(rng, 200)
    table["genre"] = np.where(table["tempo"] > 130, "rock", np.where(table["tempo"] < 110, "jazz", ""))
    table.to_csv(tmp_path / "songs.csv", index=False)
    assert main(["fit", str(tmp_path / "songs.csv"), "--target", "genre", "--out", str(tmp_path / "m.npz"),
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["head"] == "softmax" and doc["add_other_class"] and "other" in doc["outputs"]
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "songs.csv")]) == 0
    pred = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert set(pred["genre"]) <= {"rock", "jazz", "other"} and (pred["genre"] == "other").any()


def test_forced_heads(multiclass, multilabel, tmp_path, capsys):
    assert main(["fit", str(multiclass), "--target", "genre", "--head", "sigmoid", "--out",
                 str(tmp_path / "s.npz"), "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["head"] == "sigmoid" and doc["recommended_head"] == "softmax"
    assert "--head sigmoid" in doc["reason"]
    code = main(["fit", str(multilabel), "--target", "vocal", "--target", "dance", "--head", "softmax"])
    err = capsys.readouterr().err
    assert code == 2 and "--head softmax" in err and "labels" in err


# ---------------------------------------------------------------------- errors: one line, exit 2, no traceback


def _error(args: list[str], capsys) -> str:
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    return lines[0]


def test_error_missing_file(tmp_path, capsys):
    msg = _error(["fit", str(tmp_path / "nope.csv"), "--target", "y"], capsys)
    assert "nope.csv" in msg and "no such file" in msg


def test_error_unknown_format(tmp_path, capsys):
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    msg = _error(["fit", str(tmp_path / "data.xlsx"), "--target", "y"], capsys)
    assert ".xlsx" in msg or "data.xlsx" in msg
    assert ".csv" in msg and ".parquet" in msg


def test_error_target_missing_lists_columns(multiclass, capsys):
    msg = _error(["fit", str(multiclass), "--target", "genres"], capsys)
    assert "'genres'" in msg and "tempo" in msg and "genre" in msg


def test_error_no_feature_columns(tmp_path, capsys):
    pd.DataFrame({"y": ["a", "b"] * 5}).to_csv(tmp_path / "only.csv", index=False)
    msg = _error(["fit", str(tmp_path / "only.csv"), "--target", "y"], capsys)
    assert "feature" in msg


def test_error_single_class(tmp_path, capsys):
    pd.DataFrame({"x": range(10), "y": ["rock"] * 10}).to_csv(tmp_path / "one.csv", index=False)
    msg = _error(["fit", str(tmp_path / "one.csv"), "--target", "y"], capsys)
    assert "rock" in msg and ("single" in msg or "one class" in msg)


def test_error_nan_without_impute_and_impute_fixes_it(tmp_path, capsys):
    table = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0] * 10, "z": np.arange(40.0), "y": ["a", "b"] * 20})
    table.to_csv(tmp_path / "nan.csv", index=False)
    msg = _error(["fit", str(tmp_path / "nan.csv"), "--target", "y"], capsys)
    assert "'x'" in msg and "10" in msg and "--impute" in msg
    assert main(["fit", str(tmp_path / "nan.csv"), "--target", "y", "--impute", "median", "--json",
                 "--out", str(tmp_path / "m.npz")]) == 0  # fmt: skip
    assert any("median" in line for line in json.loads(capsys.readouterr().out)["features"])


def test_error_corrupted_model_and_other_version(multiclass, tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["fit", str(multiclass), "--target", "genre", "--out", str(model), "--quiet"]) == 0
    capsys.readouterr()
    data = model.read_bytes()
    broken = tmp_path / "broken.npz"
    broken.write_bytes(data[: len(data) // 2])
    msg = _error(["predict", str(broken), str(multiclass)], capsys)
    assert "broken.npz" in msg and "truncated" in msg

    from softxent.models._persistence import load, save

    est, extra = load(model, with_extra=True)
    extra["cli"]["version"] = 99
    save(est, tmp_path / "future.npz", extra=extra)
    msg = _error(["evaluate", str(tmp_path / "future.npz"), str(multiclass)], capsys)
    assert "newer" in msg and "99" in msg

    from softxent.models import SoftmaxRegression

    SoftmaxRegression().fit(np.eye(3), [0, 1, 2]).save(tmp_path / "plain.npz")
    msg = _error(["predict", str(tmp_path / "plain.npz"), str(multiclass)], capsys)
    assert "softxent fit" in msg


def test_error_predict_columns_differ(multiclass, tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["fit", str(multiclass), "--target", "genre", "--out", str(model), "--quiet"]) == 0
    capsys.readouterr()
    pd.read_csv(multiclass).drop(columns=["tempo", "country"]).to_csv(tmp_path / "less.csv", index=False)
    msg = _error(["predict", str(model), str(tmp_path / "less.csv")], capsys)
    assert "tempo" in msg and "country" in msg


def test_error_is_one_line_in_a_real_process_and_debug_shows_traceback(tmp_path):
    proc = run_cli("evaluate", "missing.npz", "missing.csv", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "softxent evaluate: error: cannot read MODEL 'missing.npz': no such file"
    debug = run_cli("evaluate", "missing.npz", "missing.csv", "--debug", cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_bad_option_values_are_usage_errors(multiclass, capsys):
    for args in (["--C", "-1"], ["--test-size", "1.5"], ["--max-iter", "0"], ["--head", "relu"]):
        with pytest.raises(SystemExit) as exc:
            main(["fit", str(multiclass), "--target", "genre", *args])
        assert exc.value.code == 2
        assert args[0] in capsys.readouterr().err


# ---------------------------------------------------------------------- the split and unseen classes


def test_split_keeps_singletons_and_every_class_in_training_and_stratifies():
    from softxent.cli._pipeline import _split

    strata = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["once"] + ["twice"] * 2)
    for seed in range(20):
        train, test = _split(len(strata), 0.2, seed, strata)
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(strata)))
        assert set(strata[train]) == set(strata)  # every class is learned, the singleton included
        assert "once" not in set(strata[test])
        counts = {c: int((strata[test] == c).sum()) for c in ("a", "b", "c")}
        assert counts == {"a": 10, "b": 6, "c": 2}, counts  # stratified: 20% of each class
    # Too few held-out rows for every class: no stratified split, yet every class still trains.
    few = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"])
    for seed in range(20):
        train, test = _split(len(few), 0.2, seed, few)
        assert len(test) == 2 and set(few[train]) == set(few)
    # Nothing to hold out when every class has a single row.
    train, test = _split(5, 0.2, 0, np.array(list("abcde")))
    assert len(train) == 5 and len(test) == 0


def test_a_class_with_one_row_never_costs_the_training(tmp_path, capsys):
    """Issue 15: a singleton class in the held-out rows made fit exit 2 without a model, for some seeds."""
    rng = np.random.default_rng(3)
    table = _features(rng, 60)
    table["genre"] = np.where(table["tempo"] > 120, "rock", "jazz")
    table.loc[7, "genre"] = "polka"
    table.to_csv(tmp_path / "songs.csv", index=False)
    for seed in range(8):
        model = tmp_path / f"m{seed}.npz"
        assert main(["fit", str(tmp_path / "songs.csv"), "--target", "genre", "--seed", str(seed),
                     "--out", str(model), "--json"]) == 0  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        assert model.is_file() and "polka" in doc["outputs"]
        assert doc["metrics"]["per_class"]["polka"]["support"] == 0  # held out never, learned always


def test_classes_the_model_never_saw_are_counted_not_fatal(multiclass, tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["fit", str(multiclass), "--target", "genre", "--out", str(model), "--quiet"]) == 0
    table = pd.read_csv(multiclass)
    table.loc[:4, "genre"] = "polka"  # 5 rows of a class the model cannot predict
    table.to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", str(model), str(tmp_path / "new.csv"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metrics"]["unseen_classes"] == {"polka": 5} and doc["metrics"]["n_rows"] == 235
    assert doc["notes"] == ["1 class not seen in training: 'polka' (5 rows); their rows are left out of the scores"]
    assert main(["evaluate", str(model), str(tmp_path / "new.csv")]) == 0
    assert "note: 1 class not seen in training: 'polka' (5 rows)" in capsys.readouterr().out
    table["genre"] = "polka"
    table.to_csv(tmp_path / "all_new.csv", index=False)
    msg = _error(["evaluate", str(model), str(tmp_path / "all_new.csv")], capsys)
    assert "none of the 240 rows has a class the model was trained on" in msg


def test_held_out_labels_unseen_in_training_are_counted_for_sigmoid(tmp_path):
    from softxent.cli._pipeline import train, unseen_note

    rng = np.random.default_rng(4)
    table = _features(rng, 80)
    table["tags"] = np.where(table["tempo"] > 120, "vocal|pop", "pop")
    table = table.iloc[rng.permutation(80)].reset_index(drop=True)
    result = train(table, targets=["tags"], label_sep="|", max_iter=30, score=False)
    assert result.metrics is None  # score=False: nothing scored yet
    held_out = table.iloc[result.test_rows].copy()
    held_out.iloc[:3, held_out.columns.get_loc("tags")] = "pop|rare"
    metrics, truth, _ = result.pipeline.metrics(held_out)
    assert metrics["unseen_labels"] == {"rare": 3} and truth.shape == (len(held_out), 2)
    assert unseen_note(metrics).startswith("1 label not seen in training: 'rare' (3 rows)")


# ---------------------------------------------------------------------- outputs: checked first, written whole


def _fitted_model(multiclass: Path, folder: Path, capsys) -> Path:
    model = folder / "m.npz"
    assert main(["fit", str(multiclass), "--target", "genre", "--out", str(model), "--quiet", "--test-size", "0"]) == 0
    capsys.readouterr()
    return model


def test_a_failed_prediction_write_leaves_the_old_file_and_no_temporary(multiclass, tmp_path, capsys, monkeypatch):
    model = _fitted_model(multiclass, tmp_path, capsys)
    out = tmp_path / "pred.csv"
    out.write_text("the old predictions\n")

    def half_then_fail(self, handle, **kwargs):
        handle.write(b"genre\nrock\n")  # a truncated file, had it been written in place
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    msg = _error(["predict", str(model), str(multiclass), "-o", str(out)], capsys)
    assert "cannot write predictions to -o" in msg and "No space left on device" in msg
    assert out.read_text() == "the old predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "pred.csv"]


def test_an_interrupted_model_write_leaves_the_old_model(multiclass, tmp_path, capsys, monkeypatch):
    from softxent.cli import _pipeline

    model = _fitted_model(multiclass, tmp_path, capsys)
    before = model.read_bytes()

    def interrupted(estimator, handle, **kwargs):
        handle.write(before[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(_pipeline, "save_model", interrupted)
    assert main(["fit", str(multiclass), "--target", "genre", "--out", str(model), "--quiet"]) == 130
    assert model.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_a_report_that_fails_while_drawing_leaves_the_old_report(multiclass, tmp_path, capsys, monkeypatch):
    from softxent.cli import _report

    model = _fitted_model(multiclass, tmp_path, capsys)
    assert main(["evaluate", str(model), str(multiclass), "--report", str(tmp_path / "rep")]) == 0
    old = {p.name: p.read_bytes() for p in (tmp_path / "rep").iterdir()}
    monkeypatch.setattr(_report, "_html", lambda *a, **k: 1 / 0)  # after every figure is drawn
    with pytest.raises(ZeroDivisionError):
        main(["evaluate", str(model), str(multiclass), "--report", str(tmp_path / "rep")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "rep").iterdir()} == old


def test_replacing_keeps_the_mode_of_the_replaced_file_and_gives_new_files_the_umask_mode(tmp_path):
    from softxent.cli._files import replacing, write_atomically

    write_atomically(tmp_path / "new.txt", "fresh")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    old = tmp_path / "old.txt"
    old.write_text("old")
    old.chmod(0o640)
    with replacing(old) as handle:
        handle.write(b"new")
    assert old.read_text() == "new" and old.stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError), replacing(old) as handle:
        handle.write(b"half")
        raise RuntimeError("failed mid-way")
    assert old.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "old.txt"]


def test_an_output_through_a_symlink_replaces_the_file_it_points_to(multiclass, tmp_path, capsys):
    model = _fitted_model(multiclass, tmp_path, capsys)
    (tmp_path / "real.csv").write_text("old\n")
    (tmp_path / "link.csv").symlink_to("real.csv")
    assert main(["predict", str(model), str(multiclass), "-o", str(tmp_path / "link.csv")]) == 0
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text().startswith("genre\n")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write any file")
def test_a_read_only_output_is_refused_not_renamed_over(multiclass, tmp_path, capsys):
    model = _fitted_model(multiclass, tmp_path, capsys)
    (tmp_path / "kept.csv").write_text("keep\n")
    (tmp_path / "kept.csv").chmod(0o444)
    msg = _error(["predict", str(model), str(multiclass), "-o", str(tmp_path / "kept.csv")], capsys)
    assert "the file is read-only" in msg and (tmp_path / "kept.csv").read_text() == "keep\n"


# ---------------------------------------------------------------------- decimal commas


def _comma_file(path: Path, rng: np.random.Generator, n: int = 80) -> pd.DataFrame:
    table = _features(rng, n)
    table["genre"] = np.where(table["tempo"] > 120, "rock", "jazz")
    table.to_csv(path, index=False, sep=";", decimal=",")
    return table


def test_decimal_comma_numbers_are_read_as_numbers_and_the_model_keeps_it(tmp_path, capsys):
    _comma_file(tmp_path / "songs.csv", np.random.default_rng(5))
    assert "," in (tmp_path / "songs.csv").read_text().splitlines()[1]
    assert main(["fit", str(tmp_path / "songs.csv"), "--target", "genre", "--out", str(tmp_path / "m.npz"),
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["columns"] == {"tempo": "decimal-comma number", "loudness": "decimal-comma number",
                              "acoustic": "decimal-comma number", "country": "category"}  # fmt: skip
    assert doc["metrics"]["accuracy"] > 0.9  # tempo decides the genre; as 80 categories it could not
    assert main(["fit", str(tmp_path / "songs.csv"), "--target", "genre", "--out", str(tmp_path / "m2.npz")]) == 0
    out = capsys.readouterr().out
    assert "columns read as decimal-comma number: tempo, loudness, acoustic; category: country" in out
    # New rows written the same way are read the same way, from the model alone.
    _comma_file(tmp_path / "new.csv", np.random.default_rng(6), 20)
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "new.csv"), "--proba"]) == 0
    pred = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    expected = np.where(pd.read_csv(tmp_path / "new.csv", sep=";", decimal=",")["tempo"] > 120, "rock", "jazz")
    assert (pred["genre"] == expected).mean() >= 0.9
    # --decimal . reads points only: the same file is then refused, with the way out named.
    msg = _error(["predict", str(tmp_path / "m.npz"), str(tmp_path / "new.csv"), "--decimal", "."], capsys)
    assert "column 'tempo' held numbers in training" in msg


def test_decimal_option_at_fit(tmp_path, capsys):
    rng = np.random.default_rng(7)
    _comma_file(tmp_path / "songs.csv", rng)
    # --decimal . : the text stays text (one category per distinct value), as the user asked.
    assert main(["fit", str(tmp_path / "songs.csv"), "--target", "genre", "--decimal", ".", "--json",
                 "--out", str(tmp_path / "m.npz")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["columns"]["tempo"] == "category"
    # A comma-delimited file with quoted "1,5" cells: only --decimal , reads them as numbers.
    table = pd.DataFrame({"x": ["1,5", "2,5", "0,5", "3,0"] * 5, "genre": ["a", "b"] * 10})
    table.to_csv(tmp_path / "quoted.csv", index=False, quoting=1)
    for decimal, kind in ((None, "category"), (",", "decimal-comma number")):
        extra = ["--decimal", decimal] if decimal else []
        assert main(["fit", str(tmp_path / "quoted.csv"), "--target", "genre", "--json", *extra,
                     "--out", str(tmp_path / "q.npz")]) == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["columns"]["x"] == kind, decimal


# ---------------------------------------------------------------------- gradcheck, demo, bench


def test_gradcheck_agrees_and_prints_the_largest_difference(tmp_path):
    for extra in ([], ["--soft-labels", "--classes", "6", "--seed", "3"]):
        proc = run_cli("gradcheck", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "eq. 13" in proc.stdout and ("eq. 15" if extra else "eq. 16") in proc.stdout
        largest = float(proc.stdout.rsplit("largest difference", 1)[1].split()[0])
        assert largest < 1e-6


def test_gradcheck_fails_when_a_formula_is_wrong(monkeypatch, capsys):
    from softxent.cli import _gradcheck

    monkeypatch.setattr(_gradcheck, "softmax_cross_entropy_grad", lambda z, y: -(_gradcheck.softmax(z) - y))
    assert main(["gradcheck"]) == 1
    assert "DISAGREE" in capsys.readouterr().out


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--report-dir", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "choose_head says: softmax" in out and "choose_head says: sigmoid" in out
    for part in ("digits", "multilabel", "wrong-head"):
        assert (tmp_path / "demo" / part / "report.html").is_file()
        assert str(tmp_path / "demo" / part / "report.html") in out
    mean = next(line for line in out.splitlines() if line.startswith("mean "))
    sigmoid_recall, softmax_recall = map(float, mean.split()[1:3])
    assert softmax_recall < sigmoid_recall - 0.1  # the wrong head loses recall, measured
    digits = json.loads((tmp_path / "demo" / "digits" / "metrics.json").read_text())
    assert digits["accuracy"] > 0.9
    # (c) scores the same sigmoid model as (b), label for label: its micro-F1 is (b)'s.
    multilabel = json.loads((tmp_path / "demo" / "multilabel" / "metrics.json").read_text())
    micro = next(line for line in out.splitlines() if line.startswith("micro-F1 at threshold 0.5"))
    assert float(micro.split("sigmoid")[1].split(",")[0]) == pytest.approx(multilabel["micro_f1"], abs=6e-4)


def test_gradcheck_refuses_sizes_past_the_limit_before_allocating(capsys):
    from softxent.cli._gradcheck import MAX_CLASSES

    msg = _error(["gradcheck", "--classes", str(MAX_CLASSES + 1)], capsys)
    assert f"--classes {MAX_CLASSES + 1}" in msg and f"the limit is {MAX_CLASSES} classes" in msg


def test_demo_checks_its_report_folder_before_fitting(tmp_path, capsys, monkeypatch):
    from softxent.cli import demo

    monkeypatch.setattr(demo, "_digits_table", lambda: pytest.fail("the demo started fitting"))
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "digits").write_text("a file where the demo needs a folder")
    msg = _error(["demo", "--report-dir", str(tmp_path / "rep")], capsys)
    assert "digits' is an existing file" in msg


def test_bench_prints_a_checked_table_and_where_the_full_benchmark_is(tmp_path):
    proc = run_cli("bench", "--shapes", "512x10,3x7", "--repeats", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "## 512x10" in proc.stdout and "## 3x7" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("softxent ", "memcpy", "NumPy"))]
    assert sum(line.startswith("softxent ") and " ok " in line for line in rows) == 2, proc.stdout
    assert sum(line.startswith("NumPy ") and " ok " in line for line in rows) == 2, proc.stdout
    assert sum(line.startswith("memcpy") for line in rows) == 2
    assert "FAILED" not in proc.stdout
    assert "python benchmarks/cross_entropy_cpu.py" in proc.stdout


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_full_cpu_benchmark_runs_one_small_shape(tmp_path):
    script = BENCHMARKS / "cross_entropy_cpu.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--shapes", "512x10", "--repeats", "1", "--warmup", "1", "--min-time", "0",
         "--impls", "memcpy,softxent,NumPy naive", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("softxent", "memcpy", "NumPy"))]
    assert any(line.startswith("softxent ") and " ok " in line for line in rows), proc.stdout
    assert any(line.startswith("memcpy") for line in rows)
    # "% of paired memcpy" (the %pair column) is measured in every worker, not left blank.
    header = next(line for line in proc.stdout.splitlines() if line.startswith("implementation"))
    softxent = next(line for line in rows if line.startswith("softxent ") and " ok " in line)
    assert float(softxent.split()[header.split().index("%pair")]) > 0, softxent
    report = json.loads((tmp_path / "cross_entropy_cpu.json").read_text())
    assert [r["impl"] for r in report["results"]["512x10"]["rows"]] == ["memcpy", "softxent", "NumPy naive"]
    assert (tmp_path / "cross_entropy_cpu.md").exists()


def test_bench_pairs_every_timed_call_with_a_memcpy_timed_just_before(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _cpu_workers

    calls = []
    bench = _cpu_workers.Bench(run=lambda: calls.append("run"), fetch=lambda _: None,
                               reset=lambda: calls.append("reset"))  # fmt: skip
    yardstick = _cpu_workers.Bench(run=lambda: calls.append("copy"), fetch=lambda _: None,
                                   reset=lambda: calls.append("settle"))  # fmt: skip
    times, paired, _ = _cpu_workers.time_bench(bench, repeats=3, min_time=0.0, yardstick=yardstick)
    assert calls == ["settle", "copy", "reset", "run"] * 3
    assert len(times) == len(paired) == 3
    times, paired, _ = _cpu_workers.time_bench(bench, repeats=2, min_time=0.0)
    assert len(times) == 2 and paired == []
