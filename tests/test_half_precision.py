"""Half precision (float16, bfloat16): grids, the tolerance model, the contract's bfloat16 carrier,
and a quick check of both bundled implementations (issue 10)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import reference
from conformance import cli
from conformance.checks import tolerances
from conformance.checks.engine import Candidate
from conformance.checks.half import UNIT_ROUNDOFF, carrier, reduction_length, reduction_table, to_dtype
from conformance.contract import load_implementation
from conformance.runners.runner import CheckSettings, check, run_one_case
from conformance.sampling.cases import HALF_INPUT_SCALES, Case, draw_arrays, edge_cases, example_cases

HALF = ("float16", "bfloat16")
NP_HALF = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _exact_in(values: np.ndarray, dtype: str) -> bool:
    return bool(np.array_equal(values.astype(NP_HALF[dtype]).astype(np.float64), values))


# ------------------------------------------------------------------------------------------------
# Tolerance model


def test_default_dtypes_and_float32_float64_tolerances_are_unchanged():
    assert tolerances.DTYPES == ("float32", "float64")
    assert tolerances.KNOWN_DTYPES == ("float32", "float64", "float16", "bfloat16")
    for dtype in ("float32", "float64"):
        t = tolerances.tolerance("any", dtype)
        assert t.atol == t.rtol == 256 * float(np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", HALF)
def test_half_tolerance_is_c_sqrt_n_u_with_the_cases_reduction_length(dtype):
    case = example_cases("MHSAWithPositionEmbedding", dtype)[0]  # README: 256 -> 512 projections
    n = reduction_length(case.layer, case.config, case.input_shapes)
    assert n == 512
    t = tolerances.tolerance(case.layer, dtype, case)
    assert t.atol == t.rtol == pytest.approx(tolerances.HALF_MULTIPLE * math.sqrt(512) * UNIT_ROUNDOFF[dtype])
    assert "sqrt(n=512)" in t.reason
    with pytest.raises(ValueError, match="reduction length"):
        tolerances.tolerance(case.layer, dtype)
    assert "sqrt(n)" in tolerances.describe(dtype)


def test_reduction_length_counts_fan_in_positions_and_channels():
    # a depthwise kernel [kh, kw, C, 1] sums kh * kw terms, not kh * kw * C
    assert reduction_length("ConvPositionalEncoding", {}, ((1, 197, 256),)) == 256
    # a convolution [3, 3, 96, 384] sums 864 terms, more than 28 * 28 positions
    example = next(e for e in reference.spec("split_attention_conv2d").examples if e.name == "readme")
    assert reduction_length("split_attention_conv2d", example.config, example.input_shapes) == 864
    table = reduction_table()
    assert {layer for layer, _, _ in table} == set(reference.names())
    assert all(n >= 1 for _, _, n in table)


# ------------------------------------------------------------------------------------------------
# Grids and the bfloat16 carrier


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("layer", ["MHSAWithPositionEmbedding", "batchnorm_with_activation", "ChannelAffine"])
def test_half_cases_draw_values_exact_in_their_dtype_at_every_scale(layer, dtype):
    low, high = HALF_INPUT_SCALES[dtype]
    for case in example_cases(layer, dtype) + edge_cases(layer, dtype):
        assert low <= case.scale <= high
        inputs, weights = case.arrays()
        for values in [*inputs, *weights.values()]:
            assert _exact_in(values, dtype), (case.describe(), dtype)


def test_each_half_grid_needs_its_own_dtype():
    """float16 values are not bfloat16 values (3 more significand bits), nor the reverse at small
    magnitudes (bfloat16 reaches 2^-133, float16 stops at 2^-24)."""
    case = example_cases("MHSAWithPositionEmbedding", "float16")[0]
    as_float16 = case.arrays()[0][0]
    assert not _exact_in(as_float16, "bfloat16")
    assert _exact_in(np.array([2.0**-30]), "bfloat16") and not _exact_in(np.array([2.0**-30]), "float16")


def test_float32_cases_draw_exactly_as_before():
    case = edge_cases("ChannelAffine", "float32")[0]
    inputs, weights = case.arrays()
    old_inputs, old_weights = draw_arrays(case.layer, case.config, case.input_shapes, case.seed, "float16", case.scale)
    assert all(np.array_equal(a, b) for a, b in zip(inputs, old_inputs))
    assert all(np.array_equal(weights[k], old_weights[k]) for k in weights)


def test_bfloat16_crosses_the_contract_as_float32():
    assert carrier("bfloat16") == np.float32 and carrier("float16") == np.float16
    rounded = to_dtype(np.array([0.1, 1 + 2.0**-9, 3.0]), "bfloat16")
    assert rounded.dtype == np.float32
    assert rounded.tolist() == [float(np.float32(ml_dtypes.bfloat16(0.1))), 1.0, 3.0]


# ------------------------------------------------------------------------------------------------
# Both bundled implementations


@pytest.fixture(scope="module")
def candidates():
    return [Candidate(name, load_implementation(name)) for name in ("tf", "torch")]


def test_quick_half_precision_check_passes_for_both_implementations(candidates):
    layers = ["MHSAWithPositionEmbedding", "layer_norm", "ChannelAffine"]
    result = check(candidates, layers, CheckSettings(examples=2, dtypes=HALF), progress=lambda _: None)
    numerics = [t for (layer, subject, check_name, dtype), t in result.tallies.items() if dtype in HALF and check_name in ("numerics", "cross")]
    assert {subject for (_, subject, _, dtype) in result.tallies if dtype in HALF} >= {"tf", "torch", "tf vs torch"}
    assert numerics and all(t.status == "pass" for t in numerics), [o.detail for o in result.failures]
    assert not result.failed, [o.detail for o in result.failures]


SHRUNK_GATING_CASE = Case("spatial_gating_block", {}, ((2, 1, 4),), 610201, "float16")
"""Found by the float16 search while the Keras LayerNorm still normalised in half: a LayerNorm over
2 nearly equal channels, whose centred values are lost to the rounding of the mean in float16."""


def test_float32_normalisation_statistics_matter_and_are_checked(candidates, monkeypatch):
    """The 2021 tf.keras LayerNormalization normalised half inputs in float32 (as PyTorch's
    layer_norm does); ``impls.tf._layers.CenteredLayerNormalization`` follows it. Normalising in
    float16 instead fails the float16 check on this case, by the tolerance model, not by chance."""
    from impls.tf import _layers

    def numerics(impl):
        return next(o for o in run_one_case(candidates, SHRUNK_GATING_CASE, cross=False) if o.impl == impl and o.check == "numerics")

    assert numerics("tf").status == numerics("torch").status == "pass"
    monkeypatch.setattr(_layers, "FLOAT32_STATISTICS", False)
    in_half = numerics("tf")
    assert in_half.status == "fail" and in_half.comparison.tolerance_used > 1.5, in_half.detail


def test_mixed_policies_and_autocast_run_as_their_own_implementations():
    mixed = [Candidate(name, load_implementation(name)) for name in ("tf-mixed", "torch-autocast")]
    assert all(c.impl.dtypes == HALF for c in mixed)
    result = check(mixed, ["MHSAWithPositionEmbedding", "layer_norm"], CheckSettings(examples=1, dtypes=HALF), progress=lambda _: None)
    assert not result.failed, [o.detail for o in result.failures]
    # float32 variables under the mixed policy, half compute
    built = mixed[0].impl.build("ChannelAffine", {}, ((1, 2, 2, 3),), "float16")
    assert {v.dtype for v in built.variables.values()} == {"float32"}
    assert built.forward(np.ones((1, 2, 2, 3), np.float16)).dtype == np.float16


def test_cli_accepts_half_dtypes_and_rejects_others(capsys):
    assert cli.main(["check", "--layers", "BiasLayer", "--dtypes", "float16", "bfloat16", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "float16" in out and "bfloat16" in out and "sqrt(n)" in out
    assert cli.main(["check", "--layers", "BiasLayer", "--dtypes", "int8"]) == 2
