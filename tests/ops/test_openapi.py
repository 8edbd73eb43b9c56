"""``GET /api/openapi.json``: every route documented, every documented path served, valid 3.1."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from server import openapi
from tests.helpers.leader import leader_in_process

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def served(app_routes: list[Any]) -> set[tuple[str, str]]:
    return {
        (route.path_format, method.lower())
        for route in app_routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item}


def refs(node: Any) -> list[str]:
    """Every $ref in a JSON document."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


async def test_the_leader_serves_a_document_of_exactly_its_routes(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path) as farm:
        async with farm.http(None) as http:  # no token needed, like /healthz
            response = await http.get("/api/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        doc = response.json()
        app_routes = farm.server.config.app.routes
    assert doc["openapi"] == "3.1.0"
    assert documented(doc) == served(app_routes)
    assert ("/api/jobs/{job_id}/move", "post") in documented(doc)
    assert ("/metrics", "get") in documented(doc)


def test_each_route_says_what_it_takes_and_answers() -> None:
    from server.app import create_app
    from server.config import LeaderSettings

    doc = openapi.document(create_app(LeaderSettings(Path("d"), Path("r"))).routes)
    submit = doc["paths"]["/api/jobs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSpec"
    }
    assert set(submit["responses"]) >= {"200", "201", "401", "422"}
    listing = doc["paths"]["/api/jobs"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"] == {"type": "array", "items": {"$ref": "#/components/schemas/JobView"}}
    spec = doc["components"]["schemas"]["JobSpec"]
    # A number 0-100, or none: the submitter's default.
    number, none = spec["properties"]["priority"]["anyOf"]
    assert (number["minimum"], number["maximum"], none) == (0, 100, {"type": "null"})
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/api/nodes"]["get"]  # the document's bearer token
    # Every $ref points at something that is there.
    for ref in refs(doc):
        kind, name = ref.removeprefix("#/components/").split("/")
        assert name in doc["components"][kind], ref
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for path, item in doc["paths"].items():
        assert set(item) <= METHODS, path
        for op in item.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path


def test_a_route_without_an_entry_is_an_error() -> None:
    async def secret(request: Any) -> Any:
        raise AssertionError

    with pytest.raises(KeyError, match="secret"):
        openapi.document([Route("/api/secret", secret, methods=["GET"])])


@pytest.mark.skipif(
    importlib.util.find_spec("openapi_spec_validator") is None,
    reason="openapi-spec-validator is not installed (the checks above still ran)",
)
def test_the_document_passes_the_openapi_validator() -> None:
    from openapi_spec_validator import validate

    from server.app import create_app
    from server.config import LeaderSettings

    validate(openapi.document(create_app(LeaderSettings(Path("d"), Path("r"))).routes))
