"""Half precision (float16, bfloat16): how its values cross the contract and how far they may be.

NumPy has float16 but no bfloat16, so a bfloat16 array crosses the contract as a float32 array
holding bfloat16 values (every bfloat16 value is exact in float32), together with the dtype string
``"bfloat16"``; the implementation casts it, and returns its bfloat16 output the same way.
``carrier`` names the NumPy dtype an array of a dtype travels in, ``to_dtype`` rounds to the dtype
and returns its carrier.

The tolerance model for half precision (``half_tolerance``) is in ``conformance.checks.tolerances``'
docstring; ``reduction_length`` is its ``n``.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

HALF_DTYPES = ("float16", "bfloat16")

UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}
"""``u = eps / 2``: the largest relative error of one rounding to the nearest value."""


def carrier(dtype: str | np.dtype) -> np.dtype:
    """The NumPy dtype arrays of ``dtype`` travel in: float32 for bfloat16, the dtype itself otherwise."""
    if str(dtype) == "bfloat16":
        return np.dtype(np.float32)
    return np.dtype(dtype)


def to_dtype(array, dtype: str | np.dtype) -> np.ndarray:
    """``array`` rounded to ``dtype`` (once, to nearest), in its carrier dtype."""
    array = np.asarray(array)
    if str(dtype) == "bfloat16":
        return array.astype(ml_dtypes.bfloat16).astype(np.float32)
    return array.astype(carrier(dtype))


def reduction_length(layer: str, config: Any, input_shapes) -> int:
    """``n``: the longest sum any output element of this case goes through, bounded from above by
    the largest of

    * the largest fan-in of a weight (a kernel's size over all but its last, output axis, in the
      canonical Keras layout: a Dense kernel ``[in, out]`` sums ``in`` terms, a convolution
      ``[kh, kw, in, out]`` sums ``kh * kw * in``, a depthwise one ``[kh, kw, C, multiplier]``
      (named ``depthwise_kernel``) ``kh * kw``);
    * the number of positions of an input (``H * W`` or ``N``): attention's softmax denominator
      and its weighted sum over keys, global pooling;
    * the number of channels of an input (LayerNorm, channel means, a per-head dot product).

    A bound, not the exact count: a windowed attention (HaloAttention) sums over its window only,
    which is never more than the positions of its input."""
    import reference

    lengths = [1]
    for w in reference.weight_specs(layer, *input_shapes, **dict(config)):
        if w.name.endswith("depthwise_kernel"):
            lengths.append(math.prod(w.shape[:2]))
        elif len(w.shape) >= 2:
            lengths.append(math.prod(w.shape[:-1]))
    for shape in input_shapes:
        lengths.append(math.prod(shape[1:-1]) if len(shape) > 2 else 1)
        lengths.append(shape[-1])
    return int(max(lengths))


def reduction_table() -> list[tuple[str, str, int]]:
    """``(layer, example, n)`` for every documented example: the ``n`` of the half-precision
    tolerance, largest example first within each layer."""
    import reference

    rows = []
    for layer in reference.names():
        examples = [(ex.name, reduction_length(layer, ex.config, ex.input_shapes)) for ex in reference.spec(layer).examples]
        rows.extend((layer, name, n) for name, n in sorted(examples, key=lambda item: -item[1]))
    return rows
