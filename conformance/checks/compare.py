"""Element-wise comparison with a report that says what was expected and what came."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conformance.checks.tolerances import Tolerance


@dataclass(frozen=True)
class Comparison:
    ok: bool
    total: int
    mismatches: int
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]
    tolerance_used: float
    """Largest ``|got - expected| / (atol + rtol*|expected|)``: 1.0 is exactly at tolerance."""
    got_at_max: float
    expected_at_max: float
    tolerance: Tolerance
    output_scale: float = 1.0
    """The scale ``atol`` was multiplied by: the root mean square of the expected output."""

    @property
    def headroom(self) -> float:
        """How many times smaller the worst error is than the tolerance (inf when exact)."""
        return float("inf") if self.tolerance_used == 0 else 1.0 / self.tolerance_used

    def summary(self) -> str:
        share = self.mismatches / self.total if self.total else 0.0
        head = (
            f"{self.mismatches} of {self.total} elements ({share:.2%}) outside {self.tolerance.describe()}"
            if not self.ok
            else f"all {self.total} elements within {self.tolerance.describe()}"
        )
        if self.output_scale != 1.0:
            head += f" (output scale {self.output_scale:.3g})"
        return (
            f"{head}; largest abs diff {self.max_abs:.3g} at {list(self.max_abs_index)} "
            f"(got {self.got_at_max:.9g}, expected {self.expected_at_max:.9g}); "
            f"largest rel diff {self.max_rel:.3g} at {list(self.max_rel_index)}; "
            f"{self.tolerance_used:.1%} of tolerance used"
        )


def output_scale(expected: np.ndarray) -> float:
    """The root mean square of the finite expected values; 1.0 for an all-zero output, where any
    nonzero error is a real difference."""
    finite = np.asarray(expected, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    rms = float(np.sqrt(np.mean(finite * finite))) if finite.size else 0.0
    return rms if rms > 0 else 1.0


def compare(got: np.ndarray, expected: np.ndarray, tolerance: Tolerance, scale: float = 1.0) -> Comparison:
    """Compare same-shaped arrays elementwise, passing where ``|got - expected| <= atol * scale +
    rtol * |expected|``; NaN or infinity anywhere the other side differs is a mismatch. The
    conformance checks pass ``scale=output_scale(expected)`` so that ``atol`` means the same at
    every input magnitude."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"compare: got shape {got.shape}, expected {expected.shape}")
    same_special = (np.isnan(got) & np.isnan(expected)) | (np.isinf(got) & (got == expected))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same_special, 0.0, np.abs(got - expected))
    diff = np.where(np.isnan(diff), np.inf, diff)
    allowed = tolerance.atol * scale + tolerance.rtol * np.abs(np.where(np.isfinite(expected), expected, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        used = diff / allowed
        rel = np.where(diff == 0, 0.0, diff / np.abs(expected))
    bad = used > 1.0
    if got.size == 0:
        return Comparison(True, 0, 0, 0.0, (), 0.0, (), 0.0, 0.0, 0.0, tolerance, scale)
    i_abs = np.unravel_index(int(np.argmax(diff)), diff.shape)
    i_rel = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return Comparison(
        ok=not bool(bad.any()),
        total=int(got.size),
        mismatches=int(bad.sum()),
        max_abs=float(diff[i_abs]),
        max_abs_index=tuple(int(i) for i in i_abs),
        max_rel=float(rel[i_rel]),
        max_rel_index=tuple(int(i) for i in i_rel),
        tolerance_used=float(np.max(used)),
        got_at_max=float(got[i_abs]),
        expected_at_max=float(expected[i_abs]),
        tolerance=tolerance,
        output_scale=scale,
    )
