"""Keras-specific behaviour of the resnest and cotnet blocks in ``impls.tf``: the README usage,
variable names, initial values, rejections, unknown sizes, float64.

Numerical conformance on drawn cases lives in ``conformance/tests``; the reference is used here
where a Keras feature (the float64 policy) has to be shown to give the canonical numbers.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras
import tensorflow as tf

import reference
from impls.tf import attention_layers, cotnet, resnest
from tests.impls.keras_helpers import dtype_policy, build, variables as canonical_variables, numpy

README = Path(__file__).resolve().parents[2] / "docs" / "attention_layers_README.md"
UPSTREAM_IMPORT = "from keras_cv_attention_models import attention_layers"
OUR_IMPORT = "from impls.tf import attention_layers"


def readme_snippet(layer: str) -> str:
    """The ```py block under the README's ``- **<layer>**`` usage bullet."""
    lines = README.read_text(encoding="utf-8").splitlines()
    heading = next((i for i, line in enumerate(lines) if re.fullmatch(rf"\s*-\s*\*\*{layer}\*\*\s*", line)), None)
    assert heading is not None, f"no '- **{layer}**' usage bullet in {README}"
    start = next(i for i in range(heading + 1, len(lines)) if lines[i].strip().startswith("```py"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
    return textwrap.dedent("\n".join(lines[start + 1 : end]))


# --------------------------------------------------------------------------------------------
# 1. The README usage


@pytest.mark.parametrize(
    "layer, model_name, config",
    [("split_attention_conv2d", "dd", {"filters": 384}), ("cot_attention", "ee", {"kernel_size": 3})],
)
def test_readme_usage_runs_with_only_the_import_changed(layer, model_name, config):
    snippet = readme_snippet(layer)
    assert UPSTREAM_IMPORT in snippet.splitlines(), f"the README snippet no longer has {UPSTREAM_IMPORT!r}:\n{snippet}"
    ours = "\n".join(OUR_IMPORT if line == UPSTREAM_IMPORT else line for line in snippet.splitlines())
    namespace = {"keras": keras, "tf": tf}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(ours, str(README), "exec"), namespace)
    assert "Total params" in printed.getvalue(), "expected the README's summary() to print"
    model = namespace[model_name]
    want = reference.output_shape(layer, (2, 28, 28, 192), **config)
    assert tuple(model.output.shape) == (None, *want[1:])
    # Without a name Keras picks the layer names, so compare the multiset of shapes.
    got = sorted(tuple(v.shape) for v in model.weights)
    assert got == sorted(reference.weight_shapes(layer, (2, 28, 28, 192), **config).values())


# --------------------------------------------------------------------------------------------
# 2. Names, layer structure and initial values


@pytest.mark.parametrize(
    "layer, config, shape",
    [
        pytest.param("split_attention_conv2d", {"filters": 384}, (2, 28, 28, 192), id="split-readme"),
        pytest.param("split_attention_conv2d", {"filters": 5, "groups": 1}, (1, 4, 4, 6), id="split-one-group"),
        pytest.param("split_attention_conv2d", {"filters": 4, "groups": 3, "strides": 2}, (1, 5, 5, 6), id="split-three-groups"),
        pytest.param("cot_attention", {"kernel_size": 3}, (2, 28, 28, 192), id="cot-readme"),
        pytest.param("cot_attention", {"kernel_size": 1}, (1, 3, 3, 8), id="cot-k1"),
    ],
)
def test_prefixed_variables_are_the_canonical_names_and_start_at_the_declared_values(layer, config, shape):
    model = build(layer, shape, name="blk_", **config)
    found = canonical_variables(model, "blk_")
    specs = reference.weight_specs(layer, shape, **config)
    assert {k: tuple(v.shape) for k, v in found.items()} == {w.name: w.shape for w in specs}
    declared = [w for w in specs if w.initial is not None]
    assert declared, "expected BatchNorm (and GroupNorm) initial values in the spec"
    for weight in declared:
        np.testing.assert_array_equal(numpy(found[weight.name]), weight.initial_value(), err_msg=weight.name)


def test_single_local_kernel_channel_stays_a_conv2d():
    # kernel 1 and 8 channels give embed_ww_2 one filter; aotnet's conv2d_no_bias would make
    # that a depthwise convolution (groups 1 == filters 1), the 2021 cotnet code does not.
    model = build("cot_attention", (1, 2, 2, 8), name="c_", kernel_size=1)
    layer = model.get_layer("c_embed_ww_2_conv")
    assert isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D), type(layer)
    group_norm = model.get_layer("c_embed_ww_group_norm")
    assert isinstance(group_norm, keras.layers.GroupNormalization) and group_norm.groups == 1 and group_norm.epsilon == 1e-5


def test_cot_key_is_one_grouped_conv_and_kernel_1_skips_the_padding():
    model = build("cot_attention", (1, 4, 4, 16), name="c_", kernel_size=3)
    assert model.get_layer("c_key_conv").groups == 4
    assert model.get_layer("c_conv_pad").padding == ((1, 1), (1, 1))
    names = [layer.name for layer in build("cot_attention", (1, 4, 4, 16), name="d_", kernel_size=1).layers]
    assert "d_conv_pad" not in names, names


