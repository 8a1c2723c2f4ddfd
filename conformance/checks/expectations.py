"""Known deviations: failures a user has declared, with a reason, so that they are reported as
such and do not fail the run.

A TOML file (read with the standard library) lists them::

    [[deviation]]
    implementation = "kcam2021"          # the implementation's `name`
    layer = "MHSAWithPositionEmbedding"
    check = "error"                      # weights | init | output shape | numerics | rejects | cross | error | gradients | training
    when = "relative and (height == 1 or width == 1)"   # optional
    reason = "the 2021 reshape trick cannot run a relative table on a side of 1"

``when`` is an expression over the case: every config parameter by name (the full config,
defaults filled in), ``dtype``, ``input_shapes``, and for the first input ``batch``, ``height``,
``width`` (feature maps), ``tokens`` (token sequences) and ``channels``. It may use comparisons,
``and``/``or``/``not``, arithmetic, ``in`` and literals; nothing else is evaluated. Without
``when`` the entry covers every case of that implementation, layer and check. ``implementation``
and ``layer`` may be ``"*"``. A failing (or raising) outcome that matches an entry becomes a
"known deviation" carrying the reason; an entry that matched no failure in a run is reported as
stale, so the file cannot silently outlive the deviation it describes.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import reference
from conformance.checks.engine import FAILING, KNOWN, Outcome
from conformance.sampling.cases import Case

CHECKS = ("weights", "init", "output shape", "numerics", "rejects", "cross", "error", "gradients", "training")

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Div,
    ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List, ast.Subscript, ast.IfExp,
)


class ExpectationError(ValueError):
    """A deviations file that cannot be read as documented."""


@dataclass
class Deviation:
    implementation: str
    layer: str
    check: str
    reason: str
    when: str = ""
    source: str = ""
    matched: int = field(default=0, compare=False)

    def __post_init__(self):
        if self.check not in CHECKS:
            raise ExpectationError(f"{self.source}: check {self.check!r} must be one of {', '.join(CHECKS)}")
        if self.layer != "*" and self.layer not in reference.names():
            raise ExpectationError(f"{self.source}: layer {self.layer!r} is not a layer of the spec")
        if not self.reason.strip():
            raise ExpectationError(f"{self.source}: every deviation needs a reason")
        self._code = None
        if self.when:
            try:
                tree = ast.parse(self.when, mode="eval")
            except SyntaxError as exc:
                raise ExpectationError(f"{self.source}: when {self.when!r} is not an expression: {exc.msg}") from None
            bad = [type(node).__name__ for node in ast.walk(tree) if not isinstance(node, _ALLOWED)]
            if bad:
                raise ExpectationError(f"{self.source}: when {self.when!r} uses {bad[0]}, which deviations do not allow")
            self._code = compile(tree, self.source or "<when>", "eval")

    def __getstate__(self):
        # Code objects do not pickle: ``when`` is compiled again on arrival, so a deviation can
        # travel to the processes of ``attnconf check --jobs``.
        return {k: v for k, v in self.__dict__.items() if k != "_code"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()

    def matches(self, outcome: Outcome) -> bool:
        if outcome.check != self.check or self.implementation not in ("*", outcome.impl) or self.layer not in ("*", outcome.layer):
            return False
        if self._code is None:
            return True
        if outcome.case is None:
            return False
        try:
            return bool(eval(self._code, {"__builtins__": {}}, case_names(outcome.case)))  # noqa: S307 - the AST is restricted above
        except Exception as exc:  # noqa: BLE001 - an expression that does not apply to this case
            raise ExpectationError(f"{self.source}: when {self.when!r} failed on {outcome.case.describe()}: {type(exc).__name__}: {exc}") from None

    def describe(self) -> str:
        where = f" when {self.when}" if self.when else ""
        return f"{self.implementation} {self.layer} {self.check}{where}: {self.reason}"


def case_names(case: Case) -> dict[str, Any]:
    """The names a ``when`` expression can use for one case."""
    spec = reference.spec(case.layer)
    try:
        names: dict[str, Any] = dict(reference.validate(case.layer, *case.input_shapes, **case.config))
    except ValueError:
        names = dict(case.config)  # a rejection case: only what the user set
    first = tuple(case.input_shapes[0]) if case.input_shapes else ()
    names.update(dtype=case.dtype, input_shapes=tuple(tuple(s) for s in case.input_shapes), batch=first[0] if first else None, channels=first[-1] if first else None)
    kind = spec.inputs[0].kind if spec.inputs else ""
    if len(first) == 4 and kind in ("feature_map", "channels_last"):
        names.update(height=first[1], width=first[2])
    if len(first) == 3 or kind == "per_head":
        names.update(tokens=first[-2])
    return names


def load(path: str | Path) -> list[Deviation]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ExpectationError(f"{path}: {exc}") from None
    entries = data.get("deviation", [])
    if not isinstance(entries, list) or set(data) - {"deviation"}:
        raise ExpectationError(f"{path}: expected only [[deviation]] tables")
    out = []
    for index, entry in enumerate(entries, start=1):
        source = f"{path} deviation {index}"
        missing = [k for k in ("implementation", "layer", "check", "reason") if k not in entry]
        unknown = sorted(set(entry) - {"implementation", "layer", "check", "reason", "when"})
        if missing or unknown:
            raise ExpectationError(f"{source}: " + (f"missing {', '.join(missing)}" if missing else f"unknown key {unknown[0]!r}"))
        out.append(Deviation(**{k: str(v) for k, v in entry.items()}, source=source))
    return out


def apply(outcomes: Iterable[Outcome], deviations: list[Deviation]) -> list[Outcome]:
    """Failing outcomes that match a declared deviation become "known deviation" outcomes."""
    result = []
    for o in outcomes:
        match = next((d for d in deviations if o.status in FAILING and d.matches(o)), None) if deviations else None
        if match is None:
            result.append(o)
            continue
        match.matched += 1
        result.append(replace(o, status=KNOWN, detail=f"known deviation ({match.source}): {match.reason}\n{o.detail}"))
    return result


def stale(deviations: list[Deviation], layers: Iterable[str], implementations: Iterable[str]) -> list[Deviation]:
    """Deviations that matched nothing although their layer and implementation (both of a pair)
    were checked; one about a layer or implementation outside the run is not stale, only unused."""
    layers, implementations = set(layers), set(implementations)

    def in_run(d: Deviation) -> bool:
        names = d.implementation.split(" vs ")
        return (d.layer == "*" or d.layer in layers) and (d.implementation == "*" or all(n in implementations for n in names))

    return [d for d in deviations if d.matched == 0 and in_run(d)]
