"""The link domain: what a saved link is and the rules it obeys. Plain Python, no I/O."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from ..kit.core.errors import Conflict, InvalidInput
from ..kit.core.urls import DEFAULT_PORTS
from ..kit.core.urls import normalise_url as normalise_url  # re-exported: the link identity rule
from ..kit.core.validation import reject_unknown_fields

MAX_URL_LENGTH = 2048
MAX_TITLE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 5000
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_PATTERN_LENGTH = 256
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

LinkStatus = Literal["pending", "valid", "invalid"]
CHECK_STATUSES: frozenset[str] = frozenset({"valid", "invalid"})


@dataclass(frozen=True)
class Link:
    username: str
    url: str
    url_key: str
    title: str
    description: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    status: LinkStatus = "pending"
    checked_at: datetime | None = None
    http_status: int | None = None
    status_reason: str | None = None
    id: int | None = None

    def with_changes(self, *, title: str | None, description: str | None, add_tags: tuple[str, ...],
                     remove_tags: tuple[str, ...], now: datetime) -> Link:
        tags = [tag for tag in self.tags if tag not in set(remove_tags)]
        tags += [tag for tag in add_tags if tag not in tags and tag not in set(remove_tags)]
        if len(tags) > MAX_TAGS:
            raise InvalidInput("add_tags", f"a link has at most {MAX_TAGS} tags")
        changed = replace(
            self,
            title=self.title if title is None else title,
            description=self.description if description is None else description,
            tags=tuple(tags),
        )
        return replace(changed, updated_at=now) if changed != self else self


@dataclass(frozen=True)
class LinkFilter:
    url_regex: str | None = None
    title_regex: str | None = None
    description_regex: str | None = None
    tags: tuple[str, ...] = ()

    def patterns(self) -> dict[str, str]:
        """The regex filters that are set, keyed by the query parameter that set them."""
        candidates = {
            "url_regex": self.url_regex,
            "title_regex": self.title_regex,
            "description_regex": self.description_regex,
        }
        return {name: pattern for name, pattern in candidates.items() if pattern is not None}

    def fingerprint(self) -> list[Any]:
        return [self.url_regex, self.title_regex, self.description_regex, sorted(self.tags)]


@dataclass(frozen=True)
class Page:
    links: list[Link]
    next_after_id: int | None


@dataclass(frozen=True)
class CheckResult:
    """What the link checker found for one owner's URL."""

    username: str
    url: str
    status: LinkStatus
    checked_at: datetime
    http_status: int | None = None
    reason: str | None = None
    # The checked link's created_at, echoed from the event that asked for the check: a result about
    # a link that was since deleted and saved again must not land on the new one.
    link_created_at: datetime | None = None


class DuplicateLink(Conflict):
    code = "duplicate_link"

    def __init__(self, existing: Link):
        super().__init__(f"url: {existing.url} is already saved")
        self.existing = existing


class QuotaExceeded(Conflict):
    code = "quota_exceeded"

    def __init__(self, limit: int):
        super().__init__(f"a user can save at most {limit} links", details={"limit": limit})


# --- validation -----------------------------------------------------------------------------
def validate_url(url: Any, field_name: str = "url") -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(field_name, "is required")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(field_name, f"must be at most {MAX_URL_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch.isspace() for ch in url):
        raise InvalidInput(field_name, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidInput(field_name, "is not a valid URL") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidInput(field_name, "must be an absolute http or https URL")
    return url


def validate_text(value: Any, field_name: str, *, max_length: int, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be a string")
    value = value.strip()
    if required and not value:
        raise InvalidInput(field_name, "is required")
    if len(value) > max_length:
        raise InvalidInput(field_name, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidInput(field_name, "must not contain NUL characters")
    return value


def validate_tags(value: Any, field_name: str = "tags") -> tuple[str, ...]:
    """Tags are lower-cased and de-duplicated, order kept; 1-64 characters each, at most 50."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput(field_name, "must be a list of strings")
    tags: list[str] = []
    for raw in value:
        if not isinstance(raw, str):
            raise InvalidInput(field_name, "must be a list of strings")
        tag = raw.strip().lower()
        if not 1 <= len(tag) <= MAX_TAG_LENGTH:
            raise InvalidInput(field_name, f"each tag must be 1-{MAX_TAG_LENGTH} characters")
        if any(unicodedata.category(ch) == "Cc" for ch in tag):
            raise InvalidInput(field_name, "tags must not contain control characters")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise InvalidInput(field_name, f"at most {MAX_TAGS} tags")
    return tuple(tags)


def validate_pattern(value: Any, field_name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be a string")
    if len(value) > MAX_PATTERN_LENGTH:
        raise InvalidInput(field_name, f"must be at most {MAX_PATTERN_LENGTH} characters")
    return value


@dataclass(frozen=True)
class NewLink:
    url: str
    title: str
    description: str
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> NewLink:
        reject_unknown_fields(payload, {"url", "title", "description", "tags"})
        return cls(
            url=validate_url(payload.get("url")),
            title=validate_text(payload.get("title"), "title", max_length=MAX_TITLE_LENGTH, required=True),
            description=validate_text(payload.get("description"), "description",
                                      max_length=MAX_DESCRIPTION_LENGTH, required=False),
            tags=validate_tags(payload.get("tags")),
        )


@dataclass(frozen=True)
class LinkChanges:
    url: str
    title: str | None = None
    description: str | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> LinkChanges:
        reject_unknown_fields(payload, {"url", "title", "description", "add_tags", "remove_tags"})
        title = payload.get("title")
        description = payload.get("description")
        return cls(
            url=validate_url(payload.get("url")),
            title=None if title is None else validate_text(title, "title", max_length=MAX_TITLE_LENGTH,
                                                           required=True),
            description=None if description is None else validate_text(
                description, "description", max_length=MAX_DESCRIPTION_LENGTH, required=False),
            add_tags=validate_tags(payload.get("add_tags"), "add_tags"),
            remove_tags=validate_tags(payload.get("remove_tags"), "remove_tags"),
        )

