"""The third-party example (examples/timm_adapter.py, timm's layers) and the adapter guide's
smallest adapter (docs/writing-an-adapter.md) run through the suite.

timm is an optional extra that CI does not install: the timm tests skip without it. The guide's
example needs only torch and runs everywhere.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import reference
from conformance.checks import expectations
from tests.example_deviations import assert_deviations_explained
from conformance.checks.engine import ERROR, FAIL, KNOWN, PASS, Candidate
from conformance.contract import load_implementation
from conformance.runners.runner import CheckSettings, check

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "examples" / "timm_adapter.py"
EXPECTED = ROOT / "examples" / "timm_expected.toml"
GUIDE = ROOT / "docs" / "writing-an-adapter.md"

needs_timm = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None,
    reason="timm is not installed: it is the optional extra attnconf[timm] (pip install -e '.[timm]'), which CI does not install",
)

TIMM_LAYERS = {
    "anti_alias_downsample", "batchnorm_with_activation", "se_module", "MHSAWithPositionEmbedding",
    "ConvPositionalEncoding", "ConvRelativePositionalEncoding", "layer_norm", "HaloAttention", "rsoftmax",
    "split_attention_conv2d", "outlook_attention", "mlp_block", "mixer_block", "ChannelAffine", "spatial_gating_block",
}


def _candidates():
    return [Candidate(f"{ADAPTER}:{attribute}", load_implementation(f"{ADAPTER}:{attribute}")) for attribute in ("implementation", "timm_defaults")]


def _quiet(_message: str) -> None:
    pass


def test_deviations_file_is_valid_and_explained():
    # Needs no timm: the file names only the adapter's two implementations and layers it
    # implements, and every entry is explained in docs/timm.md.
    assert_deviations_explained(EXPECTED, ROOT / "docs" / "timm.md", {"timm", "timm-defaults"}, TIMM_LAYERS)


@needs_timm
def test_adapter_fulfils_the_contract():
    for candidate in _candidates():
        impl = candidate.impl
        assert impl.layout == "channels_first"
        assert set(reference.names()) - set(impl.not_implemented()) == TIMM_LAYERS
        with pytest.raises(NotImplementedError, match="no CoTNet"):
            impl.build("cot_attention", {}, ((1, 4, 4, 8),), "float64")
        with pytest.raises(ValueError, match="num_heads 0 must be >= 1"):
            impl.build("MHSAWithPositionEmbedding", {"num_heads": 0}, ((1, 3, 3, 4),), "float64")
        with pytest.raises(NotImplementedError, match="only relative position tables"):
            impl.build("MHSAWithPositionEmbedding", {"relative": False}, ((1, 3, 3, 4),), "float64")
        # Fused and grouped weights are split by rows: the README's MHSA lists the README's shapes.
        built = impl.build("MHSAWithPositionEmbedding", {"num_heads": 4, "key_dim": 128}, ((1, 14, 16, 256),), "float32")
        assert built.weight_shapes() == reference.weight_shapes("MHSAWithPositionEmbedding", (1, 14, 16, 256), num_heads=4, key_dim=128)


@needs_timm
def test_timm_without_torchvision_leaves_no_stand_in():
    import sys

    _candidates()
    assert "timm.models.volo" in sys.modules
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules


# Layers whose documented examples and edge cases reach every kind of outcome the example has:
# clean passes, unsupported configs (timm), known numerics / weights / output-shape / error
# deviations (timm-defaults) and a known init deviation (both).
CHECKED_LAYERS = ["anti_alias_downsample", "se_module", "MHSAWithPositionEmbedding", "ChannelAffine", "layer_norm"]


@needs_timm
def test_timm_example_runs_green_with_exactly_its_known_deviations():
    deviations = [d for d in expectations.load(EXPECTED) if d.layer in CHECKED_LAYERS]
    result = check(_candidates(), CHECKED_LAYERS, CheckSettings(examples=5, cross=False, expected=deviations), progress=_quiet)
    unexpected = [o.detail for o in result.failures if o.status in (FAIL, ERROR)]
    assert not unexpected, "failures the deviations file does not declare:\n" + "\n\n".join(unexpected)
    assert result.count(FAIL, ERROR) == 0
    assert not result.stale, "deviations that matched no failure: " + "; ".join(d.describe() for d in result.stale)
    assert result.count(KNOWN) > 0 and result.count(PASS) > 0
    # The 'timm' implementation fails nothing in these layers but ChannelAffine's initial value.
    known_on_timm = {(layer, check_name) for (layer, subject, check_name, _), t in result.tallies.items() if subject == "timm" and t.count(KNOWN)}
    assert known_on_timm == {("ChannelAffine", "init")}


def _guide_example() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## The smallest adapter", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_guides_smallest_adapter_runs(tmp_path):
    path = tmp_path / "my_adapter.py"
    path.write_text(_guide_example(), encoding="utf-8")
    ref = f"{path}:implementation"
    impl = load_implementation(ref)
    assert impl.name == "mylib"
    result = check([Candidate(ref, impl)], ["mlp_block", "layer_norm"], CheckSettings(examples=5, cross=False), progress=_quiet)
    assert result.count(FAIL, ERROR) == 0, [o.detail for o in result.failures]
    assert result.count(PASS) > 0
