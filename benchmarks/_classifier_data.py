"""The classifier benchmarks' data sets, all offline: (X_train, y_train, X_test, y_test) or a reason.

Shared by ``classifiers.py`` (time to the optimum) and
``classifiers_defaults.py`` (each library at its defaults). A loader
returns a string saying what to install when its data is absent.

digits         scikit-learn's ``load_digits``, raw pixels 0..16, stratified 75/25 split.
fashion-mnist  Fashion-MNIST, 60000 + 10000 images, 784 pixels / 255: the Debian package
               ``dataset-fashion-mnist`` (IDX files under /usr/share/datasets/fashion-mnist/).
synthetic      A SYNTHETIC stand-in of Fashion-MNIST's shape (see :func:`synthetic_fashion_like`).
many-classes   A SYNTHETIC set of many classes and few features: 50 classes of 16 features.
yeast          ``river.datasets.Yeast`` (2417 x 103, 14 labels), the MULAN split (1500 train, 917 test).
multilabel     A SYNTHETIC multi-label set: 300 features, 50 labels of positive rates 0.5%-50%.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

FASHION_DIRS = [Path("/usr/share/datasets/fashion-mnist")]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        for candidate in directory.rglob(name):
            return candidate
    return None


def load_digits_split() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    return Xtr, ytr, Xte, yte


def load_fashion_mnist(directory: Path | None = None) -> tuple[Any, ...] | str:
    """(X_train, y_train, X_test, y_test) scaled to [0, 1], or the reason it is unavailable."""
    dirs = [directory] if directory else FASHION_DIRS
    for d in dirs:
        if d is None or not d.is_dir():
            continue
        files = [_find(d, s) for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]  # fmt: skip
        if all(files):
            Xtr, ytr, Xte, yte = (_read_idx(f) for f in files)
            return (Xtr.reshape(len(Xtr), -1) / 255.0, ytr.astype(np.int64),
                    Xte.reshape(len(Xte), -1) / 255.0, yte.astype(np.int64))  # fmt: skip
    return (
        f"Fashion-MNIST not found in {', '.join(str(d) for d in dirs)}: install the Debian package "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --fashion-mnist DIR"
    )


def synthetic_fashion_like(n_train: int, n_test: int, *, seed: int = 0) -> tuple[np.ndarray, ...]:
    """SYNTHETIC data of Fashion-MNIST's shape: 10 classes, 784 correlated "pixels" in [0, 1].

    A Gaussian mixture in a 40-dimensional latent space mapped to 784
    features plus noise, clipped to [0, 1]. It has Fashion-MNIST's size,
    value range and strong feature correlation, but is nearly separable
    (test accuracy about 99.9%).
    """
    rng = np.random.default_rng(seed)
    d, k, r = 784, 10, 40
    loadings = rng.standard_normal((r, d)) * np.linspace(0.05, 0.02, r)[:, None]  # correlated pixels
    class_means = rng.standard_normal((k, r))
    base = rng.uniform(0.1, 0.6, d)
    n = n_train + n_test
    y = rng.integers(0, k, n)
    X = base + (rng.standard_normal((n, r)) + class_means[y]) @ loadings + 0.25 * rng.standard_normal((n, d))
    np.clip(X, 0.0, 1.0, out=X)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def many_classes(n_train: int = 100000, n_test: int = 20000, *, seed: int = 0) -> tuple[np.ndarray, ...]:
    """SYNTHETIC: 50 overlapping Gaussian classes in 16 features, class sizes from 0.4% to 5.6%.

    The shape of letter or activity recognition tables (many classes, few
    features, a long tail of rare classes); the best linear model reaches
    about 70% test accuracy.
    """
    rng = np.random.default_rng(seed)
    d, k = 16, 50
    means = rng.standard_normal((k, d)) * 1.5
    prior = np.linspace(1.0, 14.0, k)
    prior /= prior.sum()
    n = n_train + n_test
    y = rng.choice(k, size=n, p=prior)
    scales = rng.uniform(0.5, 4.0, d)  # unequal feature scales, as raw tables have
    X = (means[y] + rng.standard_normal((n, d))) * scales
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def load_yeast() -> tuple[Any, ...] | str:
    """Yeast, the MULAN split, raw features; (X_train, Y_train, X_test, Y_test) with 0/1 Y."""
    try:
        from river import datasets
    except ImportError:
        return "river is not installed (pip install river): the Yeast data set ships with it"
    rows = list(datasets.Yeast())
    features = list(rows[0][0])
    labels = sorted(rows[0][1], key=lambda s: int(s.replace("Class", "")))
    X = np.array([[x[f] for f in features] for x, _ in rows], dtype=np.float64)
    Y = np.array([[int(y[c]) for c in labels] for _, y in rows], dtype=np.int64)
    return X[:1500], Y[:1500], X[1500:], Y[1500:]


def multilabel(n_train: int = 100000, n_test: int = 20000, *, seed: int = 0) -> tuple[np.ndarray, ...]:
    """SYNTHETIC multi-label: 300 Gaussian features, 50 labels whose positive rates run from 0.5% to 50%.

    Each label is a logistic model of its own direction (weights of scale
    0.02-0.3, so some labels are nearly noise and some nearly separable),
    its intercept set to give the rate, with logistic noise.
    """
    rng = np.random.default_rng(seed)
    d, k = 300, 50
    n = n_train + n_test
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((k, d)) * rng.uniform(0.02, 0.3, (k, 1))
    rates = np.geomspace(0.005, 0.5, k)
    Z = X @ W.T
    b = np.array([-np.quantile(Z[:, j], 1 - rates[j]) for j in range(k)])
    Y = (Z + b + rng.logistic(size=Z.shape) > 0).astype(np.int64)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]
