"""softxent: softmax, sigmoid and cross-entropy done right.

The NumPy API below is exact (float64 arithmetic, results in the input's
dtype) and is the oracle that every faster path of softxent is checked
against. Equation numbers refer to the seed document: softmax (1)/(8),
sigmoid (2), entropy (3), KL divergence (4)/(5), cross-entropy (6)/(7),
the softmax Jacobian (13)/(14) and the gradient of softmax + cross-entropy,
a·Σy − y (15), which is a − y for one-hot labels (16).

>>> import softxent as sx
>>> sx.softmax([1.0, 2.0, 3.0]).sum()
np.float64(1.0)
"""

from ._information import cross_entropy, entropy, kl_divergence
from ._losses import (
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_grad,
    sigmoid_cross_entropy_with_grad,
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
    softmax_cross_entropy_with_grad,
)
from ._softmax import (
    log_sigmoid,
    log_softmax,
    logsumexp,
    sigmoid,
    softmax,
    softmax_jacobian,
    softmax_vjp,
)

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "sigmoid",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_grad",
    "sigmoid_cross_entropy_with_grad",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_with_grad",
    "softmax_jacobian",
    "softmax_vjp",
]
