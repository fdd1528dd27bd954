"""the job queue: procrastinate's schema, applied like every other part of Dashtam's

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 00:55:00.000000

Every database Dashtam migrates (``dashtam migrate``, the API's start, the test template)
gets the job engine's tables here, at the version pinned in pyproject.toml. A later
procrastinate release that changes its schema ships migration files
(``procrastinate/sql/migrations``): they are applied by a new revision after this one.
"""

import inspect
from collections.abc import Sequence

from alembic import op
from procrastinate.schema import SchemaManager
from sqlalchemy.util import await_only

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _run_script(sql: str) -> None:
    # The script holds many statements and function bodies: it is sent as it is, through the
    # driver's simple protocol (SQLAlchemy's asyncpg layer would prepare it as one statement).
    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    done = driver.execute(sql)  # psycopg runs it now; asyncpg hands back a coroutine
    if inspect.isawaitable(done):
        await_only(done)  # inside Alembic's greenlet (env.py's run_sync)


def upgrade() -> None:
    _run_script(SchemaManager.get_schema())


def downgrade() -> None:
    _run_script(
        """
        DO $$
        DECLARE item record;
        BEGIN
            FOR item IN SELECT tablename FROM pg_tables
                WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate\\_%'
            LOOP EXECUTE format('DROP TABLE %I CASCADE', item.tablename); END LOOP;
            FOR item IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
            LOOP EXECUTE format('DROP FUNCTION %s CASCADE', item.signature); END LOOP;
            FOR item IN SELECT t.typname FROM pg_type t
                JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate\\_%'
                  AND t.typtype IN ('e', 'c')
            LOOP EXECUTE format('DROP TYPE %I CASCADE', item.typname); END LOOP;
        END $$;
        """
    )
