"""Keras-specific behaviour of ``mixer_block``, ``mlp_block``'s scopes and ``spatial_gating_block``:
2021 layer names and canonical variable paths under Keras 3, float64, training-mode stochastic
depth, the 2021 initial values, serialization and errors.

Numerical conformance on drawn cases lives in ``conformance/tests``; the reference is used here
where a Keras feature (float64 policy, ``training``) has to be shown to give the canonical numbers.
"""

from __future__ import annotations


import numpy as np
import pytest

import keras

import reference
from impls.tf import attention_layers
from impls.tf.mlp_mixer import CenteredLayerNormalization, MlpBlock
from reference._conv import layer_norm
from reference.mlp_mixer import mlp_block as reference_mlp_block, scope
from tests.impls.keras_helpers import dtype_policy, numpy

MIXER_CONFIG = {"tokens_mlp_dim": 3, "channels_mlp_dim": 6}
MIXER_SHAPE = (2, 5, 4)
MIXER_WEIGHTS = [
    "LayerNorm_0/gamma",
    "LayerNorm_0/beta",
    "token_mixing/Dense_0/kernel",
    "token_mixing/Dense_0/bias",
    "token_mixing/Dense_1/kernel",
    "token_mixing/Dense_1/bias",
    "LayerNorm_1/gamma",
    "LayerNorm_1/beta",
    "channel_mixing/Dense_0/kernel",
    "channel_mixing/Dense_0/bias",
    "channel_mixing/Dense_1/kernel",
    "channel_mixing/Dense_1/bias",
]


def draw_weights(layer, shape, config, seed):
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, shape, **config)}


def block_model(block, shape, prefix="blk_", dtype="float32", **config):
    with dtype_policy(dtype):
        inputs = keras.Input(shape[1:], dtype=dtype)
        return keras.Model(inputs, block(inputs, **config, name=prefix))


def assign(model, weights, prefix="blk_"):
    by_name = {v.path[len(prefix) :]: v for v in model.weights}
    assert set(by_name) == set(weights), f"expected variables {sorted(weights)}, got {sorted(by_name)}"
    for name, value in weights.items():
        by_name[name].assign(value.astype(by_name[name].dtype))


# --------------------------------------------------------------------------------------------
# 1. Names and variable paths


def test_mixer_block_variable_paths_are_the_2021_names():
    model = block_model(attention_layers.mixer_block, MIXER_SHAPE, **MIXER_CONFIG)
    paths = [v.path for v in model.weights]
    assert paths == ["blk_" + name for name in MIXER_WEIGHTS], f"expected the canonical paths below 'blk_', got {paths}"
    shapes = {v.path[len("blk_") :]: tuple(v.shape) for v in model.weights}
    assert shapes == reference.weight_shapes("mixer_block", MIXER_SHAPE, **MIXER_CONFIG)


@pytest.mark.parametrize("drop_rate, extra", [(0, []), (0.2, ["blk_token_drop", "blk_channel_drop"])], ids=["no_drop", "drop"])
def test_mixer_block_layer_names_follow_the_2021_code(drop_rate, extra):
    model = block_model(attention_layers.mixer_block, MIXER_SHAPE, drop_rate=drop_rate, **MIXER_CONFIG)
    names = {layer.name for layer in model.layers[1:]}
    want = {"blk_LayerNorm_0", "blk_permute_0", "blk_token_mixing", "blk_permute_1", "blk_add_0", "blk_LayerNorm_1", "blk_channel_mixing", "blk_add_1", *extra}
    assert names == want, f"expected layers {sorted(want)}, got {sorted(names)}"
    assert isinstance(model.get_layer("blk_token_mixing"), MlpBlock)


def test_mlp_block_name_ending_in_slash_is_a_scope():
    inputs = keras.Input([5, 8])
    model = keras.Model(inputs, attention_layers.mlp_block(inputs, 4, name="scope/"))
    paths = [v.path for v in model.weights]
    assert paths == ["scope/Dense_0/kernel", "scope/Dense_0/bias", "scope/Dense_1/kernel", "scope/Dense_1/bias"], paths
    assert [layer.name for layer in model.layers[1:]] == ["scope"]


