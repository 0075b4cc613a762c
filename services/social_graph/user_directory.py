"""Adapter to the user service: does a user exist? Used only when the local projection of
user-created events does not know the user yet (see README.md, "How it knows users exist")."""
from __future__ import annotations

from urllib.parse import quote

from ..kit.core.errors import Unavailable
from ..kit.observability.logs import get_logger
from ..kit.serving.http_client import ServiceClient
from .service import UserDirectory

log = get_logger(__name__)


class UserServiceDirectory(UserDirectory):
    def __init__(self, client: ServiceClient) -> None:
        self._client = client

    def exists(self, username: str) -> bool:
        # HEAD is idempotent: the kit's client retries it on 502/503/504 and connection errors.
        response = self._client.request("HEAD", f"/v1/users/{quote(username, safe='')}")
        log.info("user_lookup", looked_up_user=username, downstream_status=response.status_code)
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        # 401/403 (our caller token is not accepted) or a 5xx: we cannot tell, so we do not guess.
        raise Unavailable(f"user service answered {response.status_code} to a user lookup")
