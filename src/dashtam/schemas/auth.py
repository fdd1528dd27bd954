"""Bodies of ``/auth``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from dashtam.schemas.common import PlainText

Password = Annotated[str, Field(min_length=8, max_length=1024)]


class UserRegister(BaseModel):
    email: EmailStr
    password: Password
    name: Annotated[PlainText, StringConstraints(strip_whitespace=True, max_length=200)] | None = (
        None
    )


class UserLogin(BaseModel):
    email: Annotated[PlainText, Field(max_length=320)]
    password: Annotated[str, Field(max_length=1024)]


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str | None
    created_at: datetime


class PasswordChange(BaseModel):
    current_password: Annotated[str, Field(max_length=1024)]
    new_password: Password


class SessionPublic(BaseModel):
    """One login session: where it started, when it was last refreshed, and which client."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    client: str | None
    ip_address: str | None
    current: bool


class SessionsPublic(BaseModel):
    items: list[SessionPublic]
