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
from conformance.io import fixtures
from conformance.contract import load_implementation
from conformance.checks.engine import FAIL, PASS, Candidate

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


def test_regenerate_removes_stale_files(copy):
    (copy / "Old").mkdir()
    (copy / "Old" / "gone.safetensors").write_bytes(b"x")
    fixtures.regenerate(copy)
    assert not (copy / "Old").exists()


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
    assert any("manifest entry differs" in p for p in problems), problems


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
