"""Keras-specific behaviour of ``impls.tf``'s HaloAttention: the README example, variable
names, serialization, errors, float64 and training-mode dropout.

Numerical conformance on drawn cases lives in ``conformance/tests``; here the reference is used
where a Keras feature (float64 policy, ``training=False``, a reloaded model) has to be shown to
give the canonical numbers.
"""

from __future__ import annotations

import ast
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
from impls.tf import attention_layers
from impls.tf.halonet import HaloAttention
from tests.impls.keras_helpers import numpy

LAYER = "HaloAttention"
README = Path(__file__).resolve().parents[2] / "docs" / "attention_layers_README.md"
UPSTREAM_IMPORT = "from keras_cv_attention_models import attention_layers"
OUR_IMPORT = "from impls.tf import attention_layers"

# Away from every default: two heads of key_dim 3 (an irrational scale, so a float32 rounding
# of it shows in float64), a halo larger than the block, a projected output with a bias, dropout.
CONFIG = {"num_heads": 2, "key_dim": 3, "block_size": 2, "halo_size": 3, "out_shape": 7, "out_bias": True, "attn_dropout": 0.1}
INPUT = (2, 4, 6, 5)


def readme_halo_snippet() -> str:
    """The first ```py block under the README's HaloAttention usage bullet."""
    lines = README.read_text(encoding="utf-8").splitlines()
    heading = next((i for i, line in enumerate(lines) if re.fullmatch(r"\s*-\s*\*\*HaloAttention\*\*\s*", line)), None)
    assert heading is not None, f"no '- **HaloAttention**' usage bullet in {README}"
    start = next(i for i in range(heading + 1, len(lines)) if lines[i].strip().startswith("```py"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
    return textwrap.dedent("\n".join(lines[start + 1 : end]))


def draw_weights(input_shape, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(LAYER, input_shape, **config)}


def assign(layer, weights: dict[str, np.ndarray]) -> None:
    prefix = layer.name + "/"
    by_name = {v.path[len(prefix):]: v for v in layer.weights}
    assert set(by_name) == set(weights), f"expected variables {sorted(weights)}, got {sorted(by_name)}"
    for name, value in weights.items():
        by_name[name].assign(value.astype(by_name[name].dtype))


# --------------------------------------------------------------------------------------------
# 1. The README example and the variable names


def test_readme_halo_example_runs_with_only_the_import_changed():
    snippet = readme_halo_snippet()
    assert UPSTREAM_IMPORT in snippet.splitlines(), f"the README snippet no longer has the line {UPSTREAM_IMPORT!r}:\n{snippet}"
    ours = "\n".join(OUR_IMPORT if line == UPSTREAM_IMPORT else line for line in snippet.splitlines())

    comments = [line[1:].strip() for line in snippet.splitlines() if line.startswith("#")]
    shape_comment = next(c for c in comments if ".shape = " in c)
    dict_start = next(i for i, c in enumerate(comments) if c.startswith("{"))
    dict_end = next(i for i in range(dict_start, len(comments)) if comments[i].endswith("}"))
    documented = ast.literal_eval(" ".join(comments[dict_start : dict_end + 1]))
    # Keras 2 printed 'halo_attention_2/query:0'; a Keras 3 variable's name is just 'query'.
    expected = {}
    for key, shape in documented.items():
        match = re.fullmatch(r"[^/]+/(\w+):0", key)
        assert match, f"README weight name {key!r} is not of the form '<layer>/<name>:0'"
        expected[match.group(1)] = shape
    assert list(expected) == ["query", "key_value", "output_weight", "r_width", "r_height"], expected

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(ours, str(README), "exec"), {"tf": tf})
    printed = out.getvalue().splitlines()
    assert len(printed) == 2, f"expected two printed lines (shape, weights), got {printed!r}"

    assert "TensorShape([1, 14, 16, 512])" in shape_comment, f"README shape comment changed: {shape_comment!r}"
    assert printed[0] == shape_comment, f"expected the README's line {shape_comment!r}, printed {printed[0]!r}"
    got = ast.literal_eval(printed[1])
    assert got == expected and list(got) == list(expected), f"expected weights {expected}, printed {got}"


def test_variable_paths_are_layer_name_slash_canonical_name():
    layer = HaloAttention(**CONFIG, name="halo")
    layer(np.zeros(INPUT, "float32"))
    paths = [v.path for v in layer.weights]
    expected = [f"halo/{name}" for name in reference.weight_shapes(LAYER, INPUT, **CONFIG)]
    assert paths == expected, f"expected variable paths {expected}, got {paths}"
    assert expected == ["halo/query", "halo/key_value", "halo/output_weight", "halo/output_bias", "halo/r_width", "halo/r_height"]
    shapes = {v.path[len("halo/"):]: tuple(v.shape) for v in layer.weights}
    assert shapes == reference.weight_shapes(LAYER, INPUT, **CONFIG)


def test_without_out_weight_the_bias_has_heads_times_key_dim_entries():
    layer = HaloAttention(num_heads=2, key_dim=3, out_weight=False, out_bias=True, name="halo")
    out = layer(np.zeros((1, 2, 2, 5), "float32"))
    assert tuple(out.shape) == (1, 2, 2, 6), f"expected 6 output channels (num_heads * key_dim), got {tuple(out.shape)}"
    assert {v.path: tuple(v.shape) for v in layer.weights}["halo/output_bias"] == (6,)


# --------------------------------------------------------------------------------------------
# 2. get_config / from_config, other map sizes, save and load


def test_get_config_from_config_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=INPUT).astype("float32")
    layer = HaloAttention(**CONFIG, name="original")
    layer(x)
    for variable in layer.weights:  # not the initial zeros: every value must be copied
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    saved = layer.get_config()
    for key, value in CONFIG.items():
        assert saved[key] == value, f"get_config()[{key!r}]: expected {value!r}, got {saved.get(key)!r}"
    clone = HaloAttention.from_config(saved)
    assert clone.get_config() == saved, f"from_config(get_config()) changed the config: {saved} -> {clone.get_config()}"
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(numpy(clone(x, training=False)), numpy(layer(x, training=False)), err_msg="clone and original outputs differ")


