"""Meta-tests: the harness must report broken implementations as failing, with the right reason."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conformance.sampling.cases import Case, edge_cases
from conformance.contract import load_implementation
from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, PASS, Candidate, run_case, run_rejections
from conformance.runners.runner import CheckSettings, check
from tests import broken_impls

SQUARE_MHSA = Case("MHSAWithPositionEmbedding", {"num_heads": 2, "key_dim": 3}, ((2, 3, 4, 6),), seed=7, dtype="float32")
README_MHSA = Case("MHSAWithPositionEmbedding", {"num_heads": 4, "key_dim": 128}, ((1, 14, 16, 256),), seed=7, dtype="float32")


def _candidate(attribute):
    return Candidate(f"tests.broken_impls:{attribute}", getattr(broken_impls, attribute))


def _failures(outcomes):
    return [o for o in outcomes if o.status == FAIL]


def test_the_unbroken_reference_wrapper_passes_every_check():
    # Without this, a harness that fails everything would pass the tests below.
    numpy_impl = Candidate("numpy", load_implementation("numpy"))
    for case in (SQUARE_MHSA, README_MHSA, Case("mlp_block", {"hidden_dim": 5}, ((2, 3, 4),), 1, "float64")):
        outcomes = run_case(numpy_impl, case).outcomes
        assert [o.status for o in outcomes] == [PASS, PASS, PASS], [o.detail for o in outcomes]


@pytest.mark.parametrize("case", [SQUARE_MHSA, Case("ChannelAffine", {}, ((2, 5),), 3)])
def test_misnamed_weight_fails_the_weights_check_naming_both_names(case):
    [failure] = _failures(run_case(_candidate("misnamed_weight"), case).outcomes)
    first = next(iter(case.arrays()[1]))
    assert failure.check == "weights"
    assert f"missing {first}" in failure.detail and f"extra {first}{broken_impls.RENAMED_SUFFIX}" in failure.detail, failure.detail


def test_transposed_square_weight_fails_numerics():
    [failure] = _failures(run_case(_candidate("transposed_weight"), SQUARE_MHSA).outcomes)
    assert failure.check == "numerics", failure.detail
    assert failure.comparison.mismatches > 0 and failure.comparison.tolerance_used > 1
    assert "outside atol=" in failure.detail and "reproduce: attnconf check --impl tests.broken_impls:transposed_weight" in failure.detail


def test_transposed_non_square_weight_fails_the_weights_check_with_both_shapes():
    [failure] = _failures(run_case(_candidate("transposed_weight"), README_MHSA).outcomes)
    assert failure.check == "weights"
    assert "wrong shape query: expected [256, 512], got [512, 256]" in failure.detail, failure.detail


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer, config, shape", [
    ("BiasLayer", {}, (2, 3, 4)),
    ("MHSAWithPositionEmbedding", {"num_heads": 1, "key_dim": 2}, (1, 2, 3, 4)),
])
def test_output_off_by_1e3_fails_numerics_everywhere(layer, config, shape, dtype):
    case = Case(layer, config, (shape,), seed=11, dtype=dtype)
    [failure] = _failures(run_case(_candidate("off_by_1e3"), case).outcomes)
    c = failure.comparison
    assert failure.check == "numerics"
    assert c.mismatches == c.total, f"expected every element flagged, got {c.mismatches} of {c.total}"
    np.testing.assert_allclose(c.max_abs, 1e-3, rtol=1e-3)
    for fragment in (f"numerics: {layer} on off_by_1e-3 ({dtype})", "100.00%", "config=", "input shapes=", "seed=11", "reproduce:"):
        assert fragment in failure.detail, f"{fragment!r} missing from:\n{failure.detail}"


def test_runner_shrinks_and_reports_each_broken_implementation_separately():
    candidates = [Candidate("numpy", load_implementation("numpy")), _candidate("off_by_1e3")]
    result = check(candidates, ["ChannelAffine"], CheckSettings(examples=5), progress=lambda _: None)
    failed_subjects = {o.impl for o in result.failures}
    assert failed_subjects == {"off_by_1e-3", "numpy vs off_by_1e-3"}, [o.detail for o in result.failures]
    numpy_cells = [t for (l, s, c, d), t in result.tallies.items() if s == "numpy"]
    assert numpy_cells and all(t.status == PASS for t in numpy_cells)


def test_rejections_require_value_error():
    class Permissive(broken_impls._Broken):
        def build(self, layer, config, input_shapes, dtype):
            raise RuntimeError("no validation here")

    outcomes = run_rejections(Candidate("permissive", Permissive("permissive", None)), "mlp_block")
    assert outcomes and all(o.status == FAIL for o in outcomes)
    assert "expected ValueError or TypeError, got RuntimeError: no validation here" in outcomes[0].detail


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, timeout=300)


def test_cli_exits_nonzero_and_explains_for_a_broken_implementation():
    run = _cli("check", "--impl", "tests.broken_impls:off_by_1e3", "--layers", "BiasLayer", "--examples", "3")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL" in run.stdout and "numerics: BiasLayer on off_by_1e-3" in run.stdout, run.stdout


def test_reproduce_command_replays_the_failure():
    [failure] = _failures(run_case(_candidate("off_by_1e3"), Case("BiasLayer", {}, ((1, 2),), 5)).outcomes)
    command = failure.detail.split("reproduce: ")[1].strip()
    assert command.startswith("attnconf check ")
    import shlex

    run = _cli(*shlex.split(command)[1:])
    assert run.returncode == 1 and "numerics [off_by_1e-3, float32]: fail" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize(
    "attribute, layer",
    [("height_width_confused", "MHSAWithPositionEmbedding"), ("tokens_channels_confused", "mlp_block")],
)
def test_the_edge_cases_alone_catch_a_mix_up_of_two_axes_of_equal_size(attribute, layer):
    # Drawn cases may or may not hit a square map or tokens == channels; the edge cases of every
    # default run always do.
    failed = [o for case in edge_cases(layer, "float64") for o in run_case(_candidate(attribute), case).outcomes if o.status == FAIL]
    assert failed and all(o.check == "numerics" for o in failed), [o.detail for o in failed]
    result = check([_candidate(attribute)], [layer], CheckSettings(examples=1, dtypes=("float64",), cross=False), progress=lambda message: None)
    assert any(o.check == "numerics" for o in result.failures), "the default check run missed it"


INIT_CASES = [
    Case("ChannelAffine", {"weight_init_value": 0.25}, ((2, 3),), 1, "float32"),
    Case("anti_alias_downsample", {"kernel_size": 3}, ((1, 4, 5, 2),), 1, "float32"),
    Case("batchnorm_with_activation", {"zero_gamma": True}, ((1, 2, 3, 4),), 1, "float64"),
]


@pytest.mark.parametrize("case", INIT_CASES, ids=[c.layer for c in INIT_CASES])
def test_initial_values_are_checked_exactly_and_never_pass_unchecked(case):
    statuses = {name: [o for o in run_case(_candidate(name), case).outcomes if o.check == "init"] for name in ("wrong_initial_values", "no_initial_values")}
    [wrong] = statuses["wrong_initial_values"]
    assert wrong.status == FAIL and "differ from the spec's declared initial values" in wrong.detail, wrong.detail
    [unchecked] = statuses["no_initial_values"]
    assert unchecked.status == NOT_IMPLEMENTED, unchecked.detail
    numpy_impl = Candidate("numpy", load_implementation("numpy"))
    [right] = [o for o in run_case(numpy_impl, case).outcomes if o.check == "init"]
    assert right.status == PASS, right.detail
