"""One deployment of the four services shared by the reliability checks on SQLite (and one on
PostgreSQL when QUANYU_TEST_POSTGRES_URL is set), every service serving again after each check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS, POSTGRES_URL
from tests.reliability.deployment import Deployment, deployment, postgres_deployment


@pytest.fixture(scope="session")
def sqlite_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("reliability-sqlite")) as running:
        yield running


@pytest.fixture(scope="session")
def postgres_deployment_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with postgres_deployment(tmp_path_factory.mktemp("reliability-postgres"), POSTGRES_URL) as running:
        yield running


@pytest.fixture
def d(sqlite_deployment: Deployment) -> Iterator[Deployment]:
    """The SQLite deployment, restored after the check whatever it did to it."""
    yield sqlite_deployment
    sqlite_deployment.restore()


@pytest.fixture(params=BACKENDS)
def each_backend(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The deployment on SQLite, and on PostgreSQL when a URL is set; restored after the check."""
    name = "sqlite_deployment" if request.param == "sqlite" else "postgres_deployment_"
    running: Deployment = request.getfixturevalue(name)
    yield running
    running.restore()
