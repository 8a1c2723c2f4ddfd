"""The gradients check: float64 central differences of the reference against each
implementation's ``gradients``, and implementations against each other."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, PASS, Candidate
from conformance.checks.gradients import gradient_cases, run_gradient_case, trainable_weights
from conformance.contract import load_implementation
from conformance.numpy_impl import ReferenceImplementation, ReferenceLayer
from conformance.reports import report
from conformance.runners.runner import CheckSettings, check


class _ZeroGradientLayer(ReferenceLayer):
    """Returns zeros for every gradient (a tape that watched nothing)."""

    def gradients(self, inputs, cotangent):
        names = trainable_weights(self.layer, self.input_shapes, self.config)
        return [np.zeros_like(x) for x in inputs], {n: np.zeros_like(self.weights[n]) for n in names}


class _TransposedGradientLayer(ReferenceLayer):
    """The right gradients with one square weight's transposed in place (a permutation mapped the
    wrong way)."""

    def gradients(self, inputs, cotangent):
        input_grads, weight_grads = super().gradients(inputs, cotangent)
        name = next((n for n, g in weight_grads.items() if g.ndim == 2 and g.shape[0] == g.shape[1] > 1), None)
        if name is not None:
            weight_grads[name] = weight_grads[name].T.copy()
        return input_grads, weight_grads


class _NoGradientLayer(ReferenceLayer):
    """The reference without ``gradients`` (an adapter that does not provide it)."""

    def __getattribute__(self, name):
        if name == "gradients":
            raise AttributeError(name)
        return super().__getattribute__(name)


class _Impl(ReferenceImplementation):
    def __init__(self, name, layer_class):
        self.name, self._layer_class = name, layer_class

    def build(self, layer, config, input_shapes, dtype):
        return self._layer_class(layer, config, input_shapes, dtype)


def _run(impls, layer, cross=False):
    candidates = [Candidate(ref, impl) for ref, impl in impls]
    return [o for case in gradient_cases(layer) for o in run_gradient_case(candidates, case, cross)]


def test_gradient_cases_are_small_float64_edge_cases():
    for layer in ("cot_attention", "MHSAWithPositionEmbedding", "rsoftmax"):
        cases = gradient_cases(layer)
        assert sorted(c.label for c in cases) == ["edge: every size 2", "edge: smallest"]
        assert all(c.dtype == "float64" for c in cases)


def test_zero_gradients_fail_and_name_the_tensor():
    outcomes = _run([("zeros", _Impl("zeros", _ZeroGradientLayer))], "mlp_block")
    assert [o.status for o in outcomes] == [FAIL, FAIL]
    assert "d/d input 0" in outcomes[0].detail and "reproduce:" in outcomes[0].detail


def test_a_transposed_weight_gradient_fails_where_the_reference_passes():
    # mlp_block "every size 2": hidden_dim 2 on 2 channels, so Dense_0/kernel is 2 x 2
    good = _run([("numpy", load_implementation("numpy"))], "mlp_block")
    bad = _run([("transposed", _Impl("transposed", _TransposedGradientLayer))], "mlp_block")
    assert [o.status for o in good] == [PASS, PASS]
    failed = [o for o in bad if o.status == FAIL]
    assert len(failed) == 1 and "every size 2" in failed[0].detail and "Dense_0/kernel" in failed[0].detail


def test_a_missing_method_reads_not_implemented_in_the_matrix():
    outcomes = _run([("nograd", _Impl("nograd", _NoGradientLayer))], "BiasLayer")
    assert {o.status for o in outcomes} == {NOT_IMPLEMENTED}
    result = check([Candidate("nograd", _Impl("nograd", _NoGradientLayer))], ["BiasLayer"], CheckSettings(examples=2, dtypes=("float64",), cross=False, training=False), progress=lambda m: None)
    row = report.rows(result, ("float64",))[0]
    assert row["gradients"] == "n/i" and row["training"] == "n/a"
    assert not result.failed


@pytest.mark.parametrize("layer", ["MHSAWithPositionEmbedding", "split_attention_conv2d", "ConvRelativePositionalEncoding"])
def test_both_bundled_implementations_pass_and_agree(layer):
    impls = [(ref, load_implementation(ref)) for ref in ("tf", "torch")]
    outcomes = _run(impls, layer, cross=True)
    assert len(outcomes) == 6
    assert all(o.status == PASS for o in outcomes), [o.detail for o in outcomes if o.status != PASS]
    assert {o.impl for o in outcomes} == {"tf", "torch", "tf vs torch"}
