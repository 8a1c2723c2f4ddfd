"""PyTorch-specific behaviour of the volo family in ``impls.torch``: state_dict and canonical
round trips, the canonical mapping (the positional embedding's permutation), train / eval,
errors and plain nn.Module usage.

Numerical conformance on drawn cases lives in the conformance suite; here the tests convert
NCHW <-> NHWC themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference
from impls.torch import ClassToken, OutlookAttention, OutlookAttentionSimple, PositionalEmbedding


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def randomize(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return module


def module_input(shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    """A random input in the module's layout for a channels-last ``shape``."""
    x = np.random.default_rng(seed).normal(size=shape)
    return (nhwc_to_nchw(x) if len(shape) == 4 else torch.from_numpy(x)).to(dtype)


def canonical_weights_at_spec_scale(layer: str, input_shape, config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w.name: rng.normal(0.0, w.std, size=w.shape) for w in reference.weight_specs(layer, input_shape, **config)}


# Constructor, canonical name + config, and channels-last input shape.
MODULES = [
    pytest.param(lambda: OutlookAttention(4, 6, 2), "outlook_attention", {"embed_dim": 6, "num_head": 2}, (2, 5, 7, 4), id="Outlook-odd"),
    pytest.param(
        lambda: OutlookAttention(3, 6, 3, kernel_size=4, strides=3),
        "outlook_attention",
        {"embed_dim": 6, "num_head": 3, "kernel_size": 4, "strides": 3},
        (1, 5, 4, 3),
        id="Outlook-k4-s3",
    ),
    pytest.param(
        lambda: OutlookAttention(5, 4, 1, kernel_size=2, padding=0, strides=3),
        "outlook_attention",
        {"embed_dim": 4, "num_head": 1, "kernel_size": 2, "padding": 0, "strides": 3},
        (2, 6, 3, 5),
        id="Outlook-gaps",
    ),
    pytest.param(lambda: OutlookAttentionSimple(5, 6, 2), "outlook_attention_simple", {"embed_dim": 6, "num_head": 2}, (2, 4, 8, 5), id="Simple-padded"),
    pytest.param(lambda: PositionalEmbedding(5, 3, 4), "PositionalEmbedding", {}, (2, 3, 4, 5), id="PositionalEmbedding"),
    pytest.param(lambda: ClassToken(5), "ClassToken", {}, (2, 6, 5), id="ClassToken"),
]


# --------------------------------------------------------------------------------------------
# 1. Round trips and the canonical mapping


@pytest.mark.parametrize("make, layer, config, shape", MODULES)
def test_state_dict_round_trip(make, layer, config, shape):
    original, fresh = randomize(make(), seed=0).eval(), make().eval()
    fresh.load_state_dict(original.state_dict())
    x = module_input(shape, seed=1)
    with torch.no_grad():
        assert torch.equal(fresh(x), original(x)), "a module loaded from state_dict() gives different outputs"


@pytest.mark.parametrize("make, layer, config, shape", MODULES)
def test_canonical_round_trip_shapes_and_float64_reference(make, layer, config, shape):
    original = randomize(make(), seed=2).double().eval()
    canonical = original.canonical_state_dict()
    want = reference.weight_shapes(layer, shape, **config)
    got = {name: tuple(array.shape) for name, array in canonical.items()}
    assert got == want, f"canonical shapes: expected {want}, got {got}"

    fresh = make().double().eval()
    fresh.load_canonical_state_dict(canonical)
    x = module_input(shape, seed=3, dtype=torch.float64)
    with torch.no_grad():
        out = fresh(x)
        assert torch.equal(out, original(x)), "a module loaded from canonical_state_dict() gives different outputs"
    got = nchw_to_nhwc(out) if len(shape) == 4 else out.numpy()
    inputs = nchw_to_nhwc(x) if len(shape) == 4 else x.numpy()
    want = reference.forward(layer, inputs, weights=canonical, **config)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"float64 {layer} vs the reference")


def test_readme_config_canonical_shapes():
    module = OutlookAttention.from_canonical({"embed_dim": 192, "num_head": 4}, (1, 28, 28, 192))
    assert module.canonical_shapes() == {
        "v/kernel": (192, 192),
        "attn/kernel": (192, 324),
        "attn/bias": (324,),
        "out/kernel": (192, 192),
        "out/bias": (192,),
    }, module.canonical_shapes()


def test_canonical_mapping_is_the_documented_one():
    outlook = randomize(OutlookAttention(3, 4, 2), seed=4)
    canonical = outlook.canonical_state_dict()
    expected = {
        "v/kernel": outlook.v.weight.T,  # nn.Linear weight is the (in, out) kernel transposed
        "attn/kernel": outlook.attn.weight.T,
        "attn/bias": outlook.attn.bias,
        "out/kernel": outlook.out.weight.T,
        "out/bias": outlook.out.bias,
    }
    assert set(canonical) == set(expected), sorted(canonical)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(canonical[name], tensor.detach().numpy(), err_msg=f"canonical {name}")

    embedding = randomize(PositionalEmbedding(5, 3, 4), seed=5)
    table = embedding.canonical_state_dict()["positional_embedding"]
    assert tuple(embedding.pos_embed.shape) == (1, 5, 3, 4) and table.shape == (1, 3, 4, 5)
    for y, z, c in np.ndindex(3, 4, 5):
        assert table[0, y, z, c] == embedding.pos_embed[0, c, y, z].item(), f"canonical [0, {y}, {z}, {c}]"

    token = randomize(ClassToken(5), seed=6)
    np.testing.assert_array_equal(token.canonical_state_dict()["tokens"], token.cls_token.detach().numpy())


