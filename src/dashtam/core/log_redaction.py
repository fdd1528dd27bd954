"""Secrets never reach a log line, whoever logs it (Dashtam, uvicorn, httpx, SQLAlchemy).

``install()`` wraps the process's log record factory, so every record is scrubbed when it is
made, before any handler or formatter sees it (its message, arguments and traceback): OAuth
query parameters (``code``, ``state``, tokens, secrets), bearer credentials and anything shaped
like a JWT become ``[REDACTED]``.
uvicorn's access log, for one, would otherwise keep the callback's ``?code=…&state=…``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[REDACTED]"
_SECRET_PARAMS = (
    "code|state|access_token|refresh_token|id_token|client_secret|code_verifier|password|token"
)
_PATTERNS = (
    # key=value in URLs and form bodies, key: value / "key": "value" in text and JSON.
    re.compile(rf"(?i)\b({_SECRET_PARAMS})(=)[^&\s\"',;]+"),
    re.compile(rf"(?i)([\"']?\b(?:{_SECRET_PARAMS})[\"']?\s*:\s*[\"'])[^\"']+"),
    re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"()()\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"),
)


def redact(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``[REDACTED]``."""
    for pattern in _PATTERNS:
        text = pattern.sub(_keep_prefix, text)
    return text


def _keep_prefix(match: re.Match[str]) -> str:
    groups = match.groups()
    prefix = "".join(g for g in groups[:2] if g) if len(groups) >= 2 else (groups[0] or "")
    return prefix + REDACTED


def _scrub(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    cleaned = redact(text)
    # Keep the original object (and its formatting) unless it held a secret.
    return cleaned if cleaned != text else value


_traceback_formatter = logging.Formatter()


def _scrub_record(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_scrub(arg) for arg in record.args)
    elif isinstance(record.args, dict):
        record.args = {key: _scrub(arg) for key, arg in record.args.items()}
    # A traceback carries exception messages (an httpx error naming a URL with ?code=, a
    # token in an assertion): formatters print exc_text when set, so set it, scrubbed.
    if record.exc_info and record.exc_info != (None, None, None) and not record.exc_text:
        record.exc_text = redact(_traceback_formatter.formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_installed = False


def install() -> None:
    """Scrub every log record made in this process from now on (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _scrub_record(record)
        return record

    logging.setLogRecordFactory(scrubbed)
    _installed = True
