"""Keras-specific behaviour of the aotnet blocks in ``impls.tf``: 2021 call styles, variable
names, initial values, rejections, unknown spatial sizes, float64 and saving.

Numerical conformance on drawn cases lives in ``conformance/tests``; the reference is used here
where a Keras feature (the float64 policy, a saved model) has to be shown to give the canonical
numbers.
"""

from __future__ import annotations


import numpy as np
import pytest

import keras

import reference
from impls.tf import aotnet, attention_layers
from reference._spec import REQUIRED
from tests.impls.keras_helpers import dtype_policy, build, variables, numpy

LAYERS = ["anti_alias_downsample", "batchnorm_with_activation", "conv2d_no_bias", "se_module"]


# --------------------------------------------------------------------------------------------
# 1. The 2021 call styles and names


def test_blocks_are_in_the_readme_namespace():
    for layer in LAYERS:
        assert getattr(attention_layers, layer) is getattr(aotnet, layer)


def test_2021_positional_calls_build_the_canonical_variables():
    """The calls the 2021 models make, with their prefixes."""
    inputs = keras.Input(shape=(8, 8, 16))
    nn = attention_layers.conv2d_no_bias(inputs, 32, 3, strides=2, padding="same", name="stem_1_")
    nn = attention_layers.batchnorm_with_activation(nn, activation="swish", name="stem_1_")
    nn = attention_layers.se_module(nn, se_ratio=0.25, activation="relu", name="stack1_se_")
    nn = attention_layers.anti_alias_downsample(nn, kernel_size=3, strides=2, name="stack1_shorcut_down")
    model = keras.Model(inputs, nn)
    assert model.output.shape == (None, 2, 2, 32)
    paths = {v.path: tuple(v.shape) for v in model.weights}
    assert paths == {
        "stem_1_conv/kernel": (3, 3, 16, 32),
        "stem_1_bn/gamma": (32,),
        "stem_1_bn/beta": (32,),
        "stem_1_bn/moving_mean": (32,),
        "stem_1_bn/moving_variance": (32,),
        "stack1_se_1_conv/kernel": (1, 1, 32, 8),
        "stack1_se_1_conv/bias": (8,),
        "stack1_se_2_conv/kernel": (1, 1, 8, 32),
        "stack1_se_2_conv/bias": (32,),
        "stack1_shorcut_downanti_alias_down/depthwise_kernel": (3, 3, 32, 1),
    }
    names = [layer.name for layer in model.layers]
    assert "stem_1_pad" in names and "stem_1_swish" in names


@pytest.mark.parametrize(
    "layer, config, shape",
    [
        ("anti_alias_downsample", {"kernel_size": 5, "strides": 3}, (2, 7, 5, 3)),
        ("batchnorm_with_activation", {"activation": None, "zero_gamma": True}, (2, 3, 4, 5)),
        ("conv2d_no_bias", {"filters": 6, "kernel_size": (1, 3), "strides": (2, 1), "padding": "SAME", "use_bias": True, "groups": 3}, (1, 4, 5, 6)),
        ("conv2d_no_bias", {"filters": 3, "kernel_size": 2, "groups": 3, "use_bias": True}, (1, 5, 5, 6)),
        ("se_module", {"se_ratio": 0.29, "use_bias": False}, (1, 3, 3, 10)),
    ],
)
def test_variables_have_the_canonical_names_and_shapes(layer, config, shape):
    model = build(layer, shape, name="attn_", **config)
    got = {name: tuple(v.shape) for name, v in variables(model, "attn_").items()}
    assert got == reference.weight_shapes(layer, shape, **config)
    assert model.output.shape[1:] == reference.output_shape(layer, shape, **config)[1:]


