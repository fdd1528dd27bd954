"""The names pgharness gives to what it creates, and the only names it will ever drop.

Every database pgharness makes starts with ``pgh_`` and matches one of the patterns below
exactly; cleanup code matches against these patterns, so a database with any other name is
never touched, whatever the configuration.

    pgh_tpl_<8 hex>_<16 hex>          schema template (lineage, hash of its source)
    pgh_<run>_<worker>                a worker's clone      (run: 10 hex, worker: main / gw<n>)
    pgh_<run>_<worker>_p<n>           a pooled clone for database isolation
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass

__all__ = [
    "CLONE_NAME",
    "TEMPLATE_NAME",
    "RunIdentity",
    "advisory_key",
    "project_lineage",
    "template_name",
    "template_prefix",
]

PREFIX = "pgh_"
TEMPLATE_NAME = re.compile(r"^pgh_tpl_(?P<lineage>[0-9a-f]{8})_[0-9a-f]{16}$")
CLONE_NAME = re.compile(r"^pgh_(?P<run>[0-9a-f]{10})_(?P<worker>main|gw[0-9]+)(_p[0-9]+)?$")


def project_lineage(schema_label: str) -> str:
    """Whose schema a template holds: a hash of the schema setting, as written.

    ``schema_label`` is the setting relative to pytest's rootdir (``pkg.module:Base``,
    ``alembic:db/alembic.ini``, or ``""`` for no schema). Where the checkout lies is left out
    on purpose: two checkouts of one project (CI workspaces, worktrees) share their templates.
    """
    return hashlib.sha256(f"lineage|{schema_label}".encode()).hexdigest()


def template_prefix(lineage: str) -> str:
    """The start shared by the names of every template of ``lineage``, whatever its version."""
    return f"{PREFIX}tpl_{lineage[:8]}_"


def template_name(lineage: str, source_hash: str) -> str:
    """``lineage`` says whose schema it is (project and setting), ``source_hash`` which version.

    A changed schema replaces only the templates of its own lineage: two projects sharing one
    server never drop each other's templates.
    """
    return f"{template_prefix(lineage)}{source_hash[:16]}"


def advisory_key(purpose: str, name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (same on every process and run)."""
    digest = hashlib.sha256(f"pgharness:{purpose}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class RunIdentity:
    """Which run (shared by all xdist workers of one ``pytest`` call) and which worker this is."""

    run_id: str  # 10 hex digits
    worker: str  # "main" or "gw<n>"

    @classmethod
    def for_process(cls, workerinput: dict[str, object] | None) -> RunIdentity:
        # Only a real xdist worker has workerinput; the environment variables xdist sets are
        # inherited by nested runs (pytester inside a worker) and would make them collide.
        if workerinput is not None:
            uid = str(workerinput.get("testrunuid", ""))
            worker = str(workerinput.get("workerid", "gw0"))
            run_id = hashlib.sha256(uid.encode()).hexdigest()[:10] if uid else uuid.uuid4().hex[:10]
            if re.fullmatch(r"gw[0-9]+", worker) is None:
                worker = "gw0"
            return cls(run_id=run_id, worker=worker)
        return cls(run_id=uuid.uuid4().hex[:10], worker="main")

    @property
    def worker_database(self) -> str:
        return f"{PREFIX}{self.run_id}_{self.worker}"

    def pool_database(self, number: int) -> str:
        return f"{PREFIX}{self.run_id}_{self.worker}_p{number}"

    @property
    def owner_pid(self) -> int:
        return os.getpid()
