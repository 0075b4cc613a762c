"""Fixtures of the news tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.news.owners import Owners, running_owners


@pytest.fixture(scope="package")
def owners(service_environment) -> Iterator[Owners]:
    """link and social-graph, served over HTTP for news to rebuild from, for every news test that needs them."""
    with running_owners(service_environment) as running:
        yield running
