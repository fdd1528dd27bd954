"""What a request gets when PostgreSQL goes away under it: a 503 problem+json, never a 500.

The errors here are the ones asyncpg raises itself while the server restarts, which SQLAlchemy
2.0 lets through unwrapped and 2.1 wraps in part (a restart under load produced each of them;
see ``tests/api/test_database_restart.py``).
"""

from __future__ import annotations

import pytest
from asyncpg.exceptions import (
    CannotConnectNowError,
    InternalClientError,
    OperatorInterventionError,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import InternalError

from dashtam.core.errors import PROBLEM_MEDIA_TYPE, install_problem_handlers


def _app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


def _wrapped_as_sqlalchemy_2_1_does(error: Exception) -> InternalError:
    """SQLAlchemy 2.1 translates the driver's error (``raise ... from error``) and wraps that."""
    translated = Exception(str(error))
    translated.__cause__ = error
    return InternalError("SELECT 1", None, translated)


@pytest.mark.parametrize(
    "error",
    [
        InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        _wrapped_as_sqlalchemy_2_1_does(
            InternalClientError("cannot switch to state 15; another operation (2) is in progress")
        ),
        CannotConnectNowError("the database system is starting up"),
        OperatorInterventionError("terminating connection due to administrator command"),
        ConnectionResetError("connection reset by peer"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_trouble_is_a_503_problem_with_retry_after(error: Exception) -> None:
    with TestClient(_app_raising(error), raise_server_exceptions=True) as client:
        response = client.get("/boom")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "The database is unavailable; retry shortly."


def test_anything_else_is_a_500_problem_that_says_nothing_of_the_error() -> None:
    app = _app_raising(RuntimeError("secret internals"))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "secret" not in response.text