def test_blocks_without_a_name_do_not_clash():
    inputs = keras.Input((6, 6, 16))
    nn = attention_layers.cot_attention(inputs)
    nn = attention_layers.cot_attention(nn, kernel_size=5)
    nn = attention_layers.split_attention_conv2d(nn, 8)
    nn = attention_layers.split_attention_conv2d(nn, 8, groups=1)
    model = keras.Model(inputs, nn)  # a name clash would raise here
    paths = [v.path for v in model.weights]
    assert len(set(paths)) == len(paths), paths
    assert model(np.ones((1, 6, 6, 16), "float32")).shape == (1, 6, 6, 8)


def test_rsoftmax_takes_the_2021_positional_call():
    logits = keras.Input((1, 1, 12))
    model = keras.Model(logits, attention_layers.rsoftmax(logits, 3))
    x = np.random.default_rng(0).normal(size=(2, 1, 1, 12)).astype("float32")
    np.testing.assert_allclose(numpy(model(x)), reference.forward("rsoftmax", x, weights={}, groups=3), rtol=1e-6, atol=1e-7)
    assert attention_layers.rsoftmax is resnest.rsoftmax and attention_layers.cot_attention is cotnet.cot_attention


# --------------------------------------------------------------------------------------------
# 3. Bad configs and shapes


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda: attention_layers.rsoftmax(keras.Input((1, 1, 8)), 3), "channels 8 is not a multiple of groups 3", id="rsoftmax-groups"),
        pytest.param(lambda: attention_layers.rsoftmax(keras.Input((3, 3, 8)), 2), "must be [batch, 1, 1, channels]", id="rsoftmax-map"),
        pytest.param(lambda: attention_layers.rsoftmax(keras.Input((None, None, 8)), 2), "known size", id="rsoftmax-unknown"),
        pytest.param(lambda: attention_layers.split_attention_conv2d(keras.Input((4, 4, 8)), 4, groups=3), "channels 8 is not a multiple of groups 3", id="split-groups"),
        pytest.param(lambda: attention_layers.split_attention_conv2d(keras.Input((4, 4, 8)), 4, kernel_size=(3, 3)), "kernel_size (3, 3) must be an integer", id="split-tuple-kernel"),
        pytest.param(lambda: attention_layers.split_attention_conv2d(keras.Input((4, 4, 8)), 0), "filters 0 must be >= 1", id="split-filters"),
        pytest.param(lambda: attention_layers.cot_attention(keras.Input((4, 4, 16)), kernel_size=4), "kernel_size 4 must be odd", id="cot-even"),
        pytest.param(lambda: attention_layers.cot_attention(keras.Input((4, 4, 12))), "channels 12 is not a multiple of 8", id="cot-channels"),
        pytest.param(lambda: attention_layers.cot_attention(keras.Input((None, None, 16))), "known size", id="cot-unknown"),
        pytest.param(lambda: attention_layers.cot_attention(keras.Input((16, 16))), "rank 4", id="cot-rank"),
    ],
)
def test_bad_config_or_shape_raises_value_error_with_the_reference_message(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


def test_split_attention_accepts_unknown_height_and_width():
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, attention_layers.split_attention_conv2d(inputs, 4, groups=3, strides=2))
    assert model(np.ones((2, 5, 3, 6), "float32")).shape == (2, 3, 2, 4)


# --------------------------------------------------------------------------------------------
# 4. float64


@pytest.mark.parametrize(
    "layer, config, shape",
    [
        pytest.param("split_attention_conv2d", {"filters": 3, "groups": 2, "activation": "gelu"}, (2, 4, 5, 4), id="split-gelu"),
        pytest.param("cot_attention", {"kernel_size": 5, "activation": "swish"}, (2, 4, 3, 16), id="cot-k5"),
    ],
)
def test_float64_policy_holds_float64_precision(layer, config, shape):
    # extract_patches, a float32 constant or a float32 sublayer would show up as ~1e-7 errors.
    rng = np.random.default_rng(3)
    with dtype_policy("float64"):
        model = build(layer, shape, name="f_", **config)
    weights = {}
    for w in reference.weight_specs(layer, shape, **config):
        weights[w.name] = rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.normal(0.0, w.std, w.shape)
    for name, variable in canonical_variables(model, "f_").items():
        assert variable.dtype == "float64", f"{name} is {variable.dtype}"
        variable.assign(weights[name])
    x = rng.normal(size=shape)
    got = model(x)
    assert got.dtype == "float64"
    want = reference.forward(layer, x, weights=weights, **config)
    np.testing.assert_allclose(numpy(got), want, rtol=1e-12, atol=1e-12)


def test_per_group_conv2d_matches_keras_grouped_conv2d():
    # impls.tf._layers.Conv2D runs groups as separate convolutions (no XLA compile per shape);
    # Keras' own grouped Conv2D is the yardstick, in float64 where the two sum the same products.
    from impls.tf._layers import Conv2D

    x = np.random.default_rng(0).standard_normal((2, 5, 6, 12))
    ours = Conv2D(6, 3, groups=3, strides=2, dtype="float64")
    theirs = keras.layers.Conv2D(6, 3, groups=3, strides=2, dtype="float64")
    ours.build(x.shape), theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    assert [w.shape for w in ours.weights] == [(3, 3, 4, 6), (6,)]
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-13, atol=1e-13)
