"""Golden fixtures: stored cases generated from the reference, readable without Python.

Layout of ``fixtures/``::

    manifest.json                      # every fixture: layer, config, shapes, seed, sha256, ...
    <layer>/<example>.safetensors      # one case

Each safetensors file (written and read with the ``safetensors`` package) holds
``input/<input name>`` and ``weight/<canonical weight name>`` (float16: the values are drawn on
the float16 grid, so every dtype holds them exactly) and ``output`` (float64, the reference's
result on exactly those values), channels-last and in Keras weight layouts. Its
``__metadata__`` has one key, ``attnconf``, whose value is a JSON object (sorted keys) with the
layer, example, config, input shapes, seed, spec version and layout: one key because the
safetensors writer orders several metadata keys differently from run to run, and regenerating
must give the same bytes.

The float64 output is the one part that depends on the machine: BLAS libraries on other CPUs
round the last bits differently. So ``regenerate`` keeps a stored file whenever everything but
the output is byte-identical to the fresh one and the output agrees within ``DRIFT_TOLERANCE``:
regenerating on any machine leaves an unchanged spec's files (and the manifest) untouched, and
rewrites exactly the fixtures whose semantics changed. ``verify`` compares the whole manifest
with the one a regeneration would write (only the sha256 and bytes of a file kept for round-off
may differ), checks the files against it (sha256, size, nothing missing or extra) and compares
them with a regeneration in memory under the same rule; any real change of semantics is many
orders of magnitude above round-off. docs/fixtures.md describes the format for other languages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import reference
from safetensors import safe_open
from safetensors.numpy import save as safetensors_bytes

from conformance.sampling.cases import Case, draw_arrays
from conformance.checks.compare import compare
from conformance.checks.engine import ERROR, NOT_IMPLEMENTED, Candidate, Outcome, run_case
from conformance.contract import dtype_not_declared
from conformance.checks.tolerances import DTYPES, OVERRIDES, TOLERANCES, Tolerance

MANIFEST = "manifest.json"
GRID = "float16"
DRIFT_TOLERANCE = Tolerance(rtol=64 * 2.0**-52, atol=64 * 2.0**-52, reason="float64 summation order differs between BLAS builds")
SIZE_BUDGET_BYTES = 8 * 1024 * 1024


def default_dir() -> Path:
    """``$ATTNCONF_FIXTURES``, else the ``fixtures/`` folder of this checkout, else ``./fixtures``."""
    if os.environ.get("ATTNCONF_FIXTURES"):
        return Path(os.environ["ATTNCONF_FIXTURES"])
    beside_package = Path(__file__).resolve().parents[2] / "fixtures"
    return beside_package if beside_package.is_dir() else Path.cwd() / "fixtures"


METADATA_KEY = "attnconf"

TOLERANCE_RULE = (
    "elementwise pass iff |got - expected| <= atol * scale + rtol * |expected|, where got is the "
    "implementation's output cast to float64, expected the stored float64 output, and scale = "
    "sqrt(mean(expected**2)) over the finite elements of expected (1 if that is 0); a NaN "
    "matches a NaN and an infinity the same infinity, any other NaN or infinity is a mismatch; "
    "tolerance_overrides[layer][dtype] replaces tolerances[dtype] where present"
)
"""What ``conformance.checks.compare.compare(got, expected, tolerance(layer, dtype),
scale=output_scale(expected))`` does, stated once in the manifest for readers in other languages."""


class FixtureFolderError(ValueError):
    """A folder ``regenerate`` must not write into (it would delete files that are not fixtures)."""


@dataclass(frozen=True)
class RoundOff:
    """A stored output that differs from this machine's reference by float64 round-off only."""

    file: str
    comparison: Any

    def __str__(self) -> str:
        return f"{self.file}: output differs from this machine's reference only by float64 round-off ({self.comparison.summary()})"


def roundoff_summary(notes: list[RoundOff]) -> str:
    """One line for all round-off differences: how many, and the largest."""
    worst = max(notes, key=lambda n: n.comparison.tolerance_used)
    c = worst.comparison
    return (f"{len(notes)} fixtures differ from this machine's reference only by float64 round-off "
            f"(largest: {worst.file}, abs diff {c.max_abs:.3g}, {c.tolerance_used:.1%} of the round-off allowance)")


