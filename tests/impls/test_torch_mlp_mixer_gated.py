"""PyTorch-specific behaviour of MixerBlock and SpatialGatingUnit: state_dict keys and the
canonical mapping, eval() against the reference in float64, training-mode stochastic depth,
the 2021 initial values, and errors.

Numerical conformance on drawn cases lives in ``conformance/tests``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import MODULES, MixerBlock, MlpBlock, SpatialGatingUnit
from reference._conv import layer_norm
from reference.mlp_mixer import mlp_block as reference_mlp_block, scope

MIXER_CONFIG = {"tokens_mlp_dim": 3, "channels_mlp_dim": 6}
MIXER_SHAPE = (2, 5, 4)


def draw_weights(layer, shape, config, seed):
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, shape, **config)}


def randomize(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return module


def test_modules_are_registered_under_the_canonical_names():
    assert MODULES["mixer_block"] is MixerBlock and MODULES["spatial_gating_block"] is SpatialGatingUnit
    assert MODULES["mlp_block"] is MlpBlock


# --------------------------------------------------------------------------------------------
# 1. state_dict keys and the canonical mapping


def test_mixer_block_reuses_mlp_block_and_names_its_parameters_as_timm():
    block = MixerBlock(4, 5, **MIXER_CONFIG)
    assert isinstance(block.mlp_tokens, MlpBlock) and isinstance(block.mlp_channels, MlpBlock)
    assert block.norm1.eps == block.norm2.eps == 1e-5
    keys = list(block.state_dict())
    want = [f"{part}.{p}" for part in ("norm1",) for p in ("weight", "bias")]
    want += [f"mlp_tokens.{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")]
    want += [f"norm2.{p}" for p in ("weight", "bias")]
    want += [f"mlp_channels.{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")]
    assert keys == want, f"expected state_dict keys {want}, got {keys}"
    assert tuple(block.mlp_tokens.fc1.weight.shape) == (3, 5), "token mixing maps the 5 tokens to tokens_mlp_dim 3"


@pytest.mark.parametrize(
    "make, layer, config, shape",
    [
        pytest.param(lambda: MixerBlock(4, 5, **MIXER_CONFIG), "mixer_block", MIXER_CONFIG, MIXER_SHAPE, id="MixerBlock"),
        pytest.param(lambda: SpatialGatingUnit(6, 5), "spatial_gating_block", {}, (2, 5, 6), id="SpatialGatingUnit"),
    ],
)
def test_canonical_round_trip_and_reference_in_float64(make, layer, config, shape):
    module = make().double().eval()
    weights = draw_weights(layer, shape, config, seed=1)
    assert module.canonical_shapes() == reference.weight_shapes(layer, shape, **config)
    assert list(module.canonical_shapes()) == list(reference.weight_shapes(layer, shape, **config)), "canonical order"
    module.load_canonical_state_dict(weights)
    for name, value in module.canonical_state_dict().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=f"canonical {name} did not round-trip")
    x = np.random.default_rng(2).normal(size=shape) * 1e-3  # small variance: the LayerNorm epsilon matters
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    want = reference.forward(layer, x, weights=weights, **config)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"float64 {type(module).__name__} vs the reference")


def test_from_canonical_reads_tokens_and_channels_from_the_shape():
    block = MixerBlock.from_canonical({"tokens_mlp_dim": 2, "channels_mlp_dim": 3, "drop_rate": 0.0, "activation": "relu"}, (1, 7, 6))
    assert (block.mlp_tokens.fc1.in_features, block.mlp_channels.fc1.in_features) == (7, 6)
    assert isinstance(block.mlp_tokens.act, nn.ReLU)
    unit = SpatialGatingUnit.from_canonical({}, (1, 7, 6))
    assert (unit.proj.in_features, unit.norm.normalized_shape) == (7, (3,))


# --------------------------------------------------------------------------------------------
# 2. Initial values


def test_fresh_spatial_gating_unit_holds_the_2021_initial_values_and_passes_the_gate():
    torch.manual_seed(3)
    unit = SpatialGatingUnit(6, 5)
    values = unit.canonical_state_dict()
    for w in reference.weight_specs("spatial_gating_block", (1, 5, 6)):
        if w.initial is not None:
            np.testing.assert_array_equal(values[w.name], w.initial_value(), err_msg=f"fresh {w.name}")
    kernel_std = float(values["vv_dense/kernel"].std())
    assert 1e-7 < kernel_std < 1e-5, f"expected proj.weight of std ~1e-6, got {kernel_std:.3g}"
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), x[..., :3], rtol=0, atol=1e-4)


def test_fresh_mixer_layer_norms_hold_the_declared_initial_values():
    values = MixerBlock(4, 5, **MIXER_CONFIG).canonical_state_dict()
    for w in reference.weight_specs("mixer_block", MIXER_SHAPE, **MIXER_CONFIG):
        if w.initial is not None:
            np.testing.assert_array_equal(values[w.name], w.initial_value(), err_msg=f"fresh {w.name}")


# --------------------------------------------------------------------------------------------
# 3. Training-mode stochastic depth


def test_drop_rate_drops_whole_branches_per_sample_in_train_mode_only():
    config = {"tokens_mlp_dim": 3, "channels_mlp_dim": 5, "drop_rate": 0.5}
    shape = (16, 4, 3)
    block = MixerBlock(3, 4, **config).double()
    weights = draw_weights("mixer_block", shape, config, seed=4)
    block.load_canonical_state_dict(weights)
    x = np.random.default_rng(5).normal(size=shape)

    def branches(token_scale, channel_scale):
        normalised = layer_norm(x, weights["LayerNorm_0/gamma"], weights["LayerNorm_0/beta"], 1e-5)
        token = reference_mlp_block(normalised.swapaxes(1, 2), weights=scope(weights, "token_mixing/"), hidden_dim=3).swapaxes(1, 2)
        tokens_out = x + token_scale * token
        normalised = layer_norm(tokens_out, weights["LayerNorm_1/gamma"], weights["LayerNorm_1/beta"], 1e-5)
        return tokens_out + channel_scale * reference_mlp_block(normalised, weights=scope(weights, "channel_mixing/"), hidden_dim=5)

    torch.manual_seed(6)
    block.train()
    with torch.no_grad():
        training = block(torch.from_numpy(x)).numpy()
    candidates = {(t, c): branches(t, c) for t in (0.0, 2.0) for c in (0.0, 2.0)}
    seen = set()
    for sample in range(shape[0]):
        matches = [key for key, value in candidates.items() if np.allclose(training[sample], value[sample], rtol=0, atol=1e-12)]
        assert matches, f"sample {sample}: the train-mode output is no combination of dropped (0) or kept (x2) branches"
        seen.update(matches)
    assert len(seen) > 1, f"expected different samples to drop different branches, saw only {seen}"

    block.eval()
    with torch.no_grad():
        inference = block(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(inference, branches(1.0, 1.0), rtol=0, atol=1e-12, err_msg="eval() keeps both branches")


# --------------------------------------------------------------------------------------------
# 4. Errors: the reference's messages


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda: MixerBlock(4, 5, 0, 2), "mixer_block: tokens_mlp_dim 0 must be >= 1", id="tokens_mlp_dim"),
        pytest.param(lambda: MixerBlock(4, 5, 2, 2, drop_rate=1.0), "mixer_block: drop_rate 1.0", id="drop_rate"),
        pytest.param(lambda: MixerBlock(4, 5, 2, 2, activation="mish"), "mixer_block: activation 'mish'", id="activation"),
        pytest.param(lambda: SpatialGatingUnit(5, 4), "spatial_gating_block: inputs channels 5 must be even", id="odd_channels"),
        pytest.param(lambda: SpatialGatingUnit.from_canonical({}, (1, 2, 4, 6)), "must have rank 3", id="rank"),
    ],
)
def test_bad_config_raises_the_reference_message(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


@pytest.mark.parametrize(
    "module, shape, fragment",
    [
        pytest.param(MixerBlock(4, 5, 2, 2), (2, 4, 5), "mixer_block: inputs shape (2, 4, 5) must be [batch, 5, 4]", id="Mixer-swapped"),
        pytest.param(MixerBlock(4, 5, 2, 2), (2, 5, 4, 1), "(2, 5, 4, 1)", id="Mixer-rank4"),
        pytest.param(SpatialGatingUnit(6, 5), (2, 5, 8), "spatial_gating_block: inputs shape (2, 5, 8) must be [batch, 5, 6]", id="SGU-channels"),
        pytest.param(SpatialGatingUnit(6, 5), (2, 4, 6), "(2, 4, 6)", id="SGU-tokens"),
    ],
)
def test_wrong_input_shape_raises_value_error_not_runtime_error(module, shape, fragment):
    with pytest.raises(ValueError) as info:
        module(torch.ones(shape))
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


def test_blocks_compose_in_sequential():
    model = randomize(nn.Sequential(MixerBlock(6, 5, 3, 4), SpatialGatingUnit(6, 5)), seed=7).double().eval()
    x = np.random.default_rng(8).normal(size=(2, 5, 6))
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    want = reference.forward("mixer_block", x, weights=model[0].canonical_state_dict(), tokens_mlp_dim=3, channels_mlp_dim=4)
    want = reference.forward("spatial_gating_block", want, weights=model[1].canonical_state_dict())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13, err_msg="float64 Sequential vs the reference chain")
