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

A per-layer override needs a written reason in ``OVERRIDES``; none is needed today.
"""

from __future__ import annotations

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

OVERRIDES: dict[tuple[str, str], Tolerance] = {}
"""``{(layer, dtype): Tolerance(..., reason=...)}``; every entry must say why the default is wrong."""


def tolerance(layer: str, dtype: str) -> Tolerance:
    if dtype not in TOLERANCES:
        raise KeyError(f"no tolerance for dtype {dtype!r}; known: {sorted(TOLERANCES)}")
    return OVERRIDES.get((layer, dtype), TOLERANCES[dtype])


DTYPES = tuple(TOLERANCES)
