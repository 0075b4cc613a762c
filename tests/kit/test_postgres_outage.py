"""A service whose PostgreSQL goes away: readiness says so (503), requests get 503 with
Retry-After instead of 500s or hangs, and everything recovers when the database returns."""
from __future__ import annotations

import dataclasses

from delinkcious.link.app import DEFINITION

from tests.support.jetstream import wait_until
from tests.support.services import unique_username


def test_readiness_follows_postgres(service_environment, private_postgres):
    environment = dataclasses.replace(service_environment, postgres_admin_dsn=private_postgres.admin_dsn,
                                      _migrated={})
    user = unique_username()
    with environment.running(DEFINITION, db_connect_timeout=1) as (_runtime, app):
        client = app.test_client()
        headers = environment.caller_headers()
        path = f"/v1/users/{user}/links"
        assert wait_until(lambda: client.get("/healthz/readiness").status_code == 200)
        assert client.post(path, json={"url": "https://kept.example", "title": "t"}, headers=headers).status_code == 201

        private_postgres.stop()
        readiness = client.get("/healthz/readiness")
        assert readiness.status_code == 503
        body = readiness.get_json()
        postgres_check = next(check for check in body["checks"] if check["name"] == "postgres")
        assert body["status"] == "not_ready" and postgres_check["ok"] is False and postgres_check["error"]
        assert client.get("/healthz/liveness").status_code == 200  # not a reason to restart the process
        for response in (client.get(path, headers=headers),
                         client.post(path, json={"url": "https://lost.example", "title": "t"}, headers=headers)):
            assert response.status_code == 503
            assert response.get_json()["code"] == "unavailable" and response.headers["Retry-After"]

        private_postgres.start()
        assert wait_until(lambda: client.get("/healthz/readiness").status_code == 200, timeout=15)
        assert client.post(path, json={"url": "https://after.example", "title": "t"}, headers=headers).status_code == 201
        urls = [link["url"] for link in client.get(path, headers=headers).get_json()["links"]]
        assert urls == ["https://after.example", "https://kept.example"]
