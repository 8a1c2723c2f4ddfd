"""The declaration every layer makes once.

A :class:`LayerSpec` holds a layer's config domain, its inputs, its weights, its output shape,
its forward function, the checks that reject bad configs and shapes, how to sample valid
shapes, and the documented example configurations. The reference API, the conformance tests,
the golden fixtures and the generated docs all read this one declaration, so adding a layer
means writing one family module and nothing else.

Sampling goes through the small :class:`Draw` protocol instead of a test library so that the
reference stays NumPy-only: the conformance suite passes a Hypothesis-backed ``Draw``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from reference._errors import DomainError, reject

Shape = tuple[int, ...]


class Draw(Protocol):
    """Where sampled values come from; labels name the drawn quantity in reports.
    Both ends of every range are included."""

    def integer(self, label: str, low: int, high: int) -> int: ...

    def choice(self, label: str, options: Sequence[Any]) -> Any: ...

    def real(self, label: str, low: float, high: float) -> float: ...


# --------------------------------------------------------------------------------------------
# Config domains


class Domain:
    """The set of values one config parameter accepts."""

    def check(self, layer: str, param: str, value: Any) -> Any:
        """Return ``value`` normalised, or raise :class:`DomainError` naming the rule."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def sample(self, draw: Draw, label: str) -> Any:
        raise NotImplementedError


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


LARGEST_INTEGER = 2**31 - 1
"""No integer parameter or size goes beyond int32: framework shape arithmetic is int32 or int64,
and larger values only overflow float conversions in the forward math."""


