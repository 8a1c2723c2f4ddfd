"""Domain checks for the Keras layers, delegated to the reference spec so that the reference,
the Keras and the PyTorch implementations reject exactly the same configs and shapes, with
the same messages."""

from __future__ import annotations

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
