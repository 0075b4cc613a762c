"""Caller identity and caller permissions for service-to-service calls.

**Identity.** Each service has its own token (a mounted secret). Outgoing internal calls present it in
`Delinkcious-Caller-Token`; an internal endpoint answers 401 to a missing or unknown token and 403 to a known
caller the service does not serve (not in its ALLOWED_CALLERS, which every deployment takes from the
catalogue's `allowed_callers`, services/catalogue.py).

**Permissions, per endpoint (least privilege).** Being allowed to call a service is not being allowed to call
each of its endpoints: every endpoint of an internal service declares which of the service's callers may call it,
beside its route, with `allow_callers`:

    api = allow_callers("api-gateway")(Blueprint("users", __name__))   # the default of its routes and nested ones

    @api.get("/users/<username>")
    @allow_callers("api-gateway")                      # a route's own grants replace the blueprint's default
    @allow_callers("social-graph", methods=["HEAD"])   # grants add up; a GET grant covers HEAD too
    def get_user(username): ...

The kit (kit.serving.web) checks a known caller against the endpoint's grants right after its token, before any
parameter of the request is read, and answers 403 `forbidden` (the standard error shape) to a caller the
endpoint does not admit. An internal service whose app has an endpoint with no grants does not start (fail
closed). tests/test_caller_permissions.py checks each service's grants against the catalogue both ways: no
caller the catalogue does not allow, no allowed caller that no endpoint admits.

UNRESTRICTED callers (the local runtime's `developer`, for curl) pass every endpoint's check; no deployment has
any. gRPC keeps permissions per service: news, the only gRPC service, serves one RPC to one caller.

Turning identity off takes an explicit CALLER_AUTH=disabled (for a mesh doing mTLS, whose authorization policy
then holds the per-endpoint rules) and is logged loudly at start-up.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import Forbidden, Unauthenticated

CALLER_TOKEN_HEADER = "Delinkcious-Caller-Token"

T = TypeVar("T")
# Where allow_callers keeps its grants, on a view function or a Flask blueprint: HTTP method -> caller names, the
# method None standing for every method of the route.
_GRANTS = "delinkcious_allowed_callers"


def allow_callers(*callers: str, methods: Iterable[str] | None = None) -> Callable[[T], T]:
    """Grants `callers` the route it decorates (or, applied to a blueprint, the default of the blueprint's routes
    and nested blueprints): every method of the route, or only `methods`. Grants on one target add up."""
    names = frozenset(callers)
    if not names or not all(isinstance(name, str) and name.strip() == name and name for name in names):
        raise ValueError(f"allow_callers needs caller names, got {callers!r}")
    keys: tuple[str | None, ...] = (None,) if methods is None else tuple(method.upper() for method in methods)
    if not keys:
        raise ValueError("allow_callers: methods, when given, names at least one")

    def grant(target: T) -> T:
        grants: dict[str | None, frozenset[str]] = dict(vars(target).get(_GRANTS, {}))
        for key in keys:
            grants[key] = grants.get(key, frozenset()) | names
        setattr(target, _GRANTS, grants)
        return target

    return grant


@dataclass(frozen=True)
class EndpointCallers:
    """The callers one endpoint admits, by HTTP method."""

    grants: Mapping[str | None, frozenset[str]]

    def admits(self, caller: str, method: str) -> bool:
        method = method.upper()
        admitted = self.grants.get(None, frozenset()) | self.grants.get(method, frozenset())
        if method == "HEAD":  # HEAD is GET without the body: who may GET may HEAD
            admitted |= self.grants.get("GET", frozenset())
        return caller in admitted

    @property
    def callers(self) -> frozenset[str]:
        """Every caller admitted by some method."""
        return frozenset().union(*self.grants.values())


class UndeclaredCallers(RuntimeError):
    """An internal service's endpoint says nothing of who may call it (or grants a method it does not serve)."""


