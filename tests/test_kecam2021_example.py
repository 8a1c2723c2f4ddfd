"""The 2021 code itself (examples/kecam2021_adapter.py: keras-cv-attention-models 1.0.4 on
Keras 2) checked beside the bundled Keras 3 implementation in one run, the Keras 2 side in a
worker process with TF_USE_LEGACY_KERAS=1.

The 2021 package and tf_keras are not dependencies (not even optional ones: see
docs/kecam2021.md), so the tests that run it skip without them. Install them with
``pip install --no-deps keras-cv-attention-models==1.0.4 tf_keras==2.21.0``, or into a folder named
by ATTNCONF_KECAM2021_PATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import reference
from conformance.checks import expectations
from tests.example_deviations import assert_deviations_explained
from conformance.checks.engine import ERROR, FAIL, KNOWN, Candidate
from conformance.contract import _import_file, load_implementation
from conformance.isolation import IsolatedImplementation
from conformance.runners.runner import CheckSettings, check

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "examples" / "kecam2021_adapter.py"
EXPECTED = ROOT / "examples" / "kecam2021_expected.toml"
adapter = _import_file(str(ADAPTER))

needs_kecam2021 = pytest.mark.skipif(
    bool(adapter.installed()),
    reason=f"not installed: {adapter.installed()} (pip install --no-deps keras-cv-attention-models=={adapter.VERSION} tf_keras, "
    f"or a --target folder named by {adapter.PATH_VARIABLE}); never a dependency of the suite",
)


def test_deviations_file_is_valid_and_explained():
    # Needs nothing installed: the file names only this adapter (or its pair with tf) and real
    # layers, and every layer it names is explained in docs/kecam2021.md.
    assert_deviations_explained(EXPECTED, ROOT / "docs" / "kecam2021.md", {"kecam2021", "tf vs kecam2021"}, {*reference.names(), "*"}, min_reason=40)


def test_the_declaration_imports_no_framework_and_asks_for_legacy_keras():
    impl = adapter.implementation()
    assert impl.isolation["env"]["TF_USE_LEGACY_KERAS"] == "1"
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
            impl.not_implemented()


@needs_kecam2021
def test_one_command_checks_keras_3_and_the_2021_keras_2_code_with_its_deviations_known():
    spec = f"{ADAPTER}:implementation"
    kecam = load_implementation(spec)
    try:
        assert isinstance(kecam, IsolatedImplementation) and kecam.name == "kecam2021"
        assert kecam.dtypes == ("float32", "float64")
        layers = ["BiasLayer", "mlp_block", "MHSAWithPositionEmbedding"]
        deviations = [d for d in expectations.load(EXPECTED) if d.layer in ("*", *layers)]
        candidates = [Candidate("tf", load_implementation("tf")), Candidate(spec, kecam)]
        result = check(candidates, layers, CheckSettings(examples=1, expected=deviations), progress=lambda m: None)
        assert not result.failed, "\n\n".join(o.detail for o in result.failures)[:4000]
        assert result.count(KNOWN)  # the 2021 side-of-1 reshape, the float64 gelu, the missing validation
        assert {s for (_, s, _, _) in result.tallies} >= {"tf", "kecam2021", "tf vs kecam2021"}
        # without the declarations the same 2021 behaviour fails
        bare = check(candidates, ["MHSAWithPositionEmbedding"], CheckSettings(examples=1, cross=False, training=False), progress=lambda m: None)
        assert any(o.impl == "kecam2021" and o.status in (FAIL, ERROR) for o in bare.failures)
    finally:
        kecam.close()
