# dbkit (the template's): `copier update` brings each release's changes here.
"""The release evidence: what was verified, on which database, from which commit, tested how.

collect() gathers it for the bundle (bundle.py writes it): db-verify's result, the project
and its commit, the versions, the schema as the database holds it, its hash and its diagram,
and the tests' counts when run. Nothing in it holds a password: URLs are written masked.
"""

import hashlib
import io
import json
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import alembic
import sqlalchemy
from alembic import command
from sqlalchemy import Connection, MetaData, inspect
from sqlalchemy.engine.reflection import ObjectKind, ObjectScope
from sqlalchemy.exc import CompileError
from sqlalchemy.schema import CreateIndex, CreateTable

from .bundle import FORMAT_VERSION
from .config import IN_SOURCE_CHECKOUT, PROJECT_ROOT, parse_database_url, test_database_setting
from .db import shared_reflection
from .diagram import er_diagram
from .errors import DatabaseSetupError, describe
from .migrate import alembic_config
from .schema_diff import reflecting
from .two_paths import Database
from .verify import verify


def default_output(now: datetime) -> Path:
    """evidence/<UTC timestamp>/ in the project folder (git-ignored), or, for an installed
    copy, which has none (its package lives in a virtualenv), in the current folder."""
    root = PROJECT_ROOT if IN_SOURCE_CHECKOUT else Path.cwd()
    return root / "evidence" / now.strftime("%Y%m%dT%H%M%SZ")


def collect(
    database: Database, now: datetime, tests: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str, str]:
    """evidence.json's content, schema.sql's text and the schema's erDiagram (from the
    database, as reflected: see diagram.py)."""
    result = verify(database)
    # the snapshot and schema.sql's reflection ask the same questions: each read once
    with shared_reflection(database.connection):
        snapshot = schema_snapshot(database.connection)
        reflected = _reflected(database)
    # pass only for a bundle whose tests ran and passed: checks alone are pass-untested
    verdict = (
        "fail"
        if not result.ok or (tests is not None and not _tests_passed(tests))
        else "pass-untested"
        if tests is None
        else "pass"
    )
    evidence = {
        "format": FORMAT_VERSION,
        "project": _project(),
        "git": _git(),
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {
            "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__,
            "alembic": alembic.__version__,
            "driver": result.driver,
            "server": result.server_version,
        },
        "schema_hash": schema_hash(snapshot),
        **result.as_dict(),  # db-verify --json's object: ok, database, ..., tables, checks
        "tests": tests,
        "verdict": verdict,
    }
    return evidence, schema_sql(database, reflected), er_diagram(snapshot)


def schema_snapshot(connection: Connection, names: list[str] | None = None) -> dict[str, Any]:
    """The schema as the database reports it, normalised: sorted, nothing volatile.

    names: the tables, when the caller has them (the inspector's get_table_names()).
    """
    inspector = inspect(connection)
    dialect = connection.dialect

    def type_name(column: Any) -> str:
        try:
            return str(column["type"].compile(dialect=dialect))
        except CompileError:  # a type SQLAlchemy reflected but cannot write back
            return repr(column["type"])

    def sql(text: object) -> str | None:
        return " ".join(str(text).split()) if text is not None else None

    # each kind read for every table in one query (get_multi_*): remotely, a query per
    # table and kind would be a round trip each; on PostgreSQL asked as MetaData.reflect asks
    # (of any scope: a new session has no temporary tables), so that db-evidence reads once
    # for both (db.py's shared_reflection)
    names = sorted(inspector.get_table_names() if names is None else names)
    scope = ObjectScope.ANY if dialect.name == "postgresql" else ObjectScope.DEFAULT
    asked: dict[str, Any] = {"filter_names": names, "kind": ObjectKind.TABLE, "scope": scope}
    columns = inspector.get_multi_columns(**asked)
    primary_keys = inspector.get_multi_pk_constraint(**asked)
    foreign_keys = inspector.get_multi_foreign_keys(**asked)
    uniques = inspector.get_multi_unique_constraints(**asked)
    indexes = inspector.get_multi_indexes(**asked)
    checks = inspector.get_multi_check_constraints(**asked)
    tables = {}
    for table in names:
        key = (None, table)
        primary_key: dict[str, Any] = dict(primary_keys.get(key) or {})
        tables[table] = {
            # column order is part of the schema: CREATE TABLE writes it
            "columns": [
                {
                    "name": column["name"],
                    "type": type_name(column),
                    "nullable": column["nullable"],
                    "default": sql(column.get("default")),
                }
                for column in columns.get(key, [])
            ],
            "primary_key": {
                "name": primary_key.get("name"),
                "columns": primary_key.get("constrained_columns", []),
            },
            "foreign_keys": sorted(
                (
                    {
                        "name": fk.get("name"),
                        "columns": fk["constrained_columns"],
                        "references": fk["referred_table"],
                        "referenced_columns": fk["referred_columns"],
                        "on_delete": (fk.get("options") or {}).get("ondelete"),
                    }
                    for fk in foreign_keys.get(key, [])
                ),
                key=json.dumps,
            ),
            "unique": sorted(
                (
                    {"name": unique.get("name"), "columns": unique["column_names"]}
                    for unique in uniques.get(key, [])
                ),
                key=json.dumps,
            ),
            "indexes": sorted(
                (
                    {
                        "name": index.get("name"),
                        "columns": index["column_names"],
                        "unique": bool(index["unique"]),
                    }
                    for index in indexes.get(key, [])
                ),
                key=json.dumps,
            ),
            "checks": sorted(
                (
                    {"name": check.get("name"), "sql": sql(check["sqltext"])}
                    for check in checks.get(key, [])
                ),
                key=json.dumps,
            ),
        }
    return {"dialect": dialect.name, "tables": tables}


