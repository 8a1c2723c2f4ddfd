"""NumPy building blocks shared by the layer definitions. Everything computes in float64."""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------------------------
# erf
#
# NumPy has no erf, so it is written here from two polynomial fits, vectorised over the array
# (within 2 ulp of math.erf and of a 40-digit erf over the whole double range, as
# tests/reference/test_ops.py checks; math.erf through np.frompyfunc was 10-20x slower). The coefficients are Chebyshev fits computed with mpmath at 50 digits
# (``mpmath.chebyfit``; tests/reference/test_ops.py re-derives them) and rounded to double:
#
# - ``|x| < 1``: ``erf(x) = x * P(x^2)``, P the degree-11 fit of ``erf(sqrt(t)) / sqrt(t)`` on
#   ``t`` in [0, 1] (fit error 7e-18, under 1/16 ulp).
# - ``1 <= |x| < 6``: ``erf(|x|) = 1 - exp(-x^2) * Q(v)``, Q the degree-14 fit of the scaled
#   complement ``erfcx(x) = exp(x^2) * erfc(x)`` in ``v = (72 / (|x| + 3) - 13) / 5``, which maps
#   [1, 6] onto [-1, 1] (fit error 1e-17 on values near 0.1 to 0.2; multiplied by exp(-x^2) <= 0.37).
#   The rounding of x^2 inside exp changes erfc(x) <= 0.16 relatively by about x^2 eps, far below
#   an ulp of erf(x) near 1.
# - ``|x| >= 6``: ``erfc(6) = 2e-17`` is below half an ulp of 1 (erf rounds to 1 from about
#   5.93 on), so the second form, evaluated at 6, gives exactly +-1 (inf included).

_ERF_CENTRAL = (
    1.1283791670955126,
    -0.37612638903183543,
    0.11283791670945006,
    -0.02686617064323777,
    0.0052239776071164225,
    -0.0008548325975389692,
    0.00012055294904839707,
    -1.492473690741966e-05,
    1.6447424703317362e-06,
    -1.6208483801871705e-07,
    1.3720064546777686e-08,
    -7.795898827002142e-10,
)
"""``P(t)``, lowest degree first."""

_ERFCX_TAIL = (
    0.20798329133342885,
    0.15436117429436919,
    0.04969844540339464,
    0.012713147695692198,
    0.002479314697078186,
    0.0003316029605764125,
    1.9563583246137112e-05,
    -2.4255574719050315e-06,
    -5.541274478467714e-07,
    4.526700764248741e-09,
    1.1339538061744706e-08,
    2.6381508985080735e-10,
    -2.571511429603255e-10,
    -6.047405945991704e-12,
    6.0857915906870915e-12,
)
"""``Q(v)``, lowest degree first."""

_ERF_BLOCK = 1 << 15
"""Elements per block: the temporaries of one block stay in the CPU cache, which makes the
two dozen passes of the polynomial faster than whole-array passes on large arrays."""


def horner(z: np.ndarray, coefficients, out: np.ndarray | None = None) -> np.ndarray:
    """``sum(c_k * z**k)`` (coefficients lowest degree first) by Horner's rule, in place in ``out``."""
    acc = np.multiply(z, coefficients[-1], out=out)
    acc += coefficients[-2]
    for c in coefficients[-3::-1]:
        acc *= z
        acc += c
    return acc


def erf(x) -> np.ndarray:
    """The error function, elementwise, in float64 (see the notes above for the method)."""
    x = np.asarray(x, dtype=np.float64)
    return _by_blocks(x, lambda block, result, scratch: _erf_into(block, result, scratch[0]), scratches=1)


