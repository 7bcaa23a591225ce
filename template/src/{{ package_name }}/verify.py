"""Independent verification: the facts the programs rely on, established through other paths.

write-once and read-later trust the project's engine, its models and a fast head check that
reads revision ids without Alembic. Re-reading through that same code proves little, so each
check here takes a different road to the same fact:

- revision: Alembic's own migration context and script directory;
- schema: Alembic's comparison of the database with the models (what `alembic check` runs),
  and every named constraint and index of the models' tables compared by reflection (Alembic
  skips CHECK constraints and primary keys);
- integrity: the database's own checks, on a raw driver connection (on SQLite one that could
  write but refuses to, the only kind on which integrity_check verifies CHECK constraints);
- data: every mapped table read twice, through the ORM and with plain SQL on a new raw
  DB-API connection (sqlite3 read-only, or psycopg), the two row counts and checksums equal.

A check that cannot reach a verdict (a table written on SQLite during every attempt to read it)
says "could not verify", which is neither ok nor a failure of the database.
"""

import importlib
import json
import os
import sqlite3
import warnings
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    DefaultClause,
    Engine,
    ForeignKeyConstraint,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    inspect,
    select,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import SAWarning, SQLAlchemyError
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from .config import MIGRATIONS_DIR, where_alembic_works
from .db import (
    CHUNK_SIZE,
    lock_timeout,
    make_engine,
    postgresql_connect_args,
    set_local_lock_timeout,
)
from .errors import (
    DatabaseSetupError,
    describe,
    explained,
    first_line,
    in_memory,
    lock_timed_out,
    lock_wait_message,
    missing_folder,
    name_database,
    sqlite_problem,
    unusable_file,
    without_secrets,
)
from .models.base import Base  # models/__init__.py, run first, imports every model

CHECKSUM_MODULUS = 2**64
# how SQLite's stored text of a date or time column reads as one
ISO_PARSERS: dict[type | None, Callable[[str], object]] = {
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
    time: time.fromisoformat,
}
# reads of a table on SQLite, where a commit between the ORM and the raw read can make them
# differ; past the last one the table is too busy to verify
DATA_ATTEMPTS = 3
# Alembic's differences that _constraint_differences reports instead, each named once
CONSTRAINT_OPERATIONS = {
    "add_index",
    "remove_index",
    "add_constraint",
    "remove_constraint",
    "add_fk",
    "remove_fk",
}


class BundleError(Exception):
    """An evidence bundle given to --expect that cannot be read; str() is one line."""


class CouldNotVerify(Exception):
    """A check that could reach no verdict, through no fault of the database; str() says why."""


@dataclass(frozen=True)
class Check:
    """One verified fact: its name, whether it holds, and why, in one line."""

    name: str
    ok: bool
    detail: str
    verified: bool = True  # False: no verdict either way (ok is False too)

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL" if self.verified else "??"
        return f"{status:<4} {self.name}: {self.detail}"


@dataclass(frozen=True)
class TableData:
    """A table's rows as the raw SQL path read them."""

    rows: int
    checksum: str


@dataclass
class Verification:
    backend: str
    driver: str
    server_version: str
    current: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    tables: dict[str, TableData] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> bool:
        """A check found the database wrong (not merely unable to verify it)."""
        return any(not check.ok and check.verified for check in self.checks)


@dataclass
class Database:
    """Two independent ways into one database: the project's engine and a raw connection."""

    url: URL
    engine: Engine
    connection: Connection
    raw: Any  # a DB-API connection: sqlite3's or psycopg's
    driver_errors: tuple[type[Exception], ...]

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def rollback(self) -> None:
        # a failed statement aborts a PostgreSQL transaction; the next check starts clean
        self.connection.rollback()
        self.raw.rollback()

    def data_version(self) -> int | None:
        """SQLite's count of commits by other connections; None on PostgreSQL (snapshots)."""
        if self.backend != "sqlite":
            return None
        (version,) = self.raw.execute("PRAGMA data_version").fetchone()
        return int(version)

    def share_snapshot(self) -> None:
        """Start new transactions on both paths that see the same committed rows.

        On PostgreSQL the raw connection imports the snapshot the engine's connection
        exports, so a writer committing in between cannot make the two paths disagree.
        SQLite has no such thing; _check_data watches its data_version instead.
        """
        self.rollback()
        if self.backend == "sqlite":
            return
        snapshot = self.connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        sql = importlib.import_module("psycopg.sql")  # utility statements take no parameters
        with self.raw.cursor() as cursor:
            cursor.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            # the engine's transactions bound their lock waits (db.py); the raw path's too
            cursor.execute(set_local_lock_timeout(lock_timeout()))


