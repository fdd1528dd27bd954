"""Apps whose lifespan does not go to plan, and a factory that returns no app.

Servers treat an app that raises on the lifespan scope as one without lifespan support, and
fail the start (or the stop) when the app says so; ``async_client`` does the same.
"""

from __future__ import annotations

import pytest
from _isolation_project import make_project

ASYNC = """
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

APPS = """
import myapp


async def without_lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        raise RuntimeError("this app has no lifespan")
    await myapp.app(scope, receive, send)


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no settings"})
        return
    await myapp.app(scope, receive, send)


async def failing_shutdown(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
        return
    await myapp.app(scope, receive, send)


def returns_nothing():
    return None
"""

TESTS = """
async def test_async_style(async_client):
    assert (await async_client.get("/users/count")).json() == {"count": 0}


def test_sync_style(client):
    assert client.get("/users/count").json() == {"count": 0}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_project(pytester, ASYNC)
    pytester.makepyfile(apps=APPS, test_apps=TESTS)
    return pytester


def test_an_app_without_lifespan_support_is_served_by_async_client(
    project: pytest.Pytester,
) -> None:
    # As uvicorn does (lifespan "auto"). Starlette's TestClient, which `client` builds on,
    # re-raises the app's error instead.
    result = project.runpytest(
        "-p", "no:randomly", "-k", "async_style", "-o", "pgharness_app=apps:without_lifespan"
    )
    result.assert_outcomes(passed=1)


def test_a_failed_startup_fails_the_test_with_the_apps_message(project: pytest.Pytester) -> None:
    result = project.runpytest(
        "-p", "no:randomly", "-k", "async_style", "-o", "pgharness_app=apps:failing_startup"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the app's lifespan startup failed: no settings*"])


def test_a_failed_shutdown_fails_the_test_with_the_apps_message(project: pytest.Pytester) -> None:
    result = project.runpytest(
        "-p", "no:randomly", "-k", "async_style", "-o", "pgharness_app=apps:failing_shutdown"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the app's lifespan shutdown failed: flush failed*"])


def test_a_factory_that_returns_no_app_is_named(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:randomly", "-o", "pgharness_app=apps:returns_nothing")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*pgharness_app names the factory 'apps:returns_nothing', which returned a NoneType*"]
    )
