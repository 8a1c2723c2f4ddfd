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
    rank = draw.choice("rank", (4, 3, 2))
    if rank == 4:
        return feature_map(draw)
    if rank == 3:
        return tokens(draw)
    return (batch(draw), channels(draw))


# --------------------------------------------------------------------------------------------
# Edge cases: every layer's own samplers, asked by deterministic draws


class EdgeDraw:
    """A :class:`~reference._spec.Draw` that answers every question by one fixed rule.

    Replaying a layer's ``sample_config`` and ``sample_input_shapes`` with these draws reaches
    the corners of its domain without any per-layer code: "every size 2" gives square even maps,
    batch 2, and equal heights, widths, channels, heads and key dims wherever the domain allows
    them to be equal (the shapes where an implementation that mixes up two axes still gets the
    shape right); "smallest" gives batch 1 and sides of 1; "distinct" gives successive sizes that
    differ by one, so heights and widths differ and one of them is odd. Choices take the first
    option (samplers list their richest option first: feature maps before tokens, True before
    False) or, with ``last_option``, the last. Every sampler must return a valid config and
    shapes for any answer inside the ranges it asks (the spec tests check it).
    """

    def __init__(self, name: str, size, last_option: bool, input_scale: float, doc: str):
        self.name, self.doc, self.input_scale = name, doc, input_scale
        self._size, self._last_option = size, last_option
        self._calls = 0

    def fresh(self) -> "EdgeDraw":
        return EdgeDraw(self.name, self._size, self._last_option, self.input_scale, self.doc)

    def integer(self, label, low, high):
        self._calls += 1
        return int(min(max(self._size(low, high, self._calls), low), high))

    def choice(self, label, options):
        options = tuple(options)
        return options[-1] if self._last_option else options[0]

    def real(self, label, low, high):
        return float(high if self._last_option else low)


EDGE_DRAWS = (
    EdgeDraw("smallest", lambda low, high, n: low, False, 2.0**-10,
             "every size at its minimum (batch 1, sides of 1 where allowed), inputs at 2^-10"),
    EdgeDraw("largest", lambda low, high, n: high, True, 2.0**6,
             "every size at its maximum (batch > 1, the largest maps), last options, inputs at 2^6"),
    EdgeDraw("every size 2", lambda low, high, n: 2, False, 1.0,
             "every size 2 where allowed: square even maps, batch 2, equal sizes on different axes"),
    EdgeDraw("every size 2, last options", lambda low, high, n: 2, True, 1.0,
             "the same with every choice at its last option"),
    EdgeDraw("every size 3", lambda low, high, n: 3, False, 1.0,
             "every size 3 where allowed: square odd maps, batch 3, equal sizes on different axes"),
    EdgeDraw("distinct", lambda low, high, n: low + n % (high - low + 1), False, 1.0,
             "successive sizes one apart: non-square maps with one odd and one even side"),
)
"""The edge cases every layer is checked on, in every default run, besides its drawn cases."""
