"""PyTorch-specific behaviour of ``impls.torch``: state_dict and canonical round trips, train /
eval, errors, the Softplus threshold, and plain nn.Module usage.

Numerical conformance against the reference lives in ``conformance/tests``. Here the reference
is used where a PyTorch feature (eval(), ``.double()``, ``channel_dim``) has to be shown to give
the canonical numbers; the tests convert NCHW <-> NHWC themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import BiasLayer, ChannelAffine, MHSAWithPositionEmbedding, MlpBlock

MHSA = "MHSAWithPositionEmbedding"


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Replace every parameter (zeros, constants) by random values, so copies are visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return module


def canonical_weights_at_spec_scale(layer: str, input_shape, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, input_shape, **config)}


# Constructor, canonical name + config, channels-last input shape, and the module's own input.
MODULES = [
    pytest.param(
        lambda: MHSAWithPositionEmbedding(5, (3, 4), num_heads=2, key_dim=3, relative=False, out_shape=7, out_bias=True),
        MHSA,
        {"num_heads": 2, "key_dim": 3, "relative": False, "out_shape": 7, "out_bias": True},
        (2, 3, 4, 5),
        id="MHSA-absolute-out_bias",
    ),
    pytest.param(
        lambda: MHSAWithPositionEmbedding(4, (3, 2), num_heads=2, key_dim=2, out_weight=False, out_bias=True),
        MHSA,
        {"num_heads": 2, "key_dim": 2, "out_weight": False, "out_bias": True},
        (1, 3, 2, 4),
        id="MHSA-relative-no-out_weight",
    ),
    pytest.param(lambda: MlpBlock(5, 7, activation="swish"), "mlp_block", {"hidden_dim": 7, "activation": "swish"}, (2, 6, 5), id="MlpBlock"),
    pytest.param(lambda: ChannelAffine(5, use_bias=True), "ChannelAffine", {"use_bias": True}, (2, 3, 4, 5), id="ChannelAffine-NCHW"),
    pytest.param(lambda: ChannelAffine(5, use_bias=False, channel_dim=-1), "ChannelAffine", {"use_bias": False}, (2, 6, 5), id="ChannelAffine-tokens"),
    pytest.param(lambda: BiasLayer(5), "BiasLayer", {}, (2, 3, 4, 5), id="BiasLayer-NCHW"),
]


def module_input(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    """A random input in the module's layout for a channels-last ``shape``."""
    x = np.random.default_rng(seed).normal(size=shape)
    return (nhwc_to_nchw(x) if len(shape) == 4 else torch.from_numpy(x)).to(dtype)


# --------------------------------------------------------------------------------------------
# 1. state_dict and canonical round trips


@pytest.mark.parametrize("make, layer, config, shape", MODULES)
def test_state_dict_round_trip(make, layer, config, shape):
    original, fresh = randomize(make(), seed=0).eval(), make().eval()
    fresh.load_state_dict(original.state_dict())
    x = module_input(shape, seed=1)
    with torch.no_grad():
        assert torch.equal(fresh(x), original(x)), "a module loaded from state_dict() gives different outputs"


@pytest.mark.parametrize("make, layer, config, shape", MODULES)
def test_canonical_state_dict_round_trip_and_shapes(make, layer, config, shape):
    original, fresh = randomize(make(), seed=2).eval(), make().eval()
    canonical = original.canonical_state_dict()
    want = reference.weight_shapes(layer, shape, **config)
    got = {name: tuple(array.shape) for name, array in canonical.items()}
    assert got == want, f"canonical shapes: expected {want}, got {got}"
    fresh.load_canonical_state_dict(canonical)
    x = module_input(shape, seed=3)
    with torch.no_grad():
        assert torch.equal(fresh(x), original(x)), "a module loaded from canonical_state_dict() gives different outputs"


def test_readme_config_canonical_shapes_match_the_reference():
    module = MHSAWithPositionEmbedding.from_canonical({"num_heads": 4, "key_dim": 128}, (1, 14, 16, 256))
    want = reference.weight_shapes(MHSA, (1, 14, 16, 256), num_heads=4, key_dim=128)
    assert module.canonical_shapes() == want, f"expected {want}, got {module.canonical_shapes()}"


