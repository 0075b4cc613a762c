"""Checks shared by the HTTP tests of every service."""
from __future__ import annotations

from typing import Any


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The response is DESIGN §2's error shape with this status and code (and names `field`)."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    if field:
        assert body["field"] == field and body["message"].startswith(field)
    return body
