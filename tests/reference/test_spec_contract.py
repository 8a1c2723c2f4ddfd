"""The contract every layer declaration keeps, checked generically over ``reference.names()``.

Documented examples hold the reference to facts copied from the README and the 2021 code;
documented rejections must raise :class:`reference.DomainError` with the promised wording;
``forward`` must police its weights and config keys; and every configuration the spec's own
sampler draws must validate and run to a finite result of the declared shape.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from conformance.sampling import strategies
from reference._sampling import EDGE_DRAWS

NAMES = reference.names()

ALL_EXAMPLES = [(name, example) for name in NAMES for example in reference.spec(name).examples]
SHAPE_EXAMPLES = [(n, e) for n, e in ALL_EXAMPLES if e.documented_output_shape is not None]
WEIGHT_EXAMPLES = [(n, e) for n, e in ALL_EXAMPLES if e.documented_weights is not None]
REJECTIONS = [(name, index, r) for name in NAMES for index, r in enumerate(reference.spec(name).rejections)]


def _example_ids(pairs):
    return [f"{name}-{example.name}" for name, example in pairs]


def random_inputs(rng, shapes):
    return [rng.normal(size=shape) for shape in shapes]


def random_weights(rng, name, shapes, config):
    """Weights at the scale the spec asks for; strictly positive where it says so."""
    weights = {}
    for w in reference.weight_specs(name, *shapes, **config):
        value = rng.normal(size=w.shape) * w.std
        weights[w.name] = np.abs(value) + 0.1 if w.positive else value
    return weights


def last_example_arrays(name, seed):
    """The layer's last documented example with random inputs and weights: ``(example, inputs, weights)``."""
    example = reference.spec(name).examples[-1]
    rng = np.random.default_rng(seed)
    inputs = random_inputs(rng, example.input_shapes)
    return example, inputs, random_weights(rng, name, example.input_shapes, example.config)


def zero_weights(name, shapes, config):
    return {key: np.zeros(shape) for key, shape in reference.weight_shapes(name, *shapes, **config).items()}


def raises_domain_error(call):
    """Run ``call`` and return the DomainError's message; fail if it raises nothing."""
    with pytest.raises(reference.DomainError) as info:
        call()
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Basic API


def test_names_are_unique_and_every_name_has_a_spec():
    assert len(set(NAMES)) == len(NAMES), f"expected unique layer names, got {NAMES}"
    assert NAMES, "expected at least one layer"
    for name in NAMES:
        assert reference.spec(name).name == name, f"spec({name!r}).name is {reference.spec(name).name!r}"


def test_domain_error_is_a_value_error():
    assert issubclass(reference.DomainError, ValueError), "DomainError should subclass ValueError"


def test_unknown_layer_name_is_a_domain_error():
    message = raises_domain_error(lambda: reference.spec("NoSuchLayer"))
    assert "'NoSuchLayer'" in message, f"expected the unknown name in the message, got {message!r}"


# --------------------------------------------------------------------------------------------
# Documented examples


@pytest.mark.parametrize("name,example", SHAPE_EXAMPLES, ids=_example_ids(SHAPE_EXAMPLES))
def test_documented_output_shape_matches_reference(name, example):
    got = reference.output_shape(name, *example.input_shapes, **example.config)
    want = tuple(example.documented_output_shape)
    assert got == want, f"{name} {example.name} ({example.source}): documented output {want}, reference gives {got}"


@pytest.mark.parametrize("name,example", WEIGHT_EXAMPLES, ids=_example_ids(WEIGHT_EXAMPLES))
def test_documented_weights_match_reference(name, example):
    got = reference.weight_shapes(name, *example.input_shapes, **example.config)
    want = {key: tuple(shape) for key, shape in example.documented_weights.items()}
    assert got == want, f"{name} {example.name} ({example.source}): documented weights {want}, reference gives {got}"