@contextmanager
def connect(url: URL) -> Iterator[Database]:
    """Open both paths, read-only where the backend allows; DatabaseSetupError if either fails."""
    with explained(url):
        if url.get_backend_name() == "sqlite":
            path = _existing_sqlite_file(url)
            try:
                raw = _raw_sqlite(path)
            except sqlite3.Error as exc:  # the driver's own, which explained() does not see
                raise DatabaseSetupError(sqlite_problem(path, first_line(exc))) from None
            errors: tuple[type[Exception], ...] = (sqlite3.Error,)
            engine = make_engine(_read_only_sqlite_url(url, path))
        else:
            engine = make_engine(url)
            raw, errors = _raw_postgresql(url)
        try:
            connection = engine.connect()
            if url.get_backend_name() != "sqlite":
                # one snapshot per transaction, which share_snapshot() hands to the raw path
                connection = connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
        except BaseException:
            raw.close()
            engine.dispose()
            raise
    try:
        yield Database(url, engine, connection, raw, (SQLAlchemyError, *errors))
    finally:
        connection.close()
        raw.close()
        engine.dispose()


def verify(
    database: Database,
    expected: Mapping[str, Any] | None = None,
    allow_shrink: Collection[str] = (),
    migrations: Path | None = None,
) -> Verification:
    """Run every check on database, and compare it with an earlier evidence bundle if given."""
    script = ScriptDirectory(str(migrations or MIGRATIONS_DIR))
    result = Verification(database.backend, *_versions(database))
    result.heads = sorted(script.get_heads())
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("revision", partial(_check_revision, database, script, result)),
        ("schema", partial(_check_schema, database)),
        ("integrity", partial(_check_integrity, database)),
    ]
    for mapper in sorted(Base.registry.mappers, key=lambda mapper: str(mapper.local_table)):
        name = f"data {mapper.local_table.description}"
        checks.append((name, partial(_check_data, database, mapper, result.tables)))
    if expected is not None:
        since = f"since the bundle of {expected.get('created_at', 'an unknown time')}"
        rows_kept = partial(_check_rows_kept, expected, result.tables, allow_shrink, since)
        checks.append(("expect rows", rows_kept))
        forward = partial(_check_forward, expected, script, result.current, since)
        checks.append(("expect revision", forward))
    for name, check in checks:
        try:
            ok, detail = check()
        except database.driver_errors as exc:
            if lock_timed_out(exc):  # every later check would wait as long: give up now
                raise DatabaseSetupError(lock_wait_message()) from None
            database.rollback()
            ok, detail = False, f"could not check: {first_line(exc)}"
        except CouldNotVerify as exc:
            result.checks.append(Check(name, False, f"could not verify: {exc}", verified=False))
            continue
        result.checks.append(Check(name, ok, detail))
    return result


@contextmanager
def reflecting() -> Iterator[None]:
    """Around reflection into SQLAlchemy objects: no warning about NOT VALID constraints.

    PostgreSQL reflects a constraint left NOT VALID with an option SQLAlchemy warns that it
    cannot check; the integrity check names such a constraint instead.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Can't validate argument 'dialect_options'", category=SAWarning
        )
        yield


def load_bundle(path: Path) -> dict[str, Any]:
    """The evidence.json of a bundle folder (or the file itself), or BundleError."""
    file = path / "evidence.json" if path.is_dir() else path
    try:
        bundle = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"cannot read evidence bundle {file}: {first_line(exc)}") from None
    if not (
        isinstance(bundle, dict)
        and isinstance(bundle.get("row_counts"), dict)
        and isinstance(bundle.get("alembic"), dict)
        and isinstance(bundle["alembic"].get("current"), list)
    ):
        raise BundleError(f"{file} is not an evidence bundle (no row_counts or alembic.current)")
    return bundle


def describe_difference(difference: Any) -> str:
    """One of compare_metadata()'s differences, in words that name the table and column."""
    if isinstance(difference, list):  # modify_* operations come grouped per column
        return "; ".join(describe_difference(item) for item in difference)
    operation, *args = difference
    if operation.startswith("modify_"):
        _schema, table, column, _existing, old, new = args
        what = operation.removeprefix("modify_")
        found, wanted = _shown(old), _shown(new)
        return f"{table}.{column}: {what} is {found} in the database, {wanted} in the models"
    where = "in the models, not in the database"
    if operation.startswith("remove_"):
        where = "in the database, not in the models"
    kind = operation.split("_", 1)[1]
    if kind == "column":
        _schema, table, column = args
        return f"column {table}.{column.name}: {where}"
    item = args[0]
    if kind == "table":
        return f"table {item.name}: {where}"
    owner = getattr(getattr(item, "table", None), "name", "?")
    return f"{kind} {item.name or '(unnamed)'} on {owner}: {where}"


