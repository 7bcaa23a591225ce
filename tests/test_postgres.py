"""PostgreSQL and Neon: a rendered project against a real server, through its own programs.

Every database here belongs to the role whose password, s3cr%t@p:ss/w0rd, must be URL-encoded;
no output may show it, in any form.
"""

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess
from urllib.parse import quote

import pytest

from tests.helpers import assert_shows_no_password, ok, project_env, prove, run_program
from tests.pgbouncer import PgBouncer
from tests.postgres import PASSWORD, PostgresServer, free_port

PROGRAMS = ["write-once", "read-later", "alembic upgrade head"]
# a guard against hanging, not a benchmark: every connect gives up after 5 s
HANG_GUARD = 20
# Neon's strings end in ?sslmode=require&channel_binding=require; the local server has no
# certificate, so `require` is refused there (see the test below); `prefer` keeps the shape
NEON_QUERY = "sslmode=prefer&channel_binding=prefer"


@pytest.fixture
def dotenv(postgres_project: Path) -> Iterator[Path]:
    """The project's .env, removed after the test so that the next one starts without it."""
    path = postgres_project / ".env"
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def command_line(project: Path, command: str) -> list[str]:
    program, *args = command.split()
    return [str(project / ".venv" / "bin" / program), *args]


def run_all(project: Path, env: dict[str, str]) -> dict[str, tuple[CompletedProcess[str], float]]:
    """Run the programs side by side; each result with the seconds it took at most."""
    started = time.monotonic()
    processes = {
        command: subprocess.Popen(
            command_line(project, command),
            cwd=project,
            env=project_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for command in PROGRAMS
    }
    results: dict[str, tuple[CompletedProcess[str], float]] = {}
    try:
        for command, process in processes.items():
            try:
                out, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{command} was still running after 60 s")
            result = CompletedProcess(process.args, process.returncode, out, err)
            results[command] = (result, time.monotonic() - started)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def assert_fails_in_one_line(project: Path, env: dict[str, str], *needles: str) -> None:
    """Each program exits non-zero with one line that says why, quickly, password hidden."""
    for command, (result, seconds) in run_all(project, env).items():
        shown = f"{command}:\nstdout: {result.stdout}\nstderr: {result.stderr}"
        assert result.returncode != 0, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        assert len(result.stderr.splitlines()) == 1, shown
        if command.startswith("alembic"):
            # alembic reports a CommandError twice: logged to stderr, `FAILED: ...` on stdout
            message = result.stdout.removeprefix("FAILED: ").rstrip("\n")
            assert result.stdout == f"FAILED: {message}\n", shown
            assert result.stderr == f"ERROR [alembic.util.messaging] {message}\n", shown
        else:
            assert result.stdout == "", shown
            assert result.stderr.startswith(f"{command}: error: "), shown
        for needle in needles:
            assert needle in result.stderr, shown
        assert_shows_no_password(result)
        assert seconds < HANG_GUARD, shown


def prove_and_check(project: Path, env: dict[str, str] | None = None) -> None:
    """The proof, then `alembic check` in a process of its own: the schema matches the models."""
    prove(project, env)
    checked = run_program(project, "alembic", "check", env=env)
    assert "No new upgrade operations detected" in ok(checked)
    assert_shows_no_password(checked)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_the_proof_runs_on_postgresql_for_every_url_form(
    scheme: str,
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
) -> None:
    database = new_database("proof")
    url = postgres.url(database).replace("postgresql://", f"{scheme}://", 1)
    prove_and_check(postgres_project, {"DATABASE_URL": url})
    # the row is in PostgreSQL, not in a SQLite file the project fell back to
    assert postgres.psql("SELECT name FROM markers", database) == "persistent-check"
    assert not (postgres_project / "app.db").exists()


def test_db_copy_moves_a_sqlite_projects_rows_to_postgresql_where_read_later_prints_them(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # the README's move: rows in the project's SQLite file, a new database migrated, the copy
    on_sqlite = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=on_sqlite))
    names = 'rent\nit\'s "café"\nsecond\n'
    ok(run_program(postgres_project, "write-once", "-", env=on_sqlite, input=names))
    ok(run_program(postgres_project, "write-once", "third", env=on_sqlite))
    database = new_database("moved")
    url = postgres.url(database)
    on_postgresql = {"DATABASE_URL": url}
    ok(run_program(postgres_project, "db-migrate", env=on_postgresql))

    copied = run_program(postgres_project, "db-copy", "--to", url, env=on_sqlite)
    assert ok(copied).splitlines()[-1] == (
        f"Copied 4 rows in 1 table(s) from sqlite:///{tmp_path / 'app.db'} to "
        f"postgresql+psycopg://app_user:***@127.0.0.1:{postgres.port}/{database}; "
        "the rows and checksums match"
    )
    assert_shows_no_password(copied)
    printed = ok(run_program(postgres_project, "read-later", env=on_postgresql))
    assert printed == repr(["rent", 'it\'s "café"', "second", "third"]) + "\n"
    # the sequence is past the copied ids: the next marker gets the next id
    ok(run_program(postgres_project, "write-once", "fourth", env=on_postgresql))
    assert postgres.psql("SELECT max(id) FROM markers WHERE name = 'fourth'", database) == "5"

    # copied once, refused twice: the target now holds rows
    again = run_program(postgres_project, "db-copy", "--to", url, env=on_sqlite)
    assert again.returncode == 1 and "is not empty: rows in markers" in again.stderr
    # a wrong password is refused by the server, and shown in no form
    wrong = postgres.url(new_database("wrong_password"), password=f"not-{PASSWORD}")
    refused = run_program(postgres_project, "db-copy", "--to", wrong, env=on_sqlite)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(
        "db-copy: error: cannot use postgresql+psycopg://app_user:***@"
    )
    assert "password authentication failed" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert_shows_no_password(refused)


