"""The check run as a picture (matplotlib): layers x (implementation, dtype), each cell coloured
by how much of its tolerance the worst case used, with failures, unsupported and not implemented
cells marked in words, so that nothing unchecked looks green."""

from __future__ import annotations

import math
from pathlib import Path

import reference
from conformance.checks.engine import ERROR, FAIL, KNOWN, NOT_IMPLEMENTED, PASS, UNSUPPORTED
from conformance.runners.runner import RunResult


def write(result: RunResult, dtypes: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    layers = [name for name in reference.names() if any(key[0] == name for key in result.tallies)]
    subjects = sorted({key[1] for key in result.tallies}, key=lambda s: (" vs " in s, s))
    columns = [(subject, dtype) for subject in subjects for dtype in dtypes]
    used = np.full((len(layers), len(columns)), np.nan)
    labels = [["" for _ in columns] for _ in layers]
    for i, layer in enumerate(layers):
        for j, (subject, dtype) in enumerate(columns):
            check = "cross" if " vs " in subject else "numerics"
            cells = [t for (l, s, c, d), t in result.tallies.items() if (l, s, d) == (layer, subject, dtype) and c in (check, "error", "weights", "output shape", "init")]
            if not cells:
                labels[i][j] = "-"
                continue
            failed = sum(t.count(FAIL, ERROR) for t in cells)
            numeric = next((t for (l, s, c, d), t in result.tallies.items() if (l, s, c, d) == (layer, subject, check, dtype)), None)
            if numeric is not None and numeric.worst is not None:
                used[i, j] = numeric.worst.comparison.tolerance_used
            if failed:
                labels[i][j] = f"FAIL {failed}"
                used[i, j] = math.inf  # red, whatever the passing cases' errors were
            elif all(not t.count(PASS, KNOWN) and t.count(NOT_IMPLEMENTED) for t in cells):
                labels[i][j] = "n/i"
            elif any(t.count(UNSUPPORTED) for t in cells):
                labels[i][j] = f"{max(t.count(UNSUPPORTED) for t in cells)} unsup."
            elif any(t.count(KNOWN) for t in cells):
                labels[i][j] = "known"
    figure, axes = plt.subplots(figsize=(1.2 * len(columns) + 4, 0.35 * len(layers) + 2))
    shown = np.where(np.isnan(used), np.nan, np.log10(np.clip(used, 1e-4, 10)))
    axes.set_facecolor("lightgrey")
    image = axes.imshow(shown, cmap="RdYlGn_r", vmin=-4, vmax=1, aspect="auto")
    axes.set_xticks(range(len(columns)), [f"{s}\n{d}" for s, d in columns], fontsize=7)
    axes.set_yticks(range(len(layers)), layers, fontsize=7)
    for i, row in enumerate(labels):
        for j, text in enumerate(row):
            if text:
                axes.text(j, i, text, ha="center", va="center", fontsize=6)
    bar = figure.colorbar(image, ax=axes)
    bar.set_label("log10(worst error / tolerance)")
    axes.set_title("attnconf check: worst numerics against tolerance; red: failures; grey: nothing compared", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
