"""How close an implementation must come to the float64 reference, per dtype.

An element passes when ``|got - expected| <= atol + rtol * |expected|`` (NumPy's allclose rule,
with ``expected`` the float64 reference on the very same input and weight values).

Why ``atol = rtol = 256 * eps(dtype)``:

* Inputs and weights are drawn so that every activation is of order one: inputs are standard
  normal, kernels have std ``1/sqrt(fan_in)``, position tables the 2021 initialiser's
  ``key_dim ** -0.5`` (see ``reference._spec.Weight``). The values are exactly representable
  in every dtype checked, so the only error is the implementation's own rounding.
* A reduction of ``n`` order-one terms accumulates rounding like a random walk, about
  ``sqrt(n) * u`` (u = eps/2). The deepest layer here (MHSA at the README size) chains five
  such stages with ``n`` up to 512 (projections, content logits, softmax, weighted sum, output
  projection): about ``5 * sqrt(512) * u ~= 57 eps``. The largest of ~1e5 elements sits a few
  standard deviations further out, so 256 eps leaves a further margin of about 4.
* ``atol`` covers elements whose expected value is near zero through cancellation, where
  relative error means nothing; it is on the scale of the order-one terms that cancelled.

That is 3.05e-5 for float32 and 5.7e-14 for float64. The float32 bound still catches any
semantic slip larger than about 3e-5 relative (an approximate GELU, a missing scale, a wrong
epsilon at large variance); the float64 bound catches the subtle ones float32 round-off hides
(a LayerNorm epsilon of 1e-5 instead of 1e-6 moves outputs by about 5e-6).

Half precision (float16, bfloat16; opt-in with ``--dtypes float16 bfloat16``) gets a tolerance
per case, ``atol = rtol = c * sqrt(n) * u`` with ``c = HALF_MULTIPLE = 16``, ``u`` the unit
round-off (2^-11 for float16, 2^-8 for bfloat16) and ``n`` the case's longest reduction
(``conformance.checks.half.reduction_length``: the largest of a weight's fan-in, an input's number
of positions and its number of channels). float32 and float64 keep the fixed multiple above.

* In half precision every stored intermediate is rounded, not only the accumulators: each stage's
  inputs carry relative errors of about ``u``, and a reduction of ``n`` such terms carries them
  into its result like a random walk, ``sqrt(n) * u`` (where a framework also accumulates in half,
  as Keras' own means in the compute dtype do, the accumulator adds about as much again). The
  error therefore grows with the reduction length, and a fixed multiple of eps is either far too
  loose for short reductions (256 eps is 0.25 in float16, 2 in bfloat16) or too tight for long
  ones.
* The deepest layers chain up to five such stages (MHSA: projections, logits, softmax, weighted
  sum, output projection), ``~5 * sqrt(n) * u``. Measured on every documented example and edge
  case of the 21 layers, both implementations, the worst error is ``4.2 * sqrt(n) * u`` (HaloAttention
  and MHSA at input scale 2^3, where the logits' own rounding ``u * |logit|`` sharpens through the
  softmax); ``c = 16`` leaves a margin of about 4 for drawn cases.
* The bound is honest, not sharp: at bfloat16 and ``n = 512`` it is 1.4 times the output's rms,
  so half precision catches gross slips (a missing scale, a wrong axis, a float32-only code path
  that breaks) but not the subtle ones float32 and float64 are for.
* Input scales are limited to ``cases.HALF_INPUT_SCALES`` (2^-4 to 2^3): below, float16 inputs
  and their products fall into subnormals; above, logits approach float16's maximum, 65504.

The largest reduction per layer in its documented examples is listed by
``conformance.checks.half.reduction_table()`` (and in the README's half-precision section).

A per-layer override needs a written reason in ``OVERRIDES``; none is needed today.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS_MULTIPLE = 256


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    reason: str = ""

    def describe(self) -> str:
        return f"atol={self.atol:.3g} + rtol={self.rtol:.3g}*|expected|"


def _from_eps(dtype: str) -> Tolerance:
    eps = float(np.finfo(dtype).eps)
    return Tolerance(rtol=EPS_MULTIPLE * eps, atol=EPS_MULTIPLE * eps, reason=f"{EPS_MULTIPLE} * eps({dtype}); see module docstring")


TOLERANCES: dict[str, Tolerance] = {dtype: _from_eps(dtype) for dtype in ("float32", "float64")}

HALF_MULTIPLE = 16
"""``c`` of the half-precision model ``c * sqrt(n) * u``; see the module docstring."""


def half_tolerance(dtype: str, n: int) -> Tolerance:
    """``atol = rtol = HALF_MULTIPLE * sqrt(n) * u(dtype)`` for a case whose longest reduction is ``n``."""
    from conformance.checks.half import UNIT_ROUNDOFF

    t = HALF_MULTIPLE * math.sqrt(n) * UNIT_ROUNDOFF[dtype]
    return Tolerance(rtol=t, atol=t, reason=f"{HALF_MULTIPLE} * sqrt(n={n}) * u({dtype}); see module docstring")


def describe(dtype: str) -> str:
    """The tolerance of ``dtype`` in words, for report legends."""
    if dtype in HALF_DTYPES:
        from conformance.checks.half import UNIT_ROUNDOFF

        return f"atol = rtol = {HALF_MULTIPLE}*sqrt(n)*u, u={UNIT_ROUNDOFF[dtype]:.3g}, n the case's longest reduction"
    return TOLERANCES[dtype].describe()

OVERRIDES: dict[tuple[str, str], Tolerance] = {}
"""``{(layer, dtype): Tolerance(..., reason=...)}``; every entry must say why the default is wrong."""


def tolerance(layer: str, dtype: str, case=None) -> Tolerance:
    """The tolerance of ``layer`` in ``dtype``; half precision needs the ``case`` (its ``n``)."""
    if (layer, dtype) in OVERRIDES:
        return OVERRIDES[(layer, dtype)]
    if dtype in HALF_DTYPES:
        if case is None:
            raise ValueError(f"the {dtype} tolerance depends on the case's reduction length: pass the case")
        from conformance.checks.half import reduction_length

        return half_tolerance(dtype, reduction_length(case.layer, case.config, case.input_shapes))
    if dtype not in TOLERANCES:
        raise KeyError(f"no tolerance for dtype {dtype!r}; known: {sorted(KNOWN_DTYPES)}")
    return TOLERANCES[dtype]


DTYPES = tuple(TOLERANCES)
"""The dtypes checked by default."""

HALF_DTYPES = ("float16", "bfloat16")
"""Opt-in (``attnconf check --dtypes float16 bfloat16``)."""

KNOWN_DTYPES = DTYPES + HALF_DTYPES
