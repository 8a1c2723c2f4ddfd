"""How a PyTorch module's parameters map to canonical (Keras) names and layouts.

A module lists, per canonical weight name, the state_dict key holding it and the permutation
that turns the canonical array into the PyTorch one (``torch = canonical.permute(*permute)``):
``nn.Linear.weight`` is the canonical ``(in, out)`` kernel transposed, ``(1, 0)``;
``nn.Conv2d.weight`` is the canonical ``(kh, kw, in, out)`` kernel permuted ``(3, 2, 0, 1)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

import reference

LINEAR = (1, 0)
CONV2D = (3, 2, 0, 1)
DEPTHWISE_CONV2D = (2, 3, 0, 1)


@dataclass(frozen=True)
class Canonical:
    key: str  # state_dict key
    permute: tuple[int, ...] | None = None
    block: tuple[int, int] | None = None
    """``(index, count)``: the canonical weight is block ``index`` of ``count`` equal blocks along the
    PyTorch tensor's first axis (one group's kernel inside a grouped ``nn.Conv2d``)."""


class CanonicalWeights(nn.Module):
    """Base for modules that know their canonical weight names."""

    def canonical_weights(self) -> dict[str, Canonical]:
        raise NotImplementedError

    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        """Canonical names -> arrays in canonical layouts."""
        state = self.state_dict()
        out = {}
        for name, where in self.canonical_weights().items():
            tensor = state[where.key].detach()
            if where.block is not None:
                tensor = tensor.chunk(where.block[1])[where.block[0]]
            if where.permute is not None:
                tensor = tensor.permute(*np.argsort(where.permute))
            # NumPy has no bfloat16: its values travel as float32 (exact; see conformance.contract)
            out[name] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).cpu().numpy()
        return out

    def canonical_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(array.shape) for name, array in self.canonical_state_dict().items()}

    @torch.no_grad()
    def load_canonical_state_dict(self, weights: Mapping[str, np.ndarray]) -> None:
        mapping = self.canonical_weights()
        missing = sorted(set(mapping) - set(weights))
        extra = sorted(set(weights) - set(mapping))
        if missing or extra:
            raise KeyError(f"{type(self).__name__}: canonical weights missing {missing}, unexpected {extra}")
        state = self.state_dict()
        for name, where in mapping.items():
            tensor = torch.as_tensor(np.asarray(weights[name]))
            if where.permute is not None:
                tensor = tensor.permute(*where.permute)
            target = state[where.key]
            if where.block is not None:
                target = target.chunk(where.block[1])[where.block[0]]
            if tuple(tensor.shape) != tuple(target.shape):
                raise ValueError(
                    f"{type(self).__name__}: canonical {name!r} of shape {tuple(np.shape(weights[name]))} "
                    f"maps to {where.key} of shape {tuple(target.shape)}"
                )
            target.copy_(tensor.to(target.dtype))


def checked_config(layer: str, **config) -> dict:
    """The config with defaults filled in, or a ValueError naming the bad parameter."""
    return reference.spec(layer).normalize_config(config)


def positive_sizes(module: str, **sizes) -> None:
    """A ValueError naming the constructor argument, for a size that is not a positive integer
    (before it becomes part of a shape the reference would name instead)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{module}: {name} {value!r} must be a positive integer")


def pair_of_sizes(module: str, name: str, value) -> tuple[int, int]:
    """An int ``n`` as ``(n, n)``, or a pair of positive integers (as timm's ``to_2tuple``)."""
    pair = (value, value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{module}: {name} {value!r} must be an integer or a (height, width) pair")
    positive_sizes(module, **{f"{name}[0]": pair[0], f"{name}[1]": pair[1]})
    return int(pair[0]), int(pair[1])


def checked_channel_dim(module: str, channel_dim) -> int | None:
    if channel_dim is not None and (isinstance(channel_dim, bool) or not isinstance(channel_dim, numbers.Integral)):
        raise ValueError(f"{module}: channel_dim {channel_dim!r} must be None or an integer axis")
    return channel_dim


def channel_axis(channel_dim: int | None, ndim: int) -> int:
    """``channel_dim``, or by default the project's layout rule: axis 1 of a rank-4
    ``[B, C, H, W]`` map, the last axis of ``[B, C]`` vectors and ``[B, N, C]`` tokens."""
    if channel_dim is not None:
        return channel_dim
    return 1 if ndim == 4 else -1


def channel_axis_shape(channels: int, channel_dim: int, ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector along ``channel_dim`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[channel_dim] = channels
    return tuple(shape)


def check_channels(layer: str, x: torch.Tensor, channel_dim: int, channels: int) -> None:
    if x.ndim < 2 or not -x.ndim <= channel_dim < x.ndim or x.shape[channel_dim] != channels:
        raise ValueError(f"{layer}: inputs shape {tuple(x.shape)} must have {channels} channels on dim {channel_dim}")


class KerasBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with Keras' training step. Both normalise a training batch with its
    biased variance, but ``nn.BatchNorm2d`` updates ``running_var`` with the UNBIASED one
    (``var * n / (n - 1)``), Keras' ``BatchNormalization`` with the biased one, which is the
    spec's (``conformance.checks.training``). Inference is ``nn.BatchNorm2d``'s own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.momentum is None or not self.track_running_stats:
            raise ValueError(
                f"{type(self).__name__}: momentum {self.momentum!r} and track_running_stats {self.track_running_stats!r}: "
                "it keeps Keras' exponential moving statistics, so it needs a numeric momentum and running statistics"
            )
        if not self.training:
            return super().forward(x)
        dims = [d for d in range(x.ndim) if d != 1]
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(mean.flatten().to(self.running_mean.dtype), alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var.flatten().to(self.running_var.dtype), alpha=self.momentum)
            self.num_batches_tracked.add_(1)
        # Written out rather than F.batch_norm(training=True), which refuses one value per
        # channel (batch 1 of a 1 x 1 map) where Keras normalises it to beta.
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is None:
            return out
        shape = [1, -1] + [1] * (x.ndim - 2)
        return out * self.weight.view(shape) + self.bias.view(shape)
