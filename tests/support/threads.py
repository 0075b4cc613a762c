"""Running work in threads that start together, for the tests of races."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


def run_together(work: Iterable[Callable[[], object]]) -> None:
    """Run each callable in a thread of its own, all started before any is waited for; return once all ended."""
    threads = [threading.Thread(target=target) for target in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def raised_together(work: Iterable[Callable[[], object]]) -> list[BaseException]:
    """run_together, collecting what the callables raised (a thread would only print it)."""
    errors: list[BaseException] = []

    def collecting(target: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # collected for the caller to assert on
                errors.append(exc)

        return run

    run_together([collecting(target) for target in work])
    return errors