def test_canonical_mapping_is_the_documented_one():
    mhsa = randomize(MHSAWithPositionEmbedding(5, (3, 4), num_heads=2, key_dim=3, out_shape=7, out_bias=True), seed=4)
    canonical = mhsa.canonical_state_dict()
    expected = {
        "query": mhsa.query.weight.T,  # nn.Linear weight is the (in, out) kernel transposed
        "key": mhsa.key.weight.T,
        "value": mhsa.value.weight.T,
        "output_weight": mhsa.output.weight.T,
        "output_bias": mhsa.output.bias,
        "r_width": mhsa.rel_width.T,  # tables stored one row per position
        "r_height": mhsa.rel_height.T,
    }
    assert set(canonical) == set(expected), f"expected canonical names {sorted(expected)}, got {sorted(canonical)}"
    for name, tensor in expected.items():
        np.testing.assert_array_equal(canonical[name], tensor.detach().numpy(), err_msg=f"canonical {name}")

    mlp = randomize(MlpBlock(5, 3), seed=5)
    canonical = mlp.canonical_state_dict()
    pairs = {
        "Dense_0/kernel": mlp.fc1.weight.T,
        "Dense_0/bias": mlp.fc1.bias,
        "Dense_1/kernel": mlp.fc2.weight.T,
        "Dense_1/bias": mlp.fc2.bias,
    }
    assert set(canonical) == set(pairs), f"expected canonical names {sorted(pairs)}, got {sorted(canonical)}"
    for name, tensor in pairs.items():
        np.testing.assert_array_equal(canonical[name], tensor.detach().numpy(), err_msg=f"canonical {name}")


def test_load_canonical_state_dict_rejects_wrong_names_and_shapes():
    module = MlpBlock(5, 3)
    good = module.canonical_state_dict()
    with pytest.raises(KeyError, match="Dense_1/bias"):
        module.load_canonical_state_dict({k: v for k, v in good.items() if k != "Dense_1/bias"})
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        module.load_canonical_state_dict({**good, "Dense_0/kernel": good["Dense_0/kernel"].T})


# --------------------------------------------------------------------------------------------
# 2. train() / eval() and channel_dim


def test_attention_dropout_only_in_train_mode():
    config = {"num_heads": 2, "key_dim": 3, "attn_dropout": 0.5}
    shape = (2, 3, 4, 5)
    module = MHSAWithPositionEmbedding.from_canonical(config, shape).double()
    weights = canonical_weights_at_spec_scale(MHSA, shape, config, seed=6)
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(7).normal(size=shape)

    torch.manual_seed(8)
    module.train()
    with torch.no_grad():
        first, second = module(nhwc_to_nchw(x)), module(nhwc_to_nchw(x))
    difference = (first - second).abs().max().item()
    assert difference > 1e-3, f"expected two train-mode calls with attn_dropout=0.5 to differ, max difference {difference:.3g}"

    module.eval()
    with torch.no_grad():
        first, second = module(nhwc_to_nchw(x)), module(nhwc_to_nchw(x))
    assert torch.equal(first, second), "eval() outputs are not deterministic"
    want = reference.forward(MHSA, x, weights=weights, **config)
    np.testing.assert_allclose(nchw_to_nhwc(first), want, rtol=0, atol=1e-12, err_msg="eval() output vs the reference")


@pytest.mark.parametrize("channel_dim, shape", [(1, (2, 3, 4, 5)), (-1, (2, 6, 5))], ids=["NCHW", "tokens"])
def test_channel_affine_channel_dim(channel_dim, shape):
    weights = canonical_weights_at_spec_scale("ChannelAffine", shape, {}, seed=9)
    module = ChannelAffine(shape[-1], channel_dim=channel_dim).double()
    module.load_canonical_state_dict(weights)
    x = np.random.default_rng(10).normal(size=shape)
    with torch.no_grad():
        out = module(nhwc_to_nchw(x) if channel_dim == 1 else torch.from_numpy(x))
    got = nchw_to_nhwc(out) if channel_dim == 1 else out.numpy()
    want = reference.forward("ChannelAffine", x, weights=weights)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15, err_msg=f"ChannelAffine(channel_dim={channel_dim}) vs the reference")


