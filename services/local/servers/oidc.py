"""A local OpenID Connect identity provider for the API gateway under `delinkcious up` and in tests:
`oidc-provider-mock`, a development tool that signs in whoever types a subject, ready once it serves
its discovery document."""

from __future__ import annotations

import os
import signal

from delinkcious.local.servers.base import (
    Server,
    answers_ok,
    find_executable,
    next_to_python,
    on_path,
    reachable_address,
    url_host,
)

_DISCOVERY_PATH = "/.well-known/openid-configuration"


class OidcProviderServer(Server):
    """`oidc-provider-mock`: an OpenID Connect provider for development and tests.

    It accepts any client id and secret, and logs in whoever types a subject into
    its authorize form. Its users, codes and tokens live in memory only, so a
    restart forgets them (Delinkcious keeps its own users and tokens, so nothing
    of ours is lost). Never for production.
    """

    name = "oidc-provider"
    stop_signal = signal.SIGTERM  # uvicorn shuts down gracefully on SIGTERM

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.url}{_DISCOVERY_PATH}"

    @property
    def reachable_discovery_url(self) -> str:
        """The discovery document where this machine reaches it (also when listening on a wildcard address)."""
        return f"http://{reachable_address(self.host, self.port)}{_DISCOVERY_PATH}"

    def _command(self) -> list[str]:
        executable = find_executable(
            "oidc-provider-mock", [next_to_python("oidc-provider-mock"), on_path("oidc-provider-mock")]
        )
        return [str(executable), "--host", self.host, "--port", str(self.port)]

    def _environment(self) -> dict[str, str]:
        return {**os.environ, "NO_COLOR": "1"}  # its log file gets no terminal colour codes

    def _is_ready(self) -> bool:
        return answers_ok(self.reachable_discovery_url)
