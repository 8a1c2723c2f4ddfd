"""PyTorch-specific behaviour of ``impls.torch``'s HaloAttention: state_dict and canonical
round trips, the documented mapping, maps of any whole-block size, train / eval, errors.

Numerical conformance on drawn cases lives in ``conformance/tests``; the tests here convert
NCHW <-> NHWC themselves where they compare with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import MODULES, HaloAttention

LAYER = "HaloAttention"
CONFIG = {"num_heads": 2, "key_dim": 3, "block_size": 2, "halo_size": 3, "out_shape": 7, "out_bias": True}
INPUT = (2, 4, 6, 5)  # channels-last, as the reference takes it


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Replace every parameter (zeros included) by random values, so copies are visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return module


def canonical_weights_at_spec_scale(input_shape, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(LAYER, input_shape, **config)}


VARIANTS = [
    pytest.param(CONFIG, INPUT, id="out_weight-out_bias"),
    pytest.param({"num_heads": 3, "key_dim": 2, "block_size": 3, "halo_size": 0, "out_weight": False, "out_bias": True}, (1, 3, 6, 4), id="no-out_weight-bias"),
    pytest.param({"num_heads": 1, "key_dim": 2, "block_size": 1, "halo_size": 1}, (2, 3, 2, 3), id="block-1"),
]


# --------------------------------------------------------------------------------------------
# 1. Round trips and the canonical mapping


@pytest.mark.parametrize("config, shape", VARIANTS)
def test_state_dict_round_trip(config, shape):
    original = randomize(HaloAttention.from_canonical(config, shape), seed=0).eval()
    fresh = HaloAttention.from_canonical(config, shape).eval()
    fresh.load_state_dict(original.state_dict())
    x = nhwc_to_nchw(np.random.default_rng(1).normal(size=shape)).float()
    with torch.no_grad():
        assert torch.equal(fresh(x), original(x)), "a module loaded from state_dict() gives different outputs"


@pytest.mark.parametrize("config, shape", VARIANTS)
def test_canonical_state_dict_round_trip_and_shapes(config, shape):
    original = randomize(HaloAttention.from_canonical(config, shape), seed=2).eval()
    fresh = HaloAttention.from_canonical(config, shape).eval()
    canonical = original.canonical_state_dict()
    want = reference.weight_shapes(LAYER, shape, **config)
    got = {name: tuple(array.shape) for name, array in canonical.items()}
    assert got == want, f"canonical shapes: expected {want}, got {got}"
    fresh.load_canonical_state_dict(canonical)
    x = nhwc_to_nchw(np.random.default_rng(3).normal(size=shape)).float()
    with torch.no_grad():
        assert torch.equal(fresh(x), original(x)), "a module loaded from canonical_state_dict() gives different outputs"


def test_readme_config_canonical_shapes_match_the_readme():
    module = HaloAttention(256)
    readme = {"query": (256, 512), "key_value": (256, 1024), "output_weight": (512, 512), "r_width": (128, 7), "r_height": (128, 7)}
    assert module.canonical_shapes() == readme, f"expected {readme}, got {module.canonical_shapes()}"
    with torch.no_grad():
        out = module(torch.ones(1, 256, 14, 16))
    assert tuple(out.shape) == (1, 512, 14, 16), f"expected [1, 512, 14, 16] (NCHW of the README's [1, 14, 16, 512]), got {tuple(out.shape)}"


def test_canonical_mapping_is_the_documented_one():
    module = randomize(HaloAttention(5, **CONFIG), seed=4)
    canonical = module.canonical_state_dict()
    expected = {
        "query": module.query.weight.T,  # nn.Linear weight is the (in, out) kernel transposed
        "key_value": module.key_value.weight.T,
        "output_weight": module.output.weight.T,
        "output_bias": module.output.bias,
        "r_width": module.rel_width.T,  # tables stored one row per offset
        "r_height": module.rel_height.T,
    }
    assert set(canonical) == set(expected), f"expected canonical names {sorted(expected)}, got {sorted(canonical)}"
    for name, tensor in expected.items():
        np.testing.assert_array_equal(canonical[name], tensor.detach().numpy(), err_msg=f"canonical {name}")
    assert not any("index" in key for key in module.state_dict()), "the relative index buffer must not be saved"
    assert MODULES[LAYER] is HaloAttention


# --------------------------------------------------------------------------------------------
# 2. float64 against the reference, any map, train / eval


@pytest.mark.parametrize("config, shape", VARIANTS)
def test_float64_matches_the_reference(config, shape):
    module = HaloAttention.from_canonical(config, shape).double().eval()
    weights = canonical_weights_at_spec_scale(shape, config, seed=5)
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(6).normal(size=shape)
    with torch.no_grad():
        out = module(nhwc_to_nchw(x))
    assert out.dtype == torch.float64, f"expected a float64 output, got {out.dtype}"
    want = reference.forward(LAYER, x, weights=weights, **config)
    np.testing.assert_allclose(nchw_to_nhwc(out), want, rtol=0, atol=1e-12, err_msg=f"float64 HaloAttention {config} vs the reference")


def test_one_module_serves_every_map_of_whole_blocks():
    config = {"num_heads": 2, "key_dim": 2, "block_size": 2, "halo_size": 1}
    module = HaloAttention(3, **config).double().eval()
    weights = canonical_weights_at_spec_scale((1, 2, 2, 3), config, seed=7)
    module.load_canonical_state_dict(weights)
    for shape in [(1, 2, 2, 3), (2, 6, 4, 3), (1, 2, 8, 3)]:
        x = np.random.default_rng(sum(shape)).normal(size=shape)
        with torch.no_grad():
            got = nchw_to_nhwc(module(nhwc_to_nchw(x)))
        want = reference.forward(LAYER, x, weights=weights, **config)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"map {shape[1:3]}")


def test_attention_dropout_only_in_train_mode():
    config = {"num_heads": 2, "key_dim": 3, "block_size": 2, "halo_size": 1, "attn_dropout": 0.5}
    module = HaloAttention.from_canonical(config, INPUT).double()
    weights = canonical_weights_at_spec_scale(INPUT, config, seed=8)
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(9).normal(size=INPUT)

    torch.manual_seed(10)
    module.train()
    with torch.no_grad():
        first, second = module(nhwc_to_nchw(x)), module(nhwc_to_nchw(x))
    difference = (first - second).abs().max().item()
    assert difference > 1e-3, f"expected two train-mode calls with attn_dropout=0.5 to differ, max difference {difference:.3g}"

    module.eval()
    with torch.no_grad():
        first, second = module(nhwc_to_nchw(x)), module(nhwc_to_nchw(x))
    assert torch.equal(first, second), "eval() outputs are not deterministic"
    want = reference.forward(LAYER, x, weights=weights, **config)
    np.testing.assert_allclose(nchw_to_nhwc(first), want, rtol=0, atol=1e-12, err_msg="eval() output vs the reference")


# --------------------------------------------------------------------------------------------
# 3. Bad configs and shapes: the same rejections as the reference


@pytest.mark.parametrize("rejection", [pytest.param(r, id=str(i)) for i, r in enumerate(reference.spec(LAYER).rejections)])
def test_every_spec_rejection_is_a_value_error_with_the_reference_message(rejection):
    with pytest.raises(reference.DomainError) as want:
        reference.validate(LAYER, *rejection.input_shapes, **rejection.config)
    with pytest.raises(ValueError) as got:
        HaloAttention.from_canonical(rejection.config, rejection.input_shapes[0])
    assert str(got.value) == str(want.value), f"expected {str(want.value)!r}, got {str(got.value)!r}"


@pytest.mark.parametrize(
    "x, fragment",
    [
        pytest.param(torch.ones(1, 8, 14, 16), "height 14 is not a multiple of block_size 4", id="height"),
        pytest.param(torch.ones(1, 8, 8, 6), "width 6 is not a multiple of block_size 4", id="width"),
        pytest.param(torch.ones(1, 6, 8, 8), "[batch, 8, height, width]", id="channels"),
        pytest.param(torch.ones(8, 8, 8), "(8, 8, 8)", id="rank3"),
    ],
)
def test_wrong_input_raises_value_error_not_runtime_error(x, fragment):
    # RuntimeError (what a bad view or matmul raises) is not a ValueError, so this also shows
    # that no raw PyTorch shape error escapes.
    module = HaloAttention(8, num_heads=1, key_dim=2, block_size=4)
    with pytest.raises(ValueError) as info:
        module(x)
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


@pytest.mark.parametrize("in_channels", [0, 2.5, True])
def test_bad_in_channels_is_a_value_error(in_channels):
    with pytest.raises(ValueError) as info:
        HaloAttention(in_channels)
    assert f"in_channels {in_channels!r} must be an integer >= 1" in str(info.value), str(info.value)