@dataclass
class Regeneration:
    """What ``regenerate`` did (or, with ``check``, would do), file by file."""

    generated: list[Generated] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    roundoff: list[str] = field(default_factory=list)
    """Kept as stored: the output differs from this machine's by float64 round-off only."""
    rewritten: dict[str, list[str]] = field(default_factory=dict)
    """file -> why: its content changed beyond round-off."""
    new: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """``.safetensors`` files that are no fixture of this spec."""
    strays: list[str] = field(default_factory=list)
    """Other files, left alone (``verify`` fails on them)."""
    manifest_changed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.rewritten or self.new or self.removed or self.manifest_changed)


@dataclass(frozen=True)
class Generated:
    name: str
    file: str
    data: bytes
    entry: dict[str, Any]
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any]


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A fixture file's tensors and its metadata object."""
    with safe_open(str(path), framework="numpy") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata() or {}
    return tensors, json.loads(metadata.get(METADATA_KEY, "{}"))


def fixture_seed(name: str) -> int:
    """A seed fixed by the fixture's name alone, the same on every platform."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def generate() -> list[Generated]:
    """Every fixture, in memory, from the spec's examples marked ``fixture``."""
    out = []
    for layer in reference.names():
        spec = reference.spec(layer)
        for example in spec.examples:
            if not example.fixture:
                continue
            name = f"{layer}/{example.name}"
            seed = fixture_seed(name)
            shapes = tuple(tuple(s) for s in example.input_shapes)
            config = reference.validate(layer, *shapes, **example.config)
            inputs, weights = draw_arrays(layer, config, shapes, seed, GRID)
            expected = reference.forward(layer, *inputs, weights=weights, **config)
            tensors = {f"input/{i.name}": x.astype(np.float16) for i, x in zip(spec.inputs, inputs)}
            tensors.update({f"weight/{k}": v.astype(np.float16) for k, v in weights.items()})
            tensors["output"] = expected.astype(np.float64)
            metadata = {
                "layer": layer,
                "example": example.name,
                "config": config,
                "input_shapes": [list(s) for s in shapes],
                "seed": seed,
                "spec_version": reference.SPEC_VERSION,
                "layout": "channels_last; weights in Keras layouts",
            }
            metadata = json.loads(_json(metadata))  # as read back: tuples become lists
            # safetensors' NumPy writer stores a non-contiguous array (an einsum result, a
            # transpose) in memory order without saying so: hand it C-ordered arrays only.
            tensors = {key: np.ascontiguousarray(value) for key, value in tensors.items()}
            data = safetensors_bytes(tensors, metadata={METADATA_KEY: _json(metadata)})
            file = f"{layer}/{example.name}.safetensors"
            entry = {
                "name": name,
                "layer": layer,
                "example": example.name,
                "source": example.source,
                "file": file,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "seed": seed,
                "config": config,
                "inputs": [
                    {"tensor": f"input/{i.name}", "kind": i.kind, "shape": list(s), "dtype": "float16"} for i, s in zip(spec.inputs, shapes)
                ],
                "weights": {k: list(v.shape) for k, v in weights.items()},
                "output": {"tensor": "output", "kind": spec.output_kind, "shape": list(expected.shape), "dtype": "float64"},
            }
            out.append(Generated(name, file, data, entry, tensors, metadata))
    return out


def _tolerance_json(t: Tolerance) -> dict[str, float]:
    return {"atol": t.atol, "rtol": t.rtol}


