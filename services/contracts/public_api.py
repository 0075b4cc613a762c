"""The public REST API (DESIGN §2) as a contract: its request and response bodies and query parameters as
pydantic models, and the OpenAPI 3.1 document generated from them (the gateway serves it at /v1/openapi.json).

The models say exactly what the document promises, no more: the internal services do the real validation,
and the black-box conformance suite holds them to this document, so tightening or loosening a model here
changes what clients may send. Standard library, pydantic and the event contracts only: a client or a tool
can import it alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ..kit.core.validation import USERNAME_MAX_LENGTH, USERNAME_PATTERN, USERNAME_PROBLEM
from .events import LINK_EVENTS

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"

# --- bodies ---------------------------------------------------------------------------------------
# An optional field is typed `X | MISSING = MISSING` where the API lets a client leave it out but never send
# null; `X | None = None` where null is a valid value.

LinkStatus = Literal["pending", "valid", "invalid"]
# The event types a feed shows are the link events of contracts/events.py.
NewsEventType = Literal[tuple(contract.event_type for contract in LINK_EVENTS)]  # type: ignore[valid-type]

# What the link service accepts, said as JSON Schema: the gateway validates every request with these models
# before passing it on, and tests/api_gateway/test_openapi_agreement.py sends schemathesis' valid and invalid
# requests through both, so the document, the gateway and the link service cannot drift apart. The patterns use
# only what ECMA-262 (the document's readers) and Rust's regex crate (pydantic's validator) read alike: explicit
# \xHH and \uHHHH ranges, no \s, no \d, no flags.
#
# Whitespace is what the link service trims (Python's str.isspace); control characters are Unicode's Cc.
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_VISIBLE = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"  # whitespace or control
# Characters whose NFKC form holds one of / ? # @ : (e.g. U+FF0F FULLWIDTH SOLIDUS): a URL's host may not have them
# (Python's urlsplit refuses them there: they would change the host once normalised).
NFKC_URL_DELIMITERS = (r"\u2047-\u2049\u2100\u2101\u2105\u2106\u2a74\ufe13\ufe16\ufe55\ufe56\ufe5f\ufe6b\uff03\uff0f"
                       r"\uff1a\uff1f\uff20")
_PORT = r"(?:0*(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
# An absolute http(s) URL with a host, without whitespace or control characters, whose port (if any) is 0-65535.
URL_PATTERN = (rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:[^{_VISIBLE}/?#\[\]{NFKC_URL_DELIMITERS}]*@)?"
               rf"[^{_VISIBLE}/?#@:\[\]{NFKC_URL_DELIMITERS}]+(?::{_PORT})?(?:[/?#][^{_VISIBLE}]*)?$")
# Text with at least one character that is not whitespace, and no NUL.
TITLE_PATTERN = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"
# A tag: at least one visible character, no control characters.
TAG_PATTERN = rf"^[^{_CONTROL}]*[^{_VISIBLE}][^{_CONTROL}]*$"
# Tags as one query or form parameter: comma-separated, at most 50, each at most 64 characters.
_TAG_ITEM = rf"[^,{_CONTROL}]{{0,64}}"
TAG_LIST_PATTERN = rf"^(?:{_TAG_ITEM}(?:,{_TAG_ITEM}){{0,49}})?$"
PAGE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]*$"

# Why a value does not match each pattern, for the gateway's 400 (the pattern itself says little to a person).
PATTERN_PROBLEMS = {
    URL_PATTERN: "must be an absolute http or https URL with a host, a port of 0-65535 if any, and no whitespace or "
                 "control characters",
    TITLE_PATTERN: "must have a character that is not whitespace, and no NUL",
    NO_NUL_PATTERN: "must not contain NUL characters",
    TAG_PATTERN: "each tag must have a visible character and no control characters",
    TAG_LIST_PATTERN: "must be at most 50 comma-separated tags of at most 64 characters, without control characters",
    PAGE_TOKEN_PATTERN: "is not a valid page token",
    USERNAME_PATTERN: USERNAME_PROBLEM,
}

MAX_URL_LENGTH = 2048
MAX_TITLE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 5000
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_PATTERN_LENGTH = 256
MAX_PAGE_TOKEN_LENGTH = 1024
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

LinkUrl = Annotated[str, Field(max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)]
LinkTitle = Annotated[str, Field(min_length=1, max_length=MAX_TITLE_LENGTH, pattern=TITLE_PATTERN)]
LinkDescription = Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH, pattern=NO_NUL_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_LENGTH, pattern=TAG_PATTERN)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
RegexFilter = Annotated[str, Field(max_length=MAX_PATTERN_LENGTH, pattern=NO_NUL_PATTERN)]
PageToken = Annotated[str, Field(max_length=MAX_PAGE_TOKEN_LENGTH, pattern=PAGE_TOKEN_PATTERN)]
Username = Annotated[str, Field(min_length=1, max_length=USERNAME_MAX_LENGTH, pattern=USERNAME_PATTERN)]


class Error(BaseModel):
    """Every error answer; `field` names the invalid input of a 400."""

    message: str
    code: str
    field: str | MISSING = MISSING


class InconclusiveCheck(BaseModel):
    """The link checker's latest attempt at the link that reached no verdict, made after its last conclusive check:
    the link's `status` is left as it was, and the check is tried again later (or was given up)."""

    attempted_at: datetime = Field(description="when the attempt was made")
    reason: str = Field(description="why it said nothing about the link, for people: `HTTP 503`, `timed out ...`")
    failure: str = Field(description=(
        "the kind of failure: `timeout`, `connection`, `network`, `dns`, `tls`, `http_429`, `http_5xx`, `http_4xx`, "
        "`http_other` or `redirects` (the link checker's README explains each); more may come"))
    http_status: int | None = Field(None, description="the server's answer, if there was one")
    attempts: int = Field(ge=1, description="inconclusive attempts of this check so far")
    next_attempt_at: datetime | None = Field(description="when the check is tried again; null once given up")
    given_up: bool = Field(description="the checker stopped trying; saving the link again checks it again")