def test_a_built_layer_runs_on_another_map_of_whole_blocks():
    # The weights do not depend on the map size, so the same layer serves any multiple of the block.
    config = {"num_heads": 2, "key_dim": 2, "block_size": 2, "halo_size": 1}
    layer = HaloAttention(**config, dtype="float64")
    layer(np.zeros((1, 2, 2, 3)))
    weights = draw_weights((1, 2, 2, 3), config, seed=1)
    assign(layer, weights)
    x = np.random.default_rng(2).normal(size=(2, 6, 4, 3))
    want = reference.forward(LAYER, x, weights=weights, **config)
    np.testing.assert_allclose(numpy(layer(x)), want, rtol=0, atol=1e-12, err_msg="built on 2x2, run on 6x4")


def test_saved_model_reloads_with_the_same_outputs(tmp_path):
    rng = np.random.default_rng(3)
    inputs = keras.Input(INPUT[1:])
    outputs = keras.layers.Activation("relu")(HaloAttention(**CONFIG, name="halo")(inputs))
    model = keras.Model(inputs, outputs)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, size=variable.shape).astype("float32"))
    x = rng.normal(size=INPUT).astype("float32")
    path = tmp_path / "halo.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the class is a registered serializable

    assert type(loaded.get_layer("halo")) is HaloAttention, f"reloaded as {type(loaded.get_layer('halo'))}"
    assert loaded.get_layer("halo").get_config() == model.get_layer("halo").get_config()
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    np.testing.assert_array_equal(numpy(loaded(x, training=False)), numpy(model(x, training=False)), err_msg="reloaded model's outputs differ")


# --------------------------------------------------------------------------------------------
# 3. Bad configs and shapes: the same rejections as the reference


def _spec_rejections():
    return [
        pytest.param(r, id=f"{i}-{r.message.split(' ')[0]}")
        for i, r in enumerate(reference.spec(LAYER).rejections)
    ]


@pytest.mark.parametrize("rejection", _spec_rejections())
def test_every_spec_rejection_is_a_value_error_with_the_reference_message(rejection):
    with pytest.raises(reference.DomainError) as want:
        reference.validate(LAYER, *rejection.input_shapes, **rejection.config)
    with pytest.raises(ValueError) as got:
        HaloAttention(**rejection.config)(tf.zeros(rejection.input_shapes[0]))
    assert str(got.value) == str(want.value), f"expected {str(want.value)!r}, got {str(got.value)!r}"


