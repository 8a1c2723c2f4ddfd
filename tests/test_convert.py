"""Weight conversion (conformance.io.convert, ``attnconf convert``): every documented example
goes Keras -> canonical -> PyTorch through the command line and both layers then compute the same
outputs; round trips are bitwise in float32 and float64; wrong weights are named."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

import reference
from conformance.checks.compare import compare, output_scale
from conformance.checks.engine import cross_tolerance, from_layout, to_layout
from conformance.cli import main
from conformance.io import convert
from conformance.io.convert import ConversionError, WeightMismatchError
from conformance.sampling.cases import draw_arrays
from impls.tf.adapter import implementation as keras_impl
from impls.torch.adapter import implementation as torch_impl

LAYER, CONFIG, SHAPES = "MHSAWithPositionEmbedding", {"num_heads": 2, "key_dim": 3}, [(2, 3, 5, 4)]
"""The layer the error tests doctor."""

README_EXAMPLES = {name: reference.spec(name).examples[0] for name in reference.names()}
"""Each layer's first example: its README usage (documented config at the README's size)."""


def _has_small_twin(name: str, example) -> bool:
    """A README-size example whose weights a smaller example of the same config already has
    (``readme`` and ``readme_config``): the forward test runs the small one."""
    def weights(e):
        return reference.weight_shapes(name, *e.input_shapes, **e.config)

    return any(
        other is not example and dict(other.config) == dict(example.config) and weights(other) == weights(example)
        and np.prod(other.input_shapes[0]) < np.prod(example.input_shapes[0])
        for other in reference.spec(name).examples
    )


FORWARD_EXAMPLES = [(name, e) for name in reference.names() for e in reference.spec(name).examples if not _has_small_twin(name, e)]


def _keras_with_random_weights(name, example, dtype, seed=0):
    config = reference.validate(name, *example.input_shapes, **example.config)
    inputs, weights = draw_arrays(name, config, example.input_shapes, seed)
    built = keras_impl.build(name, config, example.input_shapes, dtype)
    built.load_weights({k: v.astype(dtype) for k, v in weights.items()})
    return built, [x.astype(dtype) for x in inputs]


def _equal_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def test_the_examples_cover_every_layer_and_every_example():
    forward = {(n, e.name) for n, e in FORWARD_EXAMPLES}
    assert {n for n, _ in forward} == set(reference.names())
    skipped = [(n, e.name) for n in reference.names() for e in reference.spec(n).examples if (n, e.name) not in forward]
    # only README-size twins are left to the command-line round trip below
    assert skipped and all((n, name) in {(m, x.name) for m, x in README_EXAMPLES.items()} for n, name in skipped)


# --------------------------------------------------------------------------------------------
# Keras -> canonical -> PyTorch: both compute the same outputs, on every documented example


@pytest.mark.parametrize("name, example", FORWARD_EXAMPLES, ids=[f"{n}/{e.name}" for n, e in FORWARD_EXAMPLES])
def test_keras_weights_converted_to_torch_compute_the_same(name, example, tmp_path, capsys):
    built, inputs = _keras_with_random_weights(name, example, "float32")
    canonical_file, torch_file = tmp_path / "layer.safetensors", tmp_path / "state_dict.safetensors"
    keras_weights = convert.canonical_from_keras(built, name, example.config, example.input_shapes)
    convert.write_canonical(canonical_file, keras_weights)
    assert main(["convert", "--from", "canonical", str(canonical_file), "--to", "torch", str(torch_file)]) == 0
    assert f"wrote {torch_file} (torch)" in capsys.readouterr().out

    # a plain PyTorch user loads the state dict; the module then holds exactly the Keras weights
    module = torch_impl.build(name, reference.validate(name, *example.input_shapes, **example.config), example.input_shapes, "float32").module
    module.load_state_dict(load_file(str(torch_file)), strict=True)
    assert _equal_bits({k: np.ascontiguousarray(v) for k, v in module.canonical_state_dict().items()}, keras_weights.weights)

    spec = reference.spec(name)
    keras_out = built.forward(*inputs)
    with torch.no_grad():
        torch_in = [torch.from_numpy(np.ascontiguousarray(to_layout(x, i.kind, torch_impl.layout))) for x, i in zip(inputs, spec.inputs)]
        torch_out = from_layout(module(*torch_in).numpy(), spec.output_kind, torch_impl.layout, keras_out.ndim)
    result = compare(torch_out, keras_out, cross_tolerance(name, "float32"), scale=output_scale(keras_out))
    assert result.ok, f"{name}/{example.name}: {result.summary()}"


# --------------------------------------------------------------------------------------------
# Bitwise round trips through every format, by the command line, on each README example


@pytest.mark.parametrize("name", reference.names())
def test_the_command_line_round_trips_each_readme_example_bitwise(name, tmp_path):
    """keras -> canonical -> torch -> canonical -> keras in float64 (a detour through float32
    would show), as the README's commands run it."""
    example = README_EXAMPLES[name]
    built, _ = _keras_with_random_weights(name, example, "float64", seed=1)
    original = convert.canonical_from_keras(built, name, example.config, example.input_shapes)
    weightless = not original.weights
    assert original.dtype == ("float32" if weightless else "float64")  # a layer without weights has no dtype to keep
    assert all(w.dtype == np.float64 and w.flags.c_contiguous for w in original.weights.values())
    built.model.save_weights(tmp_path / "in.weights.h5")

    files = {f: str(tmp_path / f) for f in ("a.safetensors", "torch.safetensors", "b.safetensors", "out.weights.h5", "c.safetensors")}
    steps = [
        ["--layer", name, "--example", example.name, "--from", "keras", str(tmp_path / "in.weights.h5"), "--to", "canonical", files["a.safetensors"]],
        ["--from", "canonical", files["a.safetensors"], "--to", "torch", files["torch.safetensors"]],
        ["--layer", name, "--example", example.name, "--from", "torch", files["torch.safetensors"], "--to", "canonical", files["b.safetensors"]],
        ["--from", "canonical", files["b.safetensors"], "--to", "keras", files["out.weights.h5"]],
        ["--layer", name, "--example", example.name, "--from", "keras", files["out.weights.h5"], "--to", "canonical", files["c.safetensors"]],
    ]
    for step in steps:
        assert main(["convert", *step]) == 0, step
    first = (tmp_path / "a.safetensors").read_bytes()
    assert (tmp_path / "b.safetensors").read_bytes() == first == (tmp_path / "c.safetensors").read_bytes()
    assert _equal_bits(convert.read_canonical(tmp_path / "a.safetensors").weights, original.weights)
    state = load_file(files["torch.safetensors"])
    assert all(t.dtype == torch.float64 for t in state.values() if t.is_floating_point())

    # and the in-memory API: a Keras model, a PyTorch module, and back
    module = convert.torch_from_canonical(original)
    assert _equal_bits(convert.canonical_from_torch(module, name, example.config, example.input_shapes).weights, original.weights)
    model = convert.keras_from_canonical(convert.canonical_from_torch_state_dict(state, name, example.config, example.input_shapes))
    assert _equal_bits(convert.canonical_from_keras(model, name, example.config, example.input_shapes).weights, original.weights)


