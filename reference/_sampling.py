"""Input-shape samplers shared by the layer declarations.

Ranges are kept small on purpose: the forward math is the same at 3x5 as at 56x56, and
small shapes let the conformance suite try many configurations per second. Non-square maps
and batch sizes above one are always in range.
"""

from __future__ import annotations

from reference._spec import Draw, Shape

MAX_BATCH = 3
MAX_SIDE = 5
MAX_CHANNELS = 8


def batch(draw: Draw) -> int:
    return draw.integer("batch", 1, MAX_BATCH)


def channels(draw: Draw) -> int:
    return draw.integer("channels", 1, MAX_CHANNELS)


def feature_map(draw: Draw) -> Shape:
    return (batch(draw), draw.integer("height", 1, MAX_SIDE), draw.integer("width", 1, MAX_SIDE), channels(draw))


def tokens(draw: Draw) -> Shape:
    return (batch(draw), draw.integer("tokens", 1, 2 * MAX_SIDE), channels(draw))


def channels_last(draw: Draw) -> Shape:
    rank = draw.choice("rank", (2, 3, 4))
    if rank == 4:
        return feature_map(draw)
    if rank == 3:
        return tokens(draw)
    return (batch(draw), channels(draw))
