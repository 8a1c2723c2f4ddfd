"""The training-mode check: BatchNorm with batch statistics and its moving statistics after one
step; dropout the identity at rate 0 in training and at any rate at inference."""

from __future__ import annotations

import pytest
from torch import nn

from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, PASS, Candidate
from conformance.checks.training import applies, run_training_case, training_cases
from conformance.contract import load_implementation
from conformance.numpy_impl import ReferenceImplementation, ReferenceLayer
from impls.torch._mapping import KerasBatchNorm2d


class _Impl(ReferenceImplementation):
    def __init__(self, name, layer_class):
        self.name, self._layer_class = name, layer_class

    def build(self, layer, config, input_shapes, dtype):
        return self._layer_class(layer, config, input_shapes, dtype)


class _ScaledAtInferenceLayer(ReferenceLayer):
    """Multiplies its output by ``1 - rate`` at inference (old-style dropout scaling)."""

    def forward(self, *inputs):
        rate = self.config.get("attn_dropout", 0)
        return super().forward(*inputs) * (1 - rate)


class _NoTrainingLayer(ReferenceLayer):
    def __getattribute__(self, name):
        if name == "forward_training":
            raise AttributeError(name)
        return super().__getattribute__(name)


def _run(refs_or_impls, layer, dtype="float64"):
    candidates = [Candidate(r, i) for r, i in refs_or_impls]
    return [o for case in training_cases(layer, dtype) for o in run_training_case(candidates, case)]


def test_the_check_applies_where_training_differs():
    assert applies("batchnorm_with_activation") and applies("cot_attention") and applies("split_attention_conv2d")
    assert applies("MHSAWithPositionEmbedding") and applies("mixer_block")
    assert not applies("layer_norm") and not applies("se_module")
    for case in training_cases("outlook_attention", "float32"):
        assert case.config["attn_dropout"] == 0 and case.config["output_dropout"] == 0


@pytest.mark.parametrize("layer,dtype", [("batchnorm_with_activation", "float64"), ("split_attention_conv2d", "float32"), ("outlook_attention", "float64")])
def test_both_bundled_implementations_and_the_reference_wrapper_pass(layer, dtype):
    impls = [(r, load_implementation(r)) for r in ("tf", "torch", "numpy")]
    outcomes = _run(impls, layer, dtype)
    assert len(outcomes) == 6
    assert all(o.status == PASS for o in outcomes), [o.detail for o in outcomes if o.status != PASS]


def test_pytorch_batchnorm2d_updates_the_moving_variance_with_the_unbiased_variance(monkeypatch):
    # Plain nn.BatchNorm2d training behaviour instead of the bundled Keras-conforming one.
    monkeypatch.setattr(KerasBatchNorm2d, "forward", nn.BatchNorm2d.forward)
    outcomes = _run([("torch", load_implementation("torch"))], "batchnorm_with_activation")
    assert [o.status for o in outcomes] == [FAIL, FAIL]
    detail = outcomes[0].detail
    assert "bn/moving_variance" in detail and "UNBIASED" in detail and "8/7" in detail
    assert "training-mode output" not in detail and "bn/moving_mean" not in detail  # normalisation and mean agree


def test_dropout_scaling_at_inference_fails():
    outcomes = _run([("scaled", _Impl("scaled", _ScaledAtInferenceLayer))], "MHSAWithPositionEmbedding")
    assert {o.status for o in outcomes} == {FAIL}
    assert "not the identity dropout" in outcomes[0].detail


def test_a_missing_method_reads_not_implemented():
    outcomes = _run([("none", _Impl("none", _NoTrainingLayer))], "batchnorm_with_activation")
    assert {o.status for o in outcomes} == {NOT_IMPLEMENTED}