def test_height_not_a_multiple_of_block_size_names_both_numbers():
    with pytest.raises(ValueError) as info:
        HaloAttention(block_size=4)(keras.Input([14, 16, 8]))
    assert str(info.value) == "HaloAttention: height 14 is not a multiple of block_size 4", str(info.value)


def test_a_built_layer_rejects_a_map_it_cannot_block_and_other_channels():
    layer = HaloAttention(num_heads=1, key_dim=2, block_size=2)
    layer(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="width 5 is not a multiple of block_size 2"):
        layer(np.zeros((1, 4, 5, 3), "float32"))
    with pytest.raises(ValueError, match="must have 3 channels"):
        layer(np.zeros((1, 4, 4, 6), "float32"))


def test_unknown_spatial_size_says_so():
    with pytest.raises(ValueError) as info:
        HaloAttention(num_heads=1, key_dim=2)(keras.Input([None, None, 8]))
    message = str(info.value)
    assert "known size" in message and "(None, None, None, 8)" in message, f"expected an unknown-size message, got {message!r}"


# --------------------------------------------------------------------------------------------
# 4. float64 and dropout


@pytest.mark.parametrize(
    "config, shape",
    [
        pytest.param(CONFIG, INPUT, id="halo-above-block-with-attn_dropout"),
        pytest.param({"num_heads": 3, "key_dim": 2, "block_size": 3, "halo_size": 0, "out_weight": False}, (1, 3, 6, 4), id="halo-0-no-out_weight"),
        pytest.param({"num_heads": 1, "key_dim": 3, "block_size": 1, "halo_size": 0}, (2, 2, 3, 2), id="block-1-single-key"),
        pytest.param({"num_heads": 2, "key_dim": 3, "block_size": 1, "halo_size": 2}, (1, 3, 2, 4), id="block-1-halo-2"),
    ],
)
def test_float64_layer_keeps_float64_and_matches_the_reference(config, shape):
    # Only the layer's own dtype: a sublayer (the attention Dropout) built without the layer's
    # policy would compute in float32 and show as ~1e-7 error.
    x = np.random.default_rng(4).normal(size=shape)
    weights = draw_weights(shape, config, seed=5)
    layer = HaloAttention(**config, dtype="float64")
    layer(x)
    assign(layer, weights)
    out = layer(x, training=False)
    dtypes = {v.path: v.dtype for v in layer.weights}
    assert set(dtypes.values()) == {"float64"}, f"expected float64 variables, got {dtypes}"
    assert keras.backend.standardize_dtype(out.dtype) == "float64", f"expected a float64 output, got {out.dtype}"
    want = reference.forward(LAYER, x, weights=weights, **config)
    np.testing.assert_allclose(numpy(out), want, rtol=0, atol=1e-12, err_msg=f"float64 HaloAttention {config} vs the reference")


def test_attention_dropout_is_active_only_in_training():
    config = {"num_heads": 2, "key_dim": 3, "block_size": 2, "halo_size": 1, "attn_dropout": 0.5}
    x = np.random.default_rng(6).normal(size=INPUT)
    weights = draw_weights(INPUT, config, seed=7)
    layer = HaloAttention(**config, dtype="float64")
    layer(x)
    assign(layer, weights)
    keras.utils.set_random_seed(8)
    inference = numpy(layer(x, training=False))
    training = numpy(layer(x, training=True))
    want = reference.forward(LAYER, x, weights=weights, **config)
    np.testing.assert_allclose(inference, want, rtol=0, atol=1e-12, err_msg="training=False must be the reference (no dropout)")
    np.testing.assert_array_equal(numpy(layer(x)), inference, err_msg="training=None outside fit must be inference mode")
    difference = np.max(np.abs(training - inference))
    assert difference > 1e-3, f"expected training=True with attn_dropout=0.5 to differ from inference, max difference {difference:.3g}"


def test_the_readme_namespace_exports_the_class():
    assert attention_layers.HaloAttention is HaloAttention