@pytest.mark.parametrize("name,example", ALL_EXAMPLES, ids=_example_ids(ALL_EXAMPLES))
def test_example_forward_returns_float64_of_output_shape(name, example):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{example.name}".encode()))  # stable across runs
    inputs = random_inputs(rng, example.input_shapes)
    weights = random_weights(rng, name, example.input_shapes, example.config)
    out = reference.forward(name, *inputs, weights=weights, **example.config)
    want_shape = reference.output_shape(name, *example.input_shapes, **example.config)
    assert isinstance(out, np.ndarray), f"{name}: expected an ndarray, got {type(out).__name__}"
    assert out.dtype == np.float64, f"{name} {example.name}: expected float64, got {out.dtype}"
    assert out.shape == want_shape, f"{name} {example.name}: expected shape {want_shape}, got {out.shape}"
    assert np.all(np.isfinite(out)), f"{name} {example.name}: expected finite values, got {np.sum(~np.isfinite(out))} non-finite"


@pytest.mark.parametrize("name", NAMES)
def test_forward_computes_in_float64_from_float32_inputs(name):
    example, inputs, weights = last_example_arrays(name, seed=11)
    inputs32 = [x.astype(np.float32) for x in inputs]
    weights32 = {k: v.astype(np.float32) for k, v in weights.items()}
    got = reference.forward(name, *inputs32, weights=weights32, **example.config)
    want = reference.forward(
        name,
        *[x.astype(np.float64) for x in inputs32],
        weights={k: v.astype(np.float64) for k, v in weights32.items()},
        **example.config,
    )
    assert got.dtype == np.float64, f"{name}: expected float64 from float32 inputs, got {got.dtype}"
    np.testing.assert_array_equal(got, want, err_msg=f"{name}: float32 inputs should be widened to float64 before computing")


# --------------------------------------------------------------------------------------------
# Documented rejections


@pytest.mark.parametrize("name,index,rejection", REJECTIONS, ids=[f"{n}-{i}" for n, i, _ in REJECTIONS])
def test_documented_rejection_raises_domain_error_with_its_message(name, index, rejection):
    calls = {
        "validate": lambda: reference.validate(name, *rejection.input_shapes, **rejection.config),
        "output_shape": lambda: reference.output_shape(name, *rejection.input_shapes, **rejection.config),
        "weight_shapes": lambda: reference.weight_shapes(name, *rejection.input_shapes, **rejection.config),
        "forward": lambda: reference.forward(
            name, *[np.zeros(shape) for shape in rejection.input_shapes], weights={}, **rejection.config
        ),
    }
    for entry, call in calls.items():
        message = raises_domain_error(call)
        assert message.startswith(f"{name}:"), f"{entry}: expected the message to start with '{name}:', got {message!r}"
        assert rejection.message in message, f"{entry}: expected {rejection.message!r} in the message, got {message!r}"


# --------------------------------------------------------------------------------------------
# Weights and config keys policed by forward


@pytest.mark.parametrize("name,example", ALL_EXAMPLES, ids=_example_ids(ALL_EXAMPLES))
def test_forward_rejects_each_missing_weight_by_name(name, example):
    inputs = [np.zeros(shape) for shape in example.input_shapes]
    weights = zero_weights(name, example.input_shapes, example.config)
    if not weights:
        assert reference.weight_shapes(name, *example.input_shapes, **example.config) == {}
        return  # a weightless layer (rsoftmax) has none to remove; the extra-weight test still runs
    for key in weights:
        partial = {k: v for k, v in weights.items() if k != key}
        message = raises_domain_error(lambda: reference.forward(name, *inputs, weights=partial, **example.config))
        assert message.startswith(f"{name}:"), f"expected the message to start with '{name}:', got {message!r}"
        assert repr(key) in message, f"missing weight {key!r}: expected its name in the message, got {message!r}"


