"""PyTorch modules from VOLO: OutlookAttention, OutlookAttentionSimple, BiasLayer,
PositionalEmbedding, ClassToken."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import reference
from impls.torch._mapping import (
    LINEAR, Canonical, CanonicalWeights, channel_axis, channel_axis_shape, check_channels, checked_channel_dim, checked_config, positive_sizes,
)

# The three projections of both outlook modules, under their canonical names.
OUTLOOK_WEIGHTS = {
    "v/kernel": Canonical("v.weight", LINEAR),
    "attn/kernel": Canonical("attn.weight", LINEAR),
    "attn/bias": Canonical("attn.bias"),
    "out/kernel": Canonical("out.weight", LINEAR),
    "out/bias": Canonical("out.bias"),
}


def _check_feature_map(layer: str, x: torch.Tensor, channels: int) -> None:
    """ValueError (never a raw shape error) unless ``x`` is ``[B, channels, H, W]`` with H, W
    in the layer's domain; the reference validates, so the messages are the canonical ones."""
    if x.ndim != 4:
        raise ValueError(f"{layer}: inputs shape {tuple(x.shape)} must have rank 4: [batch, channels, height, width]")
    check_channels(layer, x, 1, channels)


class _OutlookProjections(CanonicalWeights):
    """The value, attention and output projections the two outlook modules share."""

    def __init__(self, layer: str, in_channels: int, config: dict):
        super().__init__()
        positive_sizes(type(self).__name__, in_channels=in_channels)
        self.layer, self.config = layer, config
        self.in_channels = in_channels
        self.embed_dim, self.num_head, self.kernel_size = config["embed_dim"], config["num_head"], config["kernel_size"]
        self.v = nn.Linear(in_channels, self.embed_dim, bias=False)
        self.attn = nn.Linear(in_channels, self.kernel_size**4 * self.num_head)
        self.out = nn.Linear(self.embed_dim, self.embed_dim)
        self.attn_drop = nn.Dropout(config["attn_dropout"])

    def attention(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled [B, C, P, Q]`` -> ``[B, heads, P*Q, k^2 (output offsets), k^2 (input offsets)]``:
        logits divided by sqrt(channels per head), soft-maxed over the input offsets."""
        batch, _, rows, cols = pooled.shape
        k2 = self.kernel_size**2
        logits = self.attn(pooled.permute(0, 2, 3, 1)) / math.sqrt(self.embed_dim // self.num_head)
        logits = logits.reshape(batch, rows * cols, self.num_head, k2, k2).transpose(1, 2)
        return self.attn_drop(logits.softmax(dim=-1))

    def attend(self, value: torch.Tensor, pooled: torch.Tensor, padding: int, strides: int) -> torch.Tensor:
        """Unfold ``value [B, E, H, W]`` into windows, mix each with the attention predicted from
        ``pooled``, fold back (overlaps summed): ``[B, E, H, W]``."""
        batch, _, height, width = value.shape
        k, heads, depth = self.kernel_size, self.num_head, self.embed_dim // self.num_head
        # F.unfold lists channel c, offset (ki, kj) at c * k^2 + ki * k + kj; channel c is head c // depth.
        windows = F.unfold(value, k, padding=padding, stride=strides)  # [B, E * k^2, P*Q]
        windows = windows.reshape(batch, heads, depth, k * k, -1).permute(0, 1, 4, 3, 2)  # [B, heads, P*Q, k^2, d]
        mixed = self.attention(pooled) @ windows
        mixed = mixed.permute(0, 1, 4, 3, 2).reshape(batch, self.embed_dim * k * k, -1)
        return F.fold(mixed, (height, width), k, padding=padding, stride=strides)

    def project(self, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """A Linear over the channels of ``[B, C, H, W]``."""
        return linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def validate(self, x: torch.Tensor) -> None:
        _check_feature_map(self.layer, x, self.in_channels)
        batch, channels, height, width = x.shape
        reference.validate(self.layer, (batch, height, width, channels), **self.config)

    def canonical_weights(self):
        return dict(OUTLOOK_WEIGHTS)


class OutlookAttention(_OutlookProjections):
    """VOLO's outlook attention on ``[B, C, H, W]``; output ``[B, embed_dim, H, W]``.

    ``padding`` is the 2021 flag: 1 pads ``kernel_size // 2`` pixels on every side (timm's
    ``padding`` is a pixel count instead). The average pool is ceil mode over the pixels inside
    the map, as in timm; sizes where its ``ceil(size / strides)`` positions and the unfolded
    windows differ in number raise ValueError.
    """

    def __init__(self, in_channels: int, embed_dim: int, num_head: int, kernel_size: int = 3, padding: int = 1, strides: int = 2, attn_dropout: float = 0.0, output_dropout: float = 0.0):
        config = checked_config(
            "outlook_attention",
            embed_dim=embed_dim,
            num_head=num_head,
            kernel_size=kernel_size,
            padding=padding,
            strides=strides,
            attn_dropout=attn_dropout,
            output_dropout=output_dropout,
        )
        super().__init__("outlook_attention", in_channels, config)
        self.padding_pixels = self.kernel_size // 2 if config["padding"] == 1 else 0
        self.strides = config["strides"]
        self.pool = nn.AvgPool2d(self.strides, self.strides, ceil_mode=True)
        self.out_drop = nn.Dropout(config["output_dropout"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.validate(x)
        value = self.project(x, self.v)
        mixed = self.attend(value, self.pool(x), self.padding_pixels, self.strides)
        return self.out_drop(self.project(mixed, self.out))

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("outlook_attention", input_shape, **config)
        return cls(input_shape[-1], **config)


class OutlookAttentionSimple(_OutlookProjections):
    """Outlook attention on non-overlapping ``kernel_size`` windows of ``[B, C, H, W]``, zero-
    padded at the bottom and right to whole windows (each axis by its own amount); output
    ``[B, embed_dim, H, W]``. The average pool counts the padding and padded offsets take part
    in the softmax, as in the 2021 code."""

    def __init__(self, in_channels: int, embed_dim: int, num_head: int = 6, kernel_size: int = 3, attn_dropout: float = 0.0):
        config = checked_config("outlook_attention_simple", embed_dim=embed_dim, num_head=num_head, kernel_size=kernel_size, attn_dropout=attn_dropout)
        super().__init__("outlook_attention_simple", in_channels, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.validate(x)
        height, width, k = x.shape[2], x.shape[3], self.kernel_size
        padded = F.pad(x, (0, -width % k, 0, -height % k))
        pooled = F.avg_pool2d(padded, k, k)  # whole windows: divisor k*k, padding zeros included
        mixed = self.attend(self.project(padded, self.v), pooled, padding=0, strides=k)
        return self.project(mixed[:, :, :height, :width], self.out)

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("outlook_attention_simple", input_shape, **config)
        return cls(input_shape[-1], **config)


class BiasLayer(CanonicalWeights):
    """``x + bias`` along the channel axis: by default (``channel_dim`` None) axis 1 of
    ``[B, C, H, W]`` maps and the last axis of ``[B, C]`` and ``[B, N, C]``."""

    def __init__(self, num_channels: int, channel_dim: int | None = None):
        super().__init__()
        positive_sizes(type(self).__name__, num_channels=num_channels)
        self.channel_dim = checked_channel_dim(type(self).__name__, channel_dim)
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = channel_axis(self.channel_dim, x.ndim)
        check_channels("BiasLayer", x, axis, self.bias.numel())
        return x + self.bias.view(channel_axis_shape(self.bias.numel(), axis, x.ndim))

    def canonical_weights(self):
        return {"bias": Canonical("bias")}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("BiasLayer", input_shape, **config)
        return cls(input_shape[-1])  # the default channel axis, so the conformance checks hold its rule


class PositionalEmbedding(CanonicalWeights):
    """``x + pos_embed`` on ``[B, C, H, W]``; ``pos_embed`` is ``(1, C, H, W)``, the canonical
    ``positional_embedding (1, H, W, C)`` with the channels moved first."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels, height=height, width=width)
        reference.validate("PositionalEmbedding", (1, height, width, channels))
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, channels, height, width), std=0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != self.pos_embed.shape[1:]:
            raise ValueError(
                f"PositionalEmbedding: inputs shape {tuple(x.shape)} must be [batch, {', '.join(map(str, self.pos_embed.shape[1:]))}], "
                "the channels and map size this module was built for"
            )
        return x + self.pos_embed

    def canonical_weights(self):
        return {"positional_embedding": Canonical("pos_embed", (0, 3, 1, 2))}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("PositionalEmbedding", input_shape, **config)
        _, height, width, channels = input_shape
        return cls(channels, height, width)


class ClassToken(CanonicalWeights):
    """Prepends the learned ``cls_token (1, 1, C)`` to ``[B, N, C]`` tokens: ``[B, N + 1, C]``."""

    def __init__(self, channels: int):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels)
        reference.validate("ClassToken", (1, 1, channels))
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, channels), std=0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"ClassToken: inputs shape {tuple(x.shape)} must have rank 3: [batch, tokens, channels]")
        check_channels("ClassToken", x, -1, self.cls_token.shape[-1])
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def canonical_weights(self):
        return {"tokens": Canonical("cls_token")}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("ClassToken", input_shape, **config)
        return cls(input_shape[-1])


MODULES = {
    "outlook_attention": OutlookAttention,
    "outlook_attention_simple": OutlookAttentionSimple,
    "BiasLayer": BiasLayer,
    "PositionalEmbedding": PositionalEmbedding,
    "ClassToken": ClassToken,
}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["OutlookAttention", "OutlookAttentionSimple", "BiasLayer", "PositionalEmbedding", "ClassToken"]
