"""The user domain: people, the identities they log in with, and the access tokens Delinkcious
issues them. Plain Python, no I/O."""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..kit.core.errors import InvalidInput, ServiceError
from ..kit.core.validation import USERNAME_MAX_LENGTH, reject_unknown_fields

_PROVIDER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_SUBJECT_LENGTH = 255
MAX_EMAIL_LENGTH = 320
MAX_NAME_LENGTH = 200
TOKEN_PREFIX = "dlk_"  # makes leaked tokens easy to find with secret scanners
TOKEN_BYTES = 32  # 256 bits


@dataclass(frozen=True)
class User:
    username: str
    email: str | None
    name: str | None
    created_at: datetime
    updated_at: datetime
    id: int | None = None


@dataclass(frozen=True)
class LoginIdentity:
    """What an identity provider told the gateway about the person who just logged in."""

    provider: str
    subject: str
    login: str | None
    email: str | None
    name: str | None

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> LoginIdentity:
        reject_unknown_fields(payload, {"provider", "subject", "login", "email", "name"})
        provider = payload.get("provider")
        if not isinstance(provider, str) or not _PROVIDER.match(provider):
            raise InvalidInput("provider", "must be 1-64 characters of a-z, 0-9, '.', '_' and '-'")
        subject = payload.get("subject")
        if isinstance(subject, int) and not isinstance(subject, bool):
            subject = str(subject)  # GitHub's numeric user id
        if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT_LENGTH:
            raise InvalidInput("subject", f"must be a non-empty string of at most {MAX_SUBJECT_LENGTH} characters")
        return cls(
            provider=provider,
            subject=subject.strip(),
            login=optional_text(payload.get("login"), "login", MAX_SUBJECT_LENGTH),
            email=optional_email(payload.get("email")),
            name=optional_text(payload.get("name"), "name", MAX_NAME_LENGTH),
        )


@dataclass(frozen=True)
class AccessToken:
    token_id: str
    username: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    """A newly issued token: the only moment its secret value exists outside the client."""

    secret: str
    token: AccessToken


class InvalidToken(ServiceError):
    status = 401
    code = "invalid_token"


# --- usernames ---------------------------------------------------------------------------------
def username_base(login: str | None, subject: str) -> str:
    """A GitHub-style username derived from a provider's login (or subject)."""
    text = (login or subject).lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:USERNAME_MAX_LENGTH].rstrip("-") or "user"


def username_candidates(base: str) -> Iterator[str]:
    """base, base-2, base-3, ... then random suffixes: the first free one becomes the username."""
    yield base
    for number in range(2, 100):
        yield _with_suffix(base, f"-{number}")
    while True:
        yield _with_suffix(base, f"-{secrets.token_hex(3)}")


def _with_suffix(base: str, suffix: str) -> str:
    return base[: USERNAME_MAX_LENGTH - len(suffix)].rstrip("-") + suffix


# --- tokens ------------------------------------------------------------------------------------
def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(secret: str) -> bytes:
    """Only this is stored. A 256-bit random secret needs no slow hash: guessing is hopeless."""
    return hashlib.sha256(secret.encode()).digest()


def validate_token_secret(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(TOKEN_PREFIX) or len(value) > 200:
        raise InvalidToken("token is not valid")
    return value


def token_expiry(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


# --- small validators ----------------------------------------------------------------------------
def optional_text(value: Any, field_name: str, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be a string")
    value = value.strip()
    if len(value) > max_length:
        raise InvalidInput(field_name, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidInput(field_name, "must not contain NUL characters")
    return value or None


def optional_email(value: Any) -> str | None:
    email = optional_text(value, "email", MAX_EMAIL_LENGTH)
    if email is not None and not re.match(r"^[^@\s]+@[^@\s]+$", email):
        raise InvalidInput("email", "must be an email address")
    return email

