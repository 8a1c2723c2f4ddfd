"""The comparison rule, the tolerance table, and implementation loading."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.checks.compare import compare
from conformance.contract import ContractError, load_implementation
from conformance.checks.tolerances import TOLERANCES, Tolerance, tolerance

TOL = Tolerance(rtol=1e-6, atol=1e-6)


def test_compare_applies_atol_plus_rtol_times_expected():
    expected = np.array([0.0, 1.0, 100.0])
    inside = expected + np.array([0.9e-6, 1.9e-6, 100.9e-6])
    outside = expected + np.array([0.0, 0.0, 102e-6])
    assert compare(inside, expected, TOL).ok
    result = compare(outside, expected, TOL)
    assert not result.ok and result.mismatches == 1 and result.max_abs_index == (2,)


def test_compare_reports_location_values_and_share():
    expected = np.zeros((2, 3))
    got = expected.copy()
    got[1, 2] = 0.5
    result = compare(got, expected, TOL)
    assert (result.max_abs, result.max_abs_index, result.mismatches, result.total) == (0.5, (1, 2), 1, 6)
    assert "1 of 6 elements (16.67%)" in result.summary() and "at [1, 2]" in result.summary()


@pytest.mark.parametrize("got, expected, ok", [
    ([np.nan], [1.0], False),
    ([1.0], [np.nan], False),
    ([np.nan], [np.nan], True),
    ([np.inf], [np.inf], True),
    ([np.inf], [-np.inf], False),
    ([1e308], [np.inf], False),
])
def test_compare_treats_special_values_strictly(got, expected, ok):
    assert compare(np.array(got), np.array(expected), TOL).ok is ok


def test_tolerances_follow_the_documented_rule():
    assert TOLERANCES["float32"].atol == pytest.approx(256 * np.finfo(np.float32).eps)
    assert TOLERANCES["float64"].rtol == pytest.approx(256 * np.finfo(np.float64).eps)
    # The off-by-1e-3 meta-test relies on this margin.
    assert tolerance("any", "float32").atol * 10 < 1e-3


def test_load_implementation_resolves_builtins_and_module_attributes():
    assert load_implementation("numpy").name == "numpy"
    assert load_implementation("conformance.numpy_impl:ReferenceImplementation").name == "numpy"  # a factory


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "must be one of"),
    ("conformance.numpy_impl:missing", "has no attribute 'missing'"),
    ("conformance.contract:LAYOUTS", "missing name, layout, dtypes, not_implemented, build"),
])
def test_load_implementation_explains_what_is_wrong(spec, message):
    with pytest.raises(ContractError, match=message):
        load_implementation(spec)
