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

# The public API's document (contracts/public_api.py) states the same limits; a test holds them equal.
MAX_URL_LENGTH = 2048
MAX_TITLE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 5000
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_PATTERN_LENGTH = 256
# What PostgreSQL's regex compiler is given to build, at most (see PatternCost).
MAX_PATTERN_EXPANSION = 2000
MAX_EMPTY_REPETITION = 64
MAX_PATTERN_NESTING = 32
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

LinkStatus = Literal["pending", "valid", "invalid"]
CHECK_STATUSES: frozenset[str] = frozenset({"valid", "invalid"})


@dataclass(frozen=True)
class InconclusiveCheck:
    """The link checker's latest attempt at a link that reached no verdict (a timeout, a refused connection, a
    resolver failure, 429, 5xx ...), made after the link's last conclusive check. It never changes the link's
    status; a later conclusive check clears it."""

    attempted_at: datetime
    reason: str  # short, for people: "HTTP 503"
    failure: str  # the checker's kind of failure: timeout, connection, network, dns, tls, http_429, http_5xx ...
    attempts: int  # inconclusive attempts of this check so far
    next_attempt_at: datetime | None  # None once given up
    given_up: bool = False
    http_status: int | None = None

    def cleared_by(self, checked_at: datetime) -> bool:
        """Whether a conclusive check made at `checked_at` replaces this attempt as the link's news: it is as new."""
        return self.attempted_at <= checked_at


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
    inconclusive_check: InconclusiveCheck | None = None
    id: int | None = None

    def takes_attempt(self, attempted_at: datetime) -> bool:
        """Whether an attempt without verdict made at `attempted_at` is news for the link: newer than its last
        conclusive check, and not older than the attempt it has recorded."""
        return ((self.checked_at is None or self.checked_at < attempted_at)
                and (self.inconclusive_check is None or self.inconclusive_check.attempted_at <= attempted_at))

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


@dataclass(frozen=True)
class InconclusiveResult:
    """An attempt of the link checker at one owner's URL that reached no verdict."""

    username: str
    url: str
    check: InconclusiveCheck
    # As in CheckResult: an attempt about a link since deleted and saved again must not land on the new one.
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
    if any(unicodedata.category(ch) == "Cs" for ch in url):  # from JSON's \udXXX escapes: not storable text
        raise InvalidInput(field_name, "must not contain unpaired surrogates")
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
        stripped = raw.strip()
        # Counted as sent (trimmed): lower-casing may lengthen a tag ("İ" is two characters lower-cased).
        if not 1 <= len(stripped) <= MAX_TAG_LENGTH:
            raise InvalidInput(field_name, f"each tag must be 1-{MAX_TAG_LENGTH} characters")
        tag = stripped.lower()
        if any(unicodedata.category(ch) == "Cc" for ch in tag):
            raise InvalidInput(field_name, "tags must not contain control characters")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise InvalidInput(field_name, f"at most {MAX_TAGS} tags")
    return tuple(tags)


