"""What the gateway's tests share: stand-in internal services and a clock the test moves by hand."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stand_in import StandInService


class Clock:
    """Monotonic time that passes only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def internal() -> Iterator[StandInService]:
    """One stand-in for the internal services the gateway calls."""
    service = StandInService()
    yield service
    service.stop()
