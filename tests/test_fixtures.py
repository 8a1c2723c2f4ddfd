"""Golden fixtures: regenerable byte for byte, verified against drift and tampering, small."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import reference
from conformance import fixtures, safetensors_io
from conformance.contract import load_implementation
from conformance.engine import FAIL, PASS, Candidate

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


def test_regenerate_rewrites_the_committed_bytes(tmp_path):
    fixtures.regenerate(tmp_path)
    regenerated, committed = _files(tmp_path), _files(COMMITTED)
    assert regenerated.keys() == committed.keys()
    differing = [name for name in committed if committed[name] != regenerated[name]]
    # Outputs may differ in the last bit on another BLAS; everything else must be identical.
    for name in differing:
        assert name.endswith(".safetensors"), f"{name} differs after regeneration"
        stored, _ = safetensors_io.loads(committed[name])
        fresh, _ = safetensors_io.loads(regenerated[name])
        for key in stored:
            if key != "output":
                assert stored[key].tobytes() == fresh[key].tobytes(), f"{name}:{key} differs after regeneration"


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


def test_every_layer_has_its_readme_usage_and_two_small_fixtures():
    names = [e["name"] for e in fixtures.load_manifest(COMMITTED)["fixtures"]]
    for layer in reference.names():
        spec = reference.spec(layer)
        small = [n for n in names if n.startswith(f"{layer}/") and not n.endswith("/readme")]
        assert len(small) >= 2, f"{layer}: expected two small fixtures, got {small}"
        if any(ex.source == "README usage" for ex in spec.examples):
            assert f"{layer}/readme" in names


def test_fixture_holds_config_inputs_weights_output_version_and_seed():
    manifest = fixtures.load_manifest(COMMITTED)
    entry = next(e for e in manifest["fixtures"] if e["name"] == "MHSAWithPositionEmbedding/readme")
    tensors, metadata = safetensors_io.load(COMMITTED / entry["file"])
    assert hashlib.sha256((COMMITTED / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert json.loads(metadata["config"]) == entry["config"] and entry["config"]["num_heads"] == 4
    assert metadata["spec_version"] == manifest["spec_version"] == reference.SPEC_VERSION
    assert int(metadata["seed"]) == entry["seed"]
    assert tensors["input/inputs"].shape == (1, 14, 16, 256) and tensors["input/inputs"].dtype == np.float16
    assert {k.removeprefix("weight/") for k in tensors if k.startswith("weight/")} == set(reference.weight_shapes("MHSAWithPositionEmbedding", (1, 14, 16, 256), num_heads=4, key_dim=128))
    assert tensors["output"].shape == (1, 14, 16, 512) and tensors["output"].dtype == np.float64


def test_stored_output_is_the_reference_on_the_stored_values():
    for entry in fixtures.load_manifest(COMMITTED)["fixtures"]:
        tensors, _ = safetensors_io.load(COMMITTED / entry["file"])
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
        tensors, _ = safetensors_io.load(COMMITTED / entry["file"])

        class Built:
            def weight_shapes(self):
                return {k: tuple(v) for k, v in entry["weights"].items()}

            def load_weights(self, weights):
                pass

            def forward(self, *inputs):
                return tensors["output"].astype(dtype)

        return Built()