def _shown(value: Any) -> str:
    # a server default as its SQL (0, 'none'), not DefaultClause(<TextClause object at 0x...>)
    if isinstance(value, DefaultClause):
        return f"'{value.arg}'" if isinstance(value.arg, str) else str(value.arg)
    return repr(value)


def _check_revision(
    database: Database, script: ScriptDirectory, result: Verification
) -> tuple[bool, str]:
    # in place: the expect revision check holds this same list
    result.current[:] = sorted(MigrationContext.configure(database.connection).get_current_heads())
    current, heads = set(result.current), set(result.heads)
    at, head = ", ".join(result.current), ", ".join(result.heads)
    name = name_database(database.url)
    if current == heads:
        return True, f"{name} at {head}, the scripts' head"
    elsewhere = where_alembic_works(database.url)
    if not current:
        return False, f"no revision stamped on {name}; run `alembic upgrade head`{elsewhere}"
    if unknown := current - _known(script):
        unknown_ids = ", ".join(sorted(unknown))
        return False, f"{name} at {unknown_ids}, which the migration scripts do not have"
    if current <= _ancestors(script, heads):
        behind = f"{name} at {at}, behind the scripts' head {head}"
        return False, f"{behind}; run `alembic upgrade head`{elsewhere}"
    return False, f"{name} at {at}, not the scripts' head {head}"