def test_canonical_file_is_deterministic_self_describing_and_c_ordered(tmp_path):
    from safetensors import safe_open

    shapes = [(2, 5, 4)]
    kernel = np.arange(4 * 7, dtype=np.float64).reshape(7, 4).T  # a transposed view: not C-ordered
    weights = {"Dense_0/kernel": kernel, "Dense_0/bias": np.zeros(7), "Dense_1/kernel": np.ones((7, 4)), "Dense_1/bias": np.zeros(4)}
    lw = convert.canonical("mlp_block", {"hidden_dim": 7}, shapes, weights)
    path = convert.write_canonical(tmp_path / "a.safetensors", lw)
    assert convert.canonical_bytes(lw) == path.read_bytes() == convert.canonical_bytes(convert.read_canonical(path))
    with safe_open(str(path), framework="numpy") as handle:
        assert list(handle.metadata()) == ["attnconf"]
        meta = json.loads(handle.metadata()["attnconf"])
        np.testing.assert_array_equal(handle.get_tensor("Dense_0/kernel"), kernel)
    assert meta["layer"] == "mlp_block" and meta["config"] == {"hidden_dim": 7, "activation": "gelu"} and meta["input_shapes"] == [[2, 5, 4]]
    assert meta["dtype"] == "float64" and list(meta) == sorted(meta)


