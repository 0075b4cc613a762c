"""The implementation matches its OpenAPI document: schemathesis generates requests from
/v1/openapi.json (valid and invalid ones) for every operation and no answer may be a server error.
Bounded: a fixed number of examples per operation, each request with a timeout. /logout is left out
(it would revoke the suite's own token), and so are the two login steps (they hand over to the
identity provider)."""
from __future__ import annotations

from delinkcious_client import User
from hypothesis import HealthCheck, given, settings

SKIPPED_PATHS = ("/logout", "/login", "/login/authorized")
EXAMPLES_PER_OPERATION = 15


def test_no_operation_answers_a_server_error(openapi_schema, conformance_user: User) -> None:
    server_errors: list[str] = []
    checked = 0
    for result in openapi_schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED_PATHS:
            continue
        checked += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case) -> None:
            response = case.call(headers=conformance_user.bearer, timeout=30)
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} query={case.query} body={case.body!r} "
                                     f"-> {response.status_code} {response.text[:300]}")

        call()
    assert checked >= 10
    assert not server_errors, "\n".join(server_errors[:10])