def test_a_neon_shaped_url_in_dotenv_runs_the_proof(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    dotenv: Path,
) -> None:
    database = new_database("dotenv")
    url = postgres.url(database).replace("postgresql://", "postgres://", 1)
    dotenv.write_text(f"DATABASE_URL={url}?{NEON_QUERY}\n")
    prove_and_check(postgres_project)  # no DATABASE_URL in the environment
    assert postgres.psql("SELECT name FROM markers", database) == "persistent-check"


def test_sslmode_require_reaches_the_driver_and_a_server_without_ssl_refuses_it(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    dotenv: Path,
) -> None:
    # why the Neon-shaped tests use `prefer`: the query string reaches libpq as it is written
    database = new_database("ssl")
    url = postgres.url(database).replace("postgresql://", "postgres://", 1)
    dotenv.write_text(f"DATABASE_URL={url}?sslmode=require&channel_binding=require\n")
    assert_fails_in_one_line(postgres_project, {}, "SSL was required")


def test_an_environment_variable_wins_over_dotenv(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    dotenv: Path,
) -> None:
    from_file, from_environment = new_database("file"), new_database("environment")
    dotenv.write_text(f"DATABASE_URL={postgres.url(from_file)}?{NEON_QUERY}\n")
    prove_and_check(postgres_project, {"DATABASE_URL": postgres.url(from_environment)})
    assert postgres.psql("SELECT name FROM markers", from_environment) == "persistent-check"
    assert postgres.tables(from_file) == ""


@pytest.mark.parametrize("where", ["environment", "dotenv"])
def test_migrations_run_on_database_url_direct_and_the_programs_on_database_url(
    where: str,
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    dotenv: Path,
) -> None:
    pooled, direct = new_database("pooled"), new_database("direct")
    variables = {
        "DATABASE_URL": f"{postgres.url(pooled)}?{NEON_QUERY}",
        "DATABASE_URL_DIRECT": f"{postgres.url(direct)}?{NEON_QUERY}",
    }
    env: dict[str, str] = {}
    if where == "environment":
        env = variables
    else:
        dotenv.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))

    upgraded = run_program(postgres_project, "alembic", "upgrade", "head", env=env)
    ok(upgraded)
    assert_shows_no_password(upgraded)
    assert postgres.tables(direct) == "alembic_version,markers"
    assert postgres.tables(pooled) == ""
    # the programs use DATABASE_URL, which the migrations did not touch
    written = run_program(postgres_project, "write-once", env=env)
    assert written.returncode != 0
    assert "no schema yet" in written.stderr


