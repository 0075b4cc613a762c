"""Keyset pagination shared by every listing: opaque page tokens and the `limit` parameter.

A page token carries the last id of the previous page and a digest of the listing it belongs to
(whatever identifies it: filters, the kind of list, whose list), so a token is refused by any
other listing. Pages are walked by descending id, which is what keeps a walk stable while rows are
added: new rows sort before the walk's position.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from .errors import InvalidInput


def encode_page_token(after_id: int, listing: Any) -> str:
    """The token of the page after `after_id` in `listing` (any JSON-serialisable value)."""
    return encode_cursor(after_id, listing)


def decode_page_token(token: str | None, listing: Any, field_name: str = "start_token") -> int | None:
    """The id to continue after, None for the first page; InvalidInput naming `field_name` when the
    token is malformed or belongs to another listing."""
    after_id = decode_cursor(token, listing, field_name)
    if after_id is not None and (not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 1):
        raise InvalidInput(field_name, "is not a valid page token")
    return after_id


def encode_cursor(position: Any, listing: Any) -> str:
    """An opaque token for any JSON-serialisable position within `listing`."""
    body = json.dumps({"a": position, "f": _digest(listing)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_cursor(token: str | None, listing: Any, field_name: str = "start_token") -> Any:
    """The position a token carries (None for no token); the caller checks its shape."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        position = body["a"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidInput(field_name, "is not a valid page token") from None
    if body.get("f") != _digest(listing):
        raise InvalidInput(field_name, "belongs to another listing")
    return position


def validate_limit(value: Any, *, default: int, maximum: int, field_name: str = "limit") -> int:
    """A page size from a query parameter: `default` when absent or empty, else 1..maximum."""
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(field_name, "must be an integer") from None
    if not 1 <= limit <= maximum:
        raise InvalidInput(field_name, f"must be between 1 and {maximum}")
    return limit


def _digest(listing: Any) -> str:
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
