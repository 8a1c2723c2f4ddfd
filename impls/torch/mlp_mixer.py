"""PyTorch modules from MLP-Mixer: MlpBlock (the 2021 ``mlp_block``) and MixerBlock
(``mixer_block``)."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import LINEAR, Canonical, CanonicalWeights, check_channels, checked_config, positive_sizes

LAYER_NORM_EPSILON = 1e-5

ACTIVATIONS = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,  # approximate="none": the exact erf form
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    # nn.Softplus returns x itself above `threshold`, off by log1p(exp(-threshold)); at 40 that
    # is 4e-18, below float64 resolution, where the default 20 (2e-9) is not.
    "softplus": lambda: nn.Softplus(threshold=40.0),
}


def layer_norm_weights(prefix: str, module_key: str) -> dict[str, Canonical]:
    """Canonical ``<prefix>gamma`` / ``<prefix>beta`` of the ``nn.LayerNorm`` at ``module_key``."""
    return {f"{prefix}gamma": Canonical(f"{module_key}.weight"), f"{prefix}beta": Canonical(f"{module_key}.bias")}


class MlpBlock(CanonicalWeights):
    """``fc2(act(fc1(x)))`` over the last axis of ``[B, N, C]`` tokens; ``fc2`` maps back to C."""

    def __init__(self, in_features: int, hidden_dim: int, activation: str = "gelu"):
        super().__init__()
        positive_sizes(type(self).__name__, in_features=in_features)
        config = checked_config("mlp_block", hidden_dim=hidden_dim, activation=activation)
        reference.validate("mlp_block", (1, 1, in_features), **config)
        self.fc1 = nn.Linear(in_features, config["hidden_dim"])
        self.act = ACTIVATIONS[config["activation"]]()
        self.fc2 = nn.Linear(config["hidden_dim"], in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"mlp_block: inputs shape {tuple(x.shape)} must have rank 3: [batch, tokens, channels]")
        check_channels("mlp_block", x, -1, self.fc1.in_features)
        return self.fc2(self.act(self.fc1(x)))

    def canonical_weights(self, prefix: str = "", module_key: str = ""):
        """Canonical names below ``prefix``; ``module_key`` is where this block sits in a parent."""
        key = f"{module_key}." if module_key else ""
        return {
            f"{prefix}Dense_0/kernel": Canonical(f"{key}fc1.weight", LINEAR),
            f"{prefix}Dense_0/bias": Canonical(f"{key}fc1.bias"),
            f"{prefix}Dense_1/kernel": Canonical(f"{key}fc2.weight", LINEAR),
            f"{prefix}Dense_1/bias": Canonical(f"{key}fc2.bias"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("mlp_block", input_shape, **config)
        return cls(input_shape[-1], **config)


class DropPath(nn.Module):
    """Per-sample stochastic depth in training: zero a sample's whole branch with probability
    ``rate``, scale the kept ones by ``1 / (1 - rate)``; the identity in eval mode."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1.0 - self.rate
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class MixerBlock(CanonicalWeights):
    """One MLP-Mixer layer on ``[B, N, C]``: ``x + mlp_tokens(norm1(x)^T)^T``, then
    ``+ mlp_channels(norm2(.))``; both branches pass through stochastic depth in training."""

    def __init__(self, channels: int, num_tokens: int, tokens_mlp_dim: int, channels_mlp_dim: int, drop_rate: float = 0, activation: str = "gelu"):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels, num_tokens=num_tokens)
        config = checked_config(
            "mixer_block", tokens_mlp_dim=tokens_mlp_dim, channels_mlp_dim=channels_mlp_dim, drop_rate=drop_rate, activation=activation
        )
        reference.validate("mixer_block", (1, num_tokens, channels), **config)
        self.norm1 = nn.LayerNorm(channels, eps=LAYER_NORM_EPSILON)
        self.mlp_tokens = MlpBlock(num_tokens, config["tokens_mlp_dim"], config["activation"])
        self.norm2 = nn.LayerNorm(channels, eps=LAYER_NORM_EPSILON)
        self.mlp_channels = MlpBlock(channels, config["channels_mlp_dim"], config["activation"])
        self.drop_path = DropPath(config["drop_rate"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.mlp_tokens.fc1.in_features, self.mlp_channels.fc1.in_features)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"mixer_block: inputs shape {tuple(x.shape)} must be [batch, {expected[0]}, {expected[1]}]")
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))

    def canonical_weights(self):
        return {
            **layer_norm_weights("LayerNorm_0/", "norm1"),
            **self.mlp_tokens.canonical_weights("token_mixing/", "mlp_tokens"),
            **layer_norm_weights("LayerNorm_1/", "norm2"),
            **self.mlp_channels.canonical_weights("channel_mixing/", "mlp_channels"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("mixer_block", input_shape, **config)
        _, num_tokens, channels = input_shape
        return cls(channels, num_tokens, **config)


MODULES = {"mlp_block": MlpBlock, "mixer_block": MixerBlock}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["MlpBlock", "MixerBlock"]
