"""PyTorch-specific behaviour of the aotnet modules in ``impls.torch``: state_dict and canonical
round trips, the fixed blur buffer, initial values, train mode, rejections and float64.

Numerical conformance on drawn cases lives in ``conformance/tests``; the reference is used here
where a PyTorch feature (``.double()``, a buffer, train mode) has to be shown to give the
canonical numbers. The tests convert NCHW <-> NHWC themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import MODULES, AntiAliasDownsample, BatchNormAct2d, Conv2dNoBias, SEModule
from reference._spec import REQUIRED

LAYERS = ["anti_alias_downsample", "batchnorm_with_activation", "conv2d_no_bias", "se_module"]


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def draw_weights(layer, shape, config, seed):
    """Canonical weights at the spec's scales; fixed weights at their value."""
    rng = np.random.default_rng(seed)
    return {
        w.name: w.initial_value() if w.fixed else (rng.uniform(0.5, 2.0, w.shape) if w.positive else rng.normal(0.0, w.std, w.shape))
        for w in reference.weight_specs(layer, shape, **config)
    }


# Constructor, canonical name + config, and a channels-last input shape.
CASES = [
    pytest.param(lambda: AntiAliasDownsample(3), "anti_alias_downsample", {}, (2, 5, 6, 3), id="AntiAlias-default"),
    pytest.param(
        lambda: AntiAliasDownsample(2, kernel_size=(4, 4), strides=3, trainable=True),
        "anti_alias_downsample",
        {"kernel_size": (4, 4), "strides": 3, "trainable": True},
        (1, 7, 4, 2),
        id="AntiAlias-k4-s3-trainable",
    ),
    pytest.param(lambda: BatchNormAct2d(5, activation="gelu"), "batchnorm_with_activation", {"activation": "gelu"}, (2, 3, 4, 5), id="BatchNormAct2d-gelu"),
    pytest.param(lambda: BatchNormAct2d(4, activation=None, zero_gamma=True), "batchnorm_with_activation", {"activation": None, "zero_gamma": True}, (1, 2, 3, 4), id="BatchNormAct2d-none"),
    pytest.param(
        lambda: Conv2dNoBias(4, 6, (1, 3), strides=(2, 1), padding="same", use_bias=True, groups=2),
        "conv2d_no_bias",
        {"filters": 6, "kernel_size": (1, 3), "strides": (2, 1), "padding": "same", "use_bias": True, "groups": 2},
        (2, 5, 4, 4),
        id="Conv2dNoBias-grouped",
    ),
    pytest.param(
        lambda: Conv2dNoBias(6, 3, 2, strides=2, padding="SAME", use_bias=True, groups=3),
        "conv2d_no_bias",
        {"filters": 3, "kernel_size": 2, "strides": 2, "padding": "SAME", "use_bias": True, "groups": 3},
        (1, 5, 6, 6),
        id="Conv2dNoBias-depthwise",
    ),
    pytest.param(lambda: SEModule(10, se_ratio=0.29), "se_module", {"se_ratio": 0.29}, (2, 3, 2, 10), id="SEModule"),
    pytest.param(lambda: SEModule(6, se_ratio=0.5, activation="swish", use_bias=False), "se_module", {"se_ratio": 0.5, "activation": "swish", "use_bias": False}, (1, 2, 4, 6), id="SEModule-no-bias"),
]


# --------------------------------------------------------------------------------------------
# 1. Registry, names, round trips


def test_modules_are_registered_under_the_canonical_names():
    assert {layer: MODULES[layer] for layer in LAYERS} == {
        "anti_alias_downsample": AntiAliasDownsample,
        "batchnorm_with_activation": BatchNormAct2d,
        "conv2d_no_bias": Conv2dNoBias,
        "se_module": SEModule,
    }


