# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""The test's connection is opened on the loop the test runs on, for every loop scope."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

TESTS = """
import pytest
import pytest_asyncio
from sqlalchemy import func, select

import myapp

{marks}

@pytest_asyncio.fixture{fixture_args}
async def seeded(async_db):
    async_db.add(myapp.User(email="seed@example.com"))
    await async_db.commit()
    return "seed@example.com"

{cls_open}
{indent}async def test_first(async_db, seeded):
{indent}    await myapp.create_user("a@example.com")
{indent}    assert await myapp.count_users() == 2

{indent}async def test_second(async_client, async_db):
{indent}    assert (await async_client.post("/users", json={{"email": "b@example.com"}})).status_code == 201
{indent}    assert await async_db.scalar(select(func.count(myapp.User.id))) == 1

{indent}async def test_third(async_db):
{indent}    assert await myapp.count_users() == 0
"""


def _write(
    pytester: pytest.Pytester,
    ini: str,
    marks: str = "",
    fixture_args: str = "",
    in_class: bool = False,
) -> None:
    make_project(pytester, ini)
    source = TESTS.format(
        marks=marks,
        fixture_args=fixture_args,
        cls_open="class TestInClass:" if in_class else "",
        indent="    " if in_class else "",
    )
    if in_class:  # methods take self first
        for test in ("test_first(", "test_second(", "test_third("):
            source = source.replace(test, test + "self, ")
    pytester.makepyfile(source)


@pytest.mark.parametrize(
    ("ini", "marks", "fixture_args"),
    [
        pytest.param(
            "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function",
            "",
            "",
            id="function-default",
        ),
        pytest.param(
            "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = module",
            'pytestmark = pytest.mark.asyncio(loop_scope="module")',
            "",
            id="module-marker",
        ),
        pytest.param(
            "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function",
            'pytestmark = pytest.mark.asyncio(loop_scope="session")',
            '(loop_scope="session")',
            id="session-marker",
        ),
        pytest.param(
            "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"
            "asyncio_default_test_loop_scope = session",
            "",
            "",
            id="session-ini",
        ),
        pytest.param(
            "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = module\n"
            "asyncio_default_test_loop_scope = module",
            "pytestmark = pytest.mark.asyncio",
            "",
            id="module-ini-strict",
        ),
    ],
)
def test_every_pytest_asyncio_loop_scope(
    pytester: pytest.Pytester, ini: str, marks: str, fixture_args: str
) -> None:
    _write(pytester, ini, marks, fixture_args)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_class_loop_scope(pytester: pytest.Pytester) -> None:
    _write(
        pytester,
        "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = class",
        'pytestmark = pytest.mark.asyncio(loop_scope="class")',
        in_class=True,
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_anyio_plugin(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import func, select

        import myapp

        pytestmark = pytest.mark.anyio

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.fixture
        async def seeded(async_db):
            async_db.add(myapp.User(email="seed@example.com"))
            await async_db.commit()

        async def test_first(async_db, seeded):
            await myapp.create_user("a@example.com")
            assert await myapp.count_users() == 2

        async def test_second(async_client, async_db):
            assert (await async_client.post("/users", json={"email": "b@example.com"})).status_code == 201
            assert await async_db.scalar(select(func.count(myapp.User.id))) == 1

        async def test_third(async_db):
            assert await myapp.count_users() == 0
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:asyncio")
    result.assert_outcomes(passed=3)


ANYIO_TESTS = """
import pytest
from sqlalchemy import func, select

import myapp

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_service_commits(async_db):
    await myapp.create_user("a@example.com")
    assert await myapp.count_users() == 1
    assert await async_db.scalar(select(func.count(myapp.User.id))) == 1


async def test_request_commits(async_client, async_db):
    assert (await async_client.post("/users", json={"email": "b@example.com"})).status_code == 201
    assert (await async_client.get("/users/count")).json() == {"count": 1}
    assert await async_db.scalar(select(func.count(myapp.User.id))) == 1


async def test_nothing_was_left_behind(async_client, async_db):
    assert await myapp.count_users() == 0
    assert (await async_client.get("/users/count")).json() == {"count": 0}
"""


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_anyio_tests_run_on_the_loop_of_the_plugin_that_runs_them(
    pytester: pytest.Pytester, mode: str
) -> None:
    # Under auto mode pytest-asyncio runs @pytest.mark.anyio tests itself; under strict, anyio.
    make_project(pytester, f"asyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(ANYIO_TESTS)
    result = pytester.runpytest("-p", "no:randomly", "-rs")
    result.assert_outcomes(passed=3, skipped=3)
    result.stdout.fnmatch_lines(
        ["SKIPPED *: pgharness needs an asyncio event loop*anyio backend 'trio'*"]
    )


def test_fixture_on_another_loop_gets_a_clear_error(pytester: pytest.Pytester) -> None:
    make_project(pytester, "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(
        """
        import pytest

        import myapp

        @pytest.fixture
        async def seeded(async_db):  # runs on the function-scoped loop
            await myapp.create_user("seed@example.com")

        @pytest.mark.asyncio(loop_scope="module")
        async def test_on_the_module_loop(seeded):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CrossLoopError*pytest-asyncio module-scoped loop*loop_scope*"])
