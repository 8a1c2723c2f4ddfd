"""Keras-specific behaviour of the volo family in ``impls.tf``: the README's outlook_attention
usage, naming, serialization, errors, float64 and training-mode dropout.

Numerical conformance on drawn cases lives in the conformance suite; here the reference is
used where a Keras feature (float64 policy, ``training=False``) has to give the canonical
numbers.
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
from impls.tf import attention_layers
from impls.tf.volo import CeilAveragePooling2D, ClassToken, PositionalEmbedding, UnfoldAttendFold
from tests.impls.keras_helpers import dtype_policy, numpy

README = Path(__file__).resolve().parents[2] / "docs" / "attention_layers_README.md"
UPSTREAM_IMPORT = "from keras_cv_attention_models import attention_layers"
OUR_IMPORT = "from impls.tf import attention_layers"
README_CALL = "attention_layers.outlook_attention(inputs, 4, 192)"
SWAP_MESSAGE = "outlook_attention: embed_dim 4 is smaller than num_head 192 (0 channels per head); did you mean embed_dim=192, num_head=4?"
OUTLOOK_WEIGHTS = ["v/kernel", "attn/kernel", "attn/bias", "out/kernel", "out/bias"]


# --------------------------------------------------------------------------------------------
# Helpers


def readme_outlook_snippet() -> str:
    """The ```py block under the README's outlook_attention usage bullet, import swapped."""
    lines = README.read_text(encoding="utf-8").splitlines()
    heading = next((i for i, line in enumerate(lines) if re.fullmatch(r"\s*-\s*\*\*outlook_attention\*\*\s*", line)), None)
    assert heading is not None, f"no '- **outlook_attention**' usage bullet in {README}"
    start = next(i for i in range(heading + 1, len(lines)) if lines[i].strip().startswith("```py"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
    snippet = textwrap.dedent("\n".join(lines[start + 1 : end]))
    assert UPSTREAM_IMPORT in snippet.splitlines(), f"the README snippet no longer imports {UPSTREAM_IMPORT!r}:\n{snippet}"
    assert README_CALL in snippet, f"the README snippet no longer calls {README_CALL!r}:\n{snippet}"
    return snippet.replace(UPSTREAM_IMPORT, OUR_IMPORT)


def run_snippet(code: str) -> tuple[dict, str]:
    namespace = {"keras": keras, "tf": tf}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    return namespace, printed.getvalue()


def draw_weights(layer: str, input_shape, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, input_shape, **config)}


def assign(variables, weights: dict[str, np.ndarray], prefix: str) -> None:
    by_name = {v.path[len(prefix):]: v for v in variables if v.path.startswith(prefix)}
    assert set(by_name) == set(weights), f"expected variables {sorted(weights)} under {prefix!r}, got {sorted(by_name)}"
    for name, value in weights.items():
        by_name[name].assign(value.astype(by_name[name].dtype))


def block_model(block: str, shape, config, name="blk_", dtype="float32") -> keras.Model:
    with dtype_policy(dtype):
        inputs = keras.Input(shape[1:], dtype=dtype)
        return keras.Model(inputs, getattr(attention_layers, block)(inputs, **config, name=name))


# --------------------------------------------------------------------------------------------
# 1. The README usage


def test_readme_usage_raises_the_swap_error():
    with pytest.raises(ValueError) as info:
        run_snippet(readme_outlook_snippet())
    assert str(info.value) == SWAP_MESSAGE, f"expected {SWAP_MESSAGE!r}, got {str(info.value)!r}"


def test_readme_usage_with_the_intended_arguments_builds_and_summarises():
    code = readme_outlook_snippet().replace(README_CALL, "attention_layers.outlook_attention(inputs, embed_dim=192, num_head=4)")
    namespace, printed = run_snippet(code)
    model = namespace["cc"]
    assert tuple(model.output.shape) == (None, 28, 28, 192), f"expected output (None, 28, 28, 192), got {model.output.shape}"
    assert "Total params" in printed, f"expected a model summary, printed {printed!r}"
    shapes = sorted(tuple(v.shape) for v in model.weights)
    want = sorted(reference.weight_shapes("outlook_attention", (1, 28, 28, 192), embed_dim=192, num_head=4).values())
    assert shapes == want, f"expected weight shapes {want}, got {shapes}"
    assert model.count_params() == 192 * 192 + 192 * 324 + 324 + 192 * 192 + 192


# --------------------------------------------------------------------------------------------
# 2. Naming