def test_a_users_keras_layer_and_block_convert_by_name(tmp_path):
    """The README's way of building: a layer instance (names after its own name) and a block
    inside a bigger model (names after its ``name`` prefix)."""
    import keras

    from impls.tf import attention_layers

    layer = attention_layers.MHSAWithPositionEmbedding(num_heads=2, key_dim=3)
    layer(np.ones([1, 3, 5, 4], "float32"))
    lw = convert.canonical_from_keras(layer, LAYER, CONFIG, [(1, 3, 5, 4)])
    assert list(lw.weights) == ["query", "key", "value", "output_weight", "r_width", "r_height"]
    assert _equal_bits(lw.weights, {v.path.split("/")[-1]: np.asarray(v.numpy()) for v in layer.weights})

    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, attention_layers.mlp_block(attention_layers.mlp_block(inputs, 7, name="first_"), 3, name="second_"))
    with pytest.raises(ConversionError, match="holds 4 layers with weights; pass prefix="):
        convert.canonical_from_keras(model, "mlp_block", {"hidden_dim": 7}, [(1, 5, 4)])
    second = convert.canonical_from_keras(model, "mlp_block", {"hidden_dim": 3}, [(1, 5, 4)], prefix="second_")
    assert _equal_bits(second.weights, {v.path.removeprefix("second_"): np.asarray(v.numpy()) for v in model.weights if v.path.startswith("second_")})
    zeros = convert.canonical("mlp_block", {"hidden_dim": 7}, [(1, 5, 4)], {k: np.zeros(s, np.float32) for k, s in reference.weight_shapes("mlp_block", (1, 5, 4), hidden_dim=7).items()})
    convert.keras_from_canonical(zeros, model, prefix="first_")
    assert all(not v.numpy().any() for v in model.weights if v.path.startswith("first_"))
    assert all(v.numpy().any() for v in model.weights if v.path.startswith("second_Dense_0/kernel"))


def test_a_dtype_changes_only_when_asked(tmp_path):
    example = reference.spec("ChannelAffine").examples[-1]
    built, _ = _keras_with_random_weights("ChannelAffine", example, "float64")
    lw = convert.canonical_from_keras(built, "ChannelAffine", example.config, example.input_shapes)
    source = convert.write_canonical(tmp_path / "a.safetensors", lw)
    # explicit: the command line's --dtype, the API's astype
    assert main(["convert", "--from", "canonical", str(source), "--to", "torch", str(tmp_path / "t.safetensors"), "--dtype", "float32"]) == 0
    assert all(t.dtype == torch.float32 for t in load_file(str(tmp_path / "t.safetensors")).values())
    single = convert.read("torch", tmp_path / "t.safetensors", "ChannelAffine", example.config, example.input_shapes)
    assert _equal_bits(single.weights, lw.astype("float32").weights)
    # never implicit: float64 weights into float32 layers are refused, naming the weight
    with pytest.raises(ConversionError, match=r"float64 but 'weight' is float32.*astype"):
        convert.keras_from_canonical(lw, keras_impl.build("ChannelAffine", example.config, example.input_shapes, "float32"))
    with pytest.raises(ConversionError, match=r"float64 but 'weight' is float32"):
        convert.torch_from_canonical(lw, torch_impl.build("ChannelAffine", example.config, example.input_shapes, "float32").module)
    mixed = {"weight": np.ones(4, np.float32), "bias": np.zeros(4, np.float64)}
    with pytest.raises(ConversionError, match=r"several dtypes \(float32: 'weight'; float64: 'bias'\)"):
        convert.canonical("ChannelAffine", {}, [(2, 3, 5, 4)], mixed)
    with pytest.raises(ConversionError, match=r"weights are float16; canonical weights are float32 or float64"):
        convert.canonical("ChannelAffine", {}, [(2, 3, 5, 4)], {"weight": np.ones(4, np.float16), "bias": np.zeros(4, np.float16)})


# --------------------------------------------------------------------------------------------
# Missing, extra and wrong-shape weights are named, with the shapes, in every format


