"""The check run as a picture (matplotlib): layers x (implementation, dtype). A cell holds every
check of that layer, implementation and dtype (the case checks, numerics or cross, gradients and
training in that dtype, and the rejections, which belong to every dtype). Cells where everything
ran and passed are coloured by how much of its tolerance the worst case used; a failure is red, a
raise purple, a cell with unsupported cases orange and one with nothing compared grey, each also
in words and in the legend, so that nothing failed or unchecked looks green."""

from __future__ import annotations

import math
from pathlib import Path

import reference
from conformance.checks.engine import ERROR, FAIL, KNOWN, NOT_IMPLEMENTED, NOT_RUN, PASS, UNSUPPORTED
from conformance.runners.runner import RunResult

STATUS_COLOURS = {
    "failed": ("#d62728", "failed (FAIL n: failing checks)"),
    "raised": ("#9467bd", "the implementation raised (n)"),
    "unsupported": ("#ff9f1c", "some cases unsupported (n unsup.): not checked"),
    "nothing": ("#c7c7c7", "nothing compared (n/i, all unsupported, -)"),
}
"""Colours of the cells that are not a plain pass, with their legend entries."""


def _cell(tallies) -> tuple[str | None, str, float]:
    """``(status, label, tolerance used)`` of one cell from its tallies; status None is a pass,
    coloured by the tolerance its worst numeric case used (nan when none was compared)."""
    count = lambda *statuses: sum(t.count(*statuses) for t in tallies)  # noqa: E731
    worst = max((t.worst.comparison.tolerance_used for t in tallies if t.worst is not None), default=math.nan)
    if count(FAIL):
        return "failed", f"FAIL {count(FAIL)}", worst
    if count(ERROR):
        return "raised", f"raised {count(ERROR)}", worst
    if not count(PASS, KNOWN):
        return "nothing", "n/i" if count(NOT_IMPLEMENTED) else "-" if not count(UNSUPPORTED, NOT_RUN) else f"{count(UNSUPPORTED)} unsup.", worst
    if count(UNSUPPORTED):
        return "unsupported", f"{count(UNSUPPORTED)} unsup.", worst
    return None, "known" if count(KNOWN) else "", worst


def grid(result: RunResult, dtypes: tuple[str, ...]):
    """``(layers, columns, cells)``: the picture's rows, its (implementation, dtype) columns and
    each cell's ``(status, label, tolerance used)`` (see :func:`_cell`)."""
    layers = [name for name in reference.names() if any(key[0] == name for key in result.tallies)]
    subjects = sorted({key[1] for key in result.tallies}, key=lambda s: (" vs " in s, s))
    columns = [(subject, dtype) for subject in subjects for dtype in dtypes]
    cells = []
    for layer in layers:
        row = []
        for subject, dtype in columns:
            tallies = [t for (l, s, _, d), t in result.tallies.items() if (l, s) == (layer, subject) and d in (dtype, "-")]
            row.append(_cell(tallies) if tallies else ("nothing", "-", math.nan))
        cells.append(row)
    return layers, columns, cells


def write(result: RunResult, dtypes: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import Normalize, to_rgba
    from matplotlib.patches import Patch

    layers, columns, cells = grid(result, dtypes)
    colourmap, scale = plt.get_cmap("RdYlGn_r"), Normalize(vmin=-4, vmax=1)
    image = np.zeros((len(layers), len(columns), 4))
    labels = [["" for _ in columns] for _ in layers]
    for i in range(len(layers)):
        for j in range(len(columns)):
            status, labels[i][j], used = cells[i][j]
            if status is not None:
                image[i, j] = to_rgba(STATUS_COLOURS[status][0])
            elif math.isnan(used):
                image[i, j] = to_rgba(STATUS_COLOURS["nothing"][0])
            else:
                image[i, j] = colourmap(scale(math.log10(min(max(used, 1e-4), 10))))
    figure, axes = plt.subplots(figsize=(1.2 * len(columns) + 5, 0.35 * len(layers) + 2.5))
    axes.imshow(image, aspect="auto")
    axes.set_xticks(range(len(columns)), [f"{s}\n{d}" for s, d in columns], fontsize=7)
    axes.set_yticks(range(len(layers)), layers, fontsize=7)
    for i, row in enumerate(labels):
        for j, text in enumerate(row):
            if text:
                axes.text(j, i, text, ha="center", va="center", fontsize=6)
    bar = figure.colorbar(plt.cm.ScalarMappable(norm=scale, cmap=colourmap), ax=axes)
    bar.set_label("passed: log10(worst error / tolerance)")
    axes.legend(handles=[Patch(color=colour, label=text) for colour, text in STATUS_COLOURS.values()], loc="upper left",
                bbox_to_anchor=(0, -0.12), ncol=2, fontsize=7, frameon=False)
    axes.set_title("attnconf check: every check per layer, implementation and dtype", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
