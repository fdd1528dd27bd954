"""Background jobs on procrastinate, a job queue in PostgreSQL: syncs, token refreshes, purges.

``app.py`` holds the queue's app, ``tasks.py`` the tasks (what each job does is a service
call), ``worker.py`` runs a worker (``dashtam worker``). Workers on any number of machines
share the queue through the database; locks keep one provider's jobs one at a time.
"""
