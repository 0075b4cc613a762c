"""What a service opened in its `build` is closed by the runtime's stop, before the pool."""
from __future__ import annotations

from delinkcious.link.app import DEFINITION


def test_stop_callbacks_run_in_reverse_order_even_when_one_fails(service_environment):
    calls: list[str] = []
    with service_environment.running(DEFINITION) as (runtime, _app):
        def failing() -> None:
            calls.append("failing")
            raise RuntimeError("cannot close")

        runtime.on_stop(lambda: calls.append("first"))
        runtime.on_stop(failing)
        runtime.on_stop(lambda: calls.append(f"last, pool open: {not runtime.db._pool.closed}"))
    assert calls == ["last, pool open: True", "failing", "first"]
    assert runtime.db._pool.closed
