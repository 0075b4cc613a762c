"""The current request id, shared by logs, outgoing calls and published events."""
from __future__ import annotations

import re
import uuid

import structlog

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def accept_or_create_request_id(presented: str | None) -> str:
    """Keep a caller's id if it is sane (it ends up in logs and headers); otherwise make one."""
    if presented and _VALID_REQUEST_ID.match(presented):
        return presented
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")
