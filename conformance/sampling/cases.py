"""A case: one layer, config, input shapes, dtype and seed; everything else follows from it.

The seed fixes the inputs and weights, so a case written as JSON reproduces a run exactly
(``attnconf check --case '<json>'``).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import ml_dtypes
import numpy as np

import reference
from reference._sampling import EDGE_DRAWS

GRIDS = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
"""Drawn values are rounded to one of these so every checked dtype holds them exactly."""

HALF_DTYPES = ("float16", "bfloat16")
"""Opt-in half-precision dtypes. A case in one of them draws on its own grid (the float16 grid
is not exact in bfloat16, whose significand has 8 bits, nor the bfloat16 grid in float16, whose
exponent stops at 2^-24), and its scaled inputs are rounded to that grid once more, so a value
pushed into float16's subnormal range is still exactly what the implementation receives."""

HALF_INPUT_SCALES = {"float16": (2.0**-4, 2.0**3), "bfloat16": (2.0**-4, 2.0**3)}
"""Input scales a half-precision case may take (intersected with the layer's own
``input_magnitudes``). Below 2^-4 float16 inputs and intermediates (a product of two inputs:
2^-8 times values of order 2^-6) fall into float16's subnormals, where relative precision is lost
by design of the format; above 2^3 attention logits (a product of two inputs over ``key_dim``)
approach float16's largest value, 65504, and in both half types the logits' own rounding
``u * |logit|`` moves the softmax by more than any output tolerance can honestly absorb. bfloat16
has float32's exponent range, but shares the upper bound for the second reason and the lower one
so that both half types draw the same cases."""


def grid_for(dtype: str) -> str:
    """The grid a case of ``dtype`` draws on: its own for half precision, float16 otherwise."""
    return dtype if dtype in HALF_DTYPES else "float16"


def clamp_scale(scale: float, dtype: str) -> float:
    """``scale`` limited to the range a ``dtype`` case may take (unchanged for float32 and float64)."""
    low, high = HALF_INPUT_SCALES.get(dtype, (0.0, math.inf))
    return min(max(scale, low), high)


@dataclass(frozen=True)
class Case:
    layer: str
    config: Mapping[str, Any]
    input_shapes: tuple[tuple[int, ...], ...]
    seed: int
    dtype: str = "float32"
    label: str = field(default="", compare=False)
    scale: float = 1.0
    """Inputs are standard normal times ``scale``, a power of two (exact in every dtype)."""

    def to_json(self) -> str:
        return json.dumps(
            {"layer": self.layer, "config": dict(self.config), "input_shapes": [list(s) for s in self.input_shapes], "seed": self.seed, "dtype": self.dtype, "scale": self.scale},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> "Case":
        data = json.loads(text)
        return cls(
            layer=data["layer"],
            config=data.get("config", {}),
            input_shapes=tuple(tuple(int(d) for d in s) for s in data["input_shapes"]),
            seed=int(data.get("seed", 0)),
            dtype=data.get("dtype", "float32"),
            scale=float(data.get("scale", 1.0)),
        )

    def describe(self) -> str:
        shapes = ", ".join(str(list(s)) for s in self.input_shapes)
        scale = f" input scale 2^{math.log2(self.scale):g}" if self.scale != 1.0 else ""
        label = f" ({self.label})" if self.label else ""
        return f"{self.layer}{label} {self.dtype} config={dict(self.config)} input shapes={shapes} seed={self.seed}{scale}"

    def full_config(self) -> dict[str, Any]:
        return reference.validate(self.layer, *self.input_shapes, **self.config)

    def arrays(self, grid: str | None = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """Inputs then weights, drawn from the seed; float64 arrays holding ``grid`` values
        (by default ``grid_for(self.dtype)``: float16, or the case's own half-precision grid).

        The float16 grid (11 significant bits) makes every value exact in every dtype checked,
        and keeps sums of a few values exact in float32: a LayerNorm over two nearly equal
        channels is then limited by the implementation's rounding, not by the rounding of its
        mean, which no float32 implementation can avoid (that is conditioning, not conformance)."""
        half = self.dtype in HALF_DTYPES
        return draw_arrays(self.layer, self.config, self.input_shapes, self.seed, grid or grid_for(self.dtype), self.scale, round_scaled=half)


def draw_arrays(layer: str, config, input_shapes, seed: int, grid: str = "float16", scale: float = 1.0, round_scaled: bool = False):
    """Standard-normal inputs times ``scale`` (a power of two, so the product stays on the grid);
    each weight at its declared scale (positive ones uniform in ``[0.5, 2] * std``), all rounded
    to ``grid``; fixed weights take their declared value. Inputs are drawn before weights,
    weights in declaration order, so adding a weight to a layer leaves its inputs unchanged."""
    if not (scale > 0 and math.log2(scale).is_integer()):
        raise ValueError(f"input scale {scale} must be a power of two")
    rng = np.random.default_rng(seed)
    to_grid = GRIDS[grid]

    def on_grid(values: np.ndarray) -> np.ndarray:
        return values.astype(to_grid).astype(np.float64)

    inputs = [on_grid(rng.standard_normal(shape)) * scale for shape in input_shapes]
    if round_scaled:  # half precision: scaled values leaving the grid's normal range are rounded again
        inputs = [on_grid(x) for x in inputs]
    weights = {}
    for w in reference.weight_specs(layer, *input_shapes, **config):
        if w.fixed:
            weights[w.name] = w.initial_value()
            continue
        values = rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.standard_normal(w.shape)
        weights[w.name] = on_grid(values * w.std)
    return inputs, weights


def example_cases(layer: str, dtype: str, fixtures_only: bool = False) -> list[Case]:
    """The spec's named examples (README usage first) as cases with seed 0."""
    spec = reference.spec(layer)
    return [
        Case(layer, dict(ex.config), tuple(ex.input_shapes), 0, dtype, label=ex.name)
        for ex in spec.examples
        if ex.fixture or not fixtures_only
    ]


def edge_cases(layer: str, dtype: str) -> list[Case]:
    """The layer's own samplers asked by every draw of ``reference._sampling.EDGE_DRAWS``: the
    same handful of corner cases (square and non-square maps, sides of 1, batch 1 and > 1, equal
    sizes on different axes, the smallest and largest input scales) in every run."""
    spec = reference.spec(layer)
    low, high = spec.input_magnitudes
    cases = []
    for template in EDGE_DRAWS:
        draw = template.fresh()
        config = spec.draw_config(draw)
        shapes = tuple(tuple(s) for s in spec.sample_input_shapes(config, draw))
        scale = clamp_scale(min(max(template.input_scale, low), high), dtype)
        cases.append(Case(layer, config, shapes, zlib.crc32(f"{layer}/{template.name}".encode()), dtype, label=f"edge: {template.name}", scale=scale))
    return cases