@dataclass(frozen=True)
class Integer(Domain):
    """Integers in ``[minimum, maximum]``; ``sample_range`` bounds what tests draw."""

    minimum: int | None = None
    maximum: int | None = None
    sample_range: tuple[int, int] = (1, 4)

    def check(self, layer, param, value):
        if not _is_integer(value):
            reject(layer, param, value, "must be an integer")
        if self.minimum is not None and value < self.minimum:
            reject(layer, param, value, f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            reject(layer, param, value, f"must be <= {self.maximum}")
        if abs(value) > LARGEST_INTEGER:
            reject(layer, param, value, f"must be at most {LARGEST_INTEGER} in magnitude (int32)")
        return int(value)

    def describe(self):
        if self.maximum is None:
            return f"integer >= {self.minimum}" if self.minimum is not None else "integer"
        return f"integer in [{self.minimum}, {self.maximum}]"

    def sample(self, draw, label):
        return draw.integer(label, *self.sample_range)


@dataclass(frozen=True)
class Real(Domain):
    """Finite reals in ``[minimum, maximum)`` (``[minimum, maximum]`` with ``include_maximum``);
    ``sample_range`` bounds what tests draw."""

    minimum: float = -math.inf
    maximum: float = math.inf
    include_maximum: bool = False
    sample_range: tuple[float, float] | None = None

    def check(self, layer, param, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            reject(layer, param, value, "must be a real number")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float64
            reject(layer, param, value, "must be a finite real")
        above = value > self.maximum if self.include_maximum else value >= self.maximum
        if not math.isfinite(value) or value < self.minimum or above:
            bounded = not (math.isinf(self.minimum) and math.isinf(self.maximum))
            reject(layer, param, value, f"must be a finite real in {self.describe_interval()}" if bounded else "must be a finite real")
        return value

    def describe_interval(self):
        return f"[{self.minimum}, {self.maximum}{']' if self.include_maximum else ')'}"

    def describe(self):
        if math.isinf(self.minimum) and math.isinf(self.maximum):
            return "finite real"
        return f"real in {self.describe_interval()}"

    def sample(self, draw, label):
        if self.sample_range is not None:
            return draw.real(label, *self.sample_range)
        high = self.maximum if self.include_maximum else math.nextafter(self.maximum, -math.inf)
        return draw.real(label, self.minimum, high)


@dataclass(frozen=True)
class Boolean(Domain):
    def check(self, layer, param, value):
        if not isinstance(value, (bool, np.bool_)):
            reject(layer, param, value, "must be True or False")
        return bool(value)

    def describe(self):
        return "bool"

    def sample(self, draw, label):
        return draw.choice(label, (True, False))


@dataclass(frozen=True)
class OneOf(Domain):
    options: tuple[Any, ...]

    def check(self, layer, param, value):
        # Same type as an option, not only equal: np.array("relu") == "relu", but is no name.
        if not any(type(value) is type(option) and value == option for option in self.options):
            reject(layer, param, value, f"must be one of {', '.join(map(repr, self.options))}")
        return value

    def describe(self):
        return "one of " + ", ".join(repr(o) for o in self.options)

    def sample(self, draw, label):
        return draw.choice(label, self.options)


@dataclass(frozen=True)
class Maybe(Domain):
    """``None`` or a value of ``inner``."""

    inner: Domain

    def check(self, layer, param, value):
        return None if value is None else self.inner.check(layer, param, value)

    def describe(self):
        return f"None or {self.inner.describe()}"

    def sample(self, draw, label):
        if draw.choice(f"{label} is None", (False, True)):
            return None
        return self.inner.sample(draw, label)


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()
"""The default of a parameter the 2021 signature takes positionally, with no default."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    domain: Domain
    doc: str


# --------------------------------------------------------------------------------------------
# Tensors and weights

TENSOR_KINDS = {
    "feature_map": "[batch, height, width, channels]",
    "tokens": "[batch, tokens, channels]",
    "channels_last": "channels on the last axis; rank 4 is a feature map [batch, height, width, channels]",
    "per_head": "[batch, heads, tokens, channels per head]; the same in every layout (channels-first implementations receive it unchanged)",
}


@dataclass(frozen=True)
class Input:
    name: str
    kind: str
    doc: str = ""

    def __post_init__(self):
        if self.kind not in TENSOR_KINDS:
            raise ValueError(f"Input {self.name}: unknown tensor kind {self.kind!r}")


def is_feature_map(kind: str, rank: int) -> bool:
    """Whether a tensor of this kind and rank has spatial axes whose channel axis moves
    when an implementation works channels-first."""
    return kind == "feature_map" or (kind == "channels_last" and rank == 4)


@dataclass(frozen=True, eq=False)
class Weight:
    """A canonical weight: name, Keras-layout shape, the scale tests draw it at, and where the
    2021 code makes them semantics, its initial or fixed value.

    ``std`` keeps every activation of order one when weights and inputs are drawn at random,
    which is what the conformance tolerances assume. ``positive`` asks for strictly positive
    values (variances).

    ``initial`` is the value a freshly built layer holds, where the 2021 signature sets it
    (``zero_gamma``, ``weight_init_value``, BatchNorm's moving statistics): a float for every
    entry, or an array of ``shape``. ``None`` means the initial value is not semantics (random
    initialisers). ``fixed`` marks a non-trainable constant that is part of the forward math
    (the anti-alias blur kernel): tests never draw it at random but always use ``initial``.
    """

    name: str
    shape: Shape
    std: float = 1.0
    positive: bool = False
    initial: float | np.ndarray | None = None
    fixed: bool = False

    def __post_init__(self):
        if self.fixed and self.initial is None:
            raise ValueError(f"weight {self.name}: a fixed weight needs its value in `initial`")

    def initial_value(self) -> np.ndarray | None:
        """``initial`` as a float64 array of ``shape``, or None."""
        if self.initial is None:
            return None
        return np.broadcast_to(np.asarray(self.initial, dtype=np.float64), self.shape).copy()


def kernel(name: str, shape: Sequence[int], **options) -> Weight:
    """A weight that is contracted over all but its last axis: drawn at std 1/sqrt(fan_in).
    ``options`` are further :class:`Weight` fields."""
    shape = tuple(int(s) for s in shape)
    return Weight(name, shape, std=1.0 / math.sqrt(max(1, math.prod(shape[:-1]))), **options)


def vector(name: str, size: int, **options) -> Weight:
    """A per-channel weight at std 1; ``options`` are further :class:`Weight` fields
    (``positive=True, initial=1.0`` for a BatchNorm moving variance)."""
    return Weight(name, (int(size),), **{"std": 1.0, **options})


# --------------------------------------------------------------------------------------------
# Examples and documented rejections


@dataclass(frozen=True)
class Example:
    """A named configuration. ``documented_*`` are facts copied from the user's README or the
    2021 code's weight listing (never computed by the reference); tests hold the reference to them.
    ``fixture`` marks the examples written as golden fixtures."""

    name: str
    config: Mapping[str, Any]
    input_shapes: tuple[Shape, ...]
    source: str
    documented_output_shape: Shape | None = None
    documented_weights: Mapping[str, Shape] | None = None
    fixture: bool = True


@dataclass(frozen=True)
class Rejection:
    """A config or input shape outside the domain, and a fragment the error must contain."""

    config: Mapping[str, Any]
    input_shapes: tuple[Shape, ...]
    message: str


# --------------------------------------------------------------------------------------------
# The layer declaration


@dataclass(frozen=True)
class LayerSpec:
    name: str
    family: str
    kind: str  # "layer" (a Keras Layer class) or "block" (a functional block of Keras layers)
    summary: str
    params: tuple[Param, ...]
    inputs: tuple[Input, ...]
    output_kind: str
    forward: Callable[..., np.ndarray]
    weights: Callable[..., list[Weight]]
    output_shape: Callable[..., Shape]
    check: Callable[..., None]
    sample_input_shapes: Callable[[Mapping[str, Any], Draw], tuple[Shape, ...]]
    examples: tuple[Example, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    sample_config: Callable[[Draw], dict] | None = None
    check_config: Callable[[Mapping[str, Any]], None] | None = None
    """Rules between parameters that need no input shape; run whenever a config is normalised,
    so implementations can reject at construction."""
    notes: tuple[str, ...] = field(default=())
    input_magnitudes: tuple[float, float] = (2.0**-10, 2.0**7)
    """The input scales the spec promises to hold at float32 and float64 tolerances: tests draw
    standard-normal inputs times a power of two in this range (about 1e-3 to 1e2 by default).
    A layer whose conditioning makes float32 meaningless outside a narrower range declares it,
    with the reason in ``notes``."""

    def __post_init__(self):
        if self.kind not in ("layer", "block"):
            raise ValueError(f"{self.name}: kind must be 'layer' or 'block', got {self.kind!r}")
        if self.output_kind not in TENSOR_KINDS:
            raise ValueError(f"{self.name}: unknown output kind {self.output_kind!r}")

    # -- config --------------------------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def normalize_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults, reject unknown keywords, check every value against its domain."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(config) - set(known))
        if unknown:
            expected = ", ".join(known) or "none"
            raise DomainError(
                f"{self.name}: unknown config parameter {unknown[0]!r}; the parameters are: {expected}"
            )
        full = self.defaults()
        full.update(config)
        for name, value in full.items():
            if value is REQUIRED:
                raise DomainError(f"{self.name}: config parameter {name!r} is required ({known[name].domain.describe()})")
        normalized = {name: known[name].domain.check(self.name, name, value) for name, value in full.items()}
        if self.check_config is not None:
            self.check_config(normalized)
        return normalized

    def draw_config(self, draw: Draw) -> dict[str, Any]:
        if self.sample_config is not None:
            return self.sample_config(draw)
        return {p.name: p.domain.sample(draw, p.name) for p in self.params}

    # -- shapes --------------------------------------------------------------------------------
    def check_input_shapes(self, input_shapes: Sequence[Sequence[int]]) -> tuple[Shape, ...]:
        if len(input_shapes) != len(self.inputs):
            names = ", ".join(i.name for i in self.inputs)
            raise DomainError(
                f"{self.name}: takes {len(self.inputs)} input(s) ({names}), got {len(input_shapes)}"
            )
        shapes = []
        for spec_input, shape in zip(self.inputs, input_shapes):
            if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)) or not all(_is_integer(d) for d in shape):
                reject(self.name, f"{spec_input.name} shape", shape, "must be a sequence of integers")
            shape = tuple(int(d) for d in shape)
            if any(d < 1 for d in shape):
                reject(self.name, f"{spec_input.name} shape", shape, "must have every dimension >= 1")
            _check_rank(self.name, spec_input, shape)
            shapes.append(shape)
        return tuple(shapes)

    def validate(self, input_shapes: Sequence[Sequence[int]], config: Mapping[str, Any]):
        """Normalised config and shapes, or a :class:`DomainError` naming the broken rule."""
        full = self.normalize_config(config)
        shapes = self.check_input_shapes(input_shapes)
        self.check(full, *shapes)
        return full, shapes


_RANKS = {"feature_map": (4,), "tokens": (3,), "channels_last": (2, 3, 4), "per_head": (4,)}


def _check_rank(layer: str, spec_input: Input, shape: Shape) -> None:
    ranks = _RANKS[spec_input.kind]
    if len(shape) not in ranks:
        wanted = " or ".join(str(r) for r in ranks) if len(ranks) < 3 else ", ".join(str(r) for r in ranks[:-1]) + f" or {ranks[-1]}"
        reject(
            layer,
            f"{spec_input.name} shape",
            shape,
            f"must have rank {wanted}: {TENSOR_KINDS[spec_input.kind]}",
        )


def no_extra_check(config: Mapping[str, Any], *shapes: Shape) -> None:
    """For layers whose only rules are the parameter domains and the input ranks."""
