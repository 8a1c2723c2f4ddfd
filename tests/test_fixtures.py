"""Golden fixtures: regenerable byte for byte, verified against drift and tampering, small."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as safetensors_bytes

import reference
from conformance.cli import main
from conformance.io import fixtures
from conformance.contract import load_implementation
from conformance.checks.engine import ERROR, FAIL, PASS, Candidate
from conformance.checks.tolerances import DTYPES, TOLERANCES

COMMITTED = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def copy(tmp_path) -> Path:
    target = tmp_path / "fixtures"
    shutil.copytree(COMMITTED, target)
    return target


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_committed_fixtures_verify():
    problems, _ = fixtures.verify(COMMITTED)
    assert problems == []


def test_regenerating_the_committed_fixtures_changes_no_byte(copy):
    fixtures.regenerate(copy)
    after, committed = _files(copy), _files(COMMITTED)
    assert after.keys() == committed.keys()
    changed = [name for name in committed if committed[name] != after[name]]
    assert changed == [], f"regenerating an unchanged spec rewrote {changed}"


def _perturb_last_bits(path: Path, ulps: int) -> None:
    """Rewrite a fixture's float64 output moved by ``ulps`` units in the last place, element by
    element with alternating signs: what another CPU's BLAS may produce."""
    tensors, metadata = fixtures.read(path)
    output = tensors["output"]
    signs = np.where(np.arange(output.size).reshape(output.shape) % 2 == 0, 1.0, -1.0)
    tensors["output"] = output + signs * ulps * np.spacing(output)
    path.write_bytes(safetensors_bytes(tensors, metadata={fixtures.METADATA_KEY: json.dumps(metadata, sort_keys=True, separators=(",", ":"))}))


