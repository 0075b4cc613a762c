"""Fixtures of the social-graph tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.user_service import StandInUserService


@pytest.fixture(scope="module")
def user_service() -> Iterator[StandInUserService]:
    stand_in = StandInUserService().start()
    yield stand_in
    stand_in.stop()