@pytest.mark.parametrize("make, layer, config, shape", CASES)
def test_canonical_round_trip_matches_the_reference_in_float64(make, layer, config, shape):
    module = make().double().eval()
    assert module.canonical_shapes() == reference.weight_shapes(layer, shape, **config)
    weights = draw_weights(layer, shape, config, seed=1)
    module.load_canonical_state_dict(weights)
    for name, value in module.canonical_state_dict().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)
    x = np.random.default_rng(2).normal(size=shape)
    with torch.no_grad():
        got = nchw_to_nhwc(module(nhwc_to_nchw(x)))
    np.testing.assert_allclose(got, reference.forward(layer, x, weights=weights, **config), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("make, layer, config, shape", CASES)
def test_state_dict_round_trip(make, layer, config, shape):
    original, fresh = make().eval(), make().eval()
    original.load_canonical_state_dict(draw_weights(layer, shape, config, seed=5))
    fresh.load_state_dict(original.state_dict())
    x = nhwc_to_nchw(np.random.default_rng(6).normal(size=shape)).float()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), original(x), rtol=0, atol=0)


def test_the_mapping_is_the_documented_one():
    assert {k: (v.key, v.permute) for k, v in Conv2dNoBias(4, 6, 3, groups=2, use_bias=True).canonical_weights().items()} == {
        "conv/kernel": ("conv.weight", (3, 2, 0, 1)),
        "conv/bias": ("conv.bias", None),
    }
    assert {k: (v.key, v.permute) for k, v in Conv2dNoBias(5, 1, 3).canonical_weights().items()} == {"conv/depthwise_kernel": ("conv.weight", (2, 3, 0, 1))}
    assert {k: v.key for k, v in BatchNormAct2d(3).canonical_weights().items()} == {
        "bn/gamma": "weight",
        "bn/beta": "bias",
        "bn/moving_mean": "running_mean",
        "bn/moving_variance": "running_var",
    }
    assert {k: (v.key, v.permute) for k, v in AntiAliasDownsample(3).canonical_weights().items()} == {"anti_alias_down/depthwise_kernel": ("weight", (2, 3, 0, 1))}


def test_conv2d_no_bias_builds_plain_nn_conv2d():
    depthwise = Conv2dNoBias(6, 3, 3, groups=3, padding="SAME")
    assert (depthwise.conv.in_channels, depthwise.conv.out_channels, depthwise.conv.groups, depthwise.conv.padding) == (6, 6, 6, (1, 1))
    grouped = Conv2dNoBias(4, 8, (1, 3), strides=(2, 1), padding="same", groups=2)
    assert (grouped.conv.out_channels, grouped.conv.groups, grouped.conv.padding, grouped.conv.stride, grouped.conv.bias) == (8, 2, (1, 1), (2, 1), None)
    assert Conv2dNoBias(4, 8, 3, groups=0).conv.groups == 1


# --------------------------------------------------------------------------------------------
# 2. The fixed blur and the initial values


def spec_initial(layer, shape, **config):
    return {w.name: w.initial_value() for w in reference.weight_specs(layer, shape, **config) if w.initial is not None}


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
def test_anti_alias_blur_is_a_buffer_holding_the_fixed_value(kernel_size):
    module = AntiAliasDownsample(3, kernel_size=kernel_size)
    assert list(module.parameters()) == [], "the blur must not be a trainable parameter"
    assert "weight" in dict(module.named_buffers()) and "weight" in module.state_dict()
    want = spec_initial("anti_alias_downsample", (1, 4, 4, 3), kernel_size=kernel_size)
    np.testing.assert_array_equal(module.canonical_state_dict()["anti_alias_down/depthwise_kernel"], want["anti_alias_down/depthwise_kernel"])
    assert module.double().weight.dtype == torch.float64, "the buffer should follow .double()"


def test_anti_alias_trainable_makes_the_blur_a_parameter():
    module = AntiAliasDownsample(2, trainable=True)
    assert [name for name, _ in module.named_parameters()] == ["weight"]
    np.testing.assert_array_equal(module.canonical_state_dict()["anti_alias_down/depthwise_kernel"], spec_initial("anti_alias_downsample", (1, 4, 4, 2))["anti_alias_down/depthwise_kernel"])