def test_two_mixer_blocks_without_names_do_not_clash():
    inputs = keras.Input(MIXER_SHAPE[1:])
    first = attention_layers.mixer_block(inputs, **MIXER_CONFIG)
    model = keras.Model(inputs, attention_layers.mixer_block(first, 2, 2, drop_rate=0.1))  # a name clash raises here
    paths = [v.path for v in model.weights]
    assert len(set(paths)) == len(paths) == 24, f"expected 24 distinct variable paths, got {paths}"


def test_two_named_mixer_blocks_keep_their_prefixes():
    inputs = keras.Input(MIXER_SHAPE[1:])
    first = attention_layers.mixer_block(inputs, **MIXER_CONFIG, name="MixerBlock_0_")
    model = keras.Model(inputs, attention_layers.mixer_block(first, **MIXER_CONFIG, name="MixerBlock_1_"))
    paths = [v.path for v in model.weights]
    assert paths == [f"MixerBlock_{i}_{name}" for i in (0, 1) for name in MIXER_WEIGHTS], paths


def test_the_2021_model_level_slash_prefix_is_refused_by_keras_3():
    # The 2021 MLPMixer named its blocks "MixerBlock_0/"; Keras 3 allows no "/" in a layer name.
    with pytest.raises(ValueError) as info:
        attention_layers.mixer_block(keras.Input(MIXER_SHAPE[1:]), **MIXER_CONFIG, name="MixerBlock_0/")
    assert "/" in str(info.value), f"expected Keras' message about '/', got {str(info.value)!r}"


def test_spatial_gating_block_variable_paths_and_layer_names():
    model = block_model(attention_layers.spatial_gating_block, (2, 5, 6))
    assert [v.path for v in model.weights] == ["blk_vv_ln/gamma", "blk_vv_ln/beta", "blk_vv_dense/kernel", "blk_vv_dense/bias"]
    names = {layer.name for layer in model.layers}
    assert {"blk_vv_ln", "blk_permute_1", "blk_vv_dense", "blk_permute_2"} <= names, sorted(names)
    assert model.output.shape == (None, 5, 3)


# --------------------------------------------------------------------------------------------
# 2. float64 and the initial values


@pytest.mark.parametrize(
    "layer, config, shape",
    [
        pytest.param("mixer_block", MIXER_CONFIG, MIXER_SHAPE, id="mixer_block"),
        pytest.param(
            "mixer_block", {"tokens_mlp_dim": 4, "channels_mlp_dim": 2, "drop_rate": 0.3, "activation": "swish"}, (3, 4, 4), id="mixer_block-drop-swish"
        ),
        pytest.param("spatial_gating_block", {}, (2, 5, 6), id="spatial_gating_block"),
    ],
)
def test_float64_blocks_keep_float64_and_match_the_reference(layer, config, shape):
    model = block_model(getattr(attention_layers, layer), shape, dtype="float64", **config)
    weights = draw_weights(layer, shape, config, seed=1)
    assign(model, weights)
    x = np.random.default_rng(2).normal(size=shape) * 1e-3  # small variance: the LayerNorm epsilon matters
    out = model(x, training=False)
    assert {v.dtype for v in model.weights} == {"float64"}, {v.path: v.dtype for v in model.weights}
    assert keras.backend.standardize_dtype(out.dtype) == "float64"
    want = reference.forward(layer, x, weights=weights, **config)
    np.testing.assert_allclose(numpy(out), want, rtol=1e-12, atol=1e-15, err_msg=f"float64 {layer} vs the reference")