class CallerPermissions:
    """The grants of every endpoint of a Flask app: the route's own, else its innermost blueprint's that has any
    (walking out from a nested blueprint to its parents). Built once per app by kit.serving.web."""

    def __init__(self, endpoints: Mapping[str, EndpointCallers]) -> None:
        self.endpoints = dict(endpoints)

    @classmethod
    def of_app(cls, app: Any, *, exempt: Callable[[str], bool]) -> CallerPermissions:
        """Every endpoint of `app` (a flask.Flask) with grants; routes for which `exempt(rule)` holds (the
        operator endpoints, which need no caller identity) and Flask's own `static` are left out. Raises
        UndeclaredCallers naming every endpoint without grants, or with grants for a method it does not serve."""
        endpoints: dict[str, EndpointCallers] = {}
        problems: list[str] = []
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static" or exempt(rule.rule):
                continue
            grants = _grants_of(app, rule.endpoint)
            if grants is None:
                problems.append(f"{rule.endpoint} ({rule.rule}) declares no callers: add @allow_callers(...)")
                continue
            unserved = sorted(key for key in grants if key is not None and key not in (rule.methods or ()))
            if unserved:
                problems.append(f"{rule.endpoint} ({rule.rule}) grants {', '.join(unserved)}, which it does not serve")
                continue
            endpoints[rule.endpoint] = EndpointCallers(grants)
        if problems:
            raise UndeclaredCallers("; ".join(problems))
        return cls(endpoints)

    def of(self, endpoint: str | None) -> EndpointCallers | None:
        return self.endpoints.get(endpoint) if endpoint is not None else None

    @property
    def callers(self) -> frozenset[str]:
        """Every caller some endpoint admits."""
        return frozenset().union(*(endpoint.callers for endpoint in self.endpoints.values()))


def _grants_of(app: Any, endpoint: str) -> Mapping[str | None, frozenset[str]] | None:
    view = app.view_functions.get(endpoint)
    grants = getattr(view, _GRANTS, None)
    if grants:
        return grants
    # Flask names an endpoint "<outer>.<nested>.<view>" and registers each blueprint under its dotted name.
    blueprint = endpoint.rpartition(".")[0]
    while blueprint:
        grants = vars(app.blueprints[blueprint]).get(_GRANTS) if blueprint in app.blueprints else None
        if grants:
            return grants
        blueprint = blueprint.rpartition(".")[0]
    return None


class CallerAuthenticator:
    def __init__(self, trusted_tokens: dict[str, str], allowed_callers: frozenset[str], enabled: bool = True,
                 unrestricted_callers: frozenset[str] = frozenset()):
        self._trusted = {name: token.encode() for name, token in trusted_tokens.items() if token}
        self._allowed = allowed_callers | unrestricted_callers
        self._unrestricted = unrestricted_callers
        self.enabled = enabled

    @classmethod
    def from_directory(cls, directory: Path, allowed_callers: frozenset[str],
                       unrestricted_callers: frozenset[str] = frozenset()) -> CallerAuthenticator:
        """One file per caller, named after it, holding its token (a Kubernetes secret volume)."""
        tokens = {
            path.name: path.read_text(encoding="utf-8").strip()
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".")
        }
        return cls(tokens, allowed_callers, unrestricted_callers=unrestricted_callers)

    @classmethod
    def disabled(cls) -> CallerAuthenticator:
        return cls({}, frozenset(), enabled=False)

    def identify(self, presented: str | None) -> str | None:
        """The caller's name, or None when authentication is off. Raises 401/403 errors."""
        if not self.enabled:
            return None
        if not presented:
            raise Unauthenticated(f"missing {CALLER_TOKEN_HEADER} header")
        candidate = presented.encode()
        # Compare against every known token in constant time so timing reveals nothing.
        caller = None
        for name, token in self._trusted.items():
            if hmac.compare_digest(candidate, token):
                caller = name
        if caller is None:
            raise Unauthenticated("unknown caller token")
        if caller not in self._allowed:
            raise Forbidden(f"caller {caller!r} may not call this service")
        return caller

    def authorize(self, caller: str, endpoint: EndpointCallers | None, method: str, route: str) -> None:
        """403 unless the identified `caller` may call this endpoint (`route`, with `method`): it is among the
        endpoint's grants, or unrestricted. An endpoint without grants (None) admits no one."""
        if caller in self._unrestricted or (endpoint is not None and endpoint.admits(caller, method)):
            return
        raise Forbidden(f"caller {caller!r} may not call {method} {route}")