@pytest.mark.parametrize("zero_gamma", [False, True])
def test_batchnorm_initial_values_are_the_declared_ones(zero_gamma):
    module = BatchNormAct2d(5, zero_gamma=zero_gamma)
    built = module.canonical_state_dict()
    want = spec_initial("batchnorm_with_activation", (1, 2, 2, 5), zero_gamma=zero_gamma)
    assert set(built) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(built[name], value, err_msg=name)


def test_batchnorm_act_is_a_batchnorm2d_with_the_2021_momentum():
    module = BatchNormAct2d(2, activation="relu")
    assert isinstance(module, nn.BatchNorm2d) and module.eps == 1e-5
    x = torch.tensor([[[[1.0, 3.0]], [[-2.0, 6.0]]]])  # [1, 2, 1, 2]: batch means 2 and 2
    module.train()(x)
    # Keras' momentum 0.9 keeps 90% of the old moving mean (0) and takes 10% of the batch's.
    torch.testing.assert_close(module.running_mean, torch.tensor([0.2, 0.2]))


# --------------------------------------------------------------------------------------------
# 3. Rejections


REJECTIONS = [
    (layer, rejection)
    for layer in LAYERS
    for rejection in reference.spec(layer).rejections
    if all(p.name in rejection.config for p in reference.spec(layer).params if p.default is REQUIRED)
]


@pytest.mark.parametrize("layer, rejection", REJECTIONS, ids=[f"{layer}-{r.message[:40]}" for layer, r in REJECTIONS])
def test_rejections_match_the_reference(layer, rejection):
    with pytest.raises(ValueError) as info:
        MODULES[layer].from_canonical(dict(rejection.config), *rejection.input_shapes)
    assert str(info.value).startswith(f"{layer}:") and rejection.message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "module, x, fragment",
    [
        (Conv2dNoBias(4, 4, (3, 1)), torch.zeros(1, 4, 2, 5), "conv2d_no_bias: height 2 plus padding 0 is smaller than the kernel's height 3"),
        (Conv2dNoBias(4, 4, 3), torch.zeros(1, 3, 5, 5), "conv2d_no_bias: inputs shape (1, 3, 5, 5) must have 4 channels on dim 1"),
        (BatchNormAct2d(4), torch.zeros(2, 4, 5), "batchnorm_with_activation: inputs shape (2, 4, 5) must have rank 4"),
        (SEModule(8), torch.zeros(1, 6, 2, 2), "se_module: inputs shape (1, 6, 2, 2) must have 8 channels on dim 1"),
        (AntiAliasDownsample(2), torch.zeros(1, 3, 4, 4), "anti_alias_downsample: inputs shape (1, 3, 4, 4) must have 2 channels on dim 1"),
    ],
)
def test_wrong_inputs_raise_value_error(module, x, fragment):
    with pytest.raises(ValueError) as info:
        module(x)
    assert fragment in str(info.value), str(info.value)


def test_zero_se_width_is_rejected_at_construction():
    with pytest.raises(ValueError, match=r"se_module: se_ratio 0.25 leaves int\(3 \* 0.25\) = 0 channels for 1_conv"):
        SEModule(3)


# --------------------------------------------------------------------------------------------
# 4. Plain nn.Module usage


def test_modules_compose_in_sequential_and_train():
    model = nn.Sequential(
        Conv2dNoBias(3, 8, 3, strides=2, padding="SAME"),
        BatchNormAct2d(8, activation="swish"),
        SEModule(8),
        AntiAliasDownsample(8),
    )
    x = torch.randn(2, 3, 9, 7)
    out = model(x)
    assert out.shape == (2, 8, 3, 2)
    out.sum().backward()
    assert model[0].conv.weight.grad is not None and model[2].fc1.weight.grad is not None
    assert model[3].weight.grad is None and not model[3].weight.requires_grad
