"""What the reference API does with inputs, weights, shapes and configs of the wrong kind: a
DomainError naming the thing, its value and the rule, never a conversion that changes meaning
(complex to real, text to numbers), a NumPy traceback or an overflow. Also: results do not depend
on the memory layout of the inputs."""

from __future__ import annotations

import numpy as np
import pytest

import reference

from tests.reference.test_spec_contract import NAMES, last_example_arrays, random_weights

BIAS = {"bias": np.zeros(3)}
LN = {"ln/gamma": np.ones(2), "ln/beta": np.zeros(2)}
BATCH_NORM = {"bn/gamma": np.ones(3), "bn/beta": np.zeros(3), "bn/moving_mean": np.zeros(3)}


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: reference.forward("BiasLayer", np.ones((2, 3)) + 5j, weights=BIAS), "BiasLayer: input 0 has dtype complex128, expected real numbers"),
        (lambda: reference.forward("BiasLayer", np.array([["1", "2", "3"]]), weights=BIAS), "BiasLayer: input 0 has dtype <U1, expected real numbers"),
        (lambda: reference.forward("BiasLayer", np.ones((2, 3), dtype=object), weights=BIAS), "input 0 has dtype object"),
        (lambda: reference.forward("BiasLayer", np.ones((2, 3)), weights={"bias": np.zeros(3) + 2j}), "weight 'bias' has dtype complex128, expected real numbers"),
        (lambda: reference.forward("BiasLayer", np.ones((2, 3)), weights={"bias": np.array([None] * 3, dtype=object)}), "weight 'bias' has dtype object"),
        (lambda: reference.forward("BiasLayer", np.ones((2, 3)), weights=None), "BiasLayer: weights must be a mapping of canonical names to arrays, got NoneType"),
        (lambda: reference.forward("BiasLayer", np.ones((2, 3)), weights=[np.zeros(3)]), "weights must be a mapping"),
        (lambda: reference.forward("layer_norm", [[1.0, 2.0], [3.0]], weights=LN), "layer_norm: input 0 is not a rectangular array of numbers"),
        (lambda: reference.forward("layer_norm", np.ones((1, 2)), weights={**LN, "ln/beta": [[0.0], [0.0, 1.0]]}), "weight 'ln/beta' is not a rectangular array"),
        (lambda: reference.forward("batchnorm_with_activation", np.ones((1, 1, 1, 3)), weights={**BATCH_NORM, "bn/moving_variance": np.array([1.0, -1.0, 1.0])}),
         "weight 'bn/moving_variance' has negative values (smallest -1.0); a variance must be >= 0"),
        (lambda: reference.forward("BiasLayer", np.ones((2, 3)), weights=BIAS, name="b"), "BiasLayer: unknown config parameter 'name'"),
        (lambda: reference.validate("BiasLayer", (2, 3), name="b"), "unknown config parameter 'name'"),
        (lambda: reference.validate("mlp_block", (1, 2, 3), hidden_dim=2, activation=np.array("relu")), "activation array('relu', dtype='<U4') must be one of 'linear'"),
        (lambda: reference.validate("ChannelAffine", (1, 3), weight_init_value=10**400), "weight_init_value 1000"),
        (lambda: reference.validate("se_module", (1, 4, 4, 8), se_ratio=1e308), "se_ratio 1e+308 makes int(8 * 1e+308) channels for 1_conv, more than 2147483647"),
        (lambda: reference.weight_shapes("anti_alias_downsample", (1, 6, 6, 2), kernel_size=513), "kernel_size 513 must be at most 27"),
        (lambda: reference.validate("anti_alias_downsample", (1, 6, 6, 2), kernel_size=10**6), "kernel_size 1000000 must be at most 27"),
        (lambda: reference.validate("conv2d_no_bias", (1, 4, 4, 2), filters=2**31, kernel_size=1), "filters 2147483648 must be at most 2147483647"),
        (lambda: reference.validate("conv2d_no_bias", (1, 4, 4, 2), filters=2, kernel_size=(1, 2**40)), "kernel_size (1, 1099511627776) must be at most 2147483647"),
        (lambda: reference.output_shape("layer_norm", (2, 3.9)), "layer_norm: inputs shape (2, 3.9) must be a sequence of integers"),
        (lambda: reference.output_shape("BiasLayer", (True, 5)), "inputs shape (True, 5) must be a sequence of integers"),
        (lambda: reference.output_shape("layer_norm", "234"), "inputs shape '234' must be a sequence of integers"),
    ],
    ids=lambda value: None if callable(value) else value[:40],
)
def test_wrong_kinds_of_values_are_domain_errors_naming_them(call, fragment):
    with pytest.raises(reference.DomainError) as info:
        call()
    assert fragment in str(info.value), f"expected {fragment!r} in {str(info.value)!r}"


def test_integer_and_bool_inputs_compute_as_their_float64_values():
    weights = {"weight": np.array([1.5, -2.0, 0.25]), "bias": np.array([0.0, 1.0, 2.0])}
    ints = np.array([[1, -2, 3], [0, 5, -7]])
    np.testing.assert_array_equal(reference.forward("ChannelAffine", ints, weights=weights), reference.forward("ChannelAffine", ints.astype(float), weights=weights))
    flags = np.array([[True, False, True]])
    np.testing.assert_array_equal(reference.forward("ChannelAffine", flags, weights=weights), reference.forward("ChannelAffine", flags.astype(float), weights=weights))


@pytest.mark.parametrize("name", NAMES)
def test_results_do_not_depend_on_the_memory_layout_of_the_inputs(name):
    # Same values, other strides (Fortran order, a reversed view): bit for bit the same result,
    # since forward works on C-contiguous copies; without them reductions may round differently.
    example, inputs, weights = last_example_arrays(name, seed=3)
    want = reference.forward(name, *inputs, weights=weights, **example.config)
    fortran = [np.asfortranarray(x) for x in inputs]
    reversed_views = [np.flip(np.flip(x, axis=-1).copy(), axis=-1) for x in inputs]
    for variant in (fortran, reversed_views):
        np.testing.assert_array_equal(reference.forward(name, *variant, weights=weights, **example.config), want)


def test_an_outlook_stride_far_beyond_the_map_pools_the_map_once_without_padding_to_it():
    x = np.random.default_rng(0).standard_normal((1, 5, 4, 3))
    config = {"embed_dim": 6, "num_head": 3}
    weights = random_weights(np.random.default_rng(1), "outlook_attention", (x.shape,), {**config, "strides": 5})
    # Padding the map to a multiple of the stride would ask for 10**12 pixels (MemoryError).
    far = reference.forward("outlook_attention", x, weights=weights, strides=10**6, **config)
    np.testing.assert_array_equal(far, reference.forward("outlook_attention", x, weights=weights, strides=5, **config))
