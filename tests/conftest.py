"""The fixtures: Copier kept to its defaults, the shared rendered projects, a real PostgreSQL
server with new databases on it, and PgBouncer; the other helpers are in tests/helpers.py."""

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import git_commit_all, install, render, start_or_skip
from tests.pgbouncer import PgBouncer, start_pgbouncer
from tests.postgres import PostgresServer, start_postgres


@pytest.fixture(scope="session", autouse=True)
def copier_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the user's own Copier settings (defaults, trust) out of every render."""
    settings = tmp_path_factory.mktemp("copier") / "settings.yml"
    settings.write_text("{}\n")  # an empty file makes copier 9.19 fail
    old = os.environ.get("COPIER_SETTINGS_PATH")
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    yield
    if old is None:
        os.environ.pop("COPIER_SETTINGS_PATH", None)
    else:
        os.environ["COPIER_SETTINGS_PATH"] = old


@pytest.fixture(scope="session")
def default_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project rendered with default answers and installed, shared by read-only tests."""
    project = render(tmp_path_factory.mktemp("default") / "budget-tracker")
    git_commit_all(project, "Generated from the template")
    install(project)
    return project


@pytest.fixture(scope="session")
def postgres_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed with the postgres extra, shared by the tests that leave its files
    alone; each brings its own databases."""
    project = render(tmp_path_factory.mktemp("postgres") / "budget-tracker")
    install(project, "postgres")
    return project


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session; fails rather than skips under CI."""
    server = start_or_skip("PostgreSQL", start_postgres)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the server; fails rather than skips under CI."""
    bouncer = start_or_skip("PgBouncer", lambda: start_pgbouncer(postgres))
    yield bouncer
    bouncer.stop()


_databases = itertools.count(1)


@pytest.fixture
def new_database(postgres: PostgresServer) -> Callable[[str], str]:
    """Create an empty database owned by the test role, named for label; returns its name."""

    def create(label: str) -> str:
        name = f"{label}_{next(_databases)}"
        postgres.create_database(name)
        return name

    return create