class Link(BaseModel):
    """A saved link. `status` stays `pending` until the checker reaches a conclusive result; `checked_at`,
    `http_status` and `status_reason` are that result's. An inconclusive check (a timeout, 429, 5xx ...) never
    changes them: it is `inconclusive_check` until a later conclusive check replaces it."""

    url: str
    title: str
    description: str
    tags: list[str]
    status: LinkStatus
    created_at: datetime
    updated_at: datetime
    checked_at: datetime | None = None
    http_status: int | None = None
    status_reason: str | None = None
    inconclusive_check: InconclusiveCheck | None = None


class LinkPage(BaseModel):
    links: list[Link]
    next_token: str | None


class NewLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: LinkUrl
    title: LinkTitle
    description: LinkDescription | MISSING = MISSING
    tags: Tags | MISSING = MISSING


class LinkUpdate(BaseModel):
    """Identifies the link by `url`; fields left out are not changed."""

    model_config = ConfigDict(extra="forbid")

    url: LinkUrl
    title: LinkTitle | MISSING = MISSING
    description: LinkDescription | MISSING = MISSING
    add_tags: Tags | MISSING = MISSING
    remove_tags: Tags | MISSING = MISSING


class User(BaseModel):
    username: str
    email: str | None = None
    name: str | None = None


class Login(BaseModel):
    """The answer to a completed login: `access_token` is presented as `Authorization: Bearer <token>`."""

    username: str
    email: str | None
    name: str | None
    access_token: str


class Follow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    followed: Username


class Following(BaseModel):
    following: list[str]
    next_token: str | None = None


class Followers(BaseModel):
    followers: list[str]
    next_token: str | None = None


class NewsEvent(BaseModel):
    event_type: NewsEventType
    username: str
    url: str
    title: str | MISSING = MISSING
    timestamp: datetime


class NewsPage(BaseModel):
    events: list[NewsEvent]
    next_token: str | None


# --- query parameters -----------------------------------------------------------------------------
# Each field becomes one query parameter; its description becomes the parameter's.

class PageQuery(BaseModel):
    start_token: PageToken | MISSING = Field(MISSING, description=(
        "next_token of the previous page: opaque, bound to the caller and the listing (a token of another listing or "
        "user, or a changed one, is a 400)"))
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="page size")