@pytest.mark.parametrize("module_class", ["BiasLayer", "ChannelAffine", "ChannelLayerNorm"])
def test_the_default_channel_axis_follows_the_rank_even_where_two_sizes_are_equal(module_class):
    # [B, N, C] tokens with N == C: an axis-1 default would silently act on the tokens.
    import impls.torch as torch_impls

    make = getattr(torch_impls, module_class)
    default, explicit = make(5), make(5, channel_dim=-1)
    for p in default.parameters():
        nn.init.normal_(p)
    explicit.load_state_dict(default.state_dict())
    tokens = torch.randn(2, 5, 5)
    assert torch.equal(default(tokens), explicit(tokens))
    map_default, map_explicit = make(4), make(4, channel_dim=1)
    map_explicit.load_state_dict(map_default.state_dict())
    feature_map = torch.randn(2, 4, 3, 4)  # [B, C, H, W] with W == C
    assert torch.equal(map_default(feature_map), map_explicit(feature_map))


def test_keras_batch_norm_trains_on_one_value_per_channel_and_refuses_options_it_cannot_keep():
    from impls.torch._mapping import KerasBatchNorm2d

    bn = KerasBatchNorm2d(3).double().train()
    nn.init.normal_(bn.bias)
    out = bn(torch.randn(1, 3, 1, 1, dtype=torch.float64))  # batch 1 of a 1 x 1 map: Keras gives beta
    assert torch.equal(out.flatten(), bn.bias.detach())
    bn.momentum = None
    with pytest.raises(ValueError, match="momentum None"):
        bn(torch.randn(2, 3, 2, 2, dtype=torch.float64))


def test_the_fixed_blur_follows_the_default_dtype():
    from impls.torch import AntiAliasDownsample

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        module = AntiAliasDownsample(4)
        assert module(torch.randn(1, 4, 6, 6)).dtype == torch.float64 and module.weight.dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)


