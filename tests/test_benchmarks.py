"""benchmarks/frameworks.py: its sizes are in every layer's domain, and one small measurement
runs end to end (a smoke test; the timings themselves are never checked)."""

from __future__ import annotations

import math
from argparse import Namespace

import pytest

import reference
from benchmarks.frameworks import LARGE


@pytest.mark.parametrize("name", reference.names())
def test_every_layer_has_a_larger_size_in_its_domain(name):
    config, shapes = LARGE[name]
    readme = next(e for e in reference.spec(name).examples if e.documented_output_shape is not None)

    def elements(config, shapes):  # inputs, weights and output: larger means more of these
        arrays = [*shapes, *reference.weight_shapes(name, *shapes, **config).values(), reference.output_shape(name, *shapes, **config)]
        return sum(math.prod(s) for s in arrays)

    assert elements(config, shapes) > elements(readme.config, readme.input_shapes)


def test_one_measurement_runs():
    pytest.importorskip("torch")
    from benchmarks import _frameworks

    # No memory columns: the PyTorch profiler takes seconds to start.
    args = Namespace(repeat=1, budget=0.0, no_keras=True, no_memory=True)
    row = _frameworks.measure("rsoftmax", "readme", {"groups": 2}, ((2, 1, 1, 98),), args)
    assert set(row.times) == {"ref", "torch64", "torch32"} and all(t > 0 for t in row.times.values())
    inputs, weights = _frameworks.draw_arrays("rsoftmax", {"groups": 2}, ((2, 1, 1, 98),), seed=0)
    assert _frameworks.reference_peak(_frameworks.reference_call("rsoftmax", {"groups": 2}, inputs, weights)) >= 2 * 98 * 8
