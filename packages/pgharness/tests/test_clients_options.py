"""Client settings: a base URL and default headers for both clients, and skipping the lifespan.

Suites moved over from their own fixtures call the API under a prefix (``/v1``), route by
``Host`` and sometimes have a lifespan that must not run in tests (it opens its own pool).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _isolation_project import make_project
from pgharness._config import resolve_settings
from pgharness._errors import ConfigurationError

API = """
from contextlib import asynccontextmanager

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import func, select

import myapp


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Its own pool on the production database: pgharness stops it, unless the lifespan is off.
    app.state.pool = await asyncpg.create_pool("postgresql://app@db.invalid:5432/production")
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)
router = APIRouter(prefix="/v1")


@router.get("/whoami")
async def whoami(request: Request):
    async with myapp.SessionLocal() as session:
        users = await session.scalar(select(func.count(myapp.User.id)))
    return {
        "host": request.headers["host"],
        "tenant": request.headers.get("x-tenant"),
        "path": request.url.path,
        "users": users,
    }


app.include_router(router)
"""

CLIENT_INI = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
pgharness_client_base_url = http://testserver/v1
pgharness_client_headers =
    Host: api.example.com
    X-Tenant: acme
"""

TESTS = """
EXPECTED = {"host": "api.example.com", "tenant": "acme", "path": "/v1/whoami", "users": 0}


async def test_async_client(async_client):
    assert (await async_client.get("whoami")).json() == EXPECTED


def test_client(client):
    assert client.get("whoami").json() == EXPECTED
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_project(pytester, CLIENT_INI)
    pytester.makepyfile(api=API, test_api=TESTS)
    return pytester


def test_base_url_and_headers_reach_the_app_and_the_lifespan_can_be_skipped(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest(
        "-p", "no:randomly", "-o", "pgharness_app=api:app", "-o", "pgharness_lifespan=off"
    )
    result.assert_outcomes(passed=2)


def test_the_lifespan_runs_by_default(project: pytest.Pytester) -> None:
    # The same suite with the lifespan on: its own pool is stopped, in both styles.
    result = project.runpytest("-p", "no:randomly", "-o", "pgharness_app=api:app")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes().get("passed", 0) == 0
    result.stdout.fnmatch_lines(["*UnmanagedDatabaseError*db.invalid*"])


def _resolve(**values: object) -> object:
    return resolve_settings(
        option_url=None,
        ini_url=None,
        ini_schema=None,
        ini_sessionmakers=[],
        ini_app=None,
        rootpath=Path("/project"),
        environ={},
        **values,  # type: ignore[arg-type]
    )


def test_client_settings_are_read_and_default_to_testserver_with_the_lifespan() -> None:
    default = _resolve().client  # type: ignore[attr-defined]
    assert (default.base_url, default.headers, default.lifespan) == ("http://testserver", (), True)
    given = _resolve(  # type: ignore[attr-defined]
        ini_client_base_url="https://testserver/v1/",
        ini_client_headers=["", "Host: api.example.com", "Authorization: Bearer a:b"],
        ini_lifespan="OFF",
    ).client
    assert given.base_url == "https://testserver/v1"
    assert given.headers == (("Host", "api.example.com"), ("Authorization", "Bearer a:b"))
    assert given.lifespan is False


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"ini_client_base_url": "testserver/v1"},
            "pgharness_client_base_url = 'testserver/v1' is not an http(s) URL with a host. "
            "Fix: write the URL every request path is relative to, e.g. "
            "pgharness_client_base_url = http://testserver/v1.",
        ),
        (
            {"ini_client_base_url": "http://user:hunter2@testserver"},
            "pgharness_client_base_url = 'http://user:***@testserver' is not an http(s) URL",
        ),
        (
            {"ini_client_headers": ["Host: api.example.com", "Bearer hunter2"]},
            "pgharness_client_headers: line 2 is not of the form 'Name: value'. Fix: write one "
            "header per line, e.g. pgharness_client_headers = Host: api.example.com.",
        ),
        (
            {"ini_lifespan": "no"},
            "pgharness_lifespan = 'no': expected 'on' or 'off'. Fix: pgharness_lifespan = off",
        ),
    ],
    ids=["base-url", "base-url-password", "header", "lifespan"],
)
def test_a_bad_client_setting_names_itself_and_the_fix(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        _resolve(**values)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)
