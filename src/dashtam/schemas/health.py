"""Bodies of the health endpoints."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str
    service: str
    database: str


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str
