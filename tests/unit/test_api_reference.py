"""docs/api.md is the rendering of the current OpenAPI document."""

from __future__ import annotations

from pvc.api.app import build_document
from pvc.api.reference import markdown
from tests.harness.examples import ROOT


def test_api_reference_is_current():
    doc = build_document()
    assert (ROOT / "docs" / "api.md").read_text() == markdown(doc), (
        "docs/api.md is stale: run `.venv/bin/python -m pvc.api.reference > docs/api.md`"
    )


def test_every_operation_documents_its_errors():
    doc = build_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"], (method, path)
            if op.get("security") != []:
                assert "401" in op["responses"], (method, path)
            if "requestBody" in op:
                assert "400" in op["responses"], (method, path)