@pytest.mark.parametrize("block", ["outlook_attention", "outlook_attention_simple"])
def test_named_block_gives_the_canonical_variable_paths(block):
    shape, config = (1, 5, 4, 3), {"embed_dim": 6, "num_head": 2}
    model = block_model(block, shape, config)
    assert [v.path for v in model.weights] == ["blk_" + w for w in OUTLOOK_WEIGHTS], [v.path for v in model.weights]
    shapes = {v.path[len("blk_"):]: tuple(v.shape) for v in model.weights}
    assert shapes == reference.weight_shapes(block, shape, **config), shapes


@pytest.mark.parametrize("block", ["outlook_attention", "outlook_attention_simple"])
def test_unnamed_blocks_do_not_clash(block):
    inputs = keras.Input([4, 4, 6])
    first = getattr(attention_layers, block)(inputs, 6, 2)
    second = getattr(attention_layers, block)(first, 6, 3)
    model = keras.Model(inputs, second)  # a name clash would raise here
    paths = [v.path for v in model.weights]
    assert len(set(paths)) == len(paths) == 10, f"expected 10 distinct variable paths, got {paths}"


def test_class_layers_name_their_variables_canonically():
    pe, token = PositionalEmbedding(name="pe"), ClassToken(name="cls")
    pe(np.zeros((2, 3, 4, 5), "float32"))
    token(np.zeros((2, 6, 5), "float32"))
    assert [(v.path, tuple(v.shape)) for v in pe.weights] == [("pe/positional_embedding", (1, 3, 4, 5))]
    assert [(v.path, tuple(v.shape)) for v in token.weights] == [("cls/tokens", (1, 1, 5))]


# --------------------------------------------------------------------------------------------
# 3. Serialization


def test_volo_model_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(1)
    inputs = keras.Input([5, 3, 4])
    x = attention_layers.outlook_attention(inputs, 6, 2, name="outlook_")
    x = attention_layers.outlook_attention_simple(x, 6, 3, kernel_size=2, name="simple_")
    x = PositionalEmbedding(name="pe")(x)
    x = keras.layers.Reshape((15, 6))(x)
    outputs = ClassToken(name="cls")(x)
    model = keras.Model(inputs, outputs)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, size=variable.shape).astype("float32"))
    sample = rng.normal(size=(2, 5, 3, 4)).astype("float32")

    path = tmp_path / "volo.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: everything is registered
    kinds = {layer.name: type(layer) for layer in loaded.layers}
    assert kinds["outlook_pool"] is CeilAveragePooling2D and kinds["outlook_unfold_matmul_fold"] is UnfoldAttendFold, kinds
    assert kinds["pe"] is PositionalEmbedding and kinds["cls"] is ClassToken, kinds
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    np.testing.assert_array_equal(numpy(loaded(sample)), numpy(model(sample)), err_msg="reloaded model's outputs differ")
    assert loaded.output.shape[1] == 16


@pytest.mark.parametrize("cls, shape", [(PositionalEmbedding, (2, 3, 4, 5)), (ClassToken, (2, 6, 5))])
def test_class_layer_config_round_trip(cls, shape):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype("float32")
    layer = cls(name="original")
    layer(x)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    clone = cls.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(numpy(clone(x)), numpy(layer(x)))


def test_class_token_with_unknown_token_count():
    inputs = keras.Input([None, 8])
    outputs = ClassToken()(inputs)
    assert tuple(outputs.shape) == (None, None, 8), outputs.shape
    model = keras.Model(inputs, outputs)
    assert model(np.zeros((3, 5, 8), "float32")).shape == (3, 6, 8)


