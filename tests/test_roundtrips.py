"""Round trips on PostgreSQL, counted exactly: each program at or under its limit.

On a remote database (Neon) a short command's time is about its round trips times the
latency. benchmarks/scripts/roundtrip_proxy.py counts them as a proxy between the program and
the server, from the order of the protocol's messages, not from timing: a count is the same on
any machine, so a test may hold it to a limit (docs/benchmarks.md has the figures).
"""

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.growth import register
from tests.helpers import install, ok, render, run_program
from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
# issue 26's limits, at SCRAM without TLS, on a database holding one marker (db-migrate's
# at head, over all its connections)
LIMITS = {"write-once": 6, "read-later": 6, "db-migrate": 9, "db-verify": 32, "db-evidence": 46}
# what each further table of the models may add to db-verify and db-evidence: its rows read
# through the ORM and on the raw connection, the schema's catalog queries reading every table
PER_TABLE = 2
# a raw psycopg connect (SSLRequest, then SCRAM's three messages) and one query
FLOOR = 5


def _proxy_module() -> ModuleType:
    # a script beside the benchmarks, not a package: loaded from its file
    path = ROOT / "benchmarks" / "scripts" / "roundtrip_proxy.py"
    spec = importlib.util.spec_from_file_location("roundtrip_proxy", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("roundtrip_proxy", module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def proxy(postgres: PostgresServer) -> Iterator[Any]:
    """The round-trip counter in front of the test server, on a port of its own."""
    with _proxy_module().RoundTripProxy(postgres.port) as counter:
        yield counter


def through(postgres: PostgresServer, proxy: Any, database: str) -> str:
    """database's URL through the proxy."""
    return postgres.url(database).replace(f":{postgres.port}/", f":{proxy.port}/")


def counted(proxy: Any, project: Path, *command: str, env: dict[str, str]) -> dict[str, Any]:
    """Run command through the proxy; its round trips and connections."""
    proxy.reset()
    ok(run_program(project, *command, env=env))
    return dict(proxy.counts())


RAW_CONNECT = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as connection:
    connection.execute("SELECT 1").fetchone()
"""


def test_the_counter_counts_a_raw_connect_and_one_query_as_five(
    postgres_project: Path,
    postgres: PostgresServer,
    proxy: Any,
    new_database: Callable[[str], str],
) -> None:
    url = through(postgres, proxy, new_database("floor"))
    counts = counted(proxy, postgres_project, "python", "-c", RAW_CONNECT, url, env={})
    assert (counts["round_trips"], counts["connections"]) == (FLOOR, 1), counts


def test_each_program_is_within_its_round_trip_limit(
    postgres_project: Path,
    postgres: PostgresServer,
    proxy: Any,
    new_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    database = new_database("limits")
    env = {"DATABASE_URL": through(postgres, proxy, database)}
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    commands = {
        "write-once": ["write-once"],
        "read-later": ["read-later"],
        "db-migrate": ["db-migrate"],  # at head: nothing to apply
        "db-verify": ["db-verify"],
        "db-evidence": ["db-evidence", "--output", str(tmp_path / "bundle")],
    }
    found = {
        name: counted(proxy, postgres_project, *command, env=env)
        for name, command in commands.items()
    }
    rounds = {name: counts["round_trips"] for name, counts in found.items()}
    assert all(rounds[name] <= LIMITS[name] for name in LIMITS), (rounds, LIMITS)
    # one connection each, and the raw second path of the verifying programs
    connections = {name: counts["connections"] for name, counts in found.items()}
    assert connections == {
        "write-once": 1,
        "read-later": 1,
        "db-migrate": 1,
        "db-verify": 2,
        "db-evidence": 2,
    }


# a table of the user's own, its key a SERIAL integer, as most models' keys are
TAG_MODEL = '''"""Tag: a label a user gives markers."""

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40))
'''


def test_a_further_table_costs_db_verify_and_db_evidence_at_most_two_round_trips(
    postgres: PostgresServer, proxy: Any, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    # issue 26: one catalog query reads every table; per table only its rows, read twice
    # (Alembic's comparison asked, per SERIAL key, which sequence the column owns: 3)
    project = render(tmp_path / "budget-tracker")
    install(project, "postgres")
    env = {"DATABASE_URL": through(postgres, proxy, new_database("per_table"))}
    ok(run_program(project, "alembic", "upgrade", "head", env=env))
    ok(run_program(project, "write-once", env=env))

    def rounds() -> dict[str, int]:
        bundle = tmp_path / f"bundle-{len(list(tmp_path.glob('bundle-*')))}"
        commands = {
            "db-verify": ["db-verify"],
            "db-evidence": ["db-evidence", "--output", str(bundle)],
        }
        return {
            name: counted(proxy, project, *command, env=env)["round_trips"]
            for name, command in commands.items()
        }

    before = rounds()
    models = project / "src" / "budget_tracker" / "models"
    (models / "tag.py").write_text(TAG_MODEL)
    register(models / "__init__.py", {"tag": "Tag"})
    ok(run_program(project, "alembic", "revision", "--autogenerate", "-m", "add tags", env=env))
    ok(run_program(project, "alembic", "upgrade", "head", env=env))
    ok(run_program(project, "python", "-c", TAG_ROW, env=env))
    verified = ok(run_program(project, "db-verify", env=env))
    assert "ok   data tags: 1 row" in verified and "FAIL" not in verified, verified

    after = rounds()
    assert all(after[name] - before[name] <= PER_TABLE for name in before), (before, after)


TAG_ROW = """
from budget_tracker.dbkit.db import open_database
from budget_tracker.models import Tag
with open_database() as sessions, sessions.begin() as session:
    session.add(Tag(label="weekly"))
"""


SETTINGS = """
import sys
from sqlalchemy import text
from budget_tracker.dbkit.config import parse_database_url
from budget_tracker.dbkit.db import make_engine
engine = make_engine(parse_database_url(sys.argv[1]))
with engine.connect() as connection:
    connection.execution_options(isolation_level="AUTOCOMMIT").scalar(text("SELECT 1"))
with engine.begin() as connection:  # after AUTOCOMMIT: the server's default again
    print(connection.scalar(text("SHOW transaction_isolation")))
    print(connection.scalar(text("SELECT current_schema()")))
with engine.connect() as connection:
    isolated = connection.execution_options(isolation_level="REPEATABLE READ")
    print(isolated.scalar(text("SHOW transaction_isolation")))
"""


def test_the_servers_default_isolation_and_search_path_are_honoured(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # the engine reads neither at connect (a round trip each): a BEGIN with no level takes
    # the server's default, and unqualified names resolve as the search_path says
    database = new_database("settings")
    postgres.psql("CREATE SCHEMA app AUTHORIZATION app_user", database)
    postgres.psql(f"ALTER DATABASE {database} SET default_transaction_isolation = serializable")
    postgres.psql(f"ALTER DATABASE {database} SET search_path = app, public")
    env = {"DATABASE_URL": postgres.url(database)}
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    assert postgres.psql("SELECT count(*) FROM app.markers", database) == "0"
    shown = ok(run_program(postgres_project, "python", "-c", SETTINGS, postgres.url(database)))
    assert shown.split() == ["serializable", "app", "repeatable", "read"]
    assert ok(run_program(postgres_project, "write-once", env=env)) == "Wrote marker\n"
    assert ok(run_program(postgres_project, "read-later", env=env)) == "['persistent-check']\n"
    assert "FAIL" not in ok(run_program(postgres_project, "db-verify", env=env))


STOCK_DIALECT = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.dialects.postgresql.base import PGDialect
from budget_tracker.dbkit.config import parse_database_url
from budget_tracker.dbkit.db import make_engine
# the internals db.py's _Psycopg overrides: gone or renamed, its overrides would do nothing
for name in ("_get_server_version_info", "_set_backslash_escapes", "_get_default_schema_name"):
    assert callable(getattr(PGDialect, name)), name
url = parse_database_url(sys.argv[1])
ours, stock = make_engine(url), create_engine(url)
with ours.connect(), stock.connect():
    for name in ("server_version_info", "_backslash_escapes"):
        assert getattr(ours.dialect, name) == getattr(stock.dialect, name), name
print(ours.dialect.server_version_info)
"""


def test_the_engine_learns_at_connect_what_sqlalchemy_would_have_asked(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # db.py's dialect takes the server's version and standard_conforming_strings from what
    # the server sent as the connection opened; SQLAlchemy's own asks for them
    url = postgres.url(new_database("dialect"))
    version = ok(run_program(postgres_project, "python", "-c", STOCK_DIALECT, url))
    assert version.startswith(f"({postgres.psql('SHOW server_version_num')[:2]},")


# a schema beyond the models': what reflection and Alembic's comparison must read as before
PLANTED = """
CREATE SCHEMA elsewhere AUTHORIZATION app_user;
SET ROLE app_user;
CREATE TABLE elsewhere.owners (id serial PRIMARY KEY);
CREATE TABLE planted (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  code varchar(8) NOT NULL, a int, b int DEFAULT 7, span int4range,
  twice int GENERATED ALWAYS AS (a * 2) STORED,
  owner_id int REFERENCES elsewhere.owners (id) ON DELETE CASCADE,
  marker_id int REFERENCES markers (id),
  CONSTRAINT uq_planted_ab UNIQUE (a, b),
  CONSTRAINT ck_planted_code CHECK (code ~ '^[a-z]+$'),
  CONSTRAINT no_overlap EXCLUDE USING gist (span WITH &&)
);
CREATE INDEX ix_planted_lower ON planted (lower(code));
CREATE UNIQUE INDEX ix_planted_b ON planted (b DESC) INCLUDE (a) WHERE b > 3;
CREATE TABLE serial_keyed (id serial PRIMARY KEY, n smallserial);
CREATE TABLE shared_sequence (id int DEFAULT nextval('markers_id_seq') PRIMARY KEY);
CREATE SEQUENCE loose;
CREATE TABLE loose_sequence (id bigint DEFAULT nextval('loose') PRIMARY KEY);
"""

READ_APART = """
import json, sys
from budget_tracker.dbkit import evidence
from budget_tracker.dbkit.config import parse_database_url
from budget_tracker.dbkit.schema_diff import schema_differences
from budget_tracker.dbkit.two_paths import connect
with connect(parse_database_url(sys.argv[1])) as database:
    connection = database.connection
    # {}: no sequence known to be owned, so Alembic's own hook judges every default
    alembic = schema_differences(connection, owned_sequences={})
    ours = schema_differences(connection, database.owned_sequences)
    snapshot = evidence.schema_snapshot(connection)  # each read on its own, not shared
    sql = evidence.schema_sql(database)
print(json.dumps({"same": sorted(alembic) == sorted(ours), "differences": len(ours),
                  "hash": evidence.schema_hash(snapshot), "sql": sql}))
"""


def test_db_evidence_reads_the_schema_once_and_writes_what_separate_reads_give(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # the snapshot and schema.sql share one reflection (db.py's shared_reflection), and SERIAL
    # defaults are dropped before Alembic's hook would ask for each: the same results
    database = new_database("read_once")
    env = {"DATABASE_URL": postgres.url(database)}
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    ok(run_program(postgres_project, "write-once", env=env))
    postgres.psql(PLANTED, database)

    bundle = tmp_path / "bundle"
    made = run_program(postgres_project, "db-evidence", "--output", str(bundle), env=env)
    assert made.returncode == 1, made.stderr  # the planted tables are not in the models
    apart = json.loads(
        ok(run_program(postgres_project, "python", "-c", READ_APART, env["DATABASE_URL"]))
    )

    assert apart["same"] and apart["differences"] == 4, apart
    assert json.loads((bundle / "evidence.json").read_text())["schema_hash"] == apart["hash"]
    assert (bundle / "schema.sql").read_text() == apart["sql"]
    assert "CREATE TABLE planted" in apart["sql"]
