"""Errors as RFC 9457 ``application/problem+json``.

Hierarchy::

    ProblemError                  any error a client should see, with its HTTP status
    ├── BadRequestError           400
    ├── UnauthorizedError         401 (adds WWW-Authenticate: Bearer)
    ├── ForbiddenError            403 (authenticated, but the request is refused)
    ├── NotFoundError             404 (also for things that exist but are not yours)
    ├── ConflictError             409
    ├── UnprocessableError        422 (with ``errors`` naming the offending fields)
    ├── TooManyRequestsError      429 (adds Retry-After)
    ├── BadGatewayError           502 (an upstream provider failed)
    └── ServiceUnavailableError   503

Services raise these; ``install_problem_handlers`` turns them, FastAPI's validation errors,
Starlette's HTTP errors and anything unexpected into problem documents. Bodies never echo
request input, so a password sent in a bad request is never reflected.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from asyncpg.exceptions import (
    InternalClientError,
    OperatorInterventionError,
    PostgresConnectionError,
)
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
_RESERVED = frozenset({"type", "title", "status", "detail", "instance"})
_log = logging.getLogger("dashtam.errors")
# lock_not_available (DASHTAM_DB_LOCK_TIMEOUT), deadlock_detected, serialization_failure.
_BUSY_SQLSTATES = frozenset({"55P03", "40P01", "40001"})
# connection_exception, insufficient_resources (too many connections), operator_intervention
# (admin shutdown, crash shutdown, "the database system is starting up / shutting down").
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class ProblemError(Exception):
    status: int = 500

    def __init__(
        self,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.title = title or _TITLES.get(self.status, "Error")
        self.headers = headers or {}
        self.extensions = extensions


class BadRequestError(ProblemError):
    status = 400


class UnauthorizedError(ProblemError):
    status = 401

    def __init__(self, detail: str = "Authentication required", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class ForbiddenError(ProblemError):
    status = 403


class NotFoundError(ProblemError):
    status = 404


class ConflictError(ProblemError):
    status = 409


class UnprocessableError(ProblemError):
    status = 422


class TooManyRequestsError(ProblemError):
    status = 429

    def __init__(self, detail: str, *, retry_at: datetime, retry_after: int, **kwargs: Any) -> None:
        super().__init__(
            detail,
            headers={"Retry-After": str(max(retry_after, 1))},
            retry_at=retry_at.isoformat(),
            **kwargs,
        )


class BadGatewayError(ProblemError):
    status = 502


class ServiceUnavailableError(ProblemError):
    status = 503


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """An RFC 9457 response; ``extensions`` become extra members (never type/title/status)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if k not in _RESERVED})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        instance=request.url.path,
        headers=exc.headers,
        **{k: v for k, v in exc.extensions.items() if k not in _RESERVED},
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    return problem_response(
        422,
        "The request has invalid fields: see errors.",
        instance=request.url.path,
        errors=errors,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == _TITLES.get(exc.status_code):
        detail = None
    return problem_response(
        exc.status_code, detail, instance=request.url.path, headers=dict(exc.headers or {})
    )


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if isinstance(getattr(exc.orig, "__cause__", None), InternalClientError):
        # SQLAlchemy 2.1 wraps the error that 2.0 lets through unwrapped.
        return await _on_connection_left_mid_operation(request, exc)
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", "") or "")
    if sqlstate.startswith("22"):
        # Input that slipped past validation and that PostgreSQL cannot store (e.g. a NUL byte).
        _log.warning("database refused input on %s %s", request.method, request.url.path)
        return problem_response(
            422, "The request holds a value the database cannot store.", instance=request.url.path
        )
    if sqlstate in _BUSY_SQLSTATES:
        _log.warning("database busy (%s) on %s %s", sqlstate, request.method, request.url.path)
        return problem_response(
            503,
            "The resource is busy with another request; retry shortly.",
            instance=request.url.path,
            headers={"Retry-After": "1"},
        )
    if (
        exc.connection_invalidated
        or isinstance(exc, OperationalError | InterfaceError)
        or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    ):
        return _unavailable(request)
    return await _on_unexpected(request, exc)


async def _on_database_unreachable(request: Request, exc: Exception) -> JSONResponse:
    # Pool exhausted past DASHTAM_DB_POOL_TIMEOUT, connect refused or timed out (server down).
    return _unavailable(request)


async def _on_connection_left_mid_operation(request: Request, exc: Exception) -> JSONResponse:
    # A pooled asyncpg connection whose query was cut off by a server restart refuses the
    # pool's ping ("another operation is in progress"); SQLAlchemy discards the connection, so
    # the next request connects afresh. The same error from a session shared between tasks
    # would be a bug, hence the traceback in the log.
    _log.error(
        "database connection unusable on %s %s", request.method, request.url.path, exc_info=exc
    )
    return _unavailable(request)


def _unavailable(request: Request) -> JSONResponse:
    _log.warning("database unavailable on %s %s", request.method, request.url.path)
    return problem_response(
        503,
        "The database is unavailable; retry shortly.",
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "An unexpected error occurred.", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(DBAPIError, _on_database_error)
    # asyncpg's own errors, which SQLAlchemy lets through while the server restarts ("the
    # database system is starting up", a connection closed under a query; under 2.0 also a
    # connection left mid-operation, which 2.1 wraps: see _on_database_error).
    for unreachable in (
        SQLAlchemyTimeoutError,
        OSError,
        TimeoutError,
        OperatorInterventionError,
        PostgresConnectionError,
    ):
        app.add_exception_handler(unreachable, _on_database_unreachable)
    app.add_exception_handler(InternalClientError, _on_connection_left_mid_operation)
    app.add_exception_handler(Exception, _on_unexpected)