@pytest.fixture(scope="module")
def mhsa():
    built, _ = _keras_with_random_weights(LAYER, reference.Example("t", CONFIG, tuple(SHAPES), "test"), "float32")
    return convert.canonical_from_keras(built, LAYER, CONFIG, SHAPES)


def _doctored(lw):
    """(missing r_height, an extra weight, a wrong-shape query) versions of the weights."""
    missing = {k: v for k, v in lw.weights.items() if k != "r_height"}
    extra = {**lw.weights, "surplus": np.zeros(3, np.float32)}
    wrong = {**lw.weights, "query": np.zeros((4, 7), np.float32)}
    return missing, extra, wrong


EXPECTED_MESSAGES = ("missing 'r_height' (expected shape (3, 5))", "unexpected 'surplus' (shape (3,))", "'query' has shape (4, 7), expected (4, 6)")


def test_wrong_weights_are_named_in_memory(mhsa):
    for weights, message in zip(_doctored(mhsa), EXPECTED_MESSAGES):
        with pytest.raises(WeightMismatchError) as info:
            convert.canonical(LAYER, CONFIG, SHAPES, weights)
        assert message in str(info.value) and isinstance(info.value, ValueError)
    other_channels = keras_impl.build(LAYER, CONFIG, [(2, 3, 5, 5)], "float32")  # 5 input channels, not 4
    with pytest.raises(WeightMismatchError, match=r"'query' has shape \(5, 6\), expected \(4, 6\)"):
        convert.keras_from_canonical(mhsa, other_channels)
    other_module = torch_impl.build(LAYER, CONFIG, [(2, 3, 5, 5)], "float32").module
    with pytest.raises(WeightMismatchError, match=r"'query' has shape \(5, 6\), expected \(4, 6\)"):
        convert.torch_from_canonical(mhsa, other_module)


