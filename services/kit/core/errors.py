"""Errors a service raises on purpose, each mapped to one status and a stable machine code.

Plain Python: domain cores raise these without knowing about HTTP; the web layer renders them as
{"message", "code"} (DESIGN §2). Anything else that escapes a handler is a bug and becomes a 500
that never leaks internals.
"""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 500
    code = "internal"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        """`class NotFound(ServiceError, status=404, code="not_found")` names an error's status and code."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code, **self.details}


class InvalidInput(ServiceError, status=400, code="invalid_input"):
    """The request (or a consumed event) breaks a rule; the message starts with the field it names."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}", details={"field": field})
        self.field = field


class Unauthenticated(ServiceError, status=401, code="unauthenticated"):
    """No credential, or one nobody issued (an end user's token, a service's caller token)."""


class Forbidden(ServiceError, status=403, code="forbidden"):
    """A known caller that may not do this."""


class NotFound(ServiceError, status=404, code="not_found"):
    pass


class Conflict(ServiceError, status=409, code="conflict"):
    """The request clashes with what is stored (a duplicate, a quota); services name the code more precisely."""


class PayloadTooLarge(ServiceError, status=413, code="payload_too_large"):
    pass


class Unavailable(ServiceError, status=503, code="unavailable"):
    """A dependency (database, broker, downstream service) is not answering; clients may retry."""

    def __init__(self, message: str, *, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class RetryLater(Exception):
    """Not a failure: a message's handler cannot do its work yet (a worker that paused itself) and asks for the
    message again in `delay_s` seconds. The consumer naks it with that delay and counts it `deferred`, without the
    failure's warning and growing back-off."""

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s
