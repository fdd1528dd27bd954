"""Running a worker: ``dashtam worker``, or ``run_worker`` from code (and tests).

Example::

    await run_worker("postgresql://app@db/dashtam", concurrency=4)  # until cancelled
"""

from __future__ import annotations

import procrastinate

from dashtam.jobs import tasks  # noqa: F401  (registers the tasks on the app)
from dashtam.jobs.app import job_app
from dashtam.services.job_queue import QUEUE


async def run_worker(
    conninfo: str, *, concurrency: int = 1, wait: bool = True, name: str | None = None
) -> None:
    """Work the queue of the database at ``conninfo`` (a libpq URL).

    ``wait=False`` returns once no job is ready (tests, one-off runs); otherwise the worker
    waits for new jobs (LISTEN/NOTIFY) and defers the periodic ones until it is stopped.
    """
    connector = procrastinate.PsycopgConnector(conninfo=conninfo)
    with job_app.replace_connector(connector) as app:
        async with app.open_async():
            await app.run_worker_async(
                queues=[QUEUE],
                concurrency=concurrency,
                wait=wait,
                name=name or "dashtam-worker",
                install_signal_handlers=wait,
            )
