"""Outgoing HTTP for internal calls: timeouts always, retries only for idempotent methods, and the
request id and caller identity on every call."""
from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..core.errors import Unavailable
from ..observability.context import outgoing_headers
from ..observability.logs import get_logger
from .callers import CALLER_TOKEN_HEADER

log = get_logger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class ServiceClient:
    def __init__(
        self,
        base_url: str,
        *,
        caller_token: str | None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        retries: int = 2,
        retry_methods: frozenset[str] = IDEMPOTENT_METHODS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=0.2,
            allowed_methods=retry_methods,
            status_forcelist=(502, 503, 504),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if caller_token:
            self._session.headers[CALLER_TOKEN_HEADER] = caller_token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**outgoing_headers(), **(kwargs.pop("headers", None) or {})}
        try:
            return self._session.request(method, f"{self.base_url}{path}", headers=headers,
                                         timeout=self._timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            log.warning("downstream_unavailable", url=self.base_url, method=method, error=type(exc).__name__)
            raise Unavailable(f"{self.base_url} is unavailable") from exc

    def close(self) -> None:
        self._session.close()
