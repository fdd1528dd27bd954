"""Hostile input: schemathesis against Dashtam's own OpenAPI document, plus hand-picked cases.

Every generated request (valid and deliberately invalid) is sent in-process, authenticated,
and its response must: not be a 5xx, have a documented status and media type, match the
documented schema, and be ``application/problem+json`` when it is an error.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dashtam.core.errors import PROBLEM_MEDIA_TYPE
from dashtam.main import app
from tests.support.accounts import add_provider, connect, register_and_login

schema = schemathesis.openapi.from_dict(app.openapi()).include(path_regex=r"^/(api/v1|health)")
# Small on purpose: CI runs this with every push; raise it locally to dig deeper.
MAX_EXAMPLES = 12
_FORWARDED = ("method", "url", "headers", "params", "cookies", "json", "data")


def _errors_are_problems(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
        assert media_type == PROBLEM_MEDIA_TYPE, (
            f"{response.status_code} answered as {media_type!r}, not {PROBLEM_MEDIA_TYPE}"
        )
        body = response.json()
        assert body["status"] == response.status_code
        assert isinstance(body["title"], str)
    return None


@pytest.fixture
def auth_headers(client: TestClient) -> dict[str, str]:
    """A user with a connected sandbox provider, so listings and lookups have data."""
    account = register_and_login(client)
    connect(client, account, add_provider(client, account)["id"])
    return account.headers


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema_under_generated_input(
    case: schemathesis.Case, client: TestClient, auth_headers: dict[str, str]
) -> None:
    headers = {**(case.headers or {}), **auth_headers}
    sent = case.as_transport_kwargs(base_url="http://testserver", headers=auth_headers)
    kwargs = {key: sent[key] for key in _FORWARDED if sent.get(key)}
    if isinstance(kwargs.get("data"), bytes | str):  # raw bodies (deliberately malformed)
        kwargs["content"] = kwargs.pop("data")
    response = client.request(**kwargs)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        additional_checks=[_errors_are_problems],
        headers=headers,
    )
