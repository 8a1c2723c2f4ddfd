"""PyTorch-specific behaviour of the coat family in ``impls.torch``: state_dict keys and the
canonical mapping (depthwise permutation), float64 against the reference, channels-first
feature maps in ChannelLayerNorm, and the same rejections as the reference.

Numerical conformance over drawn cases lives in ``conformance/tests``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import MODULES, ChannelLayerNorm, ConvPositionalEncoding, ConvRelativePositionalEncoding

CPE, CRPE, LN = "ConvPositionalEncoding", "ConvRelativePositionalEncoding", "layer_norm"

# float64 modules against the float64 reference: a few ulps of O(1) values.
F64_TOL = 1e-13


def canonical_weights(layer: str, shapes, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, *shapes, **config)}


def tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


# --------------------------------------------------------------------------------------------
# 1. Registry, state_dict keys and the canonical mapping


def test_modules_are_registered_under_the_canonical_names():
    assert MODULES[CPE] is ConvPositionalEncoding
    assert MODULES[CRPE] is ConvRelativePositionalEncoding
    assert MODULES[LN] is ChannelLayerNorm


def test_state_dict_keys_and_canonical_shapes():
    cpe = ConvPositionalEncoding(256)
    assert {k: tuple(v.shape) for k, v in cpe.state_dict().items()} == {"proj.weight": (256, 1, 3, 3), "proj.bias": (256,)}
    assert cpe.canonical_shapes() == {"depthwise_kernel": (3, 3, 256, 1), "bias": (256,)}

    crpe = ConvRelativePositionalEncoding(6, head_splits=[2, 3, 3], head_kernel_size=[3, 5, 7])
    assert {k: tuple(v.shape) for k, v in crpe.state_dict().items()} == {
        "convs.0.weight": (12, 1, 3, 3),
        "convs.0.bias": (12,),
        "convs.1.weight": (18, 1, 5, 5),
        "convs.1.bias": (18,),
        "convs.2.weight": (18, 1, 7, 7),
        "convs.2.bias": (18,),
    }
    assert crpe.canonical_shapes() == reference.weight_shapes(CRPE, (1, 8, 197, 6), (1, 8, 197, 6))

    norm = ChannelLayerNorm(256)
    assert set(norm.state_dict()) == {"weight", "bias"}
    assert norm.canonical_shapes() == {"ln/gamma": (256,), "ln/beta": (256,)}


def test_depthwise_kernel_maps_to_conv_weight_c_0_i_j():
    module = ConvPositionalEncoding(4, kernel_size=3)
    kernel = np.arange(3 * 3 * 4, dtype=np.float32).reshape(3, 3, 4, 1)
    module.load_canonical_state_dict({"depthwise_kernel": kernel, "bias": np.zeros(4, np.float32)})
    weight = module.proj.weight.detach().numpy()
    for i, j, c in np.ndindex(3, 3, 4):
        assert weight[c, 0, i, j] == kernel[i, j, c, 0], f"canonical [{i}, {j}, {c}, 0] should be torch [{c}, 0, {i}, {j}]"


@pytest.mark.parametrize(
    "module,layer,shapes,config",
    [
        (lambda: ConvPositionalEncoding(3, kernel_size=5), CPE, ((1, 10, 3),), {"kernel_size": 5}),
        (lambda: ConvRelativePositionalEncoding(2, [1, 2], [3, 1]), CRPE, ((1, 3, 5, 2),) * 2, {"head_splits": [1, 2], "head_kernel_size": [3, 1]}),
        (lambda: ChannelLayerNorm(5, channel_dim=1), LN, ((1, 2, 2, 5),), {}),
    ],
    ids=[CPE, CRPE, LN],
)
def test_canonical_round_trip_and_state_dict_round_trip(module, layer, shapes, config):
    weights = canonical_weights(layer, shapes, config, seed=1)
    original = module().double()
    original.load_canonical_state_dict(weights)
    back = original.canonical_state_dict()
    assert set(back) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    copy = module().double()
    copy.load_state_dict(original.state_dict())
    assert all(np.array_equal(copy.canonical_state_dict()[k], v) for k, v in weights.items())


def test_channel_layer_norm_is_an_nn_layer_norm_with_epsilon_1e_6_starting_at_1_and_0():
    norm = ChannelLayerNorm(6)
    assert isinstance(norm, nn.LayerNorm) and norm.eps == 1e-6
    specs = {w.name: w for w in reference.weight_specs(LN, (2, 5, 6))}
    np.testing.assert_array_equal(norm.weight.detach().numpy(), specs["ln/gamma"].initial_value())
    np.testing.assert_array_equal(norm.bias.detach().numpy(), specs["ln/beta"].initial_value())


# --------------------------------------------------------------------------------------------
# 2. float64 against the reference


@pytest.mark.parametrize("kernel_size,shape", [(3, (2, 10, 3)), (5, (1, 5, 4)), (1, (3, 17, 2)), (3, (2, 2, 3)), (7, (1, 26, 2))])
def test_cpe_float64_matches_reference(kernel_size, shape):
    config = {"kernel_size": kernel_size}
    module = ConvPositionalEncoding.from_canonical(config, shape).double().eval()
    weights = canonical_weights(CPE, (shape,), config, seed=2)
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(3).normal(size=shape)
    with torch.no_grad():
        got = module(tensor(x)).numpy()
    np.testing.assert_allclose(got, reference.forward(CPE, x, weights=weights, **config), rtol=F64_TOL, atol=F64_TOL)
    np.testing.assert_array_equal(got[:, 0], x[:, 0], err_msg="class token must pass through unchanged")


@pytest.mark.parametrize(
    "config,shape",
    [
        ({"head_splits": [2, 3, 3], "head_kernel_size": [3, 5, 7]}, (2, 8, 10, 2)),
        ({"head_splits": [1, 2, 1], "head_kernel_size": [3, 1, 5]}, (1, 4, 17, 3)),
        ({"head_splits": [2], "head_kernel_size": [3]}, (2, 2, 2, 1)),
    ],
)
def test_crpe_float64_matches_reference(config, shape):
    module = ConvRelativePositionalEncoding.from_canonical(config, shape, shape).double().eval()
    weights = canonical_weights(CRPE, (shape, shape), config, seed=4)
    module.load_canonical_state_dict(weights)
    rng = np.random.default_rng(5)
    query, value = rng.normal(size=shape), rng.normal(size=shape)
    with torch.no_grad():
        got = module(tensor(query), tensor(value)).numpy()
    np.testing.assert_allclose(got, reference.forward(CRPE, query, value, weights=weights, **config), rtol=F64_TOL, atol=F64_TOL)
    np.testing.assert_array_equal(got[:, :, 0], 0.0, err_msg="class-token row must be zero")


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e2])
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 6), (2, 3, 4, 5)])
def test_channel_layer_norm_float64_matches_reference(shape, scale):
    module = ChannelLayerNorm.from_canonical({}, shape).double().eval()
    weights = canonical_weights(LN, (shape,), {}, seed=6)
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(7).normal(size=shape) * scale
    torch_input = tensor(np.moveaxis(x, -1, 1)) if len(shape) == 4 else tensor(x)  # feature maps go in as [B, C, H, W]
    with torch.no_grad():
        got = module(torch_input).numpy()
    if len(shape) == 4:
        got = np.moveaxis(got, 1, -1)
    np.testing.assert_allclose(got, reference.forward(LN, x, weights=weights), rtol=F64_TOL, atol=F64_TOL)


def test_channel_layer_norm_on_nchw_normalises_channels_not_width():
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64)  # C == W: the wrong axis would go unnoticed by shape
    out = ChannelLayerNorm(4, channel_dim=1).double()(x)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(2, 3, 4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert out.mean(dim=-1).abs().max() > 1e-3, "width should not be the normalised axis"


# --------------------------------------------------------------------------------------------
# 3. The same rejections, with the same messages, as the reference

REJECTIONS = [(name, r) for name in (CPE, CRPE, LN) for r in reference.spec(name).rejections]


@pytest.mark.parametrize("layer,rejection", REJECTIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REJECTIONS)])
def test_from_canonical_rejects_like_the_reference(layer, rejection):
    with pytest.raises(reference.DomainError) as expected:
        reference.validate(layer, *rejection.input_shapes, **rejection.config)
    with pytest.raises(ValueError) as got:
        MODULES[layer].from_canonical(dict(rejection.config), *rejection.input_shapes)
    assert str(got.value) == str(expected.value), f"torch: {got.value}\nreference: {expected.value}"


def test_forward_rejects_a_non_square_grid_with_the_reference_message():
    with pytest.raises(ValueError, match=r"^ConvPositionalEncoding: image tokens \(tokens - 1\) 10 must be a positive square number"):
        ConvPositionalEncoding(4)(torch.zeros(1, 11, 4))
    module = ConvRelativePositionalEncoding(2, [1], [3])
    with pytest.raises(ValueError, match=r"^ConvRelativePositionalEncoding: image tokens \(tokens - 1\) 5 must be a positive square number"):
        module(torch.zeros(1, 1, 6, 2), torch.zeros(1, 1, 6, 2))


def test_crpe_forward_rejects_mismatched_query_and_value():
    module = ConvRelativePositionalEncoding(2, [1, 1], [3, 1])
    with pytest.raises(ValueError, match=r"value shape \(1, 2, 5, 2\) must equal the query shape \(1, 2, 10, 2\)"):
        module(torch.zeros(1, 2, 10, 2), torch.zeros(1, 2, 5, 2))
    with pytest.raises(ValueError, match=r"query shape \(1, 3, 10, 2\) must be \[batch, 2, tokens, 2\]"):
        module(torch.zeros(1, 3, 10, 2), torch.zeros(1, 3, 10, 2))


def test_constructors_reject_bad_configs_like_the_reference():
    with pytest.raises(ValueError, match="kernel_size 4 must hold odd kernel sizes"):
        ConvPositionalEncoding(4, kernel_size=4)
    with pytest.raises(ValueError, match="2 kernel sizes for 3 splits"):
        ConvRelativePositionalEncoding(2, head_splits=[2, 3, 3], head_kernel_size=[3, 5])
    with pytest.raises(ValueError, match=r"layer_norm: inputs shape \(2, 5\) must have 6 channels on dim -1"):
        ChannelLayerNorm(6)(torch.zeros(2, 5))