def manifest_text(generated: list[Generated]) -> str:
    manifest = {
        "spec_version": reference.SPEC_VERSION,
        "format": "safetensors",
        "layout": "tensors channels-last; weights under canonical names in Keras layouts",
        "values": "inputs and weights are float16 values (exact in every dtype); output is the float64 reference",
        "regenerate": "attnconf fixtures regenerate",
        "docs": "docs/fixtures.md",
        # What a reader in any language needs to compare: the dtypes fixtures are checked in and
        # the tolerance of each (the same numbers ``attnconf fixtures check`` uses).
        "dtypes": list(DTYPES),
        "tolerances": {d: _tolerance_json(TOLERANCES[d]) for d in DTYPES},
        "tolerance_overrides": {layer: {d: _tolerance_json(t)} for (layer, d), t in sorted(OVERRIDES.items())},
        "tolerance_rule": TOLERANCE_RULE,
        "fixtures": [g.entry for g in generated],
    }
    return json.dumps(manifest, sort_keys=True, indent=1) + "\n"


def regenerate(directory: Path | None = None, check: bool = False) -> Regeneration:
    """Write every fixture and the manifest; a stored file that differs from the fresh one only
    by float64 round-off of its output is kept as it is (see the module docstring). With
    ``check``, write nothing and only report what would change.

    Refuses (:class:`FixtureFolderError`) a non-empty folder without a manifest: it removes
    every ``.safetensors`` file that is no fixture, which must never hit someone's models."""
    directory = Path(directory or default_dir())
    if directory.is_dir() and any(directory.iterdir()) and not (directory / MANIFEST).is_file():
        raise FixtureFolderError(
            f"{directory} is not empty and has no {MANIFEST}, so it is not a fixtures folder; regenerate "
            f"removes every .safetensors file there that is no fixture. Use an empty or new folder."
        )
    generated = generate()
    wanted = {g.file for g in generated}
    existing = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []
    report = Regeneration(
        removed=[f for f in existing if f.endswith(".safetensors") and f not in wanted],
        strays=[f for f in existing if not f.endswith(".safetensors") and f != MANIFEST],
    )
    writes: dict[str, bytes] = {}
    for g in generated:
        target = directory / g.file
        if not target.is_file():
            report.new.append(g.file)
            writes[g.file] = g.data
            report.generated.append(g)
            continue
        stored = target.read_bytes()
        problems = [] if stored == g.data else differences(g, target)[0]
        if problems:
            report.rewritten[g.file] = problems
            writes[g.file] = g.data
        else:
            (report.unchanged if stored == g.data else report.roundoff).append(g.file)
            g = replace(g, data=stored, entry={**g.entry, "sha256": hashlib.sha256(stored).hexdigest(), "bytes": len(stored)})
        report.generated.append(g)
    text = manifest_text(report.generated)
    manifest = directory / MANIFEST
    report.manifest_changed = not manifest.is_file() or manifest.read_text(encoding="utf-8") != text
    if check:
        return report
    for file in report.removed:
        (directory / file).unlink()
    for file, data in writes.items():
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_bytes(data)
    directory.mkdir(parents=True, exist_ok=True)
    if report.manifest_changed:
        manifest.write_text(text, encoding="utf-8")
    for folder in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return report


def load_manifest(directory: Path | None = None) -> dict[str, Any]:
    return json.loads((Path(directory or default_dir()) / MANIFEST).read_text(encoding="utf-8"))


ENTRY_FIELDS = {"name": str, "file": str, "sha256": str, "bytes": int}
"""Fields every manifest entry needs before anything else can be checked, and their types."""


def _shown(value: Any, limit: int = 200) -> str:
    text = _json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_differences(stored: dict[str, Any], fresh: dict[str, Any]) -> str:
    """``key: stored X, regenerated Y`` for every key whose value differs (or is on one side only)."""
    parts = []
    for key in sorted(set(stored) | set(fresh)):
        if key not in fresh:
            parts.append(f"{key}: stored {_shown(stored[key])}, not in the regenerated one")
        elif key not in stored:
            parts.append(f"{key}: missing, regenerated {_shown(fresh[key])}")
        elif _json(stored[key]) != _json(fresh[key]):
            parts.append(f"{key}: stored {_shown(stored[key])}, regenerated {_shown(fresh[key])}")
    return "; ".join(parts)


