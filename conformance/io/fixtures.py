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
rewrites exactly the fixtures whose semantics changed. ``verify`` checks the manifest against the
files (sha256, nothing missing or extra) and compares them with a regeneration in memory under the
same rule; any real change of semantics is many orders of magnitude above round-off.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import reference
from safetensors import safe_open
from safetensors.numpy import save as safetensors_bytes

from conformance.sampling.cases import Case, draw_arrays
from conformance.checks.compare import compare
from conformance.checks.engine import NOT_IMPLEMENTED, Candidate, Outcome, run_case
from conformance.contract import dtype_not_declared
from conformance.checks.tolerances import DTYPES, Tolerance

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


def manifest_text(generated: list[Generated]) -> str:
    manifest = {
        "spec_version": reference.SPEC_VERSION,
        "format": "safetensors",
        "layout": "tensors channels-last; weights under canonical names in Keras layouts",
        "values": "inputs and weights are float16 values (exact in every dtype); output is the float64 reference",
        "regenerate": "attnconf fixtures regenerate",
        "fixtures": [g.entry for g in generated],
    }
    return json.dumps(manifest, sort_keys=True, indent=1) + "\n"


def regenerate(directory: Path | None = None) -> list[Generated]:
    """Write every fixture and the manifest; a stored file that differs from the fresh one only
    by float64 round-off of its output is kept as it is (see the module docstring)."""
    directory = Path(directory or default_dir())
    generated = generate()
    wanted = {g.file for g in generated}
    for path in sorted(directory.rglob("*.safetensors")):
        if path.relative_to(directory).as_posix() not in wanted:
            path.unlink()
    written = []
    for g in generated:
        target = directory / g.file
        if target.is_file() and not differences(g, target)[0]:
            stored = target.read_bytes()
            g = replace(g, data=stored, entry={**g.entry, "sha256": hashlib.sha256(stored).hexdigest(), "bytes": len(stored)})
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(g.data)
        written.append(g)
    generated = written
    (directory / MANIFEST).write_text(manifest_text(generated), encoding="utf-8")
    for folder in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return generated


def load_manifest(directory: Path | None = None) -> dict[str, Any]:
    return json.loads((Path(directory or default_dir()) / MANIFEST).read_text(encoding="utf-8"))


def verify(directory: Path | None = None) -> tuple[list[str], list[str]]:
    """``(problems, notes)``: any problem means drift or tampering."""
    directory = Path(directory or default_dir())
    problems, notes = [], []
    try:
        manifest = load_manifest(directory)
    except FileNotFoundError:
        return [f"{directory / MANIFEST} is missing; run: attnconf fixtures regenerate"], notes
    except json.JSONDecodeError as exc:
        return [f"{MANIFEST} is not valid JSON: {exc}"], notes
    if manifest.get("spec_version") != reference.SPEC_VERSION:
        problems.append(f"manifest spec_version {manifest.get('spec_version')!r} != reference {reference.SPEC_VERSION!r}")

    entries = {e["file"]: e for e in manifest.get("fixtures", [])}
    on_disk = {p.relative_to(directory).as_posix() for p in directory.rglob("*.safetensors")}
    problems += [f"{f}: listed in the manifest but missing" for f in sorted(set(entries) - on_disk)]
    problems += [f"{f}: on disk but not in the manifest" for f in sorted(on_disk - set(entries))]
    for file in sorted(set(entries) & on_disk):
        digest = hashlib.sha256((directory / file).read_bytes()).hexdigest()
        if digest != entries[file]["sha256"]:
            problems.append(f"{file}: sha256 {digest} does not match the manifest's {entries[file]['sha256']} (file changed)")

    generated = generate()
    stored_entries = {e["name"]: e for e in manifest.get("fixtures", [])}
    for name in sorted(set(stored_entries) ^ {g.name for g in generated}):
        problems.append(f"{name}: in only one of the manifest and the reference's examples (regenerate)")
    for g in generated:
        stored, path = stored_entries.get(g.name), directory / g.file
        if stored is None or not path.is_file():
            continue
        if _without_digest(stored) != _without_digest(g.entry):
            problems.append(f"{g.name}: manifest entry differs from the regenerated one")
        if path.read_bytes() != g.data:
            found, note = differences(g, path)
            problems += found
            notes += [note] if note else []
    return problems, notes


def _without_digest(entry: dict[str, Any]) -> dict[str, Any]:
    # JSON round trip so tuples and lists compare alike
    return json.loads(_json({k: v for k, v in entry.items() if k not in ("sha256", "bytes")}))


def differences(g: Generated, path: Path) -> tuple[list[str], str | None]:
    """``(problems, note)`` between a stored file and its fresh generation: inputs, weights and
    metadata must be identical, the output equal within ``DRIFT_TOLERANCE``; the note says when
    the output differs by round-off only."""
    try:
        tensors, metadata = read(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a problem to report
        return [f"{g.file}: unreadable: {exc}"], None
    problems, note = [], None
    if metadata != g.metadata:
        problems.append(f"{g.file}: metadata differs from the regenerated one")
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
                note = f"{g.file}: output differs from this machine's reference only by float64 round-off ({result.summary()})"
    return problems, note


def fixture_outcomes(candidate: Candidate, name: str, directory: Path | None = None) -> list[Outcome]:
    """Check an implementation on one stored fixture, in every dtype it runs: no reference run."""
    directory = Path(directory or default_dir())
    entry = next((e for e in load_manifest(directory)["fixtures"] if e["name"] == name), None)
    if entry is None:
        raise KeyError(f"no fixture named {name!r} in {directory / MANIFEST}")
    tensors, _ = read(directory / entry["file"])
    inputs = [tensors[i["tensor"]].astype(np.float64) for i in entry["inputs"]]
    weights = {k: tensors[f"weight/{k}"].astype(np.float64) for k in entry["weights"]}
    expected = tensors["output"]
    shapes = tuple(tuple(i["shape"]) for i in entry["inputs"])
    outcomes = []
    for dtype in DTYPES:
        case = Case(entry["layer"], entry["config"], shapes, entry["seed"], dtype, label=name)
        if dtype not in candidate.impl.dtypes:  # counted as not checked, never silently left out
            outcomes.append(Outcome("numerics", entry["layer"], candidate.name, dtype, NOT_IMPLEMENTED, dtype_not_declared(candidate.impl, dtype), case))
            continue
        repro = f"attnconf fixtures check --impl {candidate.ref} --only {name}"
        run = run_case(candidate, case, (inputs, weights), expected, {k: tuple(v) for k, v in entry["weights"].items()}, repro)
        outcomes += run.outcomes
    return outcomes


def check_implementation(candidate: Candidate, directory: Path | None = None, only: list[str] | None = None) -> list[Outcome]:
    names = [e["name"] for e in load_manifest(directory)["fixtures"]]
    return [o for n in names if not only or n in only for o in fixture_outcomes(candidate, n, directory)]


def folder_size(directory: Path | None = None) -> int:
    directory = Path(directory or default_dir())
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())

