"""pgharness's fixtures. ``pytest --fixtures`` shows each one's docstring."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from . import _blocker as blocker
from ._activation import ActiveTest, SessionState, activate, check_app_objects, wants_isolation
from ._clients import HarnessTestClient, open_async_client, resolve_app
from ._config import Settings
from ._databases import PgDatabase
from ._errors import PgHarnessError, UnmanagedDatabaseError
from ._harness import Harness
from ._isolation import IsolationMode, required_mode
from ._portal import BlockingSession
from ._queries import PgQueries, recording_for

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "_pg_isolation",
    "_pg_isolation_state",
    "_pg_session",
    "_pg_test",
    "async_client",
    "async_db",
    "client",
    "db",
    "pg_database",
    "pg_queries",
]

#: Where ``pytest_configure`` keeps this process's ``Harness``.
HARNESS_KEY = pytest.StashKey[Harness]()
#: The run's settings, read before the first conftest.py loads.
SETTINGS_KEY = pytest.StashKey[Settings]()
#: The blocker's policy for this run, and whether this run switched the blocker on.
POLICY_KEY = pytest.StashKey[blocker.Policy]()
BLOCKING_KEY = pytest.StashKey[bool]()
#: The isolation every test gets because of the sessionmakers' kinds (None: the test's own).
REQUIRED_MODE_KEY = pytest.StashKey[IsolationMode | None]()


def watch_for_escapes(config: pytest.Config) -> None:
    """Until pgharness becomes active in this run, remember connections it would have stopped."""
    policy = config.stash.get(POLICY_KEY, None)
    if policy is not None and not config.stash.get(BLOCKING_KEY, False):
        blocker.watch(policy)
        config.stash[BLOCKING_KEY] = True


def block_unmanaged_databases(config: pytest.Config) -> None:
    """From now until the end of the run, only pgharness's databases can be reached.

    Raises ``UnmanagedDatabaseError`` when the run was only watched until now and code
    already connected to a database pgharness did not create.
    """
    policy = config.stash.get(POLICY_KEY, None)
    if policy is None:
        return
    escaped, count = blocker.activate(policy)
    config.stash[BLOCKING_KEY] = True
    if escaped:
        raise UnmanagedDatabaseError(blocker.escaped_before_activation_message(escaped, count))


def start_or_stop(harness: Harness, session: pytest.Session) -> str | None:
    """Start the harness; a failure stops the whole run with its one message.

    A single process exits at once (``pytest.exit``, usage-error status). An xdist worker
    cannot exit mid-run without the controller reporting a crash, so it asks the session to
    stop and returns the message: the controller then ends the run with it, once.
    """
    __tracebackhide__ = True
    try:
        block_unmanaged_databases(session.config)  # before the template build runs any code
        # A wrong setting stops the run before the server starts.
        makers = check_app_objects(harness.settings)
        session.config.stash[REQUIRED_MODE_KEY] = required_mode(makers)
        harness.start()
    except PgHarnessError as exc:
        message = str(exc) if str(exc).startswith("pgharness") else f"pgharness: {exc}"
        return stop_run(session, message)
    return None


def stop_run(session: pytest.Session, message: str) -> str:
    """End a misconfigured run before its first test, with ``message`` shown once.

    A single process exits at once (usage-error status); an xdist worker asks the session to
    stop, and the controller ends the run with the message. Returns the message.
    """
    __tracebackhide__ = True
    if not hasattr(session.config, "workerinput"):
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
    session.shouldstop = message
    return message


@pytest.fixture(scope="session")
def _pg_session(request: pytest.FixtureRequest) -> Harness:
    """The session-wide harness: server, template, this worker's database, the pool."""
    harness = request.config.stash[HARNESS_KEY]
    failure = start_or_stop(harness, request.session)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return harness


@pytest.fixture
def pg_database(_pg_test: ActiveTest) -> PgDatabase:
    """This worker's test database, cloned from the schema template.

    ``.name`` is its name, ``.url`` a SQLAlchemy URL for asyncpg
    (``postgresql+asyncpg://...``), ``.sync_url`` the same database for psycopg
    (``postgresql+psycopg://...``). Names are unique per run and per xdist worker.

    Example::

        def test_tables_exist(pg_database):
            engine = sqlalchemy.create_engine(pg_database.sync_url)
            with engine.connect() as conn:
                assert conn.scalar(text("select count(*) from users")) == 0
    """
    database: PgDatabase = _pg_test.database  # the test's own under pg_isolation("database")
    return database


@pytest.fixture(scope="session")
def _pg_isolation_state() -> Iterator[SessionState]:
    """Per session: engines, the harness loop thread for def tests, the imported app objects."""
    state = SessionState()
    yield state
    state.close()


@pytest.fixture
def _pg_test(request: pytest.FixtureRequest) -> Iterator[ActiveTest]:
    """The test's isolation. Every public fixture asks for it: a test uses pgharness exactly
    when this fixture is in its closure (a same-named fixture of the project's own or another
    plugin's does not count), or when it carries ``pg_isolation``."""
    with activate(request, "_pg_isolation_state") as active:
        yield active