# --------------------------------------------------------------------------------------------
# 4. Bad configs and shapes


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda: attention_layers.outlook_attention(keras.Input([4, 4, 8]), 10, 4), "embed_dim 10 is not a multiple of num_head 4", id="multiple"),
        pytest.param(lambda: attention_layers.outlook_attention(keras.Input([4, 4, 8]), 4, 2, padding=2), "padding 2 must be 0 or 1", id="padding"),
        pytest.param(
            lambda: attention_layers.outlook_attention(keras.Input([4, 4, 8]), 4, 2, kernel_size=3, padding=0),
            "kernel_size 3 is larger than strides 2 with padding 0",
            id="no-size-fits",
        ),
        pytest.param(
            lambda: attention_layers.outlook_attention(keras.Input([4, 5, 8]), 4, 2, kernel_size=2),
            "height 4 gives 2 pooled positions",
            id="height",
        ),
        pytest.param(lambda: attention_layers.outlook_attention(keras.Input([None, None, 8]), 4, 2), "known size", id="unknown-size"),
        pytest.param(lambda: attention_layers.outlook_attention(keras.Input([16, 8]), 4, 2), "rank 4", id="rank"),
        pytest.param(lambda: attention_layers.outlook_attention_simple(keras.Input([4, 4, 8]), 4), "embed_dim 4 is smaller than num_head 6", id="simple-heads"),
        pytest.param(lambda: attention_layers.outlook_attention_simple(keras.Input([4, 4, 8]), 6, kernel_size=0), "kernel_size 0", id="simple-kernel"),
        pytest.param(lambda: PositionalEmbedding()(np.zeros((2, 8, 49), "float32")), "rank 4", id="pe-rank"),
        pytest.param(lambda: PositionalEmbedding()(keras.Input([None, 4, 3])), "known size", id="pe-unknown"),
        pytest.param(lambda: ClassToken()(np.zeros((2, 3, 3, 4), "float32")), "rank 3", id="token-rank"),
    ],
)
def test_bad_config_or_shape_raises_value_error_naming_it(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# 5. float64 and dropout

FLOAT64_CASES = [
    pytest.param("outlook_attention", {"embed_dim": 6, "num_head": 2, "attn_dropout": 0.1, "output_dropout": 0.1}, (2, 5, 7, 4), id="outlook-odd-dropout"),
    pytest.param("outlook_attention", {"embed_dim": 6, "num_head": 3, "kernel_size": 4, "strides": 3}, (1, 5, 4, 3), id="outlook-k4-s3"),
    pytest.param("outlook_attention", {"embed_dim": 2, "num_head": 1, "kernel_size": 1, "padding": 0, "strides": 1}, (1, 3, 2, 3), id="outlook-k1"),
    pytest.param("outlook_attention_simple", {"embed_dim": 6, "num_head": 2, "attn_dropout": 0.2}, (2, 4, 8, 5), id="simple-padded"),
    pytest.param("PositionalEmbedding", {}, (2, 3, 4, 5), id="PositionalEmbedding"),
    pytest.param("ClassToken", {}, (2, 6, 5), id="ClassToken"),
]


@pytest.mark.parametrize("name, config, shape", FLOAT64_CASES)
def test_float64_keeps_float64_and_matches_the_reference(name, config, shape):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape)
    weights = draw_weights(name, shape, config, seed=4)
    if reference.spec(name).kind == "layer":
        layer = getattr(attention_layers, name)(**config, dtype="float64")
        layer(x)
        assign(layer.weights, weights, prefix=layer.name + "/")
        variables, run = layer.weights, layer
    else:
        model = block_model(name, shape, config, dtype="float64")
        assign(model.weights, weights, prefix="blk_")
        variables, run = model.weights, model
    out = run(x, training=False)
    assert {v.dtype for v in variables} == {"float64"}, {v.path: v.dtype for v in variables}
    assert keras.backend.standardize_dtype(out.dtype) == "float64", out.dtype
    want = reference.forward(name, x, weights=weights, **config)
    np.testing.assert_allclose(numpy(out), want, rtol=0, atol=1e-12, err_msg=f"float64 {name} vs the reference")


@pytest.mark.parametrize(
    "name, config",
    [
        pytest.param("outlook_attention", {"embed_dim": 4, "num_head": 2, "attn_dropout": 0.5}, id="outlook-attn_dropout"),
        pytest.param("outlook_attention", {"embed_dim": 4, "num_head": 2, "output_dropout": 0.5}, id="outlook-output_dropout"),
        pytest.param("outlook_attention_simple", {"embed_dim": 4, "num_head": 2, "attn_dropout": 0.5}, id="simple-attn_dropout"),
    ],
)
def test_dropout_is_active_only_in_training(name, config):
    shape = (2, 4, 6, 3)
    x = np.random.default_rng(5).normal(size=shape)
    model = block_model(name, shape, config, dtype="float64")
    weights = draw_weights(name, shape, config, seed=6)
    assign(model.weights, weights, prefix="blk_")
    keras.utils.set_random_seed(7)
    inference, training = numpy(model(x, training=False)), numpy(model(x, training=True))
    want = reference.forward(name, x, weights=weights, **config)
    np.testing.assert_allclose(inference, want, rtol=0, atol=1e-12, err_msg="training=False must be the reference")
    difference = np.max(np.abs(training - inference))
    assert difference > 1e-3, f"expected training=True to differ from inference, max difference {difference:.3g}"
