"""The secrets of a local run, in `<data dir>/secrets`: one caller token per service and one for the
developer, each service's database password, the page-token secret of each service that signs page
tokens, and the API gateway's OAuth client secret and session secret. Each is generated on first use
into a 0600 file below a 0700 directory, written atomically, and kept for the next run."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The caller a developer's own requests present; every service accepts it under `up`.
DEVELOPER_CALLER = "developer"


def ensure_secret_file(path: Path) -> str:
    """The secret stored in `path`; generated once (0600, parent 0700) and reused afterwards."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    # Write to a private temporary file and rename, so a reader never sees a partial secret.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(descriptor, "w") as handle:  # mkstemp creates the file with mode 0600
        handle.write(value + "\n")
    os.replace(temporary, path)
    return value


@dataclass(frozen=True)
class SecretsLayout:
    """data_dir/secrets (0700): callers/<name> tokens, postgres/<role> passwords, page-tokens/<service>
    secrets and the gateway's oauth-client-secret and gateway-session-secret (files 0600)."""

    root: Path

    @property
    def callers_dir(self) -> Path:
        return self.root / "callers"

    def caller_token_file(self, caller: str) -> Path:
        return self.callers_dir / caller

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def page_tokens_dir(self) -> Path:
        return self.root / "page-tokens"

    def page_token_secret_file(self, service: str) -> Path:
        return self.page_tokens_dir / service

    @property
    def oauth_client_secret_file(self) -> Path:
        return self.root / "oauth-client-secret"

    @property
    def session_secret_file(self) -> Path:
        return self.root / "gateway-session-secret"

    def ensure_private_root(self) -> None:
        """The root directory, created 0700, and made 0700 again if it was opened up."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)


def ensure_caller_tokens(layout: SecretsLayout, callers: Sequence[str]) -> None:
    """One token per caller, generated on first use and kept afterwards."""
    layout.ensure_private_root()
    for caller in callers:
        ensure_secret_file(layout.caller_token_file(caller))


def ensure_gateway_secrets(layout: SecretsLayout) -> None:
    """The gateway's OAuth client secret and session secret, generated on first use and kept afterwards."""
    layout.ensure_private_root()
    ensure_secret_file(layout.oauth_client_secret_file)
    ensure_secret_file(layout.session_secret_file)


def ensure_page_token_secrets(layout: SecretsLayout, services: Sequence[str]) -> None:
    """One page-token secret per service that signs page tokens, generated on first use and kept afterwards (the
    tokens a client holds stay valid from one run to the next)."""
    layout.ensure_private_root()
    for service in services:
        ensure_secret_file(layout.page_token_secret_file(service))