def _check_schema(database: Database) -> tuple[bool, str]:
    # the options migrations/env.py gives `alembic check`, so that the two agree
    opts = {"target_metadata": Base.metadata, "compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(database.connection, opts=opts)
    with reflecting():
        differences = [
            describe_difference(difference)
            for difference in compare_metadata(context, Base.metadata)
            if not _is_constraint_difference(difference)
        ]
        differences += _constraint_differences(database.connection)
    if not differences:
        return True, "the database matches the models"
    return False, f"{len(differences)} difference(s): {'; '.join(differences)}"


@dataclass(frozen=True)
class Named:
    """A constraint or index: its kind, name and columns."""

    kind: str
    name: str | None
    shape: str | None  # None: not compared (a CHECK constraint's SQL, an expression index)


# the order differences are told in, per table
KINDS = ["primary key", "foreign key", "unique constraint", "check constraint", "index"]


def _is_constraint_difference(difference: Any) -> bool:
    return isinstance(difference, tuple) and difference[0] in CONSTRAINT_OPERATIONS


def _constraint_differences(connection: Connection) -> list[str]:
    """Each named constraint and index of the models' tables that the database lacks or adds.

    Compared by name, and by columns where they have some; a CHECK constraint by name only
    (each backend gives back its SQL in its own words). A table missing from the database is
    not compared here: Alembic's comparison names it.
    """
    inspector = inspect(connection)
    differences = []
    for table in sorted(Base.metadata.tables.values(), key=lambda table: table.name):
        if inspector.has_table(table.name, schema=table.schema):
            found = _database_constraints(inspector, table)
            differences += _compare_named(table.name, _model_constraints(table), found)
    return differences


def _compare_named(table: str, models: list[Named], found: list[Named]) -> list[str]:
    in_database: dict[tuple[str, str | None], Named] = {
        (item.kind, item.name): item for item in found if item.name
    }
    in_models = {(item.kind, item.name): item for item in models}
    extra = [item for item in found if (item.kind, item.name) not in in_models]
    said = []
    for item in models:
        there = in_database.get((item.kind, item.name))
        if there is None:
            # the same columns under another name, or none (SQLite keeps unnamed ones)
            twin = next((x for x in extra if (x.kind, x.shape) == (item.kind, item.shape)), None)
            if twin is None or item.shape is None:
                where = "in the models, not in the database"
            else:
                extra.remove(twin)
                where = (
                    f"named {twin.name} in the database" if twin.name else "unnamed in the database"
                )
            said.append((item.kind, f"{item.kind} {item.name} on {table}: {where}"))
        elif there.shape != item.shape and None not in (there.shape, item.shape):
            shapes = f"{there.shape} in the database, {item.shape} in the models"
            said.append((item.kind, f"{item.kind} {item.name} on {table}: {shapes}"))
    for item in extra:
        name = item.name or " ".join(filter(None, ["(unnamed)", item.shape]))
        said.append(
            (item.kind, f"{item.kind} {name} on {table}: in the database, not in the models")
        )
    return [line for _kind, line in sorted(said, key=lambda said: KINDS.index(said[0]))]


def _model_constraints(table: Table) -> list[Named]:
    named = []
    for constraint in table.constraints:
        name = str(constraint.name) if isinstance(constraint.name, str) else None
        if isinstance(constraint, CheckConstraint):
            named.append(Named("check constraint", name, None))
            continue
        if not isinstance(constraint, ColumnCollectionConstraint) or not constraint.columns:
            continue
        columns = _columns(column.name for column in constraint.columns)
        if isinstance(constraint, PrimaryKeyConstraint):
            named.append(Named("primary key", name, columns))
        elif isinstance(constraint, ForeignKeyConstraint):
            referred = _columns(element.column.name for element in constraint.elements)
            to = f"{columns} -> {constraint.referred_table.name} {referred}"
            named.append(Named("foreign key", name, to))
        elif isinstance(constraint, UniqueConstraint):
            named.append(Named("unique constraint", name, columns))
    for index in table.indexes:
        name = str(index.name) if isinstance(index.name, str) else None
        plain = all(isinstance(expression, Column) for expression in index.expressions)
        shape = _columns(column.name for column in index.columns) if plain else None
        named.append(Named("index", name, _unique(index.unique, shape)))
    return named


def _database_constraints(inspector: Any, table: Table) -> list[Named]:
    where = {"table_name": table.name, "schema": table.schema}
    named = []
    primary_key = inspector.get_pk_constraint(**where)
    if primary_key["constrained_columns"]:
        columns = _columns(primary_key["constrained_columns"])
        named.append(Named("primary key", primary_key["name"], columns))
    for key in inspector.get_foreign_keys(**where):
        columns, referred = _columns(key["constrained_columns"]), _columns(key["referred_columns"])
        named.append(
            Named("foreign key", key["name"], f"{columns} -> {key['referred_table']} {referred}")
        )
    for unique in inspector.get_unique_constraints(**where):
        named.append(Named("unique constraint", unique["name"], _columns(unique["column_names"])))
    for check in inspector.get_check_constraints(**where):
        named.append(Named("check constraint", check["name"], None))
    for index in inspector.get_indexes(**where):
        # PostgreSQL gives a unique constraint's index too; SQLite's own are sqlite_autoindex_*
        own = str(index["name"]).startswith("sqlite_autoindex_")
        if own or index.get("duplicates_constraint"):
            continue
        plain = None not in index["column_names"]
        shape = _columns(index["column_names"]) if plain else None
        named.append(Named("index", index["name"], _unique(bool(index["unique"]), shape)))
    return named


def _columns(names: Iterable[str]) -> str:
    return f"({', '.join(names)})"


def _unique(unique: bool | None, shape: str | None) -> str | None:
    return f"unique {shape}" if unique and shape is not None else shape


def _check_integrity(database: Database) -> tuple[bool, str]:
    if database.backend == "sqlite":
        path = Path(database.url.database or "")
        if _can_write(path):
            problems = _sqlite_integrity(database.raw, path)
            passed = "integrity_check ok, CHECK constraints hold, no foreign-key violation"
        else:
            problems = _sqlite_integrity(database.raw, None)
            passed = (
                "integrity_check ok, no foreign-key violation; CHECK constraints not checked: "
                f"{path} or its folder is read-only to this user"
            )
    else:
        problems = _postgresql_integrity(database.raw)
        passed = "no invalid index, no constraint left NOT VALID"
    return (False, "; ".join(problems)) if problems else (True, passed)


def _check_data(
    database: Database, mapper: Mapper[Any], tables: dict[str, TableData]
) -> tuple[bool, str]:
    table = mapper.local_table
    assert isinstance(table, Table)
    columns = _mapped_columns(mapper)
    for _attempt in range(DATA_ATTEMPTS):
        database.share_snapshot()
        version = database.data_version()
        try:
            orm = TableData(*_orm_checksum(database.connection, mapper, columns))
        except ValueError as exc:  # a stored value its column's type cannot read: text as a date
            database.rollback()
            tables[table.name] = TableData(*_raw_checksum(database, table, columns))  # --expect
            return False, f"the ORM cannot read every row: {first_line(exc)}"
        raw = TableData(*_raw_checksum(database, table, columns))
        tables[table.name] = raw  # one read's count: --expect compares it
        if orm == raw:
            return True, f"{_rows(raw.rows)}, checksum {raw.checksum}; the ORM and raw SQL agree"
        if database.data_version() == version:
            return False, (
                f"the ORM read {_rows(orm.rows)} (checksum {orm.checksum}), "
                f"raw SQL {_rows(raw.rows)} (checksum {raw.checksum})"
            )
        # another process committed between the two reads (PostgreSQL's shared snapshot
        # rules that out): the difference says nothing about the data; read again
    raise CouldNotVerify(
        f"writes in progress: another process committed to {table.name} during each of "
        f"{DATA_ATTEMPTS} reads; run db-verify again when writes stop"
    )


def _check_rows_kept(
    expected: Mapping[str, Any],
    tables: Mapping[str, TableData],
    allow_shrink: Collection[str],
    since: str,
) -> tuple[bool, str]:
    lost: list[str] = []
    allowed: list[str] = []
    for table, before in sorted(expected["row_counts"].items()):
        now = tables[table].rows if table in tables else 0
        if isinstance(before, int) and now < before:
            (allowed if table in allow_shrink else lost).append(f"{table} {before} -> {now}")
    if lost:
        return False, f"rows lost {since}: {', '.join(lost)} (--allow-shrink TABLE if meant)"
    return True, f"no table lost rows {since}" + (
        f" (allowed: {', '.join(allowed)})" if allowed else ""
    )


def _check_forward(
    expected: Mapping[str, Any], script: ScriptDirectory, current: Sequence[str], since: str
) -> tuple[bool, str]:
    before = {str(revision) for revision in expected["alembic"]["current"]}
    was, now = ", ".join(sorted(before)) or "no revision", ", ".join(current) or "no revision"
    known = _known(script)
    if unknown := before - known:
        return False, f"the bundle's revision {', '.join(sorted(unknown))} is not in the scripts"
    if unknown := set(current) - known:
        # the revision check names it; without it in the scripts, forward cannot be told
        return False, f"the database's revision {', '.join(sorted(unknown))} is not in the scripts"
    if not before <= _ancestors(script, current):
        return False, f"moved back {since}: from {was} to {now}"
    if before == set(current):
        return True, f"unchanged at {now} {since}"
    return True, f"forward from {was} to {now} {since}"


def _known(script: ScriptDirectory) -> set[str]:
    return {revision.revision for revision in script.walk_revisions()}


def _ancestors(script: ScriptDirectory, revisions: Collection[str]) -> set[str]:
    """The revisions and everything they build on."""
    if not revisions:
        return set()
    return {r.revision for r in script.iterate_revisions(tuple(revisions), "base") if r}


def _sqlite_integrity(raw: sqlite3.Connection, writable: Path | None) -> list[str]:
    try:
        problems = _sqlite_integrity_check(raw, writable)
    except sqlite3.DatabaseError as exc:  # a page so broken that the check itself stops
        return [f"integrity_check: {first_line(exc)}"]
    if problems:
        return [f"integrity_check: {problems[0]}" + _more(len(problems) - 1)]
    violations = raw.execute("PRAGMA foreign_key_check")
    first = violations.fetchone()
    if first is None:
        return []
    table, rowid, parent, _index = first
    count = 1 + sum(1 for _ in violations)
    return [
        f"foreign_key_check: {table} row {rowid} refers to a missing {parent} row"
        + _more(count - 1)
    ]


def _can_write(path: Path) -> bool:
    # a connection that could write needs the file, and the folder its WAL files are in
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _sqlite_integrity_check(raw: sqlite3.Connection, writable: Path | None) -> list[str]:
    """integrity_check's problems; with the path of a writable file, CHECK constraints too.

    SQLite verifies CHECK constraints in integrity_check only on a connection that could
    write: this one opens the file read-write and refuses every write (query_only). raw holds
    a read meanwhile, so closing it never checkpoints the WAL into the file: the file stays
    byte for byte what it was.
    """
    if writable is None:
        return [m for (m,) in raw.execute("PRAGMA integrity_check") if m != "ok"]
    raw.execute("BEGIN")
    try:
        raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
        uri = f"file:{quote(str(writable))}?mode=rw"
        with closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as checking:
            checking.execute("PRAGMA query_only = ON")
            return [m for (m,) in checking.execute("PRAGMA integrity_check") if m != "ok"]
    finally:
        raw.rollback()


def _postgresql_integrity(raw: Any) -> list[str]:
    in_use = "n.nspname = ANY (current_schemas(false))"
    with raw.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid AND {in_use} "
            "ORDER BY 1"
        )
        indexes = [name for (name,) in cursor.fetchall()]
        cursor.execute(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            f"JOIN pg_namespace n ON n.oid = c.connamespace WHERE NOT c.convalidated AND {in_use} "
            "ORDER BY 1, 2"
        )
        constraints = [f"{table}.{name}" for table, name in cursor.fetchall()]
    problems = []
    if indexes:
        problems.append(f"invalid index: {', '.join(indexes)}")
    if constraints:
        problems.append(f"constraint left NOT VALID: {', '.join(constraints)}")
    return problems