def _by_blocks(x: np.ndarray, fill, scratches: int) -> np.ndarray:
    """A new array ``out`` shaped like the float64 ``x``, filled by ``fill(block, result,
    scratch)`` for every run of ``_ERF_BLOCK`` elements of ``x`` and ``out``; ``scratch`` is a list
    of ``scratches`` arrays of the block's size that ``fill`` may overwrite."""
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    scratch = [np.empty(min(_ERF_BLOCK, flat.size)) for _ in range(scratches)]
    with np.errstate(over="ignore", under="ignore"):  # x * x is inf for |x| > 1e154, 0 for tiny x: both meant
        for start in range(0, flat.size, _ERF_BLOCK):
            block = flat[start : start + _ERF_BLOCK]
            fill(block, out[start : start + _ERF_BLOCK], [s[: block.size] for s in scratch])
    return out.reshape(x.shape)


def _erf_into(x: np.ndarray, out: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """erf of the 1-D ``x`` into ``out``, with ``squares`` (as large) as scratch."""
    t = np.multiply(x, x, out=squares)
    np.minimum(t, 1.0, out=t)  # NaN stays NaN
    horner(t, _ERF_CENTRAL, out=out)
    out *= x
    tail = np.flatnonzero(t >= 1.0)
    if tail.size:
        out[tail] = _erf_tail(x[tail])
    return out


def _erf_tail(x: np.ndarray) -> np.ndarray:
    """erf for ``|x| >= 1`` (inf included): ``sign(x) * (1 - exp(-x^2) * erfcx(min(|x|, 6)))``."""
    a = np.minimum(np.abs(x), 6.0)
    v = 72.0 / (a + 3.0)
    v -= 13.0
    v /= 5.0
    complement = horner(v, _ERFCX_TAIL)
    a *= a
    np.negative(a, out=a)
    complement *= np.exp(a, out=a)
    return np.copysign(np.subtract(1.0, complement, out=complement), x, out=complement)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)``, the erf form (Keras' and PyTorch's default):
    ``0.5 * x * (1 + erf(x / sqrt(2)))``, computed as ``((erf(x / sqrt(2)) + 1) * 0.5) * x``
    block by block with :func:`erf`'s blocks, so that the last three passes run in the cache."""

    def fill(block, result, scratch):
        scaled, squares = scratch
        _erf_into(np.divide(block, math.sqrt(2.0), out=scaled), result, squares)
        result += 1.0
        result *= 0.5
        result *= block

    return _by_blocks(np.asarray(x, dtype=np.float64), fill, scratches=2)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, written from ``e = exp(-|x|)`` so that neither branch overflows:
    ``1 / (1 + e)`` where ``x >= 0``, ``e / (1 + e)`` elsewhere."""
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    out = np.maximum(e, x >= 0)  # 1 where x >= 0 (e <= 1 there), e elsewhere: np.where's choice, faster
    e += 1.0
    out /= e
    return out


def swish(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)`` (PyTorch's SiLU)."""
    out = sigmoid(x)
    out *= x
    return out


def softplus(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "gelu": gelu,
    "swish": swish,
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "softplus": softplus,
}
"""Activations by their Keras names. ``swish`` is ``x * sigmoid(x)`` (PyTorch's SiLU); ``elu``
has alpha 1; ``gelu`` is exact."""


_IN_PLACE = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "relu6": lambda x: np.clip(x, 0.0, 6.0, out=x),
}


def activation(name: str, x: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """The activation by its Keras name. With ``overwrite``, ``x`` (an intermediate the caller
    owns) may be reused for the result: the same values, one array less."""
    if overwrite and name in _IN_PLACE:
        return _IN_PLACE[name](x)
    return ACTIVATIONS[name](x)


def softmax(x: np.ndarray, axis: int = -1, overwrite: bool = False) -> np.ndarray:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``. With ``overwrite``, ``x`` (a float64
    intermediate the caller owns) is reused for the result: the same values, one array less."""
    out = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=x if overwrite else None)
    np.exp(out, out=out)
    if axis in (-1, x.ndim - 1):  # einsum sums short rows several times faster than np.sum
        out /= np.einsum("...i->...", out)[..., None]
    else:
        out /= np.sum(out, axis=axis, keepdims=True)
    return out