_REGEX_FILTER = ("PostgreSQL regular expression (POSIX ARE, case-sensitive) on {column}. Not accepted (400 naming it): "
                 "an invalid one; back references; lookahead constraints; counted repetitions that expand to more "
                 "than 2000 copies, or that repeat something able to match the empty string many times; and one "
                 "that the link service cannot evaluate on the caller's links within its budget "
                 "(`filter_too_costly`)")


class LinkFilterQuery(BaseModel):
    url_regex: RegexFilter | MISSING = Field(MISSING, description=_REGEX_FILTER.format(column="url"))
    title_regex: RegexFilter | MISSING = Field(MISSING, description=_REGEX_FILTER.format(column="title"))
    description_regex: RegexFilter | MISSING = Field(MISSING, description=_REGEX_FILTER.format(column="description"))
    tag: Tags | MISSING = Field(MISSING, description="only links with all these tags (repeatable)")


class NewLinkQuery(BaseModel):
    """POST /v1/links without a body: the link as query parameters (url and title are then required; the
    document cannot say "required when there is no body")."""

    url: LinkUrl | MISSING = Field(MISSING, description="when sent as query parameters")
    title: LinkTitle | MISSING = Field(MISSING, description="when sent as query parameters")
    description: LinkDescription | MISSING = Field(MISSING, description="when sent as query parameters")
    tags: Annotated[str, Field(max_length=MAX_TAGS * (MAX_TAG_LENGTH + 1), pattern=TAG_LIST_PATTERN)] | MISSING = \
        Field(MISSING, description="comma-separated, when sent as query parameters")


class LinkUrlQuery(BaseModel):
    url: LinkUrl = Field(description="the link's URL")


class FollowedQuery(BaseModel):
    followed: Username = Field(description="username")


class LoginCallbackQuery(BaseModel):
    code: str | MISSING = Field(MISSING, description="from the provider")
    state: str | MISSING = Field(MISSING, description="from the provider")


# --- operations -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    description: str
    body: type[BaseModel] | None = None


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: dict[str, Answer]
    query: tuple[type[BaseModel], ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_media_types: tuple[str, ...] = ("application/json",)
    needs_token: bool = True


def _error(description: str) -> Answer:
    return Answer(description, Error)


_CALLER_ERRORS = {"401": _error("No, invalid, expired or revoked token"),
                  "429": _error("Rate limited; see Retry-After"),
                  "503": _error("A dependency is unavailable; see Retry-After")}

PATHS: dict[str, dict[str, Operation]] = {
    "/login": {"get": Operation(
        "Log in: redirects to the identity provider", needs_token=False,
        answers={"302": Answer("To the provider's authorization page")})},
    "/login/authorized": {"get": Operation(
        "OAuth callback: creates or updates the user, answers a Delinkcious token", needs_token=False,
        query=(LoginCallbackQuery,),
        answers={"200": Answer("Logged in", Login), "400": _error("Bad callback"), "401": _error("Login failed"),
                 "503": _CALLER_ERRORS["503"]})},
    "/logout": {"post": Operation(
        "Revoke the presented token", answers={"200": Answer("Logged out"), **_CALLER_ERRORS})},
    "/v1/me": {"get": Operation("The caller's profile", answers={"200": Answer("Profile", User), **_CALLER_ERRORS})},
    "/v1/links": {
        "get": Operation(
            "The caller's links, newest first", query=(LinkFilterQuery, PageQuery),
            answers={"200": Answer("A page of links", LinkPage), "400": _error("Invalid filter, limit or token"),
                     **_CALLER_ERRORS}),
        "post": Operation(
            "Save a link (JSON, form or query parameters)", query=(NewLinkQuery,),
            body=NewLink, body_required=False,
            body_media_types=("application/json", "application/x-www-form-urlencoded"),
            answers={"201": Answer("Saved", Link), "400": _error("Invalid link"),
                     "409": _error("Already saved (carries `link`) or quota exceeded"),
                     "413": _error("Body over 64 KiB"), **_CALLER_ERRORS}),
        "put": Operation(
            "Change a saved link", body=LinkUpdate,
            answers={"200": Answer("Changed", Link), "400": _error("Invalid change"), "404": _error("No such link"),
                     "413": _error("Body over 64 KiB"), **_CALLER_ERRORS}),
        "delete": Operation(
            "Remove a saved link", query=(LinkUrlQuery,),
            answers={"200": Answer("Removed", Link), "400": _error("Invalid url"), "404": _error("No such link"),
                     **_CALLER_ERRORS}),
    },
    "/v1/following": {
        "get": Operation(
            "Who the caller follows", query=(PageQuery,),
            answers={"200": Answer("Usernames", Following), "400": _error("Bad page"), **_CALLER_ERRORS}),
        "post": Operation(
            "Follow someone (following twice is fine)", body=Follow,
            answers={"200": Answer("Already followed"), "201": Answer("Followed"),
                     "400": _error("Invalid name, or yourself"), "404": _error("No such user"), **_CALLER_ERRORS}),
        "delete": Operation(
            "Stop following someone", query=(FollowedQuery,),
            answers={"200": Answer("Not followed (any more)"), "400": _error("Invalid name"), **_CALLER_ERRORS}),
    },
    "/v1/followers": {"get": Operation(
        "Who follows the caller", query=(PageQuery,),
        answers={"200": Answer("Usernames", Followers), "400": _error("Bad page"), **_CALLER_ERRORS})},
    "/v1/news": {"get": Operation(
        "What the people the caller follows did, newest first", query=(PageQuery,),
        answers={"200": Answer("A page of events", NewsPage), "400": _error("Bad page"), **_CALLER_ERRORS})},
}

_SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer"},
                     "accessToken": {"type": "apiKey", "in": "header", "name": "Access-Token"}}
