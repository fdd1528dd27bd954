"""The OpenAPI document states every error as ``application/problem+json``.

FastAPI documents validation errors as ``application/json`` ``HTTPValidationError``, and
nothing else; Dashtam answers every error with an RFC 9457 problem. This adds the ``Problem``
schema and, per operation, the problem responses it can give: 401 when it needs a bearer
token, 404 when it names a resource by id, 422 for invalid input, 503 when the database is
unavailable, and a ``default`` problem for the rest (400, 409, 429, 502). The built-in
sandbox authorization server speaks RFC 6749 errors instead and is left as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dashtam.core.errors import PROBLEM_MEDIA_TYPE

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; extra members depend on the problem.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
_UNDOCUMENTED_PREFIXES = ("/sandbox/",)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}


def _add_problems(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = _PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        if path.startswith(_UNDOCUMENTED_PREFIXES):
            continue
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if status[:1] in {"4", "5"}:
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
            if operation.get("security"):
                responses.setdefault("401", _problem("Missing, invalid or expired access token"))
            if "{" in path:
                responses.setdefault("404", _problem("No such resource (or not yours)"))
            if operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("422", _problem("Invalid input: see errors"))
            responses.setdefault("503", _problem("The database is unavailable; retry"))
            responses.setdefault("default", _problem("Any other error, as a problem document"))


def install_problem_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` document problem responses (computed once, then cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_problems(build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
