"""Shared by the tests of the example adapters (timm, the 2021 code): a deviations file must parse
with the suite's own loader, name only its adapter's implementations and real layers, and give
every layer it names a paragraph in the adapter's document."""

from __future__ import annotations

from pathlib import Path

from conformance.checks import expectations


def assert_deviations_explained(expected: Path, doc: Path, implementations: set[str], layers: set[str], min_reason: int = 0) -> None:
    deviations = expectations.load(expected)
    assert deviations, f"{expected} declares nothing"
    text = doc.read_text(encoding="utf-8")
    for d in deviations:
        assert d.implementation in implementations, d.describe()
        assert d.layer in layers, d.describe()  # "*" only where the caller allows it
        assert d.layer == "*" or f"`{d.layer}`" in text, f"{doc.name} does not explain {d.describe()}"
        assert len(d.reason) > min_reason, d.describe()