@pytest.mark.parametrize("name,example", ALL_EXAMPLES, ids=_example_ids(ALL_EXAMPLES))
def test_forward_rejects_an_extra_weight_by_name(name, example):
    inputs = [np.zeros(shape) for shape in example.input_shapes]
    weights = zero_weights(name, example.input_shapes, example.config)
    weights["not_a_weight/kernel"] = np.zeros((1,))
    message = raises_domain_error(lambda: reference.forward(name, *inputs, weights=weights, **example.config))
    assert message.startswith(f"{name}:"), f"expected the message to start with '{name}:', got {message!r}"
    assert "'not_a_weight/kernel'" in message, f"expected the extra weight's name in the message, got {message!r}"


@pytest.mark.parametrize("name,example", ALL_EXAMPLES, ids=_example_ids(ALL_EXAMPLES))
def test_forward_rejects_each_wrong_shaped_weight_by_name(name, example):
    inputs = [np.zeros(shape) for shape in example.input_shapes]
    weights = zero_weights(name, example.input_shapes, example.config)
    for key, value in weights.items():
        wrong_shapes = [value.shape[:-1] + (value.shape[-1] + 1,), value.shape + (1,)]
        for wrong in wrong_shapes:
            bad = dict(weights, **{key: np.zeros(wrong)})
            message = raises_domain_error(lambda: reference.forward(name, *inputs, weights=bad, **example.config))
            assert message.startswith(f"{name}:"), f"expected the message to start with '{name}:', got {message!r}"
            assert repr(key) in message, f"weight {key!r} of shape {wrong}: expected its name in the message, got {message!r}"
            assert str(wrong) in message, f"weight {key!r}: expected the wrong shape {wrong} in the message, got {message!r}"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_is_rejected_by_name(name):
    example = reference.spec(name).examples[-1]
    config = dict(example.config, definitely_not_a_parameter=1)
    inputs = [np.zeros(shape) for shape in example.input_shapes]
    weights = zero_weights(name, example.input_shapes, example.config)
    calls = {
        "validate": lambda: reference.validate(name, *example.input_shapes, **config),
        "output_shape": lambda: reference.output_shape(name, *example.input_shapes, **config),
        "weight_shapes": lambda: reference.weight_shapes(name, *example.input_shapes, **config),
        "forward": lambda: reference.forward(name, *inputs, weights=weights, **config),
    }
    for entry, call in calls.items():
        message = raises_domain_error(call)
        assert message.startswith(f"{name}:"), f"{entry}: expected the message to start with '{name}:', got {message!r}"
        assert "'definitely_not_a_parameter'" in message, f"{entry}: expected the unknown key in the message, got {message!r}"


@pytest.mark.parametrize("name", NAMES)
def test_wrong_number_of_inputs_is_rejected(name):
    layer = reference.spec(name)
    example = layer.examples[-1]
    shapes = tuple(example.input_shapes) + (example.input_shapes[0],)
    message = raises_domain_error(lambda: reference.validate(name, *shapes, **example.config))
    assert message.startswith(f"{name}:"), f"expected the message to start with '{name}:', got {message!r}"
    assert f"takes {len(layer.inputs)} input" in message, f"expected the input count in the message, got {message!r}"


# --------------------------------------------------------------------------------------------
# Configurations drawn by the spec's own sampler