def _refresh_manifest_digests(directory: Path) -> None:
    manifest = json.loads((directory / fixtures.MANIFEST).read_text())
    for entry in manifest["fixtures"]:
        data = (directory / entry["file"]).read_bytes()
        entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (directory / fixtures.MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")


def test_fixtures_written_on_another_machine_survive_regeneration_here(copy):
    # Another machine's round-off in every output, with a manifest consistent with it: what a
    # checkout holds when the fixtures were last regenerated on a different CPU or BLAS.
    for path in copy.rglob("*.safetensors"):
        _perturb_last_bits(path, ulps=3)
    _refresh_manifest_digests(copy)
    before = _files(copy)
    problems, notes = fixtures.verify(copy)
    assert problems == [] and notes, (problems, notes)
    fixtures.regenerate(copy)
    changed = [name for name, data in _files(copy).items() if before.get(name) != data]
    assert changed == [], f"round-off alone made regeneration rewrite {changed}"


def test_regeneration_rewrites_an_output_that_changed_beyond_round_off(copy):
    target = copy / "ChannelAffine" / "small_feature_map.safetensors"
    _perturb_last_bits(target, ulps=2**20)
    _refresh_manifest_digests(copy)
    problems, _ = fixtures.verify(copy)
    assert any("ChannelAffine/small_feature_map.safetensors: output drifted" in p for p in problems), problems
    drifted = target.read_bytes()
    fixtures.regenerate(copy)
    assert target.read_bytes() != drifted, "the drifted output was kept"
    assert fixtures.verify(copy)[0] == []


def test_regenerate_twice_gives_identical_bytes(tmp_path):
    fixtures.regenerate(tmp_path / "a")
    fixtures.regenerate(tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_regenerate_removes_stale_files_and_names_them(copy, capsys):
    (copy / "Old").mkdir()
    (copy / "Old" / "gone.safetensors").write_bytes(b"x")
    assert main(["fixtures", "regenerate", "--dir", str(copy)]) == 0
    assert not (copy / "Old").exists()
    out = capsys.readouterr().out
    assert "removed: Old/gone.safetensors" in out and "0 rewritten, 0 new, 1 removed" in out, out


def test_regenerate_refuses_a_folder_that_is_not_a_fixtures_folder(tmp_path, capsys):
    model = tmp_path / "models" / "llama" / "model.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    with pytest.raises(fixtures.FixtureFolderError, match="no manifest.json"):
        fixtures.regenerate(tmp_path / "models")
    assert main(["fixtures", "regenerate", "--dir", str(tmp_path / "models")]) == 2
    assert "not a fixtures folder" in capsys.readouterr().err
    assert model.read_bytes() == b"weights"
    # An empty folder is fine to fill.
    (tmp_path / "empty").mkdir()
    report = fixtures.regenerate(tmp_path / "empty")
    assert len(report.new) == len(report.generated) > 0 and not report.removed


def test_regenerate_says_what_changed_beyond_round_off(copy, capsys):
    target = copy / "ChannelAffine" / "small_feature_map.safetensors"
    _perturb_last_bits(target, ulps=2**20)
    _perturb_last_bits(copy / "BiasLayer" / "small_tokens.safetensors", ulps=3)
    _refresh_manifest_digests(copy)
    before = _files(copy)
    # --check writes nothing and fails, as CI wants.
    assert main(["fixtures", "regenerate", "--dir", str(copy), "--check"]) == 1
    assert _files(copy) == before
    assert main(["fixtures", "regenerate", "--dir", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "would be rewritten: ChannelAffine/small_feature_map.safetensors: output drifted" in out, out
    assert "\nrewritten: ChannelAffine/small_feature_map.safetensors: output drifted" in out, out
    assert "BiasLayer/small_tokens" not in out, "a round-off difference is no change"
    assert "kept within float64 round-off, 1 rewritten, 0 new, 0 removed" in out, out
    assert main(["fixtures", "regenerate", "--dir", str(copy), "--check"]) == 0


def test_folder_stays_within_budget():
    assert fixtures.folder_size(COMMITTED) < fixtures.SIZE_BUDGET_BYTES


def test_every_layer_has_its_readme_configuration_and_two_small_fixtures():
    entries = fixtures.load_manifest(COMMITTED)["fixtures"]
    for layer in reference.names():
        spec = reference.spec(layer)
        mine = [e for e in entries if e["layer"] == layer]
        small = [e["name"] for e in mine if not e["example"].startswith("readme")]
        assert len(small) >= 2, f"{layer}: expected two small fixtures, got {small}"
        for example in spec.examples:
            if example.source == "README usage":
                # The README's own input may be too large to store; its configuration is not.
                configs = [e["config"] for e in mine]
                want = reference.validate(layer, *example.input_shapes, **example.config)
                assert json.loads(json.dumps(want)) in configs, f"{layer}: no fixture holds the README configuration {example.config}"


def test_fixture_holds_config_inputs_weights_output_version_and_seed():
    manifest = fixtures.load_manifest(COMMITTED)
    entry = next(e for e in manifest["fixtures"] if e["name"] == "MHSAWithPositionEmbedding/readme")
    tensors, metadata = fixtures.read(COMMITTED / entry["file"])
    assert hashlib.sha256((COMMITTED / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert metadata["config"] == entry["config"] and entry["config"]["num_heads"] == 4
    assert metadata["spec_version"] == manifest["spec_version"] == reference.SPEC_VERSION
    assert metadata["seed"] == entry["seed"]
    assert tensors["input/inputs"].shape == (1, 14, 16, 256) and tensors["input/inputs"].dtype == np.float16
    assert {k.removeprefix("weight/") for k in tensors if k.startswith("weight/")} == set(reference.weight_shapes("MHSAWithPositionEmbedding", (1, 14, 16, 256), num_heads=4, key_dim=128))
    assert tensors["output"].shape == (1, 14, 16, 512) and tensors["output"].dtype == np.float64


def test_stored_output_is_the_reference_on_the_stored_values():
    for entry in fixtures.load_manifest(COMMITTED)["fixtures"]:
        tensors, _ = fixtures.read(COMMITTED / entry["file"])
        inputs = [tensors[i["tensor"]] for i in entry["inputs"]]
        weights = {k: tensors[f"weight/{k}"] for k in entry["weights"]}
        got = reference.forward(entry["layer"], *inputs, weights=weights, **entry["config"])
        np.testing.assert_allclose(got, tensors["output"], rtol=1e-13, atol=1e-13, err_msg=entry["name"])


def test_verify_catches_a_flipped_byte(copy):
    target = copy / "BiasLayer" / "small_tokens.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    problems, _ = fixtures.verify(copy)
    assert any("BiasLayer/small_tokens.safetensors: sha256" in p for p in problems), problems
    # Tensors are stored in name order, so the last byte belongs to weight/bias.
    assert any("weight/bias differs from the regenerated values" in p for p in problems), problems


def test_verify_catches_missing_and_extra_files(copy):
    (copy / "mlp_block" / "small_gelu.safetensors").unlink()
    shutil.copy(copy / "BiasLayer" / "small_tokens.safetensors", copy / "BiasLayer" / "extra.safetensors")
    problems, _ = fixtures.verify(copy)
    assert "mlp_block/small_gelu.safetensors: listed in the manifest but missing" in problems
    assert "BiasLayer/extra.safetensors: on disk but not in the manifest" in problems


def test_verify_catches_an_edited_manifest(copy):
    manifest = json.loads((copy / fixtures.MANIFEST).read_text())
    manifest["fixtures"][0]["config"]["num_heads"] = 5
    (copy / fixtures.MANIFEST).write_text(json.dumps(manifest))
    problems, _ = fixtures.verify(copy)
    name = manifest["fixtures"][0]["name"]
    assert any(p.startswith(f"{name}: manifest entry differs from the regenerated one: config: stored ") and '"num_heads":5' in p for p in problems), problems


def _edit_manifest(directory: Path, edit) -> None:
    manifest = json.loads((directory / fixtures.MANIFEST).read_text())
    edit(manifest)
    (directory / fixtures.MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m.update(layout="channels-first"), 'top level: layout: stored "channels-first", regenerated "tensors channels-last'),
    (lambda m: m.update(values="anything"), 'top level: values: stored "anything"'),
    (lambda m: m.update(format="npz"), 'top level: format: stored "npz", regenerated "safetensors"'),
    (lambda m: m.update(extra=1), "top level: extra: stored 1, not in the regenerated one"),
    (lambda m: m["tolerances"]["float32"].update(atol=1.0), "top level: tolerances: stored"),
    (lambda m: m["fixtures"].append(dict(m["fixtures"][0])), "anti_alias_downsample/documented_config: listed more than once in manifest.json"),
    (lambda m: m["fixtures"][0].update(bytes=m["fixtures"][0]["bytes"] + 1), "anti_alias_downsample/documented_config.safetensors: 29392 bytes, the manifest says 29393"),
    (lambda m: m["fixtures"].reverse(), "manifest.json: fixtures are not in the regenerated order"),
])
def test_verify_compares_the_whole_manifest(copy, edit, expected):
    _edit_manifest(copy, edit)
    problems, _ = fixtures.verify(copy)
    assert any(expected in p for p in problems), problems


def test_verify_lists_every_extra_file_and_folder(copy):
    (copy / "README.txt").write_text("x")
    (copy / "BiasLayer" / "notes.json").write_text("{}")
    (copy / "empty").mkdir()
    problems, _ = fixtures.verify(copy)
    for expected in ("README.txt: on disk but not in the manifest", "BiasLayer/notes.json: on disk but not in the manifest", "empty/: empty folder, not part of the fixtures"):
        assert expected in problems, problems


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m["fixtures"][1].pop("sha256"), "manifest.json: anti_alias_downsample/small_odd_sides: field 'sha256' is missing"),
    (lambda m: m["fixtures"][1].pop("file"), "manifest.json: anti_alias_downsample/small_odd_sides: field 'file' is missing"),
    (lambda m: m["fixtures"][1].pop("name"), "manifest.json: fixtures[1]: field 'name' is missing"),
    (lambda m: m["fixtures"][1].update(bytes="1618"), "manifest.json: anti_alias_downsample/small_odd_sides: field 'bytes' is \"1618\", not an integer"),
    (lambda m: m["fixtures"].__setitem__(1, "x"), "manifest.json: fixtures[1] is a str, not an object"),
    (lambda m: m.update(fixtures={}), "manifest.json: fixtures is {}, not a list"),
])
def test_verify_reports_a_malformed_manifest_in_one_line(copy, edit, expected):
    _edit_manifest(copy, edit)
    problems, _ = fixtures.verify(copy)
    assert expected in problems, problems


def test_verify_reports_a_manifest_that_is_not_json(copy):
    (copy / fixtures.MANIFEST).write_text("{not json")
    problems, _ = fixtures.verify(copy)
    assert len(problems) == 1 and problems[0].startswith("manifest.json is not valid JSON"), problems
    (copy / fixtures.MANIFEST).write_text("[]")
    assert fixtures.verify(copy)[0] == ["manifest.json is a JSON list, not an object"]


def test_verify_names_the_metadata_that_differs(copy):
    target = copy / "BiasLayer" / "small_tokens.safetensors"
    tensors, metadata = fixtures.read(target)
    target.write_bytes(safetensors_bytes(tensors, metadata={fixtures.METADATA_KEY: json.dumps({**metadata, "seed": 7}, sort_keys=True, separators=(",", ":"))}))
    _refresh_manifest_digests(copy)
    problems, _ = fixtures.verify(copy)
    assert f"BiasLayer/small_tokens.safetensors: metadata differs from the regenerated one: seed: stored 7, regenerated {metadata['seed']}" in problems, problems


def test_verify_summarises_round_off_in_one_line(copy, capsys):
    for path in sorted(copy.rglob("*.safetensors"))[:3]:
        _perturb_last_bits(path, ulps=3)
    _refresh_manifest_digests(copy)
    assert main(["fixtures", "verify", "--dir", str(copy)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "fixtures differ from this machine's reference only by float64 round-off (largest: " in notes[0], notes
    count = int(notes[0].split()[1])
    assert main(["fixtures", "verify", "--dir", str(copy), "--verbose"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 + count >= 4, notes


def test_manifest_states_dtypes_and_tolerances_for_other_languages():
    manifest = fixtures.load_manifest(COMMITTED)
    assert manifest["dtypes"] == list(DTYPES)
    assert manifest["tolerances"] == {d: {"atol": TOLERANCES[d].atol, "rtol": TOLERANCES[d].rtol} for d in DTYPES}
    assert manifest["tolerance_overrides"] == {} and "atol * scale + rtol * |expected|" in manifest["tolerance_rule"]
    docs = COMMITTED.parent / "docs" / "fixtures.md"
    assert docs.is_file() and "docs/fixtures.md" in (COMMITTED.parent / "README.md").read_text()


def test_tolerance_rule_as_documented_agrees_with_compare():
    # The manifest's rule, written out in plain NumPy as another language would, must give
    # compare's verdict: just inside and just outside the float32 bound.
    from conformance.checks.compare import compare, output_scale

    manifest = fixtures.load_manifest(COMMITTED)
    expected = fixtures.read(COMMITTED / "BiasLayer" / "small_tokens.safetensors")[0]["output"]
    t = manifest["tolerances"]["float32"]
    scale = np.sqrt(np.mean(expected**2))
    for factor in (0.99, 1.01):
        got = expected + factor * (t["atol"] * scale + t["rtol"] * np.abs(expected))
        mine = bool(np.all(np.abs(got - expected) <= t["atol"] * scale + t["rtol"] * np.abs(expected)))
        assert mine == compare(got, expected, TOLERANCES["float32"], scale=output_scale(expected)).ok == (factor < 1)


def test_verify_catches_reference_drift(copy, monkeypatch):
    # A semantic change far below float32 resolution must still be caught.
    from reference import _registry

    spec = reference.spec("ChannelAffine")
    drifted = dataclasses.replace(spec, forward=lambda *a, **k: spec.forward(*a, **k) * (1 + 1e-9))
    monkeypatch.setitem(_registry._SPECS, "ChannelAffine", drifted)
    problems, _ = fixtures.verify(copy)
    assert problems and all("ChannelAffine" in p and "output drifted" in p for p in problems), problems


def test_implementation_checked_against_fixtures_alone(monkeypatch):
    # Fixture checks must not run the reference forward: make it explode.
    def no_reference(*args, **kwargs):
        raise AssertionError("the reference was called")

    monkeypatch.setattr(reference, "forward", no_reference)
    candidate = Candidate("numpy", load_implementation("numpy"))
    monkeypatch.setattr(candidate.impl, "build", _StoredOutputImpl.build)
    outcomes = fixtures.check_implementation(candidate, COMMITTED)
    assert outcomes and all(o.status == PASS for o in outcomes), [o.detail for o in outcomes if o.status == FAIL]


def test_fixture_check_reports_a_corrupt_file_not_the_implementation(copy):
    target = copy / "BiasLayer" / "small_tokens.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    candidate = Candidate("numpy", load_implementation("numpy"))
    outcomes = fixtures.check_implementation(candidate, copy, ["BiasLayer/small_tokens"])
    assert outcomes and all(o.status == ERROR and o.check == "fixture" for o in outcomes), [(o.check, o.status) for o in outcomes]
    assert f"{target} is corrupt: sha256" in outcomes[0].detail and f"attnconf fixtures verify --dir {copy}" in outcomes[0].detail


def test_fixture_failures_reproduce_with_the_folder_used(copy, monkeypatch):
    candidate = Candidate("numpy", load_implementation("numpy"))
    build = candidate.impl.build

    def zero_output(*args):
        built = build(*args)
        forward = built.forward
        built.forward = lambda *x: np.zeros_like(np.asarray(forward(*x)))
        return built

    monkeypatch.setattr(candidate.impl, "build", zero_output)
    failed = [o for o in fixtures.fixture_outcomes(candidate, "BiasLayer/small_tokens", copy) if o.status == FAIL]
    assert failed and all(f"attnconf fixtures check --impl numpy --only BiasLayer/small_tokens --dir {copy}" in o.detail for o in failed)
    failed = [o for o in fixtures.fixture_outcomes(candidate, "BiasLayer/small_tokens", COMMITTED) if o.status == FAIL]
    assert failed and all(o.detail.endswith("--only BiasLayer/small_tokens") for o in failed)


class _StoredOutputImpl:
    """Answers each fixture with its own stored output: passes iff the plumbing is right."""

    @staticmethod
    def build(layer, config, input_shapes, dtype):
        entry = next(e for e in fixtures.load_manifest(COMMITTED)["fixtures"] if e["layer"] == layer and e["config"] == dict(config) and [tuple(i["shape"]) for i in e["inputs"]] == [tuple(s) for s in input_shapes])
        tensors, _ = fixtures.read(COMMITTED / entry["file"])

        class Built:
            def weight_shapes(self):
                return {k: tuple(v) for k, v in entry["weights"].items()}

            def load_weights(self, weights):
                pass

            def forward(self, *inputs):
                return tensors["output"].astype(dtype)

        return Built()