def _mapped_columns(mapper: Mapper[Any]) -> list[Column[Any]]:
    # the table's own columns, in mapping order; computed column_property()s are not stored
    table = mapper.local_table
    columns = [prop.columns[0] for prop in mapper.column_attrs]
    return [c for c in columns if isinstance(c, Column) and c.table is table]


def _orm_checksum(
    connection: Connection, mapper: Mapper[Any], columns: Sequence[Column[Any]]
) -> tuple[int, str]:
    attributes = [mapper.get_property_by_column(column) for column in columns]
    statement = select(*(getattr(mapper.class_, prop.key) for prop in attributes))
    with Session(connection) as session:
        rows = session.execute(statement, execution_options={"yield_per": CHUNK_SIZE})
        return checksum(rows.partitions(), _is_plain(columns))


def _raw_checksum(
    database: Database, table: Table, columns: Sequence[Column[Any]]
) -> tuple[int, str]:
    names = ", ".join(_quoted(c.name) for c in columns)
    where = (
        f"{_quoted(table.schema)}.{_quoted(table.name)}" if table.schema else _quoted(table.name)
    )
    sql = f"SELECT {names} FROM {where}"
    # psycopg streams only from a named (server-side) cursor; sqlite3 always steps row by row
    cursor = database.raw.cursor(**({"name": "verify"} if database.backend != "sqlite" else {}))
    try:
        cursor.execute(sql)
        chunks: Iterable[Sequence[Sequence[object]]] = iter(
            lambda: cursor.fetchmany(CHUNK_SIZE), []
        )
        if database.backend == "sqlite":
            chunks = _sqlite_dates_read(chunks, columns)
        return checksum(chunks, _is_plain(columns))
    finally:
        cursor.close()


