"""The committed CRD and the documentation's field table are what `make crds` generates now."""

from pathlib import Path

import yaml

from mlmodel_operator import crdgen

REPO = Path(__file__).resolve().parents[2]


def test_committed_crd_is_generated_from_api() -> None:
    committed = (REPO / "crds" / crdgen.CRD_FILE).read_text()
    assert committed == crdgen.render_crd(), "crds/ is stale: run `make crds`"


def test_docs_field_table_is_generated_from_api() -> None:
    assert crdgen.main(["--root", str(REPO), "--check"]) == 0, "docs are stale: run `make crds`"


def _descriptions_missing(schema: dict, path: str) -> list[str]:
    missing = [] if schema.get("description") else [path]
    for name, prop in schema.get("properties", {}).items():
        missing += _descriptions_missing(prop, f"{path}.{name}")
    if "items" in schema:
        missing += _descriptions_missing(schema["items"], f"{path}[]")
    return missing


def test_every_field_has_a_description() -> None:
    root = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = _descriptions_missing(root["properties"]["spec"], "spec")
    missing += _descriptions_missing(root["properties"]["status"], "status")
    assert not missing


def test_crd_renders_as_yaml_round_trip() -> None:
    assert yaml.safe_load(crdgen.render_crd()) == crdgen.build_crd()
