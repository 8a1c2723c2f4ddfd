"""Keras-specific behaviour of the coat family in ``impls.tf``: variable names, the two-input
call of ConvRelativePositionalEncoding, float64, serialization, and the same rejections as the
reference.

Numerical conformance over drawn cases lives in ``conformance/tests``; here the reference is
used to show that a Keras feature (float64 policy, sublayer dtypes, reloading) gives the
canonical numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras

import reference
from impls.tf import attention_layers
from impls.tf.coat import ConvPositionalEncoding, ConvRelativePositionalEncoding, layer_norm
from tests.impls.keras_helpers import numpy

CPE, CRPE, LN = "ConvPositionalEncoding", "ConvRelativePositionalEncoding", "layer_norm"

# float64 layers against the float64 reference: a few ulps of O(1) values.
F64_TOL = 1e-13


def canonical_weights(layer: str, shapes, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, *shapes, **config)}


def assign(variables, weights: dict[str, np.ndarray], prefix: str) -> None:
    by_name = {v.path[len(prefix):]: v for v in variables if v.path.startswith(prefix)}
    assert set(by_name) == set(weights), f"expected variables {sorted(weights)} under {prefix!r}, got {sorted(by_name)}"
    for name, value in weights.items():
        by_name[name].assign(value.astype(by_name[name].dtype))


def paths(layer) -> dict[str, tuple[int, ...]]:
    return {v.path: tuple(v.shape) for v in layer.weights}


# --------------------------------------------------------------------------------------------
# 1. Names: the canonical names come out of the Keras variable paths


def test_exported_in_the_attention_layers_namespace():
    for name in (CPE, CRPE, LN):
        assert getattr(attention_layers, name) is {CPE: ConvPositionalEncoding, CRPE: ConvRelativePositionalEncoding, LN: layer_norm}[name]


def test_cpe_variables_sit_directly_under_the_layer_as_in_2021():
    layer = ConvPositionalEncoding(name="cpe_1")
    layer(keras.Input((197, 256)))
    assert paths(layer) == {"cpe_1/depthwise_kernel": (3, 3, 256, 1), "cpe_1/bias": (256,)}, paths(layer)


def test_crpe_variables_are_depth_conv_s_per_group():
    layer = ConvRelativePositionalEncoding(head_splits=[2, 3, 3], head_kernel_size=[3, 5, 7], name="crpe_1")
    layer(keras.Input((8, 197, 6)), keras.Input((8, 197, 6)))
    assert list(paths(layer).items()) == [
        ("crpe_1/depth_conv_1/depthwise_kernel", (3, 3, 12, 1)),
        ("crpe_1/depth_conv_1/bias", (12,)),
        ("crpe_1/depth_conv_2/depthwise_kernel", (5, 5, 18, 1)),
        ("crpe_1/depth_conv_2/bias", (18,)),
        ("crpe_1/depth_conv_3/depthwise_kernel", (7, 7, 18, 1)),
        ("crpe_1/depth_conv_3/bias", (18,)),
    ], paths(layer)


def test_layer_norm_is_named_name_plus_ln():
    inputs = keras.Input((197, 256))
    model = keras.Model(inputs, layer_norm(inputs, name="serial1_block1_norm1"))
    assert paths(model) == {"serial1_block1_norm1ln/gamma": (256,), "serial1_block1_norm1ln/beta": (256,)}, paths(model)


@pytest.mark.parametrize("name", [None, ""])
def test_layer_norm_without_a_name_gets_a_keras_name(name):
    inputs = keras.Input((5, 6))
    first = keras.Model(inputs, layer_norm(inputs, name=name))
    second = keras.Model(inputs, layer_norm(inputs, name=name))
    names = [v.path for v in first.weights + second.weights]
    assert len(set(names)) == 4 and all(n.endswith(("/gamma", "/beta")) and "/" in n for n in names), names


def test_layer_norm_starts_at_gamma_1_beta_0():
    inputs = keras.Input((5, 6))
    model = keras.Model(inputs, layer_norm(inputs, name="x_"))
    values = {v.path: numpy(v) for v in model.weights}
    np.testing.assert_array_equal(values["x_ln/gamma"], np.ones(6))
    np.testing.assert_array_equal(values["x_ln/beta"], np.zeros(6))


# --------------------------------------------------------------------------------------------
# 2. float64 against the reference


@pytest.mark.parametrize(
    "config,shape",
    [({}, (2, 10, 3)), ({"kernel_size": 5}, (1, 5, 4)), ({"kernel_size": 1}, (3, 17, 2)), ({"kernel_size": 3}, (2, 2, 3))],
)
def test_cpe_float64_matches_reference(config, shape):
    layer = ConvPositionalEncoding(**config, dtype="float64", name="cpe")
    x = np.random.default_rng(1).normal(size=shape)
    layer(x)
    weights = canonical_weights(CPE, (shape,), config, seed=2)
    assign(layer.weights, weights, "cpe/")
    got = numpy(layer(x))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, reference.forward(CPE, x, weights=weights, **config), rtol=F64_TOL, atol=F64_TOL)
    np.testing.assert_array_equal(got[:, 0], x[:, 0], err_msg="class token must pass through unchanged")


@pytest.mark.parametrize(
    "config,shape",
    [
        ({}, (2, 8, 10, 2)),
        ({"head_splits": [1, 2, 1], "head_kernel_size": [3, 1, 5]}, (1, 4, 17, 3)),
        ({"head_splits": [2], "head_kernel_size": [3]}, (2, 2, 2, 1)),
    ],
)
def test_crpe_float64_matches_reference_and_its_sublayers_are_float64(config, shape):
    layer = ConvRelativePositionalEncoding(**config, dtype="float64", name="crpe")
    rng = np.random.default_rng(3)
    query, value = rng.normal(size=shape), rng.normal(size=shape)
    layer(query, value)
    assert all(v.dtype == "float64" for v in layer.weights), [(v.path, v.dtype) for v in layer.weights]
    weights = canonical_weights(CRPE, (shape, shape), config, seed=4)
    assign(layer.weights, weights, "crpe/")
    got = numpy(layer(query, value))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, reference.forward(CRPE, query, value, weights=weights, **config), rtol=F64_TOL, atol=F64_TOL)
    np.testing.assert_array_equal(got[:, :, 0], 0.0, err_msg="class-token row must be zero")


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e2])
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 6), (2, 3, 4, 5)])
def test_layer_norm_float64_matches_reference_with_epsilon_1e_6(shape, scale):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")  # blocks take no dtype: their layers use the global policy
    try:
        inputs = keras.Input(shape[1:], dtype="float64")
        model = keras.Model(inputs, layer_norm(inputs, name="x_"))
    finally:
        keras.config.set_dtype_policy(previous)
    weights = canonical_weights(LN, (shape,), {}, seed=5)
    assign(model.weights, weights, "x_")
    x = np.random.default_rng(6).normal(size=shape) * scale
    got = numpy(model(x))
    assert got.dtype == np.float64 and all(v.dtype == "float64" for v in model.weights)
    np.testing.assert_allclose(got, reference.forward(LN, x, weights=weights), rtol=F64_TOL, atol=F64_TOL)


# --------------------------------------------------------------------------------------------
# 3. The two-input call


def test_crpe_takes_query_and_value_positionally_or_by_keyword():
    rng = np.random.default_rng(7)
    query, value = rng.normal(size=(2, 8, 10, 2)).astype("float32"), rng.normal(size=(2, 8, 10, 2)).astype("float32")
    layer = ConvRelativePositionalEncoding(name="crpe")
    positional = numpy(layer(query, value))
    keyword = numpy(layer(query=query, value=value))
    np.testing.assert_array_equal(positional, keyword)
    swapped = numpy(layer(value, query))
    assert not np.allclose(positional, swapped), "query and value play different roles"


def test_crpe_in_a_functional_model_with_unknown_batch():
    query, value = keras.Input((8, 10, 2)), keras.Input((8, 10, 2))
    out = ConvRelativePositionalEncoding(name="crpe")(query, value)
    assert tuple(out.shape) == (None, 8, 10, 2)
    model = keras.Model([query, value], out)
    rng = np.random.default_rng(8)
    for batch in (1, 3):
        got = model([rng.normal(size=(batch, 8, 10, 2)), rng.normal(size=(batch, 8, 10, 2))])
        assert tuple(got.shape) == (batch, 8, 10, 2)


# --------------------------------------------------------------------------------------------
# 4. get_config / from_config and .keras save / load

ROUND_TRIP = [
    pytest.param(ConvPositionalEncoding, {"kernel_size": 5}, ((2, 10, 3),), id="ConvPositionalEncoding"),
    pytest.param(ConvRelativePositionalEncoding, {"head_splits": [1, 2], "head_kernel_size": [5, 3]}, ((2, 3, 10, 2), (2, 3, 10, 2)), id="ConvRelativePositionalEncoding"),
]


@pytest.mark.parametrize("cls, config, shapes", ROUND_TRIP)
def test_get_config_from_config_round_trip(cls, config, shapes):
    rng = np.random.default_rng(9)
    inputs = [rng.normal(size=s).astype("float32") for s in shapes]
    layer = cls(**config, name="original")
    layer(*inputs)
    for variable in layer.weights:  # not the initial zeros: every value must be copied
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    saved = layer.get_config()
    for key, value in config.items():
        assert saved[key] == value, f"get_config()[{key!r}]: expected {value!r}, got {saved.get(key)!r}"
    clone = cls.from_config(saved)
    assert clone.get_config() == saved
    clone(*inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(numpy(clone(*inputs)), numpy(layer(*inputs)))


def test_saved_coat_model_reloads_with_the_same_outputs(tmp_path):
    # tokens -> ConvPositionalEncoding -> layer_norm; the normalised tokens are split into heads
    # and fed to ConvRelativePositionalEncoding as query and value.
    heads, depth, tokens = 3, 2, 10
    inputs = keras.Input((tokens, heads * depth))
    encoded = ConvPositionalEncoding(name="cpe")(inputs)
    normed = layer_norm(encoded, name="norm1")
    per_head = keras.layers.Permute((2, 1, 3))(keras.layers.Reshape((tokens, heads, depth))(normed))
    doubled = keras.layers.Rescaling(2.0)(per_head)
    out = ConvRelativePositionalEncoding(head_splits=[1, 2], head_kernel_size=[3, 1], name="crpe")(per_head, doubled)
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(10)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    x = rng.normal(size=(2, tokens, heads * depth)).astype("float32")

    path = tmp_path / "coat.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the classes are registered
    kinds = {layer.name: type(layer) for layer in loaded.layers}
    assert kinds["cpe"] is ConvPositionalEncoding and kinds["crpe"] is ConvRelativePositionalEncoding, kinds
    assert {v.path for v in loaded.weights} == {v.path for v in model.weights}
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))


# --------------------------------------------------------------------------------------------
# 5. The same rejections, with the same messages, as the reference


def keras_call(layer: str, config, shapes):
    arrays = [np.zeros(s, dtype="float32") for s in shapes]
    if layer == LN:
        return layer_norm(*arrays, **config)
    cls = {CPE: ConvPositionalEncoding, CRPE: ConvRelativePositionalEncoding}[layer]
    return cls(**config)(*arrays)


REJECTIONS = [(name, r) for name in (CPE, CRPE, LN) for r in reference.spec(name).rejections]


@pytest.mark.parametrize("layer,rejection", REJECTIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REJECTIONS)])
def test_rejects_like_the_reference(layer, rejection):
    with pytest.raises(reference.DomainError) as expected:
        reference.validate(layer, *rejection.input_shapes, **rejection.config)
    if layer == LN and rejection.config:
        # The block's signature is the 2021 one, layer_norm(inputs, name=None): Python itself
        # rejects an unknown keyword, with its TypeError.
        with pytest.raises(TypeError, match="unexpected keyword argument 'epsilon'"):
            keras_call(layer, rejection.config, rejection.input_shapes)
        return
    with pytest.raises(ValueError) as got:
        keras_call(layer, rejection.config, rejection.input_shapes)
    assert str(got.value) == str(expected.value), f"Keras: {got.value}\nreference: {expected.value}"


def test_crpe_rejects_a_config_error_at_construction():
    with pytest.raises(ValueError, match="2 kernel sizes for 3 splits"):
        ConvRelativePositionalEncoding(head_splits=[2, 3, 3], head_kernel_size=[3, 5])


def test_symbolic_inputs_with_unknown_tokens_are_rejected():
    with pytest.raises(ValueError, match="must have a known size on axis 1"):
        ConvPositionalEncoding()(keras.Input((None, 4)))
    with pytest.raises(ValueError, match="must have a known size on axis 2"):
        ConvRelativePositionalEncoding(head_splits=[1], head_kernel_size=[3])(keras.Input((1, None, 2)), keras.Input((1, None, 2)))
