"""Caller identity for service-to-service calls.

Each service has its own token (a mounted secret). Outgoing internal calls present it in
`Delinkcious-Caller-Token`; an internal endpoint answers 401 to a missing or unknown token and 403 to
a known caller it does not serve. Turning this off takes an explicit CALLER_AUTH=disabled (for a mesh
doing mTLS) and is logged loudly at start-up.
"""
from __future__ import annotations

import hmac
from pathlib import Path

from ..core.errors import Forbidden, Unauthenticated

CALLER_TOKEN_HEADER = "Delinkcious-Caller-Token"


class CallerAuthenticator:
    def __init__(self, trusted_tokens: dict[str, str], allowed_callers: frozenset[str], enabled: bool = True):
        self._trusted = {name: token.encode() for name, token in trusted_tokens.items() if token}
        self._allowed = allowed_callers
        self.enabled = enabled

    @classmethod
    def from_directory(cls, directory: Path, allowed_callers: frozenset[str]) -> CallerAuthenticator:
        """One file per caller, named after it, holding its token (a Kubernetes secret volume)."""
        tokens = {
            path.name: path.read_text(encoding="utf-8").strip()
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".")
        }
        return cls(tokens, allowed_callers)

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
