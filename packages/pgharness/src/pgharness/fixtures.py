"""pgharness's fixtures. ``pytest --fixtures`` shows each one's docstring."""

from __future__ import annotations

__all__: list[str] = []

# [part 1: pg_database and the session-wide harness]
# [part 2: async_db, async_client, db, client]
# [part 3: pg_queries]
