"""The conformance tests: every layer, on every requested implementation, in every dtype.

Run them against your own implementation with ``pytest --pyargs conformance.tests --impl mylib.adapter:impl``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

import reference
from conformance.sampling import strategies
from conformance.plugins.assertions import assert_conforms
from conformance.sampling.cases import edge_cases, example_cases
from conformance.checks.engine import NOT_IMPLEMENTED, run_case, run_cross, run_rejections
from conformance.io.fixtures import fixture_outcomes, load_manifest
from conformance.plugins.pytest_plugin import candidate
from conformance.checks.tolerances import DTYPES

LAYERS = reference.names()


def _runs_dtype(impl, dtype):
    if dtype not in impl.dtypes:
        pytest.skip(reason=f"not implemented: {impl.name} does not declare dtype {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_documented_examples(impl_ref, impl_explicit, layer, dtype):
    """The README usage and the spec's named configurations."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    for case in example_cases(layer, dtype):
        assert_conforms(run_case(impl, case).outcomes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_edge_cases(impl_ref, impl_explicit, layer, dtype):
    """The layer's corners, every run: square and non-square maps, sides of 1, batch 1 and > 1,
    equal sizes on different axes, the smallest and largest input scales."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    for case in edge_cases(layer, dtype):
        assert_conforms(run_case(impl, case).outcomes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
@given(data=st.data())
def test_drawn_cases(impl_ref, impl_explicit, layer, dtype, data):
    """Weights, output shape and numerics on configs, shapes, weights and inputs Hypothesis draws."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    case = data.draw(strategies.cases(layer, dtype), label="case")
    assert_conforms(run_case(impl, case).outcomes)


@pytest.mark.parametrize("layer", LAYERS)
def test_rejects_out_of_domain(impl_ref, impl_explicit, layer):
    """Every documented out-of-domain config or shape raises ValueError."""
    impl = candidate(impl_ref, impl_explicit)
    if layer in dict(impl.impl.not_implemented()):
        pytest.skip(reason=f"not implemented: {layer} on {impl.name}")
    assert_conforms(run_rejections(impl, layer))


def _agree(a, b, case):
    arrays = case.arrays()
    runs = [run_case(impl, case, arrays) for impl in (a, b)]
    assert_conforms(o for run in runs for o in run.outcomes)
    assert_conforms([run_cross(a, runs[0].output, b, runs[1].output, case)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
@given(data=st.data())
def test_implementations_agree(impl_pair, impl_explicit, layer, dtype, data):
    """Two implementations on the same weights and inputs agree within both tolerances."""
    a, b = (candidate(ref, impl_explicit) for ref in impl_pair)
    for impl in (a, b):
        _runs_dtype(impl.impl, dtype)
    _agree(a, b, data.draw(strategies.cases(layer, dtype), label="case"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_implementations_agree_on_examples_and_edge_cases(impl_pair, impl_explicit, layer, dtype):
    """The same agreement on the documented examples and the edge cases, every run."""
    a, b = (candidate(ref, impl_explicit) for ref in impl_pair)
    for impl in (a, b):
        _runs_dtype(impl.impl, dtype)
    for case in example_cases(layer, dtype) + edge_cases(layer, dtype):
        _agree(a, b, case)


def _fixture_names():
    try:
        return [entry["name"] for entry in load_manifest()["fixtures"]]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("fixture_name", _fixture_names())
def test_golden_fixtures(impl_ref, impl_explicit, fixture_name):
    """The stored golden cases alone: no reference run, no Hypothesis."""
    impl = candidate(impl_ref, impl_explicit)
    outcomes = fixture_outcomes(impl, fixture_name)
    if outcomes and all(o.status == NOT_IMPLEMENTED for o in outcomes):
        pytest.skip(reason=f"not implemented: {outcomes[0].detail}")
    assert_conforms(outcomes)