def _sqlite_dates_read(
    chunks: Iterable[Sequence[Sequence[object]]], columns: Sequence[Column[Any]]
) -> Iterator[Sequence[Sequence[object]]]:
    """SQLite's text of each date and time column read as what it says, as the ORM reads it.

    The text is not one form: the ORM writes microseconds, a server default such as
    CURRENT_TIMESTAMP writes none; the two paths agree on the value, not on the text.
    """
    parsers = {
        number: parse
        for number, column in enumerate(columns)
        if (parse := ISO_PARSERS.get(_python_type(column))) is not None
    }
    if not parsers:
        yield from chunks
        return
    for chunk in chunks:
        yield [
            tuple(
                _parsed(parsers[number], value) if number in parsers else value
                for number, value in enumerate(row)
            )
            for row in chunk
        ]


def _parsed(parse: Callable[[str], object], value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except ValueError:  # not a date: left as it is, and the paths disagree
        return value


def checksum(chunks: Iterable[Sequence[Sequence[object]]], plain: bool) -> tuple[int, str]:
    """Rows and an order-independent checksum: the sum of each row's 64-bit hash, mod 2**64.

    A row's text is the UTF-8 repr() of the tuple of its canonical values; its hash is that
    text's CRC-32 in the high 32 bits and its Adler-32 in the low ones. Both are C calls
    over a whole chunk (a cryptographic hash per row doubled the time of a million-row
    check); the sum catches rows lost, added, duplicated or changed, not deliberate forgery.
    plain: every column holds only int, str or NULL, already canonical.
    """
    count = total = 0
    for chunk in chunks:
        count += len(chunk)
        rows = map(tuple, chunk) if plain else (tuple(map(canonical, row)) for row in chunk)
        texts = list(map(str.encode, map(repr, rows)))
        # sum((crc << 32) | adler) == (sum(crc) << 32) + sum(adler): adler is below 2**32
        total += (sum(map(zlib.crc32, texts)) << 32) + sum(map(zlib.adler32, texts))
    return count, f"{total % CHECKSUM_MODULUS:016x}"


def canonical(value: object) -> int | str | None:
    """A value as int, str or None, the same whether the ORM or the driver produced it."""
    if value is None or type(value) is int or type(value) is str:
        return value
    if isinstance(value, bool):
        return int(value)  # SQLite stores booleans as 0 and 1
    if isinstance(value, (float, Decimal)):
        # SQLite hands back a float, or an int for a whole number, where the ORM gives a
        # Decimal; a whole number is its int, any other written plainly
        number = Decimal(repr(value)) if isinstance(value, float) else value
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
        return format(number.normalize(), "f")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")  # SQLite's stored form
    if isinstance(value, time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return value.hex
    if isinstance(value, Enum):
        return value.name
    return str(value)


def _is_plain(columns: Sequence[Column[Any]]) -> bool:
    # int and str columns come back as int, str or None from the ORM and from the driver
    return all(_python_type(column) in (int, str) for column in columns)


def _python_type(column: Column[Any]) -> type | None:
    try:
        python_type: type = column.type.python_type
    except NotImplementedError:  # a type that does not say
        return None
    return python_type


def _versions(database: Database) -> tuple[str, str]:
    if database.backend == "sqlite":
        return f"sqlite3 {sqlite3.sqlite_version}", f"SQLite {sqlite3.sqlite_version}"
    psycopg = importlib.import_module("psycopg")
    with database.raw.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (server,) = cursor.fetchone()
    database.raw.rollback()
    return f"psycopg {psycopg.__version__}", f"PostgreSQL {server}"


def _existing_sqlite_file(url: URL) -> Path:
    # opening read-only never creates a file, but its message would not say what to do
    if message := in_memory(url):
        raise DatabaseSetupError(message)
    path = Path(url.database or "")
    if message := missing_folder(path) or unusable_file(path):
        raise DatabaseSetupError(message)
    if not path.exists():
        raise DatabaseSetupError(
            f"no database at {path} yet; run `alembic upgrade head` to create it"
        )
    return path


def _read_only_sqlite_url(url: URL, path: Path) -> URL:
    return url.set(database=f"file:{quote(str(path))}?mode=ro", query={"uri": "true"})


def _raw_sqlite(path: Path) -> sqlite3.Connection:
    # read-only: verification never writes; isolation_level=None keeps sqlite3 from
    # opening transactions of its own
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None)


def _raw_postgresql(url: URL) -> tuple[Any, tuple[type[Exception], ...]]:
    psycopg = importlib.import_module("psycopg")  # the postgres extra; explained() says so
    # as SQLAlchemy merges them for the engine: the URL's parts, its query (host=, password=
    # and the like override the parts), then the project's defaults where the query is silent
    parts = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    options = {key: value for key, value in parts.items() if value is not None}
    if url.password is not None:
        options["password"] = str(url.password)
    options.update((key, value) for key, value in url.query.items() if isinstance(value, str))
    options.update(postgresql_connect_args(url))
    try:
        raw = psycopg.connect(**options)
    except psycopg.Error as exc:
        reason = without_secrets(first_line(exc), url)
        raise DatabaseSetupError(f"cannot use {describe(url)}: {reason}") from None
    raw.read_only = True
    raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # to import a snapshot
    return raw, (psycopg.Error,)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _more(count: int) -> str:
    return f" (and {count} more)" if count else ""