def validate_pattern(value: Any, field_name: str) -> str | None:
    """A regex filter's pattern, or None for no filter: a string of at most MAX_PATTERN_LENGTH characters without
    NUL, and none of the constructs that PatternCost knows to be costly for PostgreSQL (InvalidInput naming
    `field_name` otherwise). Whether it is a valid expression at all is for PostgreSQL to say
    (LinkRepository.check_patterns), and what it costs on the user's links for the statement timeout."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be a string")
    if len(value) > MAX_PATTERN_LENGTH:
        raise InvalidInput(field_name, f"must be at most {MAX_PATTERN_LENGTH} characters")
    if "\x00" in value:
        raise InvalidInput(field_name, "must not contain NUL characters")
    problem = PatternCost.problem(value)
    if problem is not None:
        raise InvalidInput(field_name, problem)
    return value


class FilterTooCostly(InvalidInput, code="filter_too_costly"):
    """A regex filter that PostgreSQL could not evaluate on the user's links within the filter budget: the client's
    400, named after the filter(s), and never a 503 (nobody should retry it: it would cost as much again)."""

    def __init__(self, parameters: list[str], budget_ms: int | None) -> None:
        within = f" within {budget_ms} ms" if budget_ms is not None else ""
        super().__init__(parameters[0], "filter too costly: the regular expression could not be evaluated on "
                                        f"your links{within}; simplify it, or narrow the list with `tag`")
        self.message = f"{', '.join(parameters)}: {self.message.partition(': ')[2]}"
        self.details["fields"] = parameters


class PatternCost:
    """A cheap, conservative look at a regex filter before PostgreSQL sees it: the first line of defence against
    costly filters, the statement timeout being the guarantee.

    PostgreSQL's engine (Henry Spencer's, from Tcl) is not a backtracking one like Python's: it compiles the
    expression to an automaton and matches with a DFA built lazily from it, in time linear in the text for most
    expressions. Nested quantifiers such as `(a+)+$` or `(a|aa)*$`, the classic catastrophic cases of
    backtracking engines, are harmless to it. What is costly for it, measured on PostgreSQL 18:
    - back references (`\\1`): they force its backtracking matcher, exponential in the number of groups;
      `(.+)(.+)\\2\\1` on a 300-character text ran past any timeout. Refused.
    - lookahead constraints (`(?=`, `(?!`): each is evaluated again from every candidate position, so the time
      grows with the square of the text (`(?!.*!)` took 85 ms on one 5,000-character description, a quarter of
      that on half the text, and a user may have 10,000 links). Refused. Lookbehind constraints (`(?<=`,
      `(?<!`) measured linear, and are accepted.
    - counted repetitions, expanded at compile time: nested ones multiply (`(([a-z ]{0,20}){0,20}){0,20}` took
      3 s to compile before PostgreSQL called it too complex). Refused when the expansion exceeds
      MAX_PATTERN_EXPANSION copies of the atoms.
    - a counted repetition of something that can match the empty string, like `(a*b*){0,255}` (2.4 s to
      compile) or `(\\w*\\s*){0,255}` (6 s): the empty paths multiply. Refused when the count times the
      quantifiers inside exceeds MAX_EMPTY_REPETITION.
    And parentheses nested more than MAX_PATTERN_NESTING deep, which no filter needs. Anything else the scan
    does not understand is left to PostgreSQL, which refuses invalid expressions, and to
    the statement timeout, which bounds whatever gets through (a valid expression can still be slow on many long
    descriptions).
    """

    _LOOKAHEAD = ("(?=", "(?!")
    _CONSTRAINT_ESCAPES = frozenset("AmMyYZ")
    _OPTION_LETTERS = frozenset("bceimnpqstwx")

    def __init__(self, pattern: str, expanded: bool) -> None:
        self._pattern = pattern
        self._at = 0
        self._expanded = expanded
        self.expansion = 0
        self.problems: list[str] = []

    @classmethod
    def problem(cls, pattern: str) -> str | None:
        """Why the pattern is refused, or None."""
        start, options = cls._directives(pattern)
        if "q" in options:
            return None  # the rest is a literal string: matched in linear time
        if {"b", "e"} & options:
            return "only advanced regular expressions (PostgreSQL's default) are accepted, not the options b or e"
        scan = cls(pattern, expanded="x" in options)
        scan._at = start
        scan._alternation(depth=0)
        if scan._at < len(pattern):
            return None  # malformed (an unmatched parenthesis): PostgreSQL says so, naming the problem
        if not scan.problems and scan.expansion > MAX_PATTERN_EXPANSION:
            scan.problems.append(f"its counted repetitions ({{m,n}}) expand to about {scan.expansion} copies of "
                                 f"what they repeat (at most {MAX_PATTERN_EXPANSION}): too costly to compile")
        return scan.problems[0] if scan.problems else None

    @classmethod
    def _directives(cls, pattern: str) -> tuple[int, set[str]]:
        """Where the expression proper starts, and the embedded options in force (`***=` means literal)."""
        if pattern.startswith("***="):
            return len(pattern), {"q"}
        start = 4 if pattern.startswith("***:") else 0
        options: set[str] = set()
        if pattern.startswith("(?", start):
            end = pattern.find(")", start)
            letters = pattern[start + 2:end] if end > 0 else ""
            if letters and set(letters) <= cls._OPTION_LETTERS:
                for letter in letters:
                    if letter == "t":
                        options.discard("x")
                    options.add(letter)
                start = end + 1
        return start, options

    # --- a recursive descent over the expression, measuring as it goes ----------------------------------
    # Each returns (can match the empty string, quantifiers inside, expansion).
    def _alternation(self, depth: int) -> tuple[bool, int, int]:
        nullable, quantifiers, size = self._branch(depth)
        while self._peek() == "|":
            self._at += 1
            branch = self._branch(depth)
            nullable, quantifiers, size = nullable or branch[0], quantifiers + branch[1], size + branch[2]
        return nullable, quantifiers, size

    def _branch(self, depth: int) -> tuple[bool, int, int]:
        nullable, quantifiers, size = True, 0, 0
        while self._peek() not in ("", "|", ")"):
            piece = self._piece(depth)
            nullable, quantifiers, size = nullable and piece[0], quantifiers + piece[1], size + piece[2]
        return nullable, quantifiers, size

    def _piece(self, depth: int) -> tuple[bool, int, int]:
        nullable, quantifiers, size = self._atom(depth)
        while True:
            char = self._peek()
            if char in ("*", "?"):
                self._at += 1
                nullable, quantifiers = True, quantifiers + 1
            elif char == "+":
                self._at += 1
                quantifiers += 1
            elif char == "{" and self._bound_follows():
                low, high = self._bound()
                count = high if high is not None else low + 1
                if count > 1 and nullable and count * max(quantifiers, 1) > MAX_EMPTY_REPETITION:
                    self.problems.append(
                        f"a counted repetition ({{m,n}}) of something that can match the empty string, repeated "
                        f"{count} times, is too costly to compile (like (a*b*){{0,255}}): repeat something that "
                        "cannot be empty, or fewer times")
                nullable, quantifiers, size = nullable or low == 0, quantifiers + 1, size * max(count, 1)
                self.expansion = max(self.expansion, size)
            else:
                return nullable, quantifiers, size
            if self._peek() == "?":  # non-greedy: the same shape
                self._at += 1

    def _atom(self, depth: int) -> tuple[bool, int, int]:
        pattern, at = self._pattern, self._at
        char = pattern[at]
        if char == "(":
            if depth >= MAX_PATTERN_NESTING:
                self.problems.append(f"parentheses may be nested at most {MAX_PATTERN_NESTING} deep")
                self._at = len(pattern)
                return False, 0, 0
            if pattern.startswith(self._LOOKAHEAD, at):
                self.problems.append("lookahead constraints ((?= and (?!) are not accepted: each is evaluated again "
                                     "from every position, so their cost grows with the square of the text")
            prefix = next((len(opening) for opening in ("(?:", "(?=", "(?!", "(?<=", "(?<!")
                           if pattern.startswith(opening, at)), 1)
            self._at = at + prefix
            shape = self._alternation(depth + 1)
            if self._peek() == ")":
                self._at += 1
            return shape
        if char == "[":
            self._skip_bracket()
            return False, 0, 1
        if char == "\\":
            escaped = pattern[at + 1:at + 2]
            self._at = at + 2
            if escaped[:1].isdigit() and escaped != "0":
                self.problems.append("back references (\\1 to \\9) are not accepted: PostgreSQL matches them by "
                                     "backtracking, in time exponential in the groups they refer to")
            if escaped in self._CONSTRAINT_ESCAPES:
                return True, 0, 0
            return False, 0, 1
        self._at = at + 1
        if char in ("^", "$"):
            return True, 0, 0
        return False, 0, 1

    def _peek(self) -> str:
        """The next significant character ("" at the end), past whitespace and comments in expanded syntax."""
        pattern = self._pattern
        while self._expanded and self._at < len(pattern) and (pattern[self._at].isspace() or pattern[self._at] == "#"):
            if pattern[self._at] == "#":
                end = pattern.find("\n", self._at)
                self._at = len(pattern) if end < 0 else end
            self._at += 1
        return pattern[self._at] if self._at < len(pattern) else ""

    def _bound_follows(self) -> bool:
        return self._pattern[self._at + 1:self._at + 2].isdigit()

    def _bound(self) -> tuple[int, int | None]:
        """{m}, {m,} or {m,n} at the current position (PostgreSQL allows counts up to 255)."""
        end = self._pattern.find("}", self._at)
        if end < 0:
            self._at = len(self._pattern)
            return 0, 0
        low, comma, high = self._pattern[self._at + 1:end].partition(",")
        self._at = end + 1
        try:
            return int(low), (int(high) if high else None) if comma else int(low)
        except ValueError:
            return 0, 0  # malformed: PostgreSQL refuses it

    def _skip_bracket(self) -> None:
        """Past a bracket expression: [^]a-z[:alpha:][.x.][=e=]\\]]."""
        pattern, at = self._pattern, self._at + 1
        if pattern[at:at + 1] == "^":
            at += 1
        if pattern[at:at + 1] == "]":
            at += 1
        while at < len(pattern) and pattern[at] != "]":
            if pattern[at] == "[" and pattern[at + 1:at + 2] in (":", ".", "="):
                close = pattern.find(pattern[at + 1] + "]", at + 2)
                at = len(pattern) if close < 0 else close + 2
            elif pattern[at] == "\\":
                at += 2
            else:
                at += 1
        self._at = at + 1


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

