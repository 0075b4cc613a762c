"""Input rules shared by every service's contract: usernames, strict JSON objects, bounded JSON nesting and text
a store can keep (no NUL, no unpaired surrogate)."""
from __future__ import annotations

import re
from typing import Any

from .errors import InvalidInput

# GitHub login rules: 1-39 characters of a-z, 0-9 and single inner dashes (lower-cased by us).
# The public API's document states the same rule from these (contracts/public_api.py).
USERNAME_MAX_LENGTH = 39
USERNAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
USERNAME_PROBLEM = "must be 1-39 characters of a-z, 0-9 and single inner dashes"
_USERNAME = re.compile(USERNAME_PATTERN)


def validate_username(username: Any, field_name: str = "username") -> str:
    # fullmatch: `$` alone would also let a trailing newline through.
    if not isinstance(username, str) or len(username) > USERNAME_MAX_LENGTH or not _USERNAME.fullmatch(username):
        raise InvalidInput(field_name, USERNAME_PROBLEM)
    return username


def reject_unknown_fields(payload: dict[str, Any], known: set[str]) -> None:
    """Unknown fields are refused: a typo ("tag" for "tags") must not be silently ignored."""
    unknown = sorted(set(payload) - known)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field (expected one of: {', '.join(sorted(known))})")


# --- text that came from a client -----------------------------------------------------------
MAX_JSON_DEPTH = 64
# A JSON string (escapes included, so a quote inside one does not end it), and the brackets outside strings.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
# Python's json module keeps a \ud800 escape without its pair as a lone surrogate code point; a pair becomes one
# character. So any surrogate left in a decoded string is unpaired: no UTF-8 encoding (none in PostgreSQL) exists.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_json_depth(text: str, max_depth: int = MAX_JSON_DEPTH, field_name: str = "body") -> None:
    """InvalidInput if the JSON document `text` nests arrays and objects deeper than `max_depth`: checked before
    parsing (a parser recurses once per level), in one pass over the brackets outside strings."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise InvalidInput(field_name, f"nests arrays and objects deeper than {max_depth} levels")
        else:
            depth -= 1


def check_text(value: str, field_name: str) -> str:
    """InvalidInput unless `value` is text a store can keep: no NUL character and no unpaired UTF-16 surrogate."""
    found = _UNSTORABLE.search(value)
    if found is not None:
        problem = ("must not contain NUL characters" if found.group() == "\x00"
                   else "contains an unpaired UTF-16 surrogate (not valid Unicode text)")
        raise InvalidInput(field_name, problem)
    return value


def check_json_text(value: Any, field_name: str = "body") -> None:
    """check_text on every string of a parsed JSON document, keys included; the field named is the path to it
    (`tags[2]`, `user.name`). Iterative: the document's depth was bounded before parsing, but no recursion here."""
    pending: list[tuple[Any, str]] = [(value, field_name)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, dict):
            for key, member in item.items():
                check_text(key, f"{path} (a key)")
                pending.append((member, key if path == field_name else f"{path}.{key}"))
        elif isinstance(item, list):
            pending.extend((member, f"{path}[{index}]") for index, member in enumerate(item))