def _malformed(index: int, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"{MANIFEST}: fixtures[{index}] is a {type(entry).__name__}, not an object"
    label = entry.get("name") if isinstance(entry.get("name"), str) else f"fixtures[{index}]"
    for key, kind in ENTRY_FIELDS.items():
        if key not in entry:
            return f"{MANIFEST}: {label}: field {key!r} is missing"
        # bool is an int to Python, never a byte count
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            return f"{MANIFEST}: {label}: field {key!r} is {_shown(entry[key])}, not {'a string' if kind is str else 'an integer'}"
    return None


def verify(directory: Path | None = None) -> tuple[list[str], list[RoundOff]]:
    """``(problems, notes)``: any problem means drift or tampering; each note is a file whose
    output differs from this machine's reference by round-off only (``str(note)`` says so)."""
    directory = Path(directory or default_dir())
    problems, notes = [], []
    try:
        manifest = load_manifest(directory)
    except FileNotFoundError:
        return [f"{directory / MANIFEST} is missing; run: attnconf fixtures regenerate"], notes
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"{MANIFEST} is not valid JSON: {exc}"], notes
    if not isinstance(manifest, dict):
        return [f"{MANIFEST} is a JSON {type(manifest).__name__}, not an object"], notes

    # The whole manifest must be what regenerate would write: every top-level key, ...
    generated = generate()
    fresh = json.loads(manifest_text(generated))
    top = _key_differences({k: v for k, v in manifest.items() if k != "fixtures"}, {k: v for k, v in fresh.items() if k != "fixtures"})
    if top:
        problems.append(f"{MANIFEST} differs from the regenerated one at the top level: {top}")
    listed = manifest.get("fixtures", [])
    if not isinstance(listed, list):
        problems.append(f"{MANIFEST}: fixtures is {_shown(listed)}, not a list")
        listed = []
    entries: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(listed):
        malformed = _malformed(index, entry)
        if malformed:
            problems.append(malformed)
        elif entry["name"] in entries:
            problems.append(f"{entry['name']}: listed more than once in {MANIFEST}")
        else:
            entries[entry["name"]] = entry
    if list(entries) != [g.name for g in generated] and set(entries) == {g.name for g in generated}:
        problems.append(f"{MANIFEST}: fixtures are not in the regenerated order")

    # ... every file in the folder must be listed, and every listed file must match its entry.
    files = {e["file"]: e for e in entries.values()}
    on_disk = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"{f}: listed in the manifest but missing" for f in sorted(set(files) - on_disk)]
    problems += [f"{f}: on disk but not in the manifest" for f in sorted(on_disk - set(files))]
    problems += [f"{p.relative_to(directory).as_posix()}/: empty folder, not part of the fixtures" for p in sorted(directory.rglob("*")) if p.is_dir() and not any(p.iterdir())]
    for file in sorted(set(files) & on_disk):
        data = (directory / file).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != files[file]["sha256"]:
            problems.append(f"{file}: sha256 {digest} does not match the manifest's {files[file]['sha256']} (file changed)")
        if len(data) != files[file]["bytes"]:
            problems.append(f"{file}: {len(data)} bytes, the manifest says {files[file]['bytes']}")

    for name in sorted(set(entries) ^ {g.name for g in generated}):
        problems.append(f"{name}: in only one of the manifest and the reference's examples (regenerate)")
    for g in generated:
        stored, path = entries.get(g.name), directory / g.file
        if stored is None:
            continue
        # sha256 and bytes were checked against the file above; the file itself against the
        # fresh one below, which is what allows them to differ (round-off only).
        changed = _key_differences(_without_digest(stored), _without_digest(g.entry))
        if changed:
            problems.append(f"{g.name}: manifest entry differs from the regenerated one: {changed}")
        if path.is_file() and path.read_bytes() != g.data:
            found, note = differences(g, path)
            problems += found
            notes += [note] if note else []
    return problems, notes


def _without_digest(entry: dict[str, Any]) -> dict[str, Any]:
    # JSON round trip so tuples and lists compare alike
    return json.loads(_json({k: v for k, v in entry.items() if k not in ("sha256", "bytes")}))


