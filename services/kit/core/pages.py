"""Keyset pagination shared by every listing: opaque page tokens and the `limit` parameter.

A page token carries a position (the last id of the previous page, or whatever orders the listing), a
digest of the listing it belongs to (whatever identifies it: whose list, the kind of list, its filters)
and a seal over both. A token is refused by any other listing, and a token whose position was changed
is refused too. Pages are walked by descending id, which is what keeps a walk stable while rows are
added: new rows sort before the walk's position.

The seal is an HMAC-SHA256 under a secret when the service has one (`PageTokens(secret)`): then only the
service can make a token, and every position it reads is one it wrote. Without a secret (`PageTokens()`,
and the module's functions) the seal is a plain SHA-256: it catches a token changed by mistake or pasted
into another listing, but anyone can compute it, so it proves nothing about who made the token. What
keeps one user from another's pages then is the listing (it names the user), and what keeps a made-up
position harmless is that positions are validated as untrusted input: JSON integers within 64 bits,
strings and lists only, in a token of bounded size.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from .errors import InvalidInput

MAX_TOKEN_LENGTH = 1024
_INT64 = range(-(2**63), 2**63)
_SEAL_BYTES = 16


class PageTokens:
    """Makes and reads one service's page tokens; `secret` (bytes, 32 or more) makes them unforgeable."""

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is not None and len(secret) < 32:
            raise ValueError("a page token secret needs at least 32 bytes")
        self._secret = secret

    @property
    def signed(self) -> bool:
        return self._secret is not None

    def encode(self, position: Any, listing: Any) -> str:
        """An opaque token for any JSON-serialisable position within `listing`."""
        body = {"a": position, "f": _digest(listing), "s": self._seal(position, listing)}
        return base64.urlsafe_b64encode(_canonical(body)).decode().rstrip("=")

    def decode(self, token: str | None, listing: Any, field_name: str = "start_token") -> Any:
        """The position a token carries (None for no token); InvalidInput naming `field_name` when the token is
        malformed, belongs to another listing or was changed. The caller checks the position's shape."""
        if not token:
            return None
        try:
            if len(token) > MAX_TOKEN_LENGTH:
                raise ValueError("too long")
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            position, listing_digest, seal = body["a"], body["f"], body["s"]
            _check_position(position, depth=0)
        except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
            raise InvalidInput(field_name, "is not a valid page token") from None
        if listing_digest != _digest(listing):
            raise InvalidInput(field_name, "is not a valid page token: it belongs to another listing")
        if not isinstance(seal, str) or not hmac.compare_digest(seal, self._seal(position, listing)):
            raise InvalidInput(field_name, "is not a valid page token: it was changed")
        return position

    def encode_id(self, after_id: int, listing: Any) -> str:
        """The token of the page after `after_id` in `listing`."""
        return self.encode(after_id, listing)

    def decode_id(self, token: str | None, listing: Any, field_name: str = "start_token") -> int | None:
        """The id to continue after, None for the first page; InvalidInput as for decode, and for a position that
        is not a positive id."""
        after_id = self.decode(token, listing, field_name)
        if after_id is not None and (not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 1):
            raise InvalidInput(field_name, "is not a valid page token")
        return after_id

    def _seal(self, position: Any, listing: Any) -> str:
        message = _canonical([position, listing])
        if self._secret is None:
            return hashlib.sha256(message).hexdigest()[:2 * _SEAL_BYTES]
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:2 * _SEAL_BYTES]


_UNSIGNED = PageTokens()


def encode_page_token(after_id: int, listing: Any) -> str:
    """The token of the page after `after_id` in `listing` (any JSON-serialisable value), unsigned."""
    return _UNSIGNED.encode_id(after_id, listing)


def decode_page_token(token: str | None, listing: Any, field_name: str = "start_token") -> int | None:
    """The id to continue after, None for the first page; InvalidInput naming `field_name` when the
    token is malformed, was changed or belongs to another listing."""
    return _UNSIGNED.decode_id(token, listing, field_name)


def encode_cursor(position: Any, listing: Any) -> str:
    """An unsigned opaque token for any JSON-serialisable position within `listing`."""
    return _UNSIGNED.encode(position, listing)


def decode_cursor(token: str | None, listing: Any, field_name: str = "start_token") -> Any:
    """The position an unsigned token carries (None for no token); the caller checks its shape."""
    return _UNSIGNED.decode(token, listing, field_name)


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


def _check_position(position: Any, depth: int) -> None:
    """What a position may hold: 64-bit integers, strings and (shallow) lists of them. Anything else (a float, an
    object, an integer no store can take) is not a position any listing wrote."""
    if isinstance(position, bool) or position is None or isinstance(position, str):
        return
    if isinstance(position, int):
        if position not in _INT64:
            raise ValueError("integer out of range")
        return
    if isinstance(position, list) and depth < 2:
        for part in position:
            _check_position(part, depth + 1)
        return
    raise ValueError("not a position")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def _digest(listing: Any) -> str:
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