_EITHER_TOKEN = [{"bearer": []}, {"accessToken": []}]


# --- the document ---------------------------------------------------------------------------------

def document(server_url: str) -> dict[str, Any]:
    """The OpenAPI document of the public API served at `server_url`."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Delinkcious public API", "version": "1.0.0",
                 "description": "Save links, follow people, read their news. Errors are "
                                "{\"message\", \"code\"} with the status codes listed per operation."},
        "servers": [{"url": server_url}],
        "components": {"schemas": component_schemas(), "securitySchemes": _SECURITY_SCHEMES},
        "paths": {path: {method: _operation(operation) for method, operation in operations.items()}
                  for path, operations in PATHS.items()},
    }


def body_models() -> list[type[BaseModel]]:
    """The models of every request and response body, in the order the operations name them."""
    models: dict[type[BaseModel], None] = {}
    for operations in PATHS.values():
        for operation in operations.values():
            bodies = [operation.body, *(answer.body for answer in operation.answers.values())]
            models.update((model, None) for model in bodies if model is not None)
    return list(models)


def component_schemas() -> dict[str, Any]:
    """The JSON schema of every body model (and of the models they contain), by model name."""
    _, schemas = models_json_schema([(model, "validation") for model in body_models()], ref_template=REF_TEMPLATE)
    return schemas["$defs"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _operation(operation: Operation) -> dict[str, Any]:
    built: dict[str, Any] = {"summary": operation.summary, "security": _EITHER_TOKEN if operation.needs_token else []}
    parameters = [parameter for model in operation.query for parameter in _query_parameters(model)]
    if parameters:
        built["parameters"] = parameters
    if operation.body is not None:
        built["requestBody"] = {"required": operation.body_required,
                                "content": {media_type: {"schema": _ref(operation.body)}
                                            for media_type in operation.body_media_types}}
    built["responses"] = {code: _response(answer) for code, answer in operation.answers.items()}
    return built


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    model_schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(model_schema.get("required", ()))
    parameters = []
    for name, property_schema in model_schema["properties"].items():
        schema = dict(property_schema)
        parameter = {"name": name, "in": "query", "required": name in required,
                     "description": schema.pop("description", ""), "schema": schema}
        if schema.get("type") == "array":
            parameter.update(style="form", explode=True)  # repeated: ?tag=a&tag=b
        parameters.append(parameter)
    return parameters


def _response(answer: Answer) -> dict[str, Any]:
    if answer.body is None:
        return {"description": answer.description}
    return {"description": answer.description, "content": {"application/json": {"schema": _ref(answer.body)}}}