def differences(g: Generated, path: Path) -> tuple[list[str], RoundOff | None]:
    """``(problems, note)`` between a stored file and its fresh generation: inputs, weights and
    metadata must be identical, the output equal within ``DRIFT_TOLERANCE``; the note says when
    the output differs by round-off only."""
    try:
        tensors, metadata = read(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a problem to report
        return [f"{g.file}: unreadable: {exc}"], None
    problems, note = [], None
    if metadata != g.metadata:
        problems.append(f"{g.file}: metadata differs from the regenerated one: {_key_differences(metadata, g.metadata)}")
    if set(tensors) != set(g.tensors):
        return problems + [f"{g.file}: tensor names differ: stored {sorted(tensors)}, regenerated {sorted(g.tensors)}"], None
    for key, fresh in g.tensors.items():
        stored = tensors[key]
        if stored.dtype != fresh.dtype or stored.shape != fresh.shape:
            problems.append(f"{g.file}: {key} is {stored.dtype}{list(stored.shape)}, regenerated {fresh.dtype}{list(fresh.shape)}")
        elif key != "output" and stored.tobytes() != fresh.tobytes():
            problems.append(f"{g.file}: {key} differs from the regenerated values")
        elif key == "output":
            result = compare(stored, fresh, DRIFT_TOLERANCE)
            if not result.ok:
                problems.append(f"{g.file}: output drifted from the reference: {result.summary()}")
            elif stored.tobytes() != fresh.tobytes():
                note = RoundOff(g.file, result)
    return problems, note


def fixture_outcomes(candidate: Candidate, name: str, directory: Path | None = None) -> list[Outcome]:
    """Check an implementation on one stored fixture, in every dtype it runs: no reference run."""
    directory = Path(directory or default_dir())
    entry = next((e for e in load_manifest(directory)["fixtures"] if e["name"] == name), None)
    if entry is None:
        raise KeyError(f"no fixture named {name!r} in {directory / MANIFEST}")
    shapes = tuple(tuple(i["shape"]) for i in entry["inputs"])
    # Name the folder in reproduce commands when it is not the default, or they check another one.
    where = "" if directory.resolve() == default_dir().resolve() else f" --dir {shlex.quote(str(directory))}"
    repro = f"attnconf fixtures check --impl {candidate.ref} --only {name}{where}"
    path = directory / entry["file"]
    data = path.read_bytes() if path.is_file() else None
    digest = hashlib.sha256(data).hexdigest() if data is not None else None
    if digest != entry["sha256"]:
        # A corrupt or missing fixture says nothing about the implementation: report the file.
        why = "is missing" if data is None else f"is corrupt: sha256 {digest}, the manifest says {entry['sha256']}"
        detail = f"fixture: {path} {why}; the implementation was not run. Run: attnconf fixtures verify{where}"
        return [Outcome("fixture", entry["layer"], candidate.name, dtype, ERROR, detail, Case(entry["layer"], entry["config"], shapes, entry["seed"], dtype, label=name)) for dtype in DTYPES]
    tensors, _ = read(path)
    inputs = [tensors[i["tensor"]].astype(np.float64) for i in entry["inputs"]]
    weights = {k: tensors[f"weight/{k}"].astype(np.float64) for k in entry["weights"]}
    expected = tensors["output"]
    outcomes = []
    for dtype in DTYPES:
        case = Case(entry["layer"], entry["config"], shapes, entry["seed"], dtype, label=name)
        if dtype not in candidate.impl.dtypes:  # counted as not checked, never silently left out
            outcomes.append(Outcome("numerics", entry["layer"], candidate.name, dtype, NOT_IMPLEMENTED, dtype_not_declared(candidate.impl, dtype), case))
            continue
        run = run_case(candidate, case, (inputs, weights), expected, {k: tuple(v) for k, v in entry["weights"].items()}, repro)
        outcomes += run.outcomes
    return outcomes


def check_implementation(candidate: Candidate, directory: Path | None = None, only: list[str] | None = None) -> list[Outcome]:
    names = [e["name"] for e in load_manifest(directory)["fixtures"]]
    return [o for n in names if not only or n in only for o in fixture_outcomes(candidate, n, directory)]


def folder_size(directory: Path | None = None) -> int:
    directory = Path(directory or default_dir())
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())