def schema_hash(snapshot: dict[str, Any]) -> str:
    """A hash of the normalised schema: the same schema, the same hash, on every run."""
    canonical = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _reflected(database: Database) -> MetaData | None:
    """Every table of the database's default schema (and those their foreign keys refer
    to), reflected; None on SQLite."""
    if database.backend == "sqlite":
        return None
    metadata = MetaData()
    with reflecting():
        metadata.reflect(database.connection)
    return metadata


def schema_sql(database: Database, reflected: MetaData | None = None) -> str:
    """The schema as it is: SQLite's own stored DDL; elsewhere, DDL from reflection
    (reflected, when the caller has it: _reflected())."""
    if database.backend == "sqlite":
        rows = database.connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY tbl_name, type DESC, name"
        )
        return "".join(f"{sql};\n\n" for sql in rows.scalars())
    metadata = reflected or _reflected(database)
    assert metadata is not None  # (not SQLite)
    dialect = database.connection.dialect
    statements = []
    for table in metadata.sorted_tables:
        statements.append(CreateTable(table).compile(dialect=dialect))
        indexes = sorted(table.indexes, key=lambda index: index.name or "")
        statements.extend(CreateIndex(index).compile(dialect=dialect) for index in indexes)
    header = f"-- reflected from the database by SQLAlchemy {sqlalchemy.__version__}\n\n"
    return header + "".join(f"{str(statement).strip()};\n\n" for statement in statements)


def migrations_sql() -> str:
    """`alembic upgrade --sql base:head`: every migration as the SQL it runs, for review."""
    buffer = io.StringIO()
    command.upgrade(alembic_config(output_buffer=buffer), "base:head", sql=True)
    return buffer.getvalue()


def run_tests(arguments: list[str] | None = None, cwd: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Run the project's pytest in a new process: its counts, read from its JUnit XML, and
    the database the tests ran on."""
    with tempfile.TemporaryDirectory() as folder:
        # the XML stays out of the bundle: a failure's message could quote anything
        junit = Path(folder) / "junit.xml"
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--junitxml={junit}", *(arguments or [])],
            cwd=cwd, stdout=sys.stderr, check=False,
        )  # fmt: skip
        counts = tests_summary(junit) if junit.exists() else _no_counts()
    return {**counts, "exit_code": completed.returncode, "database": tests_database()}


def tests_database() -> dict[str, str | None]:
    """The database the tests run on, as the tests' conftest.py decides: backend, masked URL."""
    raw = test_database_setting()
    if not raw:
        return {"backend": "sqlite", "url": None}  # a new SQLite file for each test
    try:
        url = parse_database_url(raw, "TEST_DATABASE_URL")
    except DatabaseSetupError:
        return {"backend": "unknown", "url": None}  # the tests themselves refused it
    return {"backend": url.get_backend_name(), "url": describe(url)}


def tests_summary(junit: Path) -> dict[str, int]:
    """Counts of a JUnit XML report: every test suite in it, added up."""
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = _no_counts()
    for suite in suites:
        for key, attribute in (
            ("total", "tests"),
            ("failed", "failures"),
            ("errors", "errors"),
            ("skipped", "skipped"),
        ):
            counts[key] += int(suite.get(attribute, "0"))
    counts["passed"] = counts["total"] - counts["failed"] - counts["errors"] - counts["skipped"]
    return counts


def _tests_passed(tests: dict[str, Any]) -> bool:
    return tests["exit_code"] == 0 and tests["total"] > 0 and not tests["failed"] + tests["errors"]


def _no_counts() -> dict[str, int]:
    return {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}


def _project() -> dict[str, str]:
    # the distribution that installed this package, found by its console scripts: its name
    # need not be the package's (acme-orders installs acme), and an editable install lists
    # no package files to look the name up by
    package = __name__.split(".")[0]
    scripts = metadata.entry_points(group="console_scripts")
    distribution = next(
        (script.dist for script in scripts if script.value.startswith(f"{package}.")), None
    ) or metadata.distribution(package)
    return {"name": distribution.metadata["Name"], "version": distribution.version}


def _git() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            completed = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
            )
        except OSError:  # no git on this machine
            return None
        return completed.stdout if completed.returncode == 0 else None

    if not IN_SOURCE_CHECKOUT:
        # an installed copy's code is no commit of any repository around it
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # evidence/ is git-ignored, so writing a bundle never makes the tree dirty
    return {"commit": commit.strip(), "dirty": bool(git("status", "--porcelain"))}


def utc_now() -> datetime:
    # timezone.utc by another name: linters for Python 3.11+ ask for datetime.UTC, which 3.10
    # does not have, and this file must pass them on every supported version
    return datetime.now(timezone(timedelta(0))).replace(microsecond=0)