def test_fresh_layer_norms_hold_the_declared_initial_values():
    model = block_model(attention_layers.mixer_block, MIXER_SHAPE, **MIXER_CONFIG)
    declared = {w.name: w.initial_value() for w in reference.weight_specs("mixer_block", MIXER_SHAPE, **MIXER_CONFIG) if w.initial is not None}
    assert sorted(declared) == ["LayerNorm_0/beta", "LayerNorm_0/gamma", "LayerNorm_1/beta", "LayerNorm_1/gamma"]
    values = {v.path[len("blk_") :]: numpy(v) for v in model.weights}
    for name, initial in declared.items():
        np.testing.assert_array_equal(values[name], initial, err_msg=f"fresh {name}")


def test_fresh_spatial_gating_block_holds_the_2021_initial_values_and_passes_the_gate():
    model = block_model(attention_layers.spatial_gating_block, (2, 5, 6))
    values = {v.path[len("blk_") :]: numpy(v) for v in model.weights}
    for w in reference.weight_specs("spatial_gating_block", (2, 5, 6)):
        if w.initial is not None:
            np.testing.assert_array_equal(values[w.name], w.initial_value(), err_msg=f"fresh {w.name}")
    kernel = values["vv_dense/kernel"]
    assert 0 < np.max(np.abs(kernel)) <= 2e-6, f"expected a truncated normal of std 1e-6 (|k| <= 2e-6), max {np.max(np.abs(kernel)):.3g}"
    x = np.random.default_rng(3).normal(size=(2, 5, 6)).astype("float32")
    np.testing.assert_allclose(numpy(model(x)), x[..., :3], rtol=0, atol=1e-4, err_msg="a fresh unit should pass the gate half through")


def test_centered_layer_norm_is_exact_where_keras_cancels():
    # One channel: the exact LayerNorm is beta. Keras 3's x * inv + (beta - mean * inv) leaves
    # ~eps * |x| / sqrt(epsilon) behind, beyond the suite's 256-eps float32 bound.
    x = np.random.default_rng(8).normal(size=(4, 50, 1)).astype("float32") * 3.0
    gamma, beta = np.array([2.5], "float32"), np.array([0.7071], "float32")  # beta with low-order bits to lose
    ours = CenteredLayerNormalization(epsilon=1e-5)
    theirs = keras.layers.LayerNormalization(epsilon=1e-5)
    for layer in (ours, theirs):
        layer.build(x.shape)
        layer.set_weights([gamma, beta])
    assert isinstance(ours, keras.layers.LayerNormalization)
    ours_error, keras_error = (np.max(np.abs(numpy(layer(x)) - beta[0])) for layer in (ours, theirs))
    assert ours_error == 0.0, f"expected exactly beta for one channel, off by {ours_error:.3g}"
    # Should Keras change its formula, only this assert fails; the subclass can then go.
    assert keras_error > 256 * np.finfo("float32").eps, f"keras.layers.LayerNormalization is now within {keras_error:.3g} of beta"


def test_centered_layer_norm_matches_the_reference_in_float64():
    x = np.random.default_rng(9).normal(size=(3, 4, 6)) * 1e-3
    rng = np.random.default_rng(10)
    gamma, beta = rng.normal(size=6), rng.normal(size=6)
    layer = CenteredLayerNormalization(epsilon=1e-5, dtype="float64")
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(numpy(layer(x)), layer_norm(x, gamma, beta, 1e-5), rtol=1e-13, atol=1e-15)


# --------------------------------------------------------------------------------------------
# 3. Training-mode stochastic depth