@pytest.fixture(autouse=True)
def _pg_isolation(request: pytest.FixtureRequest) -> ActiveTest | None:
    """Sets up the isolation of a test that uses pgharness before the project's own fixtures,
    so that those find the sessionmakers rebound; nothing for any other test."""
    if not wants_isolation(request.node):
        return None
    active: ActiveTest = request.getfixturevalue("_pg_test")
    return active


def _app_for(active: ActiveTest) -> Any:
    name, obj = active.state.app_object(active.harness.settings.app)
    return resolve_app(name, obj)


@pytest.fixture
def async_db(_pg_test: ActiveTest) -> Iterator[AsyncSession]:
    """An ``AsyncSession`` inside the test's transaction, for ``async def`` tests.

    Made by the first sessionmaker in ``pgharness_sessionmakers`` (its options kept), or a
    plain ``AsyncSession`` when none is named. ``commit()`` releases a savepoint and
    ``rollback()`` returns to one; everything is rolled back when the test ends. The app's
    own sessions (``SessionLocal()``, request dependencies) join the same transaction.

    Example::

        async def test_signup(async_db):
            async_db.add(User(email="a@example.com"))
            await async_db.commit()          # visible to the app, gone after the test
            assert await async_db.scalar(select(func.count(User.id))) == 1
    """
    active = _pg_test
    session = active.isolation.new_session()
    yield session
    active.driver.run(session.close)


@pytest.fixture
def async_client(_pg_test: ActiveTest) -> Iterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``pgharness_app`` (lifespan run), in the test's transaction.

    Requests go to ``pgharness_client_base_url`` (default ``http://testserver``) with the
    ``pgharness_client_headers``; ``pgharness_lifespan = off`` skips the app's lifespan.

    Example::

        async def test_health(async_client):
            response = await async_client.get("/health")
            assert response.status_code == 200
    """
    active = _pg_test
    opened = open_async_client(_app_for(active), active.harness.settings.client)
    client = active.driver.run(opened.__aenter__)
    try:
        yield client
    finally:
        active.driver.run(lambda: opened.__aexit__(None, None, None))


@pytest.fixture
def db(_pg_test: ActiveTest) -> Iterator[BlockingSession]:
    """A blocking session over the app's transaction, for seeding and checking in ``def`` tests.

    Offers ``add``, ``add_all``, ``delete``, ``flush``, ``commit``, ``rollback``, ``refresh``,
    ``get``, ``execute``, ``scalar``, ``scalars``; each runs on the harness loop that also runs
    the app (``client``) and waits. Results are buffered. Lazy loads fail as in the app. When
    the app's sessionmakers are all plain ``sessionmaker``, ``db`` is a ``Session`` of theirs
    on the test's psycopg connection. Queries return what the database holds, objects the test
    loaded before included.

    Example::

        def test_list_users(client, db):
            db.add(User(email="a@example.com"))
            db.commit()
            assert client.get("/users").json()["total"] == 1
    """
    active = _pg_test
    if active.isolation.sync_only:
        # The app's own kind of session, on the test's psycopg connection.
        sync_session = active.isolation.new_sync_session()
        yield sync_session  # type: ignore[misc]
        sync_session.close()
        return
    session = BlockingSession(active.isolation.new_session(), active.state.harness_loop.portal)
    yield session
    session.close()


@pytest.fixture
def client(_pg_test: ActiveTest) -> Iterator[Any]:
    """A Starlette/FastAPI ``TestClient`` on ``pgharness_app``, for ``def`` tests.

    The app's lifespan and every request run on the harness's event-loop thread, which owns
    the test's connection: the app's sessions join the test's transaction, and ``db`` sees
    what requests wrote. ``pgharness_client_base_url``, ``pgharness_client_headers`` and
    ``pgharness_lifespan = off`` apply as for ``async_client``.

    Example::

        def test_register(client):
            response = client.post("/api/v1/auth/register", json={...})
            assert response.status_code == 201
    """
    active = _pg_test
    options = active.harness.settings.client
    test_client = HarnessTestClient(_app_for(active), active.state.harness_loop.portal, options)
    if not options.lifespan:
        yield test_client
        test_client.close()
        return
    with test_client:
        yield test_client


@pytest.fixture
def pg_queries(request: pytest.FixtureRequest, _pg_test: ActiveTest) -> PgQueries:
    """The SQL statements the test runs, on any engine (the app's included).

    ``.statements`` (SQL text, in order), ``.count``, and ``with pg_queries.at_most(n):``,
    which fails with an ``AssertionError`` listing the statements when the block runs more
    than ``n``. Statements of the test function are counted (fixture set-up is not); the
    harness's own BEGIN / SAVEPOINT / RELEASE / ROLLBACK never are. The marker
    ``@pytest.mark.pg_max_queries(n)`` sets a limit for the whole test.

    Example::

        async def test_loans_page_has_no_n_plus_1(async_client, pg_queries):
            with pg_queries.at_most(2):
                response = await async_client.get("/loans")
            assert response.status_code == 200
    """
    recording = recording_for(request.node)
    assert recording is not None  # the test asked for pg_queries
    return PgQueries(recording)