@pytest.fixture
def forwarded_port(postgres: PostgresServer) -> Iterator[int]:
    """Another loopback port onto the same server, as a pooler in front of it would be."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with source, sink:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass  # the other direction's pump closed both ends first

    def forward() -> None:
        while not stop.is_set():
            try:
                client = listener.accept()[0]
            except TimeoutError:
                continue
            server = socket.create_connection(("127.0.0.1", postgres.port))
            for ends in ((client, server), (server, client)):
                threading.Thread(target=pump, args=ends, daemon=True).start()

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()


def test_the_generated_tests_refuse_a_database_with_tables_however_its_url_is_written(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    forwarded_port: int,
) -> None:
    precious = new_database("precious")
    url = postgres.url(precious)
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env={"DATABASE_URL": url}))
    ok(run_program(postgres_project, "write-once", "mine", env={"DATABASE_URL": url}))
    postgres.plant_users_table(precious)
    before = postgres.users_data(precious)
    port = f":{postgres.port}/"
    # each the same database; only what it holds can tell the tests it is not theirs
    written: dict[str, tuple[str, dict[str, str]]] = {
        "ip": (url, {}),
        "localhost": (url.replace("@127.0.0.1:", "@localhost:"), {}),
        "default port": (url.replace(port, "/"), {"PGPORT": str(postgres.port)}),
        "another port": (url.replace(port, f":{forwarded_port}/"), {}),
        "socket": (
            f"{url.split('@')[0]}@/{precious}?host={postgres.base}&port={postgres.port}",
            {},
        ),
        "postgres scheme": (url.replace("postgresql://", "postgres://"), {}),
    }

    for form, (test_url, extra) in written.items():
        result = run_program(
            postgres_project,
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/dbkit/test_persistence.py",
            env={"TEST_DATABASE_URL": test_url, "DATABASE_URL": url, **extra},
        )
        shown = f"{form}: {result.stdout[-2000:]}{result.stderr}"
        assert result.returncode == pytest.ExitCode.USAGE_ERROR, shown
        assert "already holds tables (alembic_version, keep_me, markers)" in result.stderr, shown
        assert_shows_no_password(result)
        tables = "alembic_version,keep_me,markers"
        assert postgres.users_data(precious) == before == f"mine|keep|0001|{tables}", form


def test_an_unreachable_port_fails_in_one_line_without_showing_the_password(
    postgres_project: Path, postgres: PostgresServer
) -> None:
    url = postgres.url("app_db").replace(f":{postgres.port}/", f":{free_port()}/")
    assert_fails_in_one_line(postgres_project, {"DATABASE_URL": url}, "Connection refused")


def test_a_host_that_never_answers_times_out_in_one_line(
    postgres_project: Path, postgres: PostgresServer, silent_port: int
) -> None:
    url = postgres.url("app_db").replace(f":{postgres.port}/", f":{silent_port}/")
    assert_fails_in_one_line(postgres_project, {"DATABASE_URL": url}, "timeout expired")


def test_a_wrong_password_fails_in_one_line_without_showing_it(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # the wrong password holds the right one, so neither may show
    url = postgres.url(new_database("wrong"), password=f"not-{PASSWORD}")
    env = {"DATABASE_URL": url}
    assert_fails_in_one_line(postgres_project, env, "password authentication failed")


def test_a_missing_database_is_named_in_one_line(
    postgres_project: Path, postgres: PostgresServer
) -> None:
    url = postgres.url("no_such_database")
    assert_fails_in_one_line(
        postgres_project, {"DATABASE_URL": url}, 'database "no_such_database" does not exist'
    )


def test_a_password_pasted_without_url_encoding_is_refused_without_showing_it(
    postgres_project: Path, postgres: PostgresServer
) -> None:
    # the unencoded ':' and '/' make the rest of the password look like a port
    url = f"postgresql://app_user:{PASSWORD}@127.0.0.1:{postgres.port}/app_db"
    assert_fails_in_one_line(
        postgres_project, {"DATABASE_URL": url}, "DATABASE_URL is not a database URL", "URL-encode"
    )


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_without_psycopg_a_postgresql_url_says_how_to_install_the_extra(
    scheme: str, default_project: Path
) -> None:
    # default_project is installed without the postgres extra; nothing connects
    url = f"{scheme}://app_user:{quote(PASSWORD, safe='')}@127.0.0.1:5432/app_db"
    assert_fails_in_one_line(
        default_project, {"DATABASE_URL": url}, "install the postgres extra", "--extra postgres"
    )


# run by the project's own python: the engine the programs and Alembic use
PREPARED_STATEMENTS = """
import sys
from sqlalchemy import insert, select, text
from budget_tracker.dbkit.config import parse_database_url
from budget_tracker.dbkit.db import open_database
from budget_tracker.models import Marker

