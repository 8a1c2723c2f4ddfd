"""docs/layers.md is generated from the layer declarations and must be current."""

from conformance.reports import docs

import reference


def test_generated_layer_docs_are_up_to_date():
    assert docs.default_path().read_text(encoding="utf-8") == docs.render(), "docs/layers.md is stale: run `attnconf docs`"


def test_every_layer_parameter_and_rejection_is_documented():
    text = docs.render()
    for name in reference.names():
        spec = reference.spec(name)
        assert f"## {name}" in text
        for param in spec.params:
            assert f"`{param.name}`" in text
        for rejection in spec.rejections:
            assert rejection.message in text, f"{name}: rejection {rejection.message!r} is not in the docs"
