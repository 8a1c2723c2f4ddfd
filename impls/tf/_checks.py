"""Domain checks for the Keras layers, delegated to the reference spec so that the reference,
the Keras and the PyTorch implementations reject exactly the same configs and shapes, with
the same messages."""

from __future__ import annotations

import keras

from typing import Any, Sequence

import reference


def checked_config(layer: str, **config: Any) -> dict[str, Any]:
    """The config with defaults filled in, or a ValueError naming the bad parameter."""
    return reference.spec(layer).normalize_config(config)


def checked_shapes(layer: str, config: dict[str, Any], *shapes: Sequence[int | None], need: Sequence[int] = (-1,)) -> None:
    """Validate Keras input shapes. Axes in ``need`` (relative to each shape) must be known;
    other unknown axes, such as the batch, are checked as 1."""
    concrete = []
    for shape in shapes:
        shape = tuple(shape)
        for axis in need:
            if -len(shape) <= axis < len(shape) and shape[axis] is None:
                raise ValueError(f"{layer}: inputs shape {shape} must have a known size on axis {axis}")
        concrete.append(tuple(1 if d is None else int(d) for d in shape))
    reference.validate(layer, *concrete, **config)


def fix_input_sizes(layer, input_shape: Sequence[int | None], axes: Sequence[int], ranks: Sequence[int] | None = None) -> None:
    """After ``build``: a later call on other sizes on ``axes`` (the ones the weights or the
    layer's own constants were built for) raises Keras' ValueError naming the layer and both
    shapes, instead of a reshape error or a silently merged batch. ``ranks``: the ranks the
    layer accepts (default: only the built one)."""
    shape = tuple(input_shape)
    ranks = tuple(ranks) if ranks is not None else (len(shape),)
    sizes = {axis: int(shape[axis]) for axis in axes if shape[axis] is not None}
    layer.input_spec = keras.InputSpec(min_ndim=min(ranks), max_ndim=max(ranks), axes=sizes)
