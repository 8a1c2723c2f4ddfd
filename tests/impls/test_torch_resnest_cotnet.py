"""PyTorch-specific behaviour of RadixSoftmax, SplitAttnConv2d and CotAttention: canonical
mappings (including per-group blocks of one grouped conv), initial values, channels-first
channel order, rejections, the one-value GroupNorm, plain ``nn.Module`` use.

Numerical conformance on drawn cases lives in ``conformance/tests``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import MODULES
from impls.torch.cotnet import CotAttention, GroupNorm
from impls.torch.resnest import RadixSoftmax, SplitAttnConv2d


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return np.moveaxis(x.detach().numpy(), 1, -1)


def spec_weights(layer, shape, config, seed):
    rng = np.random.default_rng(seed)
    return {
        w.name: rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.normal(0.0, w.std, w.shape)
        for w in reference.weight_specs(layer, shape, **config)
    }


def test_modules_are_registered_under_the_canonical_names():
    assert MODULES["rsoftmax"] is RadixSoftmax
    assert MODULES["split_attention_conv2d"] is SplitAttnConv2d
    assert MODULES["cot_attention"] is CotAttention


# --------------------------------------------------------------------------------------------
# 1. Canonical mappings


def test_per_group_kernels_are_blocks_of_the_grouped_conv():
    module = SplitAttnConv2d(6, 4, kernel_size=3, groups=3)
    with torch.no_grad():
        module.conv.weight.copy_(torch.randn_like(module.conv.weight))
    canonical = module.canonical_state_dict()
    weight = module.conv.weight.detach().numpy()  # (3 * 4, 6 / 3, 3, 3)
    for i in range(3):
        np.testing.assert_array_equal(canonical[f"1_g{i + 1}_conv/kernel"], weight[4 * i : 4 * (i + 1)].transpose(2, 3, 1, 0))
    assert "1_conv/kernel" not in canonical
    one_group = SplitAttnConv2d(6, 4, groups=1)
    single = one_group.canonical_state_dict()
    np.testing.assert_array_equal(single["1_conv/kernel"], one_group.conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    assert not any("_g" in name for name in single)


@pytest.mark.parametrize(
    "cls, layer, config, shape",
    [
        pytest.param(SplitAttnConv2d, "split_attention_conv2d", {"filters": 5, "groups": 2}, (1, 3, 3, 6), id="split"),
        pytest.param(SplitAttnConv2d, "split_attention_conv2d", {"filters": 3, "groups": 1, "kernel_size": 2}, (1, 3, 3, 4), id="split-g1"),
        pytest.param(CotAttention, "cot_attention", {"kernel_size": 3}, (1, 3, 3, 16), id="cot"),
    ],
)
def test_canonical_state_dict_round_trips_and_matches_the_spec(cls, layer, config, shape):
    module = cls.from_canonical(config, shape)
    weights = spec_weights(layer, shape, config, seed=1)
    assert module.canonical_shapes() == {name: value.shape for name, value in weights.items()}
    module.double().load_canonical_state_dict(weights)
    back = module.canonical_state_dict()
    for name, value in weights.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_state_dict_keys_are_the_usual_pytorch_ones():
    split = set(SplitAttnConv2d(4, 3).state_dict())
    for key in ("conv.weight", "bn0.running_var", "fc1.weight", "fc1.bias", "bn1.weight", "fc2.bias"):
        assert key in split, sorted(split)
    cot = set(CotAttention(16).state_dict())
    for key in ("key_embed.0.weight", "embed.3.bias", "embed.4.weight", "conv1x1.1.running_mean", "bn.weight", "se.3.weight"):
        assert key in cot, sorted(cot)


@pytest.mark.parametrize(
    "module, layer, config, shape",
    [
        pytest.param(SplitAttnConv2d(6, 4, groups=2), "split_attention_conv2d", {"filters": 4, "groups": 2}, (1, 3, 3, 6), id="split"),
        pytest.param(CotAttention(8, kernel_size=5), "cot_attention", {"kernel_size": 5}, (1, 3, 3, 8), id="cot"),
    ],
)
def test_fresh_modules_start_at_the_declared_initial_values(module, layer, config, shape):
    canonical = module.canonical_state_dict()
    declared = [w for w in reference.weight_specs(layer, shape, **config) if w.initial is not None]
    assert declared
    for weight in declared:
        np.testing.assert_array_equal(canonical[weight.name], weight.initial_value(), err_msg=weight.name)


def test_batch_norms_use_keras_epsilon_and_momentum():
    for module in (SplitAttnConv2d(4, 3), CotAttention(8)):
        norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(m.eps == 1e-5 and m.momentum == 0.1 for m in norms)
    group_norm = CotAttention(16, kernel_size=3).embed[4]
    assert group_norm.num_groups == 2 and group_norm.num_channels == 18 and group_norm.eps == 1e-5


# --------------------------------------------------------------------------------------------
# 2. Channel order on [B, C, 1, 1]


def test_radix_softmax_reads_channels_first_logits_in_the_canonical_order():
    x = np.random.default_rng(2).normal(size=(2, 1, 1, 12))
    with torch.no_grad():
        got = RadixSoftmax(3)(nhwc_to_nchw(x))
    assert got.shape == (2, 12, 1, 1)
    np.testing.assert_allclose(nchw_to_nhwc(got), reference.forward("rsoftmax", x, weights={}, groups=3), rtol=0, atol=1e-15)
    columns = got.reshape(2, 3, 4).sum(dim=1)  # radix r of column c is channel r * 4 + c
    torch.testing.assert_close(columns, torch.ones(2, 4, dtype=torch.float64))


def test_radix_softmax_of_one_group_is_a_sigmoid():
    x = torch.randn(3, 5, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(RadixSoftmax(1)(x), torch.sigmoid(x))


@pytest.mark.parametrize(
    "cls, layer, config, shape",
    [
        pytest.param(SplitAttnConv2d, "split_attention_conv2d", {"filters": 3, "groups": 2, "strides": 2, "activation": "swish"}, (2, 5, 4, 4), id="split"),
        pytest.param(CotAttention, "cot_attention", {"kernel_size": 3, "activation": "elu"}, (2, 3, 4, 16), id="cot"),
    ],
)
def test_float64_modules_match_the_reference(cls, layer, config, shape):
    module = cls.from_canonical(config, shape).double().eval()
    weights = spec_weights(layer, shape, config, seed=4)
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(5).normal(size=shape)
    with torch.no_grad():
        got = nchw_to_nhwc(module(nhwc_to_nchw(x)))
    np.testing.assert_allclose(got, reference.forward(layer, x, weights=weights, **config), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# 3. The one-value GroupNorm


def test_group_norm_of_a_single_value_gives_its_bias():
    norm = GroupNorm(3, 3, eps=1e-5).double()
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.tensor([[[[7.0]], [[-3.0]], [[0.25]]]], dtype=torch.float64)
    torch.testing.assert_close(norm(x), norm.bias.detach().view(1, 3, 1, 1).clone())
    with pytest.raises(ValueError, match="more than 1 value"):
        nn.GroupNorm(3, 3)(x)  # why the subclass exists


def test_cot_attention_kernel_1_on_a_1x1_map_runs():
    module = CotAttention(8, kernel_size=1).double().eval()
    with torch.no_grad():
        assert module(torch.randn(1, 8, 1, 1, dtype=torch.float64)).shape == (1, 8, 1, 1)


# --------------------------------------------------------------------------------------------
# 4. Rejections: the reference's messages, never a raw PyTorch error


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda: RadixSoftmax(0), "groups 0 must be >= 1", id="rsoftmax-groups"),
        pytest.param(lambda: SplitAttnConv2d(8, 4, groups=3), "channels 8 is not a multiple of groups 3", id="split-groups"),
        pytest.param(lambda: SplitAttnConv2d(8, 4, activation="mish"), "activation 'mish' must be one of", id="split-activation"),
        pytest.param(lambda: SplitAttnConv2d(8, 4, kernel_size=(3, 3)), "kernel_size (3, 3) must be an integer", id="split-kernel"),
        pytest.param(lambda: CotAttention(16, kernel_size=2), "kernel_size 2 must be odd", id="cot-even"),
        pytest.param(lambda: CotAttention(20), "channels 20 is not a multiple of 8", id="cot-channels"),
    ],
)
def test_bad_config_raises_value_error_naming_the_parameter(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


@pytest.mark.parametrize(
    "module, x, fragment",
    [
        pytest.param(RadixSoftmax(2), torch.ones(2, 8, 3, 3), "inputs shape (2, 3, 3, 8) must be [batch, 1, 1, channels]", id="rsoftmax-map"),
        pytest.param(RadixSoftmax(3), torch.ones(2, 8, 1, 1), "channels 8 is not a multiple of groups 3", id="rsoftmax-channels"),
        pytest.param(RadixSoftmax(2), torch.ones(2, 8), "rank 4", id="rsoftmax-rank"),
        pytest.param(SplitAttnConv2d(6, 4), torch.ones(1, 4, 3, 3), "6 channels", id="split-channels"),
        pytest.param(SplitAttnConv2d(6, 4, groups=3), torch.ones(1, 8, 3, 3), "not a multiple of groups 3", id="split-groups"),
        pytest.param(CotAttention(16), torch.ones(1, 8, 3, 3), "16 channels", id="cot-channels"),
        pytest.param(CotAttention(16), torch.ones(16, 3, 3), "rank 4", id="cot-rank"),
    ],
)
def test_wrong_input_shape_raises_value_error_not_runtime_error(module, x, fragment):
    with pytest.raises(ValueError) as info:
        module(x)
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# 5. Plain nn.Modules


def test_modules_compose_in_sequential_and_move_with_double():
    model = nn.Sequential(CotAttention(16, kernel_size=3), SplitAttnConv2d(16, 8, groups=2)).double().eval()
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    x = np.random.default_rng(6).normal(size=(2, 4, 4, 16))
    with torch.no_grad():
        out = model(nhwc_to_nchw(x))
    want = reference.forward("cot_attention", x, weights=model[0].canonical_state_dict(), kernel_size=3)
    want = reference.forward("split_attention_conv2d", want, weights=model[1].canonical_state_dict(), filters=8, groups=2)
    np.testing.assert_allclose(nchw_to_nhwc(out), want, rtol=1e-12, atol=1e-12)
