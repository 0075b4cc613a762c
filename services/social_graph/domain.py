"""The social-graph domain: who follows whom and the rules a follow obeys. Plain Python, no I/O."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..kit.core.errors import InvalidInput
from ..kit.core.validation import reject_unknown_fields, validate_username

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000  # a page is a list of usernames: small rows

# Which side of the edges a listing walks: whom a user follows, or who follows them.
Direction = Literal["following", "followers"]


@dataclass(frozen=True)
class Follow:
    """The edge `follower` -> `followed`. There is at most one per pair."""

    follower: str
    followed: str
    created_at: datetime
    id: int | None = None


class CannotFollowSelf(InvalidInput):
    code = "cannot_follow_self"

    def __init__(self) -> None:
        super().__init__("followed", "a user cannot follow themselves")


def check_can_follow(follower: str, followed: str) -> None:
    if follower == followed:
        raise CannotFollowSelf()


@dataclass(frozen=True)
class FollowRequest:
    followed: str

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> FollowRequest:
        reject_unknown_fields(payload, {"followed"})
        if payload.get("followed") is None:
            raise InvalidInput("followed", "is required")
        return cls(followed=validate_username(payload["followed"], "followed"))
