"""Hypothesis strategies for conformance cases, one concern each.

Configs and input shapes are drawn through each layer's own declaration
(``LayerSpec.draw_config`` and ``LayerSpec.sample_input_shapes``), so every config parameter
is exercised within its domain and shapes respect each layer's rules. Inputs and weights
come from a drawn seed (see ``conformance.sampling.cases.draw_arrays``), inputs at a drawn power-of-two
scale within the layer's promised input magnitudes.
"""

from __future__ import annotations

import math
import zlib

from hypothesis import strategies as st

import reference
from reference._spec import REQUIRED
from conformance.sampling.cases import Case, clamp_scale


class HypothesisDraw:
    """``reference._spec.Draw`` backed by a Hypothesis ``draw`` function."""

    def __init__(self, draw):
        self._draw = draw

    def integer(self, label, low, high):
        return self._draw(st.integers(low, high))

    def choice(self, label, options):
        return self._draw(st.sampled_from(tuple(options)))

    def real(self, label, low, high):
        return self._draw(st.floats(low, high, allow_nan=False, allow_infinity=False))


@st.composite
def configs(draw, layer: str) -> dict:
    """A complete config drawn through the layer's own sampler."""
    return reference.spec(layer).draw_config(HypothesisDraw(draw))


@st.composite
def as_written(draw, layer: str, config: dict) -> dict:
    """The config the way a user writes it: a parameter drawn at its default value is sometimes
    left out, so that the implementation's own default is what gets checked (defaults are
    semantics too)."""
    written = dict(config)
    for param in reference.spec(layer).params:
        if param.default is not REQUIRED and param.name in written and _same(written[param.name], param.default):
            if draw(st.booleans()):
                del written[param.name]
    return written


def _same(value, default) -> bool:
    return (type(value) is type(default) and value == default) or (value is None and default is None)


@st.composite
def input_shapes(draw, layer: str, config: dict) -> tuple[tuple[int, ...], ...]:
    return tuple(reference.spec(layer).sample_input_shapes(config, HypothesisDraw(draw)))


def seeds():
    return st.integers(0, 2**32 - 1)


def input_scales(layer: str, dtype: str = "float32"):
    """Powers of two across the input magnitudes the layer's spec promises (exact in every dtype),
    within ``cases.HALF_INPUT_SCALES`` for a half-precision dtype."""
    low, high = (clamp_scale(m, dtype) for m in reference.spec(layer).input_magnitudes)
    return st.integers(math.ceil(math.log2(low)), math.floor(math.log2(high))).map(lambda exponent: 2.0**exponent)


@st.composite
def cases(draw, layer: str, dtype: str) -> Case:
    config = draw(configs(layer))
    shapes = draw(input_shapes(layer, config))  # the samplers read the complete config
    return Case(layer, draw(as_written(layer, config)), shapes, draw(seeds()), dtype, scale=draw(input_scales(layer, dtype)))


def search_seed(layer: str, dtype: str) -> int:
    """The Hypothesis seed of a deterministic search: the CLI and the pytest route draw the same
    cases for a layer and dtype, so they can be held to the same verdicts."""
    return zlib.crc32(f"{layer}/{dtype}".encode())
