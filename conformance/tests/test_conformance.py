"""The conformance tests: every layer, on every requested implementation, in every dtype.

Run them against your own implementation with ``pytest --pyargs conformance.tests --impl mylib.adapter:impl``.
"""

from __future__ import annotations

import pytest
from hypothesis import given

import reference
from conformance.sampling import strategies
from conformance.plugins.assertions import assert_conforms, conforms, skip_if_nothing_checked, skip_not_implemented
from conformance.contract import dtype_not_declared
from conformance.sampling.cases import edge_cases, example_cases
from conformance.checks.engine import run_cross, run_rejections
from conformance.io.fixtures import fixture_outcomes, load_manifest
from conformance.plugins.pytest_plugin import candidate, search_settings
from conformance.checks.tolerances import DTYPES
from conformance.checks import gradients, training

LAYERS = reference.names()


def _runs_dtype(impl, dtype):
    if dtype not in impl.dtypes:
        skip_not_implemented(dtype_not_declared(impl, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_documented_examples(impl_ref, impl_explicit, deviations, case_runs, layer, dtype):
    """The README usage and the spec's named configurations, each run whatever the others did."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    _cases_conform(impl, example_cases(layer, dtype), deviations, case_runs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_edge_cases(impl_ref, impl_explicit, deviations, case_runs, layer, dtype):
    """The layer's corners, every run: square and non-square maps, sides of 1, batch 1 and > 1,
    equal sizes on different axes, the smallest and largest input scales."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    _cases_conform(impl, edge_cases(layer, dtype), deviations, case_runs)


def _cases_conform(impl, cases, deviations, case_runs):
    outcomes, failures = [], []
    for case in cases:
        try:
            outcomes += conforms(case_runs.run(impl, case).outcomes, deviations)
        except pytest.fail.Exception as failure:
            failures.append(str(failure))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    skip_if_nothing_checked(outcomes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_drawn_cases(impl_ref, impl_explicit, deviations, case_runs, layer, dtype):
    """Weights, output shape and numerics on configs, shapes, weights and inputs Hypothesis draws
    (the same cases as ``attnconf check`` in the ci profile). A config the implementation does
    not support is counted, not skipped with the others."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    outcomes = []

    @search_settings(layer, dtype)
    @given(case=strategies.cases(layer, dtype))
    def drawn(case):
        outcomes.extend(conforms(case_runs.run(impl, case).outcomes, deviations))

    drawn()
    skip_if_nothing_checked(outcomes)


@pytest.mark.parametrize("layer", LAYERS)
def test_rejects_out_of_domain(impl_ref, impl_explicit, deviations, layer):
    """Every documented out-of-domain config or shape raises ValueError (or TypeError)."""
    impl = candidate(impl_ref, impl_explicit)
    if layer in dict(impl.impl.not_implemented()):
        skip_not_implemented(f"{layer} on {impl.name}: {dict(impl.impl.not_implemented())[layer]}")
    skip_if_nothing_checked(conforms(run_rejections(impl, layer), deviations))


def _agree(a, b, case, deviations, case_runs):
    runs = [case_runs.run(impl, case) for impl in (a, b)]
    outcomes = conforms([o for run in runs for o in run.outcomes], deviations)
    if runs[0].output is not None and runs[1].output is not None:
        outcomes += conforms([run_cross(a, runs[0].output, b, runs[1].output, case)], deviations)
    return outcomes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_implementations_agree(impl_pair, impl_explicit, deviations, case_runs, layer, dtype):
    """Two implementations on the same weights and inputs agree within both tolerances."""
    a, b = (candidate(ref, impl_explicit) for ref in impl_pair)
    for impl in (a, b):
        _runs_dtype(impl.impl, dtype)
    outcomes = []

    @search_settings(layer, dtype)
    @given(case=strategies.cases(layer, dtype))
    def drawn(case):
        outcomes.extend(_agree(a, b, case, deviations, case_runs))

    drawn()
    skip_if_nothing_checked(outcomes)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_implementations_agree_on_examples_and_edge_cases(impl_pair, impl_explicit, deviations, case_runs, layer, dtype):
    """The same agreement on the documented examples and the edge cases, every run."""
    a, b = (candidate(ref, impl_explicit) for ref in impl_pair)
    for impl in (a, b):
        _runs_dtype(impl.impl, dtype)
    outcomes = []
    for case in example_cases(layer, dtype) + edge_cases(layer, dtype):
        outcomes += _agree(a, b, case, deviations, case_runs)
    skip_if_nothing_checked(outcomes)


@pytest.mark.parametrize("layer", LAYERS)
def test_gradients(impl_ref, impl_explicit, deviations, case_runs, layer):
    """Input and weight gradients against central finite differences of the float64 reference on
    the layer's two smallest edge cases (``conformance.checks.gradients``): in float64, or in
    float32 for an implementation without float64. Without ``gradients()`` it skips as "not
    implemented", as the CLI's column reads ``n/i``."""
    impl = candidate(impl_ref, impl_explicit)
    outcomes = []
    for case in gradients.gradient_cases(layer):
        outcomes += conforms([case_runs.gradients(impl, case)[0]], deviations)
    skip_if_nothing_checked(outcomes)


@pytest.mark.parametrize("layer", LAYERS)
def test_gradients_agree(impl_pair, impl_explicit, deviations, case_runs, layer):
    """Two implementations' full gradients on the same cases agree within both tolerances."""
    a, b = (candidate(ref, impl_explicit) for ref in impl_pair)
    outcomes = []
    for case in gradients.gradient_cases(layer):
        (outcome_a, grads_a, dtype_a), (outcome_b, grads_b, dtype_b) = (case_runs.gradients(impl, case) for impl in (a, b))
        outcomes += conforms([outcome_a, outcome_b], deviations)
        if grads_a is not None and grads_b is not None:
            outcomes += conforms([gradients.run_gradients_cross(a, grads_a, b, grads_b, case, dtype_a, dtype_b)], deviations)
    skip_if_nothing_checked(outcomes)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d in ("float32", "float64")])
@pytest.mark.parametrize("layer", [layer for layer in LAYERS if training.applies(layer)])
def test_training_mode(impl_ref, impl_explicit, deviations, layer, dtype):
    """One training step (BatchNorm's batch statistics and moving update, dropout) against the
    reference, on the layers where training differs from inference (``conformance.checks.training``)."""
    impl = candidate(impl_ref, impl_explicit)
    _runs_dtype(impl.impl, dtype)
    outcomes = []
    for case in training.training_cases(layer, dtype):
        outcomes += conforms(training.run_training_case([impl], case), deviations)
    skip_if_nothing_checked(outcomes)


def _fixture_names():
    try:
        return [entry["name"] for entry in load_manifest()["fixtures"]]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("fixture_name", _fixture_names())
def test_golden_fixtures(impl_ref, impl_explicit, deviations, fixture_name):
    """The stored golden cases alone: no reference run, no Hypothesis."""
    impl = candidate(impl_ref, impl_explicit)
    assert_conforms(fixture_outcomes(impl, fixture_name), deviations)
