"""The public surface: names, docstrings, dtypes, the finite-difference helper, the entry points."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys

import numpy as np
import pytest

import softxent as sx
from softxent._gradcheck import finite_difference_grad
from softxent.cli import main

PUBLIC = {
    # name: equation numbers of the seed its docstring must cite
    "softmax": ["(1)", "(8)"],
    "log_softmax": ["(8)"],
    "logsumexp": ["(8)"],
    "sigmoid": ["(2)"],
    "log_sigmoid": ["(2)"],
    "entropy": ["(3)"],
    "kl_divergence": ["(4)"],
    "cross_entropy": ["(6)"],
    "softmax_cross_entropy": ["(7)", "(8)"],
    "softmax_cross_entropy_grad": ["(15)", "(16)"],
    "softmax_cross_entropy_with_grad": ["(7)", "(15)"],
    "sigmoid_cross_entropy": ["(2)", "(7)"],
    "sigmoid_cross_entropy_grad": ["(16)"],
    "sigmoid_cross_entropy_with_grad": ["(2)", "(7)"],
    "softmax_jacobian": ["(13)", "(14)"],
    "softmax_vjp": ["(13)", "(14)"],
}


def test_all_lists_exactly_the_public_functions():
    assert sorted(sx.__all__) == sorted(PUBLIC)
    for name in sx.__all__:
        assert callable(getattr(sx, name))


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_shows_formula_equation_and_example(name):
    doc = getattr(sx, name).__doc__
    assert doc, name
    assert ".. math::" in doc, f"{name}: no formula"
    for eq in PUBLIC[name]:
        assert eq in doc, f"{name}: does not cite eq. {eq}"
    assert "Examples" in doc and ">>> " in doc, f"{name}: no doctest"
    assert "{params}" not in doc and "{notes}" not in doc


def test_entropy_docstring_mentions_the_seed_sign_slip():
    assert "without the minus" in sx.entropy.__doc__


def test_package_is_typed():
    assert importlib.resources.files("softxent").joinpath("py.typed").is_file()


X = np.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]])
P = sx.softmax(X.astype(np.float64))
DTYPE_CALLS = {
    "softmax": lambda x: sx.softmax(x),
    "log_softmax": lambda x: sx.log_softmax(x),
    "logsumexp": lambda x: sx.logsumexp(x),
    "sigmoid": lambda x: sx.sigmoid(x),
    "log_sigmoid": lambda x: sx.log_sigmoid(x),
    "softmax_jacobian": lambda x: sx.softmax_jacobian(x),
    "softmax_vjp": lambda x: sx.softmax_vjp(x, x),
    "entropy": lambda x: sx.entropy(P.astype(x.dtype)),
    "kl_divergence": lambda x: sx.kl_divergence(P.astype(x.dtype), P[::-1].astype(x.dtype)),
    "cross_entropy": lambda x: sx.cross_entropy(P.astype(x.dtype), P[::-1].astype(x.dtype)),
    "softmax_cross_entropy": lambda x: sx.softmax_cross_entropy(x, [0, 2], reduction="none"),
    "softmax_cross_entropy_grad": lambda x: sx.softmax_cross_entropy_grad(x, [0, 2]),
    "sigmoid_cross_entropy": lambda x: sx.sigmoid_cross_entropy(x, np.ones_like(x)),
    "sigmoid_cross_entropy_grad": lambda x: sx.sigmoid_cross_entropy_grad(x, np.ones_like(x)),
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(DTYPE_CALLS))
def test_result_dtype_is_input_dtype(name, dtype):
    out = DTYPE_CALLS[name](X.astype(dtype))
    assert np.asarray(out).dtype == dtype
    reference = np.asarray(DTYPE_CALLS[name](X.astype(np.float64)))
    # float16 input rounds the logits themselves, so compare loosely; the
    # tight per-dtype comparisons are in the function-specific test files.
    np.testing.assert_allclose(np.asarray(out, dtype=np.float64), reference, rtol=5e-3, atol=5e-3)


def test_with_grad_pairs_equal_separate_calls():
    labels = [0, 2]
    loss, grad = sx.softmax_cross_entropy_with_grad(X, labels, label_smoothing=0.2)
    assert loss == sx.softmax_cross_entropy(X, labels, label_smoothing=0.2)
    np.testing.assert_array_equal(grad, sx.softmax_cross_entropy_grad(X, labels, label_smoothing=0.2))
    y = (X > 0).astype(float)
    loss, grad = sx.sigmoid_cross_entropy_with_grad(X, y, pos_weight=2.0)
    assert loss == sx.sigmoid_cross_entropy(X, y, pos_weight=2.0)
    np.testing.assert_array_equal(grad, sx.sigmoid_cross_entropy_grad(X, y, pos_weight=2.0))


# -- the finite-difference helper that every gradient test relies on


def test_finite_differences_match_a_known_gradient():
    x = np.array([[0.5, -1.0], [2.0, 0.1]])
    f = lambda v: float(np.sum(np.sin(v) * v**2))  # noqa: E731
    exact = np.cos(x) * x**2 + 2 * x * np.sin(x)
    np.testing.assert_allclose(finite_difference_grad(f, x), exact, rtol=0, atol=1e-10)


def test_finite_differences_are_fourth_order():
    f = lambda v: float(np.exp(v[0]))  # noqa: E731
    x = np.array([1.0])
    err = [abs(finite_difference_grad(f, x, h=h)[0] - np.e) for h in (0.1, 0.05)]
    assert 12 < err[0] / err[1] < 20  # 2**4 = 16 for a 4th-order scheme


def test_finite_differences_leave_the_point_unchanged():
    x = np.array([1.0, 2.0])
    finite_difference_grad(lambda v: float(v.sum()), x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


# -- the command line's entry points (its commands: tests/test_cli.py)


def test_command_line_entry_points(capsys):
    assert main([]) == 2  # no command: the help, and a usage exit code
    assert "fit" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    proc = subprocess.run([sys.executable, "-m", "softxent", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"softxent {sx.__version__}"


def test_readme_example_runs(capsys):
    """The README's example is code a newcomer copies: it must run and its assert must hold."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "KL([1,0,0] || [.7,.2,.1]) = 0.3567" in capsys.readouterr().out


# The Dask example starts a LocalCluster with its dashboard: where another process holds port 8787
# distributed warns and takes another port (the example still runs); that warning is not an error here.
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
def test_readme_front_end_examples_run(tmp_path, monkeypatch, capsys):
    """The README's examples after the first run as written, in order, in one namespace (a later
    block may use what an earlier one defined, as a reader would)."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[1:]
    wanted = ["SoftmaxRegression(", "sio.dump(", "sxt.linear_cross_entropy(", "sxh.patch("]
    for needle in wanted:  # the classifier, skops, PyTorch and Hugging Face examples
        assert any(needle in b for b in blocks), f"README lost its example with {needle}"
    monkeypatch.chdir(tmp_path)  # the classifier examples save model files
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert "softmax ['even' 'other']" in capsys.readouterr().out


def test_confident_row_keeps_its_tiny_gradient():
    grad = sx.softmax_cross_entropy_grad(np.array([40.0, 0.0]), 0)
    assert grad[0] == pytest.approx(-np.exp(-40.0) / (1 + np.exp(-40.0)), rel=1e-12)
    assert f"{grad[0]:.1e}".replace("e-", "e−") == "-4.2e−18"
    grad32 = sx.softmax_cross_entropy_grad(np.array([40.0, 0.0], dtype=np.float32), 0)
    assert grad32[0] == pytest.approx(-4.248354e-18, rel=1e-6)