def test_mixer_block_drop_rate_drops_whole_branches_per_sample_in_training():
    config = {"tokens_mlp_dim": 3, "channels_mlp_dim": 5, "drop_rate": 0.5}
    shape = (16, 4, 3)
    model = block_model(attention_layers.mixer_block, shape, dtype="float64", **config)
    weights = draw_weights("mixer_block", shape, config, seed=4)
    assign(model, weights)
    x = np.random.default_rng(5).normal(size=shape)
    keras.utils.set_random_seed(6)
    training = numpy(model(x, training=True))

    def branches(token_scale, channel_scale):
        """The block with each branch multiplied by a dropout mask value (0 or 1 / keep)."""
        normalised = layer_norm(x, weights["LayerNorm_0/gamma"], weights["LayerNorm_0/beta"], 1e-5)
        token = reference_mlp_block(normalised.swapaxes(1, 2), weights=scope(weights, "token_mixing/"), hidden_dim=3).swapaxes(1, 2)
        tokens_out = x + token_scale * token
        normalised = layer_norm(tokens_out, weights["LayerNorm_1/gamma"], weights["LayerNorm_1/beta"], 1e-5)
        return tokens_out + channel_scale * reference_mlp_block(normalised, weights=scope(weights, "channel_mixing/"), hidden_dim=5)

    candidates = {(t, c): branches(t, c) for t in (0.0, 2.0) for c in (0.0, 2.0)}
    seen = set()
    for sample in range(shape[0]):
        matches = [key for key, value in candidates.items() if np.allclose(training[sample], value[sample], rtol=0, atol=1e-12)]
        assert matches, f"sample {sample}: the training output is no combination of dropped (0) or kept (x2) branches"
        seen.update(matches)
    assert len(seen) > 1, f"expected different samples to drop different branches, saw only {seen}"
    np.testing.assert_allclose(numpy(model(x, training=False)), branches(1.0, 1.0), rtol=0, atol=1e-12, err_msg="inference keeps both branches")


# --------------------------------------------------------------------------------------------
# 4. Serialization


def test_model_with_both_blocks_saves_and_reloads(tmp_path):
    inputs = keras.Input((5, 6))
    x = attention_layers.mixer_block(inputs, 3, 4, drop_rate=0.1, name="mix_")
    outputs = attention_layers.spatial_gating_block(x, name="sgu_")
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, size=variable.shape).astype("float32"))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # MlpBlock is a registered serializable
    assert type(loaded.get_layer("mix_token_mixing")) is MlpBlock
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    np.testing.assert_array_equal(numpy(loaded(x, training=False)), numpy(model(x, training=False)))


def test_mlp_block_layer_config_round_trip():
    layer = MlpBlock(hidden_dim=5, activation="tanh", name="mlp")
    config = layer.get_config()
    assert config["hidden_dim"] == 5 and config["activation"] == "tanh"
    clone = MlpBlock.from_config(config)
    assert clone.get_config() == config


# --------------------------------------------------------------------------------------------
# 5. Errors: the reference's messages


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda: attention_layers.mixer_block(keras.Input([4, 3]), 0, 2), "mixer_block: tokens_mlp_dim 0 must be >= 1", id="tokens_mlp_dim"),
        pytest.param(lambda: attention_layers.mixer_block(keras.Input([4, 3]), 2, 2, drop_rate=1.0), "mixer_block: drop_rate 1.0", id="drop_rate"),
        pytest.param(lambda: attention_layers.mixer_block(keras.Input([4, 3]), 2, 2, activation="mish"), "mixer_block: activation 'mish'", id="activation"),
        pytest.param(lambda: attention_layers.mixer_block(keras.Input([2, 4, 3]), 2, 2), "must have rank 3: [batch, tokens, channels]", id="rank"),
        pytest.param(lambda: attention_layers.mixer_block(keras.Input([None, 3]), 2, 2), "must have a known size on axis -2", id="unknown_tokens"),
        pytest.param(lambda: MlpBlock(0), "mlp_block: hidden_dim 0", id="MlpBlock"),
        pytest.param(
            lambda: attention_layers.spatial_gating_block(keras.Input([4, 5])), "spatial_gating_block: inputs channels 5 must be even", id="odd_channels"
        ),
        pytest.param(lambda: attention_layers.spatial_gating_block(keras.Input([None, 6])), "must have a known size on axis -2", id="unknown_tokens_sgu"),
        pytest.param(lambda: attention_layers.spatial_gating_block(keras.Input([2, 4, 6])), "rank 3", id="rank_sgu"),
    ],
)
def test_bad_config_or_shape_raises_the_reference_message(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"