def test_depthwise_conv_keeps_the_input_channels_and_names_its_kernel_depthwise_kernel():
    model = build("conv2d_no_bias", (1, 5, 5, 6), filters=3, kernel_size=3, groups=3)
    assert model.output.shape == (None, 3, 3, 6)
    assert list(variables(model, "t_")) == ["conv/depthwise_kernel"]
    default_groups = build("conv2d_no_bias", (1, 5, 5, 4), filters=1, kernel_size=1)
    assert default_groups.output.shape == (None, 5, 5, 4)
    assert list(variables(default_groups, "t_")) == ["conv/depthwise_kernel"]


def test_blocks_without_a_name_get_unique_keras_names():
    inputs = keras.Input(shape=(6, 6, 4))
    first = attention_layers.conv2d_no_bias(inputs, 4, 3, padding="SAME")
    second = attention_layers.conv2d_no_bias(first, 4, 3, padding="SAME")
    out = attention_layers.batchnorm_with_activation(attention_layers.batchnorm_with_activation(second))
    out = attention_layers.anti_alias_downsample(attention_layers.anti_alias_downsample(out))
    model = keras.Model(inputs, out)
    assert len({layer.name for layer in model.layers}) == len(model.layers)


def test_se_module_default_name_is_empty_as_in_2021():
    model = build("se_module", (1, 2, 2, 8), name="")
    assert sorted(v.path for v in model.weights) == ["1_conv/bias", "1_conv/kernel", "2_conv/bias", "2_conv/kernel"]


def test_conv2d_no_bias_passes_extra_keywords_to_the_convolution():
    inputs = keras.Input(shape=(5, 5, 2))
    out = attention_layers.conv2d_no_bias(inputs, 4, 3, name="k_", trainable=False)
    model = keras.Model(inputs, out)
    assert model.get_layer("k_conv").trainable is False
    assert model.trainable_weights == []


# --------------------------------------------------------------------------------------------
# 2. Initial values


def spec_initial(layer, shape, **config) -> dict[str, np.ndarray]:
    return {w.name: w.initial_value() for w in reference.weight_specs(layer, shape, **config) if w.initial is not None}


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, (5, 5)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_anti_alias_kernel_is_built_as_the_fixed_blur(kernel_size, dtype):
    with dtype_policy(dtype):
        model = build("anti_alias_downsample", (1, 6, 6, 3), kernel_size=kernel_size)
    (kernel,) = model.weights
    np.testing.assert_array_equal(numpy(kernel), spec_initial("anti_alias_downsample", (1, 6, 6, 3), kernel_size=kernel_size)["anti_alias_down/depthwise_kernel"])
    assert model.trainable_weights == [], "the blur must not be trainable by default"


def test_anti_alias_trainable_makes_the_kernel_trainable():
    model = build("anti_alias_downsample", (1, 6, 6, 3), trainable=True)
    assert [v.path for v in model.trainable_weights] == ["t_anti_alias_down/depthwise_kernel"]


@pytest.mark.parametrize("zero_gamma", [False, True])
def test_batchnorm_initial_values_are_the_declared_ones(zero_gamma):
    model = build("batchnorm_with_activation", (1, 2, 2, 5), zero_gamma=zero_gamma)
    built = {name: numpy(v) for name, v in variables(model, "t_").items()}
    want = spec_initial("batchnorm_with_activation", (1, 2, 2, 5), zero_gamma=zero_gamma)
    assert set(built) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(built[name], value, err_msg=name)


def test_batchnorm_momentum_and_epsilon_are_the_2021_values():
    model = build("batchnorm_with_activation", (1, 2, 2, 5))
    bn = model.get_layer("t_bn")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)


# --------------------------------------------------------------------------------------------
# 3. Rejections: the reference's messages, as ValueError


REJECTIONS = [
    (layer, rejection)
    for layer in LAYERS
    for rejection in reference.spec(layer).rejections
    # A missing positional argument is Python's TypeError before any check can run.
    if all(p.name in rejection.config for p in reference.spec(layer).params if p.default is REQUIRED)
]