# --------------------------------------------------------------------------------------------
# 2. train() / eval()


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(lambda: OutlookAttention(3, 4, 2, attn_dropout=0.5), id="attn_dropout"),
        pytest.param(lambda: OutlookAttention(3, 4, 2, output_dropout=0.5), id="output_dropout"),
        pytest.param(lambda: OutlookAttentionSimple(3, 4, 2, attn_dropout=0.5), id="simple-attn_dropout"),
    ],
)
def test_dropout_only_in_train_mode(module):
    module = randomize(module(), seed=7).double()
    x = module_input((2, 4, 6, 3), seed=8, dtype=torch.float64)
    torch.manual_seed(9)
    with torch.no_grad():
        module.train()
        first, second = module(x), module(x)
        assert (first - second).abs().max().item() > 1e-3, "two train-mode calls with dropout 0.5 should differ"
        module.eval()
        assert torch.equal(module(x), module(x)), "eval() outputs are not deterministic"


# --------------------------------------------------------------------------------------------
# 3. Bad configs and inputs: ValueError with the reference's message, never a RuntimeError


@pytest.mark.parametrize(
    "make, fragment",
    [
        pytest.param(
            lambda: OutlookAttention(192, 4, 192),
            "embed_dim 4 is smaller than num_head 192 (0 channels per head); did you mean embed_dim=192, num_head=4?",
            id="readme-swap",
        ),
        pytest.param(lambda: OutlookAttention(8, 10, 4), "embed_dim 10 is not a multiple of num_head 4", id="multiple"),
        pytest.param(lambda: OutlookAttention(8, 4, 2, padding=2), "padding 2 must be 0 or 1", id="padding"),
        pytest.param(lambda: OutlookAttention(8, 4, 2, kernel_size=2, strides=1), "kernel_size 2 is even with padding 1 and strides 1", id="no-size-fits"),
        pytest.param(lambda: OutlookAttentionSimple(8, 4), "embed_dim 4 is smaller than num_head 6", id="simple-heads"),
        pytest.param(lambda: PositionalEmbedding(4, 0, 3), "PositionalEmbedding: height 0 must be a positive integer", id="pe-size"),
    ],
)
def test_bad_config_raises_value_error(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


@pytest.mark.parametrize(
    "module, x, fragment",
    [
        pytest.param(OutlookAttention(4, 4, 2, kernel_size=2), torch.ones(1, 4, 4, 5), "height 4 gives 2 pooled positions", id="height"),
        pytest.param(OutlookAttention(4, 4, 2), torch.ones(1, 3, 4, 4), "4 channels", id="channels"),
        pytest.param(OutlookAttention(4, 4, 2), torch.ones(1, 16, 4), "rank 4", id="rank"),
        pytest.param(OutlookAttentionSimple(4, 6, 2), torch.ones(1, 5, 4, 4), "4 channels", id="simple-channels"),
        pytest.param(PositionalEmbedding(4, 3, 3), torch.ones(1, 4, 3, 2), "(1, 4, 3, 2)", id="pe-size"),
        pytest.param(ClassToken(4), torch.ones(1, 3, 5), "4 channels", id="token-channels"),
        pytest.param(ClassToken(4), torch.ones(1, 2, 3, 4), "rank 3", id="token-rank"),
    ],
)
def test_wrong_input_raises_value_error(module, x, fragment):
    with pytest.raises(ValueError) as info:
        module(x)
    assert fragment in str(info.value), f"expected {fragment!r} in the message, got {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# 4. Plain nn.Modules


def test_volo_modules_compose_in_sequential():
    model = nn.Sequential(OutlookAttention(4, 6, 2), OutlookAttentionSimple(6, 6, 3, kernel_size=2), PositionalEmbedding(6, 5, 3))
    model = randomize(model, seed=10).double().eval()
    x = np.random.default_rng(11).normal(size=(2, 5, 3, 4))
    with torch.no_grad():
        out = model(nhwc_to_nchw(x))
        tokens = ClassToken(6).double()(out.flatten(2).transpose(1, 2))
    assert tokens.shape == (2, 16, 6), tokens.shape
    want = reference.forward("outlook_attention", x, weights=model[0].canonical_state_dict(), embed_dim=6, num_head=2)
    want = reference.forward("outlook_attention_simple", want, weights=model[1].canonical_state_dict(), embed_dim=6, num_head=3, kernel_size=2)
    want = reference.forward("PositionalEmbedding", want, weights=model[2].canonical_state_dict())
    np.testing.assert_allclose(nchw_to_nhwc(out), want, rtol=0, atol=1e-12, err_msg="float64 Sequential vs the reference chain")
