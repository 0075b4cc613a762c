"""A service run for real: `python -m delinkcious.cli serve NAME` under gunicorn, as in a container."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from delinkcious.catalogue import get_service
from delinkcious.local.servers import free_port

# One PAGE_TOKEN_SECRET per service for the whole run, so that a service started again keeps reading its tokens.
_PAGE_TOKEN_SECRETS: dict[str, str] = {}


def page_token_secret(name: str) -> str:
    """The PAGE_TOKEN_SECRET a served `name` gets when its environment names none."""
    return _PAGE_TOKEN_SECRETS.setdefault(name, secrets.token_urlsafe(32))


class ServedService:
    def __init__(self, name: str, environment: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {key: value for key, value in os.environ.items() if not key.startswith("PROMETHEUS_")}
        env.update(environment)
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port)})
        # A service that signs page tokens does not start without its secret: given as a deployment gives it.
        if get_service(name).signs_page_tokens and not {"PAGE_TOKEN_SECRET", "PAGE_TOKEN_SECRET_FILE"} & set(env):
            env["PAGE_TOKEN_SECRET"] = page_token_secret(name)
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "delinkcious.cli", "serve", name],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60, *, ops_url: str | None = None) -> None:
        """Until /healthz/readiness answers 200, on `ops_url` when the service keeps it off its API port."""
        ops_url = ops_url or self.base_url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if requests.get(f"{ops_url}/healthz/readiness", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.logs()}")

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.request(method, f"{self.base_url}{path}", **kwargs)


def run_in_threads(count: int, work: Any) -> tuple[list[Any], threading.Event]:
    """Start `count` threads running work(index, results); returns the shared results list."""
    results: list[Any] = []
    done = threading.Event()
    threads = [threading.Thread(target=work, args=(index, results), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()

    def joiner() -> None:
        for thread in threads:
            thread.join()
        done.set()

    threading.Thread(target=joiner, daemon=True).start()
    return results, done
