"""The gradients check: float64 central differences of the reference against each
implementation's ``gradients``, and implementations against each other."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, PASS, Candidate
from conformance.checks.gradients import GRADIENT_TOLERANCES, cross_tolerance, gradient_cases, gradient_dtype, run_gradient_case, trainable_weights
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
        assert sorted(c.label for c in cases) == ["edge: every size 2, last options", "edge: smallest"]
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


class _Float32Only:
    """An implementation declaring float32 only (as keras-jax and keras-torch do), wrapping
    another; ``factor`` multiplies one weight gradient (a slip a float32 tolerance must catch)."""

    def __init__(self, inner, name, factor=None):
        self.inner, self.name, self.factor = inner, name, factor
        self.layout, self.dtypes = inner.layout, ("float32",)
        self.dtype_notes = {"float64": "a test double: float32 only"}

    def not_implemented(self):
        return self.inner.not_implemented()

    def build(self, layer, config, input_shapes, dtype):
        assert dtype == "float32", dtype
        built = self.inner.build(layer, config, input_shapes, dtype)
        return built if self.factor is None else _ScaledGradient(built, self.factor)


class _ScaledGradient:
    def __init__(self, built, factor):
        self.built, self.factor = built, factor

    def weight_shapes(self):
        return self.built.weight_shapes()

    def load_weights(self, weights):
        self.built.load_weights(weights)

    def forward(self, *inputs):
        return self.built.forward(*inputs)

    def gradients(self, inputs, cotangent):
        input_grads, weight_grads = self.built.gradients(inputs, cotangent)
        name = max(weight_grads, key=lambda n: float(np.abs(weight_grads[n]).max()))  # never a near-zero one
        weight_grads[name] = weight_grads[name] * np.float32(self.factor)
        return input_grads, weight_grads


# Not layer_norm: PyTorch's float32 LayerNorm backward uses 79% of the float32 tolerance on its
# "every size 2" case here (conformance/checks/gradients.py), and its rounding depends on the
# CPU's vector width; the float64 check holds torch to 256 eps there.
@pytest.mark.parametrize("layer", ["mlp_block", "ConvPositionalEncoding", "MHSAWithPositionEmbedding"])
def test_a_float32_only_implementation_is_checked_in_float32_and_crossed_at_the_float32_tolerance(layer):
    impls = [("tf", load_implementation("tf")), ("torch32", _Float32Only(load_implementation("torch"), "torch32"))]
    outcomes = _run(impls, layer, cross=True)
    assert all(o.status == PASS for o in outcomes), [o.detail for o in outcomes if o.status != PASS]
    assert {(o.impl, o.dtype) for o in outcomes} == {("tf", "float64"), ("torch32", "float32"), ("tf vs torch32", "float32")}
    mine = [o for o in outcomes if o.impl == "torch32"]
    assert all("float32 gradients within atol=3.05e-05" in o.detail for o in mine), mine[0].detail
    assert all(o.comparison.tolerance.atol == GRADIENT_TOLERANCES["float32"].atol for o in mine)
    assert all(o.comparison.tolerance.atol == cross_tolerance("float64", "float32").atol for o in outcomes if " vs " in o.impl)


def test_a_gradient_off_by_one_part_in_a_thousand_fails_in_float32():
    good = _run([("torch32", _Float32Only(load_implementation("torch"), "torch32"))], "mlp_block")
    bad = _run([("slipped", _Float32Only(load_implementation("torch"), "slipped", factor=1.001))], "mlp_block")
    assert [o.status for o in good] == [PASS, PASS]
    assert [o.status for o in bad] == [FAIL, FAIL]
    assert all("slipped (float32)" in o.detail and "float32 gradients differ" in o.detail and "d/d Dense_" in o.detail for o in bad)
    assert all(o.dtype == "float32" and '"dtype":"float32"' in o.detail for o in bad)


def test_float64_is_used_whenever_it_is_declared_and_float32_only_without_it():
    torch = load_implementation("torch")
    assert gradient_dtype(torch) == "float64"
    assert gradient_dtype(torch, ("float32",)) == "float32"
    assert gradient_dtype(_Float32Only(torch, "f32")) == "float32"
    assert gradient_dtype(_Float32Only(torch, "f32"), ("float64",)) is None


def test_the_matrix_says_which_dtype_the_gradients_were_checked_in():
    candidates = [Candidate("tf", load_implementation("tf")), Candidate("torch32", _Float32Only(load_implementation("torch"), "torch32"))]
    result = check(candidates, ["ChannelAffine"], CheckSettings(examples=2, training=False), progress=lambda m: None)
    rows = {r["implementation"]: r for r in report.rows(result, ("float32", "float64"))}
    assert rows["tf"]["gradients"].startswith("ok 2") and rows["tf"]["gradients"].endswith("[float64]")
    assert rows["torch32"]["gradients"].startswith("ok 2") and rows["torch32"]["gradients"].endswith("[float32]")
    assert rows["tf vs torch32"]["gradients"].endswith("[float32]")
    assert rows["torch32"]["float64"] == "n/i"
    text = report.text(result, ("float32", "float64"), strict=True)
    assert "dtype float64 not declared by torch32: a test double: float32 only" in text
    assert not result.failed


def test_the_gradient_cases_take_both_option_sets_so_a_trainable_kernel_is_differentiated():
    # "smallest" takes every choice's first option and "every size 2, last options" its last:
    # anti_alias_downsample is differentiated with trainable False and True, so an
    # implementation that ignores trainable (a fixed buffer, no kernel gradient) fails.
    configs = {c.label: c.config for c in gradient_cases("anti_alias_downsample")}
    assert {configs["edge: smallest"]["trainable"], configs["edge: every size 2, last options"]["trainable"]} == {False, True}, configs
