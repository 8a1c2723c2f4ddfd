"""The one error the reference raises for input outside a layer's domain."""

from __future__ import annotations

from typing import Any, NoReturn


class DomainError(ValueError):
    """A config value, input shape or weight outside a layer's domain.

    The message always reads ``"<layer>: <what> <value> <rule>"``, for example
    ``"HaloAttention: height 14 is not a multiple of block_size 4"``.
    """


def reject(layer: str, subject: str, value: Any, rule: str) -> NoReturn:
    raise DomainError(f"{layer}: {subject} {value!r} {rule}")
