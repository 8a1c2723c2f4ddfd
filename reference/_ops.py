"""NumPy building blocks shared by the layer definitions. Everything computes in float64."""

from __future__ import annotations

import math

import numpy as np

# math.erf is libm's erf (error below one ulp). frompyfunc makes it a ufunc: the loop runs
# in C and calls the builtin per element, no Python bytecode per element; NumPy has no erf.
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    return _erf(np.asarray(x, dtype=np.float64)).astype(np.float64)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)``, the erf form (Keras' and PyTorch's default)."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Written from exp(-|x|) so that neither branch overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "gelu": gelu,
    "swish": lambda x: x * sigmoid(x),
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "softplus": softplus,
}
"""Activations by their Keras names. ``swish`` is ``x * sigmoid(x)`` (PyTorch's SiLU); ``elu``
has alpha 1; ``gelu`` is exact."""


def activation(name: str, x: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[name](x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)
