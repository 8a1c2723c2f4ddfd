"""PyTorch modules from MLP-Mixer: MlpBlock (the 2021 ``mlp_block``)."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import LINEAR, Canonical, CanonicalWeights, check_channels, checked_config

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


class MlpBlock(CanonicalWeights):
    """``fc2(act(fc1(x)))`` over the last axis of ``[B, N, C]`` tokens; ``fc2`` maps back to C."""

    def __init__(self, in_features: int, hidden_dim: int, activation: str = "gelu"):
        super().__init__()
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

    def canonical_weights(self):
        return {
            "Dense_0/kernel": Canonical("fc1.weight", LINEAR),
            "Dense_0/bias": Canonical("fc1.bias"),
            "Dense_1/kernel": Canonical("fc2.weight", LINEAR),
            "Dense_1/bias": Canonical("fc2.bias"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("mlp_block", input_shape, **config)
        return cls(input_shape[-1], **config)


MODULES = {"mlp_block": MlpBlock}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["MlpBlock"]