# --------------------------------------------------------------------------------------------
# 3. Bad configs and shapes


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(lambda: MHSAWithPositionEmbedding(8, (3, 3), num_heads=0), "num_heads 0", id="num_heads"),
        pytest.param(lambda: MHSAWithPositionEmbedding(8, (3, 3), attn_dropout=1.0), "attn_dropout 1.0", id="attn_dropout"),
        pytest.param(
            lambda: MHSAWithPositionEmbedding(8, (3, 3), num_heads=2, key_dim=2, out_shape=8, out_weight=False), "out_shape 8", id="out_shape"
        ),
        pytest.param(lambda: MlpBlock(4, 0), "hidden_dim 0", id="hidden_dim"),
        pytest.param(lambda: MlpBlock(4, 3, activation="mish"), "activation 'mish'", id="activation"),
        pytest.param(lambda: ChannelAffine(4, use_bias="yes"), "use_bias 'yes'", id="use_bias"),
        pytest.param(lambda: ChannelAffine(0), "ChannelAffine: num_channels 0 must be a positive integer", id="num_channels"),
        pytest.param(lambda: BiasLayer(4, channel_dim="last"), "BiasLayer: channel_dim 'last' must be None or an integer axis", id="channel_dim"),
        pytest.param(lambda: MlpBlock(2.5, 3), "MlpBlock: in_features 2.5 must be a positive integer", id="in_features"),
        pytest.param(lambda: MHSAWithPositionEmbedding(8, (3, 0)), "feat_size[1] 0 must be a positive integer", id="feat_size"),
        pytest.param(lambda: MHSAWithPositionEmbedding(8, "3x3"), "feat_size '3x3' must be an integer or a (height, width) pair", id="feat_size_text"),
    ],
)
def test_bad_config_raises_value_error_naming_the_parameter(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


@pytest.mark.parametrize(
    "module, x, fragment",
    [
        pytest.param(MHSAWithPositionEmbedding(8, (3, 3), num_heads=1, key_dim=2), torch.ones(1, 8, 4, 4), "(1, 8, 4, 4)", id="MHSA-4x4"),
        pytest.param(MHSAWithPositionEmbedding(8, (3, 3), num_heads=1, key_dim=2), torch.ones(1, 6, 3, 3), "(1, 6, 3, 3)", id="MHSA-channels"),
        pytest.param(MHSAWithPositionEmbedding(8, (3, 3), num_heads=1, key_dim=2), torch.ones(9, 8), "(9, 8)", id="MHSA-rank2"),
        pytest.param(ChannelAffine(4), torch.ones(1, 3, 2, 2), "4 channels", id="ChannelAffine-channels"),
        pytest.param(ChannelAffine(4, channel_dim=-1), torch.ones(2, 5, 3), "4 channels", id="ChannelAffine-tokens"),
        pytest.param(BiasLayer(4), torch.ones(1, 3, 2, 2), "4 channels", id="BiasLayer-channels"),
        pytest.param(MlpBlock(4, 3), torch.ones(1, 2, 2, 4), "rank 3", id="MlpBlock-rank4"),
        pytest.param(MlpBlock(4, 3), torch.ones(1, 2, 5), "4 channels", id="MlpBlock-channels"),
    ],
)
def test_wrong_input_shape_raises_value_error_not_runtime_error(module, x, fragment):
    # RuntimeError (what a bad matmul or view raises) is not a ValueError, so this also
    # proves no raw PyTorch shape error escapes.
    with pytest.raises(ValueError) as info:
        module(x)
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# 4. Softplus threshold


def test_softplus_is_exact_in_float64_above_20():
    pre = torch.tensor([[[20.5, 25.0, 33.0, 39.5]]], dtype=torch.float64)
    block = MlpBlock(4, 4, activation="softplus").double()
    with torch.no_grad():  # identity Dense layers: the output is softplus(pre) itself
        block.fc1.weight.copy_(torch.eye(4))
        block.fc1.bias.zero_()
        block.fc2.weight.copy_(torch.eye(4))
        block.fc2.bias.zero_()
        got = block(pre).numpy()
        torch_default = nn.Softplus()(pre).numpy()
    want = np.log1p(np.exp(pre.numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0, err_msg="MlpBlock softplus vs log1p(exp(x)) in float64")
    # Why threshold=40: nn.Softplus() returns x itself above 20, off by log1p(exp(-x)) (8e-10 at 20.5).
    default_error = np.max(np.abs(torch_default - want))
    assert default_error > 1e-10, f"expected nn.Softplus() (threshold 20) to be off by > 1e-10 above 20, off by {default_error:.3g}"


# --------------------------------------------------------------------------------------------
# 5. Plain nn.Modules: nn.Sequential and .double()


def test_modules_compose_in_sequential_and_move_with_double():
    shape, config = (2, 3, 4, 5), {"num_heads": 2, "key_dim": 3, "out_shape": 6}
    out_shape = (2, 3, 4, 6)
    model = nn.Sequential(
        MHSAWithPositionEmbedding(5, (3, 4), **config),
        ChannelAffine(6, weight_init_value=0.5),
        BiasLayer(6),
    )
    assert all(isinstance(m, nn.Module) for m in model), "expected plain nn.Modules"
    keys = set(model.state_dict())
    for key in ("0.query.weight", "0.rel_width", "1.weight", "1.bias", "2.bias"):
        assert key in keys, f"expected {key!r} in the Sequential's state_dict, got {sorted(keys)}"
    assert not any("index" in key for key in keys), f"the relative index buffers must not be saved: {sorted(keys)}"

    model = randomize(model, seed=11).double().eval()
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert set(dtypes.values()) == {torch.float64}, f"expected float64 parameters after .double(), got {dtypes}"
    x = np.random.default_rng(12).normal(size=shape)
    with torch.no_grad():
        out = model(nhwc_to_nchw(x))
    assert out.dtype == torch.float64, f"expected a float64 output, got {out.dtype}"

    want = reference.forward(MHSA, x, weights=model[0].canonical_state_dict(), **config)
    want = reference.forward("ChannelAffine", want, weights=model[1].canonical_state_dict())
    want = reference.forward("BiasLayer", want, weights=model[2].canonical_state_dict())
    assert want.shape == out_shape
    np.testing.assert_allclose(nchw_to_nhwc(out), want, rtol=0, atol=1e-12, err_msg="float64 Sequential vs the reference chain")

    tokens = nn.Sequential(MlpBlock(5, 7), BiasLayer(5, channel_dim=-1))
    tokens = randomize(tokens, seed=13).double()
    t = np.random.default_rng(14).normal(size=(2, 6, 5))
    with torch.no_grad():
        got = tokens(torch.from_numpy(t)).numpy()
    want = reference.forward("mlp_block", t, weights=tokens[0].canonical_state_dict(), hidden_dim=7)
    want = reference.forward("BiasLayer", want, weights=tokens[1].canonical_state_dict())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg="float64 MlpBlock (exact GELU) + BiasLayer vs the reference")
