"""The job queue's app. Its connection is given when a worker or a caller opens it."""

from __future__ import annotations

import procrastinate

# No connection parameters here: ``worker.run_worker`` opens the app on the database it is
# given (``replace_connector``), so importing the tasks never connects anywhere.
job_app = procrastinate.App(connector=procrastinate.PsycopgConnector())