with (
    open_database(parse_database_url(sys.argv[1])) as sessions,
    sessions.begin() as session,
):
    for number in range(20):  # psycopg prepares a statement from its 5th run unless told not to
        session.execute(insert(Marker), [{"name": f"n{number}"}])
        session.scalars(select(Marker.name).where(Marker.id > number)).all()
    print(session.scalar(text("SELECT count(*) FROM pg_prepared_statements")))
"""

DROPPED_CONNECTION = """
import sys
from sqlalchemy import text
from budget_tracker.dbkit.config import parse_database_url
from budget_tracker.dbkit.db import make_engine

engine = make_engine(parse_database_url(sys.argv[1]))
pid = text("SELECT pg_backend_pid()")
with engine.connect() as pooled, engine.connect() as other:
    dropped = pooled.scalar(pid)
    pooled.close()  # back to the pool, then killed by the server behind the pool's back
    assert other.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": dropped})
with engine.connect() as connection:
    print(connection.scalar(pid) != dropped)
"""


def test_the_engine_never_prepares_statements_on_the_server(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # PgBouncer in transaction mode (Neon's pooled host) cannot keep prepared statements
    database = new_database("prepared")
    url = postgres.url(database)
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env={"DATABASE_URL": url}))
    assert ok(run_program(postgres_project, "python", "-c", PREPARED_STATEMENTS, url)) == "0\n"


def test_a_pooled_connection_the_server_dropped_is_replaced_before_use(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # Neon suspends idle computes; a stale pooled connection must not reach the caller
    url = postgres.url(new_database("dropped"))
    assert ok(run_program(postgres_project, "python", "-c", DROPPED_CONNECTION, url)) == "True\n"


# names whose bytes mean something in COPY's text format, or in Python's repr
TRICKY_NAMES = ["tab\there", "\\N", "\\.", "back\\slash\\", "quote's \"", "ünï 🦆", "cr\rin"]


def statements_of(
    postgres: PostgresServer, database: str, command: str, project: Path, env: dict[str, str]
) -> tuple[CompletedProcess[str], list[str]]:
    """Run command; what it printed, and every statement the server received for database."""
    log = postgres.base / "server.log"
    start = log.stat().st_size
    result = run_program(project, command, env=env)
    time.sleep(0.2)  # the server's logger writes on its own schedule
    with log.open(encoding="utf-8", errors="replace") as lines:
        lines.seek(start)
        text = lines.read()
    found = re.findall(r"LOG:  (?:statement|execute [^:]*): (.*)", text)
    return result, [statement.strip() for statement in found]


def test_the_programs_send_only_the_statements_they_need(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # on a remote database (Neon) every statement is a round trip of milliseconds
    database = new_database("round_trips")
    env = {"DATABASE_URL": postgres.url(database)}
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    postgres.psql(f"ALTER DATABASE {database} SET log_statement = 'all'")

    written, statements = statements_of(postgres, database, "write-once", postgres_project, env)
    assert ok(written) == "Wrote marker\n"
    # nothing SQLAlchemy would ask a new connection (db.py's _Psycopg), no pre-ping, no table
    # lookup; the BEGIN, the bounded lock wait, the head check and the names in one round
    # trip (a pipeline: tests/test_roundtrips.py counts them), the COMMIT in a second
    assert statements == [
        "BEGIN",
        "SET LOCAL lock_timeout = 30000",
        "SELECT version_num FROM alembic_version",
        "INSERT INTO markers (name) SELECT value FROM unnest($1::text[]) WITH ORDINALITY "
        "AS batch (value, position) ORDER BY position",
        "COMMIT",
    ]

    many = "x\n" * 30_000  # three batches
    ok(run_program(postgres_project, "write-once", "-", env=env, input=many))
    read, statements = statements_of(postgres, database, "read-later", postgres_project, env)
    assert ok(read).startswith("['persistent-check', 'x', ")
    # the first chunk with the head check in one round trip, the rest in one statement
    # however many rows (no server-side cursor to declare, fetch from and close), both in
    # one snapshot; SET LOCAL bounds the lock wait, so a transaction around them
    assert statements == [
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        "SET LOCAL lock_timeout = 30000",
        "SELECT version_num FROM alembic_version",
        "SELECT markers.name",  # the log shows a statement's first line: LIMIT 10000
        "SELECT markers.name",  # OFFSET 10000
        "COMMIT",
    ]


def test_write_once_and_read_later_work_through_pgbouncer_in_transaction_mode(
    postgres_project: Path,
    postgres: PostgresServer,
    pgbouncer: PgBouncer,
    new_database: Callable[[str], str],
) -> None:
    # Neon's pooled host: the programs on the pooler, the migrations on the server itself
    database = new_database("pooled")
    env = {"DATABASE_URL": pgbouncer.url(database), "DATABASE_URL_DIRECT": postgres.url(database)}
    ok(run_program(postgres_project, "alembic", "upgrade", "head", env=env))
    names = [f"pooled-{number}" for number in range(25_000)]
    names[9_995 : 9_995 + len(TRICKY_NAMES)] = TRICKY_NAMES
    stdin = "".join(f"{name}\n" for name in names)
    written = run_program(postgres_project, "write-once", "-", env=env, input=stdin)
    assert ok(written) == "Wrote 25000 markers\n"
    assert ok(run_program(postgres_project, "read-later", env=env)) == f"{names!r}\n"

    # a bad name after two batches have gone through the pooler: nothing of this batch stays
    bad = [*names, *(f"late-{number}" for number in range(30_000))]
    bad[-5] = "z" * 101
    stdin = "".join(f"{name}\n" for name in bad)
    refused = run_program(postgres_project, "write-once", "-", env=env, input=stdin)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"write-once: error: name {len(bad) - 4}: "), refused.stderr
    assert_shows_no_password(refused)
    assert postgres.psql("SELECT count(*) FROM markers", database) == str(len(names))


def test_db_verify_and_db_evidence_work_through_pgbouncer_in_transaction_mode(
    postgres_project: Path,
    postgres: PostgresServer,
    pgbouncer: PgBouncer,
    new_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # the snapshot shared by two server connections, the behaviour check's pipelined round
    # trip and the reads db-evidence shares, each inside a transaction the pooler pins
    database = new_database("pooled_verify")
    env = {"DATABASE_URL": pgbouncer.url(database), "DATABASE_URL_DIRECT": postgres.url(database)}
    ok(run_program(postgres_project, "db-migrate", env=env))
    ok(run_program(postgres_project, "write-once", env=env))
    verified = ok(run_program(postgres_project, "db-verify", env=env)).splitlines()
    assert [line.split()[0] for line in verified] == ["ok"] * 5, verified
    bundle = tmp_path / "bundle"
    ok(run_program(postgres_project, "db-evidence", "--output", str(bundle), env=env))
    assert "Verdict: **pass-untested**" in (bundle / "evidence.md").read_text()


def test_the_generated_write_tests_pass_through_pgbouncer(
    postgres_project: Path, pgbouncer: PgBouncer, new_database: Callable[[str], str]
) -> None:
    # Ctrl-C and kill -9 mid-COPY, eight concurrent writers, the escapes: through the pooler
    result = run_program(
        postgres_project,
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/dbkit/test_transactions.py",
        "tests/dbkit/test_persistence.py",
        "tests/dbkit/test_bad_input.py::test_a_bad_name_late_in_a_large_batch_leaves_the_table_as_it_was",
        env={"TEST_DATABASE_URL": pgbouncer.url(new_database("pooled_tests"))},
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def test_db_migrate_at_head_sends_only_what_it_needs_on_one_connection(
    postgres_project: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    # issue 26: at 100 ms a round trip, each statement is a tenth of a second of every deploy
    database = new_database("migrate_round_trips")
    env = {"DATABASE_URL": postgres.url(database)}
    ok(run_program(postgres_project, "db-migrate", env=env))
    postgres.psql(f"ALTER DATABASE {database} SET log_statement = 'all'")

    migrated, statements = statements_of(postgres, database, "db-migrate", postgres_project, env)
    assert ok(migrated).startswith("Database at head: 0001 ")
    (lock,) = [statement for statement in statements if "pg_advisory_xact_lock" in statement]
    # nothing SQLAlchemy would ask a new connection (db.py's _Psycopg)
    assert statements == [
        "BEGIN",
        # the lock, waited for until the migrations' deadline, and the timeouts: one round trip
        lock,
        # Alembic's own read of the version (a table lookup, then the rows); ours are gone,
        # and with nothing applied no lineage is written, and no watcher connection opens
        "SELECT pg_catalog.pg_class.relname",
        "SELECT alembic_version.version_num",
        "COMMIT",
    ]
    assert lock.startswith("SELECT pg_backend_pid(), set_config('lock_timeout', '")


def test_a_deploy_role_that_does_not_own_alembic_version_migrates_and_starts_the_programs(
    postgres_project: Path,
    postgres: PostgresServer,
    new_database: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # the owner migrated first; the deploy role has what migrating needs, and no ownership
    database = new_database("deploy_role")
    ok(run_program(postgres_project, "db-migrate", env={"DATABASE_URL": postgres.url(database)}))
    postgres.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'deployer') THEN "
        f"CREATE ROLE deployer LOGIN PASSWORD '{PASSWORD}'; END IF; END $$"
    )
    postgres.psql(
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO deployer; "
        "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO deployer; "
        "GRANT CREATE, USAGE ON SCHEMA public TO deployer",
        database,
    )
    env = {"DATABASE_URL": postgres.url(database, user="deployer")}

    # nothing to migrate: the Dockerfile's `db-migrate && read-later`
    at_head = run_program(postgres_project, "db-migrate", env=env)
    assert (ok(at_head), at_head.stderr) == (at_head.stdout, "")
    assert ok(run_program(postgres_project, "read-later", env=env)) == "[]\n"

    # a revision that creates a table: migrated, and the lineage left unwritten is said once
    copy = tmp_path / "copy"
    for folder in ("src", "migrations"):
        shutil.copytree(postgres_project / folder, copy / folder)
    (copy / "migrations" / "versions" / "0002_notes.py").write_text(NOTES_REVISION)
    migrated = run_program(
        postgres_project, "db-migrate", env={**env, "PYTHONPATH": str(copy / "src")}
    )
    assert migrated.stdout.startswith("Database at head: 0002 "), migrated.stderr
    assert migrated.stderr.startswith("db-migrate: warning: lineage not recorded: this role")
    assert len(migrated.stderr.splitlines()) == 1, migrated.stderr
    assert postgres.tables(database) == "alembic_version,markers,notes"


NOTES_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table("notes", sa.Column("id", sa.Integer(), primary_key=True))
"""
