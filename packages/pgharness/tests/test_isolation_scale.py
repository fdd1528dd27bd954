# ruff: noqa: E501  (test sources embedded as strings are easier to read unwrapped)
"""A few hundred generated tests, in random order and on two xdist workers: every test starts
from an empty table, so a single leaked row anywhere would fail a later test."""

from __future__ import annotations

import pytest
from _isolation_project import make_project

HEADER = """
import pytest
from sqlalchemy import func, select

import myapp

async def _empty(session):
    assert await session.scalar(select(func.count(myapp.User.id))) == 0
"""

KINDS = {
    "service": """
async def test_service_{i}(async_db):
    await _empty(async_db)
    for n in range(5):
        await myapp.create_user(f"s{i}-{{n}}@example.com")
    assert await myapp.count_users() == 5
""",
    "http": """
async def test_http_{i}(async_client, async_db):
    await _empty(async_db)
    assert (await async_client.post("/users", json={{"email": "h{i}@example.com"}})).status_code == 201
    assert (await async_client.post("/users/later", json={{"email": "l{i}@example.com"}})).status_code == 202
    assert (await async_client.get("/users/count")).json() == {{"count": 2}}
""",
    "sync": """
def test_sync_{i}(client, db):
    assert db.scalar(select(func.count(myapp.User.id))) == 0
    db.add(myapp.User(email="d{i}@example.com"))
    db.commit()
    assert client.post("/users", json={{"email": "c{i}@example.com"}}).status_code == 201
    assert client.get("/users/count").json() == {{"count": 2}}
""",
    "database": """
@pytest.mark.pg_isolation("database")
async def test_database_{i}(async_db):
    await _empty(async_db)
    await myapp.create_user("db{i}@example.com")
    assert await myapp.count_users() == 1
""",
    "module_loop": """
@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_{i}(async_db):
    await _empty(async_db)
    await myapp.create_user("m{i}@example.com")
""",
}


def _suite(count: int) -> str:
    kinds = list(KINDS.values())
    # Database isolation costs a clone each: one in ten tests.
    weights = [3, 2, 2, 1, 2]
    pattern = [k for k, w in zip(kinds, weights, strict=True) for _ in range(w)]
    return HEADER + "".join(pattern[i % len(pattern)].format(i=i) for i in range(count))


@pytest.mark.parametrize(
    "args", [["-p", "randomly"], ["-p", "randomly", "-n", "2"]], ids=["random", "xdist"]
)
def test_no_row_leaks_across_hundreds_of_tests(pytester: pytest.Pytester, args: list[str]) -> None:
    make_project(pytester, "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(test_generated_a=_suite(150), test_generated_b=_suite(150))
    result = pytester.runpytest_subprocess(*args, timeout=600)
    result.assert_outcomes(passed=300)