def test_wrong_weights_are_named_in_a_canonical_file(mhsa, tmp_path, capsys):
    meta = {"attnconf": json.dumps(mhsa.metadata(), sort_keys=True)}
    for i, (weights, message) in enumerate(zip(_doctored(mhsa), EXPECTED_MESSAGES)):
        path = tmp_path / f"{i}.safetensors"
        save_numpy({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path), metadata=meta)
        with pytest.raises(WeightMismatchError, match=rf"canonical file .*{i}\.safetensors"):
            convert.read_canonical(path)
        assert main(["convert", "--from", "canonical", str(path), "--to", "torch", str(tmp_path / "out.safetensors")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()
    save_numpy({"query": np.zeros((4, 6), np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ConversionError, match="no 'attnconf' metadata"):
        convert.read_canonical(tmp_path / "plain.safetensors")


def test_wrong_weights_are_named_in_a_state_dict(mhsa, tmp_path):
    state = convert.torch_state_dict_from_canonical(mhsa)
    cases = [
        ({k: v for k, v in state.items() if k != "rel_height"}, "missing 'rel_height' (canonical 'r_height') (expected shape (5, 3))"),
        ({**state, "surplus": torch.zeros(3)}, "unexpected 'surplus' (shape (3,))"),
        ({**state, "query.weight": torch.zeros(7, 4)}, "'query.weight' (canonical 'query') has shape (7, 4), expected (6, 4)"),
    ]
    for i, (bad, message) in enumerate(cases):
        save_file(bad, str(tmp_path / f"{i}.safetensors"))
        with pytest.raises(WeightMismatchError) as info:
            convert.read("torch", tmp_path / f"{i}.safetensors", LAYER, CONFIG, SHAPES)
        assert message in str(info.value) and f"{i}.safetensors" in str(info.value)


def test_optional_buffers_and_grouped_blocks_in_a_state_dict():
    name, example = "split_attention_conv2d", reference.spec("split_attention_conv2d").examples[-1]
    built, _ = _keras_with_random_weights(name, example, "float32")
    lw = convert.canonical_from_keras(built, name, example.config, example.input_shapes)
    state = convert.torch_state_dict_from_canonical(lw)
    without_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(without_counters) < len(state)
    assert _equal_bits(convert.canonical_from_torch_state_dict(without_counters, name, example.config, example.input_shapes).weights, lw.weights)
    shrunk = {**state, "conv.weight": state["conv.weight"][:-1]}
    message = r"'conv\.weight' \(canonical '1_g1_conv/kernel', '1_g2_conv/kernel', '1_g3_conv/kernel'\) has shape \(8, 3, 2, 2\), expected \(9, 3, 2, 2\)"
    with pytest.raises(WeightMismatchError, match=message):
        convert.canonical_from_torch_state_dict(shrunk, name, example.config, example.input_shapes)


def test_wrong_weights_are_named_in_a_keras_file(mhsa, tmp_path):
    good = convert.write_keras_weights(tmp_path / "good.weights.h5", mhsa)
    datasets = {}

    def visit(name, obj):  # h5py stops at a callback's first non-None return
        if isinstance(obj, h5py.Dataset):
            datasets[name] = obj.shape

    with h5py.File(good, "r") as handle:
        handle.visititems(visit)
    by_shape = {shape: n for n, shape in datasets.items()}
    r_height, query = by_shape[(3, 5)], sorted(n for n, s in datasets.items() if s == (4, 6))[0]
    group = r_height.rsplit("/", 1)[0]

    def doctored(label, edit):
        path = tmp_path / f"{label}.weights.h5"
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "r+") as handle:
            edit(handle)
        return path

    cases = [
        (doctored("missing", lambda h: h.__delitem__(r_height)), f"missing 'r_height' ({r_height}) (expected shape (3, 5))"),
        (doctored("extra", lambda h: h[group].create_dataset("99", data=np.zeros(3, np.float32))), f"unexpected '{group}/99' (shape (3,))"),
        (doctored("wrong", lambda h: (h.__delitem__(query), h.create_dataset(query, data=np.zeros((4, 7), np.float32)))), f"'query' ({query}) has shape (4, 7), expected (4, 6)"),
    ]
    for path, message in cases:
        with pytest.raises(WeightMismatchError) as info:
            convert.read_keras_weights(path, LAYER, CONFIG, SHAPES)
        assert message in str(info.value) and path.name in str(info.value)


# --------------------------------------------------------------------------------------------
# The command line's usage errors


@pytest.mark.parametrize("argv, message", [
    (["--from", "onnx", "a", "--to", "canonical", "b"], "format 'onnx' must be one of keras, torch, canonical"),
    (["--from", "keras", "a.h5", "--to", "canonical", "b", "--layer", "BiasLayer", "--input-shape", "1,2"], "ends in .weights.h5"),
    (["--from", "keras", "a.weights.h5", "--to", "canonical", "b"], "needs --layer"),
    (["--layer", "NoSuchLayer", "--from", "canonical", "a", "--to", "torch", "b"], "unknown layer 'NoSuchLayer'"),
    (["--layer", "BiasLayer", "--from", "torch", "a", "--to", "canonical", "b"], "needs --input-shape"),
    (["--layer", "BiasLayer", "--input-shape", "1,two", "--from", "torch", "a", "--to", "canonical", "b"], "--input-shape '1,two'"),
    (["--layer", "BiasLayer", "--config", "{", "--input-shape", "1,2", "--from", "torch", "a", "--to", "canonical", "b"], "--config: not JSON"),
    (["--layer", "mlp_block", "--config", '{"hidden_dim": 0}', "--input-shape", "1,2,3", "--from", "torch", "a", "--to", "canonical", "b"], "hidden_dim 0"),
    (["--layer", "mlp_block", "--example", "nope", "--from", "torch", "a", "--to", "canonical", "b"], "documented examples are documented, readme_config"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    assert main(["convert", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_canonical_file_must_agree_with_the_arguments_given(mhsa, tmp_path, capsys):
    path = convert.write_canonical(tmp_path / "a.safetensors", mhsa)
    assert main(["convert", "--layer", LAYER, "--config", '{"num_heads": 2, "key_dim": 3}', "--input-shape", "2,3,5,4", "--from", "canonical", str(path), "--to", "torch", str(tmp_path / "t.safetensors")]) == 0
    assert main(["convert", "--layer", LAYER, "--config", '{"num_heads": 1, "key_dim": 6}', "--from", "canonical", str(path), "--to", "torch", str(tmp_path / "t2.safetensors")]) == 1
    assert 'not the config {"attn_dropout"' in capsys.readouterr().err
    assert main(["convert", "--from", "canonical", str(tmp_path / "missing.safetensors"), "--to", "torch", str(tmp_path / "t3.safetensors")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_the_destination_is_never_replaced_silently(mhsa, tmp_path, capsys):
    source = convert.write_canonical(tmp_path / "a.safetensors", mhsa)
    precious = tmp_path / "exists.safetensors"
    precious.write_text("precious")
    assert main(["convert", "--from", "canonical", str(source), "--to", "torch", str(precious)]) == 2
    assert "the file exists; --force replaces it" in capsys.readouterr().err and precious.read_text() == "precious"
    assert main(["convert", "--from", "canonical", str(source), "--to", "torch", str(precious), "--force"]) == 0
    assert main(["convert", "--from", "canonical", str(source), "--to", "canonical", str(source), "--force"]) == 2
    assert "is the source file itself" in capsys.readouterr().err
    assert main(["convert", "--from", "canonical", str(source), "--to", "torch", str(tmp_path / "nodir" / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", "--from", "canonical", str(source), "--to", "torch", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def _with_metadata(path, source, **changes):
    """A copy of the canonical file ``source`` whose metadata fields are replaced by ``changes``."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(source), framework="numpy") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = json.loads(handle.metadata()[convert.METADATA_KEY])
    save_file(tensors, str(path), metadata={convert.METADATA_KEY: json.dumps({**meta, **changes})})
    return path


@pytest.mark.parametrize("changes, message", [
    ({"input_shapes": "abc"}, "malformed 'attnconf' metadata: input_shapes 'abc' is not a list of lists of integers"),
    ({"input_shapes": [[2, 3, 5, 4.7]]}, "input_shapes [[2, 3, 5, 4.7]] is not a list of lists of integers"),
    ({"dtype": "float16"}, "malformed 'attnconf' metadata: dtype 'float16', expected one of float32, float64"),
    ({"spec_version": "99.0"}, "written for spec version '99.0'"),
    ({"format": "not attnconf"}, "format 'not attnconf', expected 'attnconf canonical weights'"),
    ({"layer": "NoSuchLayer"}, "layer 'NoSuchLayer' is not a layer of the spec"),
])
def test_a_canonical_files_metadata_is_checked_field_by_field(mhsa, tmp_path, capsys, changes, message):
    source = _with_metadata(tmp_path / "doctored.safetensors", convert.write_canonical(tmp_path / "a.safetensors", mhsa), **changes)
    assert main(["convert", "--from", "canonical", str(source), "--to", "torch", str(tmp_path / "t.safetensors")]) == 1
    err = capsys.readouterr().err
    assert message in err and str(source) in err and "Traceback" not in err, err


@pytest.mark.parametrize("fmt, name", [("torch", "w.safetensors"), ("keras", "w.weights.h5")])
def test_a_written_framework_file_refuses_another_config_and_keeps_a_weightless_dtype(tmp_path, capsys, fmt, name):
    lw = convert.canonical("mlp_block", {"hidden_dim": 7}, [(2, 5, 4)], {k: np.zeros(s, "f4") for k, s in reference.weight_shapes("mlp_block", (2, 5, 4), hidden_dim=7).items()})
    path = convert.write(fmt, tmp_path / name, lw)
    argv = ["convert", "--layer", "mlp_block", "--input-shape", "2,5,4", "--from", fmt, str(path), "--to", "canonical"]
    assert main([*argv, str(tmp_path / "c.safetensors"), "--config", '{"hidden_dim": 7, "activation": "relu"}']) == 1
    err = capsys.readouterr().err
    assert "the file was written for mlp_block" in err and '"activation": "gelu"' in err, err
    assert main([*argv, str(tmp_path / "c.safetensors"), "--config", '{"hidden_dim": 7}']) == 0
    weightless = convert.canonical("rsoftmax", {"groups": 2}, [(1, 1, 1, 4)], {}, dtype="float64")
    back = convert.read(fmt, convert.write(fmt, tmp_path / f"r_{name}", weightless), "rsoftmax", {"groups": 2}, [(1, 1, 1, 4)])
    assert back.dtype == "float64"