@pytest.mark.parametrize("layer, rejection", REJECTIONS, ids=[f"{layer}-{r.message[:40]}" for layer, r in REJECTIONS])
def test_rejections_match_the_reference(layer, rejection):
    (shape,) = rejection.input_shapes
    inputs = keras.Input(shape=shape[1:], batch_size=shape[0])
    with pytest.raises(ValueError) as info:
        getattr(attention_layers, layer)(inputs, **rejection.config)
    assert str(info.value).startswith(f"{layer}:"), str(info.value)
    assert rejection.message in str(info.value), str(info.value)


def test_missing_filters_is_a_type_error_as_in_2021():
    with pytest.raises(TypeError):
        attention_layers.conv2d_no_bias(keras.Input(shape=(4, 4, 2)), kernel_size=3)


def test_unknown_spatial_sizes_are_accepted_and_checked_when_known():
    inputs = keras.Input(shape=(None, None, 4))
    model = keras.Model(inputs, attention_layers.conv2d_no_bias(inputs, 8, (3, 5), strides=2, groups=2, name="u_"))
    assert model.output.shape == (None, None, None, 8)
    assert model(np.ones((1, 7, 9, 4), "float32")).shape == (1, 3, 3, 8)
    with pytest.raises(ValueError, match="conv2d_no_bias: width 4 plus padding 0 is smaller than the kernel's width 5"):
        attention_layers.conv2d_no_bias(keras.Input(shape=(None, 4, 4)), 8, (3, 5))
    for layer in ("anti_alias_downsample", "batchnorm_with_activation", "se_module"):
        assert getattr(attention_layers, layer)(inputs).shape[-1] == 4


def test_unknown_channels_are_rejected():
    with pytest.raises(ValueError, match="must have a known size on axis -1"):
        attention_layers.se_module(keras.Input(shape=(4, 4, None)))


# --------------------------------------------------------------------------------------------
# 4. float64 and saving


def draw_weights(layer, shape, config, seed):
    rng = np.random.default_rng(seed)
    return {
        w.name: w.initial_value() if w.fixed else (rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.normal(0.0, w.std, w.shape))
        for w in reference.weight_specs(layer, shape, **config)
    }


FLOAT64_CASES = [
    ("anti_alias_downsample", {"kernel_size": 4, "strides": 2}, (2, 5, 6, 3)),
    ("batchnorm_with_activation", {"activation": "gelu"}, (2, 3, 4, 5)),
    ("conv2d_no_bias", {"filters": 6, "kernel_size": 3, "strides": (1, 2), "padding": "same", "groups": 2, "use_bias": True}, (2, 5, 6, 4)),
    ("se_module", {"se_ratio": 0.5, "activation": "swish"}, (2, 3, 2, 6)),
]


@pytest.mark.parametrize("layer, config, shape", FLOAT64_CASES)
def test_float64_policy_matches_the_reference(layer, config, shape):
    with dtype_policy("float64"):
        model = build(layer, shape, **config)
    weights = draw_weights(layer, shape, config, seed=3)
    for name, variable in variables(model, "t_").items():
        assert variable.dtype == "float64", name
        variable.assign(weights[name])
    x = np.random.default_rng(4).normal(size=shape)
    got = numpy(model(x, training=False))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, reference.forward(layer, x, weights=weights, **config), rtol=1e-13, atol=1e-13)


def test_saved_model_with_every_block_reloads_with_the_same_outputs(tmp_path):
    inputs = keras.Input(shape=(6, 6, 4))
    nn = attention_layers.conv2d_no_bias(inputs, 4, 3, padding="SAME", groups=4, name="dw_")
    nn = attention_layers.batchnorm_with_activation(nn, activation="gelu", name="dw_")
    nn = attention_layers.se_module(nn, name="se_")
    nn = attention_layers.anti_alias_downsample(nn, name="down_")
    model = keras.Model(inputs, nn)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape))
        elif "anti_alias" not in variable.path:
            variable.assign(rng.normal(size=variable.shape))
    x = rng.normal(size=(2, 6, 6, 4)).astype("float32")
    path = tmp_path / "aotnet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