def draw_case(data, name):
    # The conformance suite's strategies draw through the spec's own samplers.
    config = data.draw(strategies.configs(name), label="config")
    return config, data.draw(strategies.input_shapes(name, config), label="input shapes")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_sampled_configs_validate(name, data):
    config, shapes = draw_case(data, name)
    full = reference.validate(name, *shapes, **config)
    params = [p.name for p in reference.spec(name).params]
    assert sorted(full) == sorted(params), f"validate should fill every parameter {params}, got {sorted(full)}"
    for key, value in config.items():
        assert full[key] == value, f"validate changed drawn {key}={value!r} into {full[key]!r}"
    shapes_by_spec = {w.name: w.shape for w in reference.weight_specs(name, *shapes, **config)}
    assert shapes_by_spec == reference.weight_shapes(name, *shapes, **config), "weight_specs and weight_shapes disagree"


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_forward_on_sampled_configs_is_finite_and_of_output_shape(name, data):
    config, shapes = draw_case(data, name)
    seed = data.draw(st.integers(min_value=0, max_value=2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    inputs = random_inputs(rng, shapes)
    weights = random_weights(rng, name, shapes, config)
    out = reference.forward(name, *inputs, weights=weights, **config)
    want_shape = reference.output_shape(name, *shapes, **config)
    assert out.dtype == np.float64, f"{name} {config}: expected float64, got {out.dtype}"
    assert out.shape == want_shape, f"{name} {config} {shapes}: expected shape {want_shape}, got {out.shape}"
    assert np.all(np.isfinite(out)), f"{name} {config} {shapes}: expected finite values, got {out}"


# --------------------------------------------------------------------------------------------
# Edge cases: the spec's samplers asked by the deterministic edge draws


def edge_shapes(name):
    """``{edge draw name: (config, input shapes)}``, each validated by the reference."""
    layer = reference.spec(name)
    out = {}
    for template in EDGE_DRAWS:
        draw = template.fresh()
        config = layer.draw_config(draw)
        shapes = tuple(tuple(s) for s in layer.sample_input_shapes(config, draw))
        reference.validate(name, *shapes, **config)
        out[template.name] = (config, shapes)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_edge_draw_gives_a_case_in_the_domain_that_runs(name):
    for edge, (config, shapes) in edge_shapes(name).items():
        rng = np.random.default_rng(5)
        out = reference.forward(name, *random_inputs(rng, shapes), weights=random_weights(rng, name, shapes, config), **config)
        assert np.all(np.isfinite(out)), f"{name} edge case {edge!r} {config} {shapes}: expected finite values"


# Corners a layer's domain cannot reach, with the reason; anything else missing is a sampler bug.
UNREACHABLE_CORNERS: dict[tuple[str, str], str] = {
    ("rsoftmax", "even side"): "the domain is [B, 1, 1, C]: pooled logits, both sides 1",
    ("rsoftmax", "non-square map"): "the domain is [B, 1, 1, C]: pooled logits, both sides 1",
}


def corners(shape, kind):
    """The corners one input shape stands on."""
    found = {"batch 1" if shape[0] == 1 else "batch > 1"}
    is_map = len(shape) == 4 and kind in ("feature_map", "channels_last")
    axes = list(enumerate(shape[1:], start=1))
    pairs = [(a, b) for i, a in enumerate(axes) for b in axes[i + 1 :] if not (is_map and (a[0], b[0]) == (1, 2))]
    if any(a[1] == b[1] for a, b in pairs):
        found.add("two other axes of equal size")
    if is_map:
        height, width = shape[1], shape[2]
        found.add("square map" if height == width else "non-square map")
        found |= {"odd side" for side in (height, width) if side % 2} | {"even side" for side in (height, width) if side % 2 == 0}
        if 1 in (height, width):
            found.add("side of 1")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_edge_draws_reach_every_corner_of_the_domain(name):
    layer = reference.spec(name)
    kind = layer.inputs[0].kind
    reached = set()
    for _, shapes in edge_shapes(name).values():
        reached |= corners(shapes[0], kind)
    wanted = {"batch 1", "batch > 1", "two other axes of equal size"}
    if kind == "feature_map" or (kind == "channels_last" and any(len(s[0]) == 4 for _, s in edge_shapes(name).values())):
        wanted |= {"square map", "non-square map", "odd side", "even side", "side of 1"}
    missing = sorted(c for c in wanted - reached if (name, c) not in UNREACHABLE_CORNERS)
    assert not missing, f"{name}: the edge draws never produce {missing}; shapes drawn: {[s for _, s in edge_shapes(name).values()]}"
