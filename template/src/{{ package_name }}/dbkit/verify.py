# dbkit (the template's): `copier update` brings each release's changes here.
"""Independent verification: the facts the programs rely on, established through other paths.

write-once and read-later trust the project's engine, its models and a fast head check that
reads revision ids without Alembic. Re-reading through that same code proves little, so each
check here takes a different road to the same fact:

- revision: Alembic's own migration context and script directory;
- schema: Alembic's comparison of the database with the models (what `alembic check` runs),
  and every named constraint and index of the models' tables compared by reflection
  (schema_diff.py);
- behaviour: the catalog read directly, for CHECK conditions, the key's numbering, collations
  and triggers the migrations did not create (behaviour.py);
- integrity: the database's own checks, on a raw driver connection (on SQLite one that could
  write but refuses to, the only kind on which integrity_check verifies CHECK constraints);
- data: every mapped table read twice, through the ORM and with plain SQL on a new raw
  DB-API connection (sqlite3 read-only, or psycopg), the two row counts and checksums equal
  (checksums.py);
- with an earlier evidence bundle (bundle.py): no table lost rows (with --same-rows, every
  table holds the same rows), the revision went forward.

verify() runs them in that order, each a plain call that returns its verdict, and what it
found where a later check needs it. A check that cannot reach a verdict (a table written on
SQLite during every attempt to read it) says "could not verify", which is neither ok nor a
failure of the database.
"""

import os
import sqlite3
from collections.abc import Callable, Collection
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table
from sqlalchemy.engine import URL
from sqlalchemy.orm import Mapper

from ..models.base import Base  # models/__init__.py, run first, imports every model
from .behaviour import check_behaviour
from .bundle import Expected
from .checksums import mapped_columns, orm_checksum, raw_checksum
from .config import MIGRATIONS_DIR, where_alembic_works
from .errors import (
    DatabaseSetupError,
    describe,
    first_line,
    lock_timed_out,
    lock_wait_message,
    name_database,
)
from .schema import adoption_advice
from .schema_diff import schema_differences
from .two_paths import Database

# reads of a table on SQLite, where a commit between the ORM and the raw read can make them
# differ; past the last one the table is too busy to verify
DATA_ATTEMPTS = 3

T = TypeVar("T")
# a check's verdict: whether the fact holds (None: no verdict either way), and why, in one line
Verdict = tuple[bool | None, str]


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
    """Every check's verdict, in order, and the facts they found on the database."""

    backend: str
    driver: str
    server_version: str
    database: str  # its URL, the password masked
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

    def as_lines(self) -> str:
        """db-verify's output: one line per check."""
        return "\n".join(check.line() for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """db-verify --json's object, which evidence.json holds too (bundle.py)."""
        return {
            "ok": self.ok,
            "database": self.database,
            "backend": self.backend,
            "current": self.current,
            "heads": self.heads,
            "tables": {name: asdict(table) for name, table in sorted(self.tables.items())},
            "checks": [
                {"name": check.name, "ok": check.ok, "detail": check.detail}
                for check in self.checks
            ],
        }


def verify(
    database: Database,
    expected: Expected | None = None,
    allow_shrink: Collection[str] = (),
) -> Verification:
    """Run every check on database, and compare it with an earlier evidence bundle if given."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    result = Verification(database.backend, *database.versions(), describe(database.url))
    result.heads = sorted(script.get_heads())
    current, revision = _found(
        database, "revision", _check_revision, database, script, result.heads
    )
    result.current = current or []  # None: unreadable, which --expect takes as no revision
    result.checks += [
        revision,
        _checked(database, "schema", _check_schema, database),
        _checked(database, "behaviour", check_behaviour, database.connection, script),
        _checked(database, "integrity", _check_integrity, database),
    ]
    for mapper in sorted(Base.registry.mappers, key=lambda mapper: str(mapper.local_table)):
        table = mapper.local_table.description
        data, check = _found(database, f"data {table}", _check_data, database, mapper)
        result.checks.append(check)
        if data is not None:  # None: unreadable, which --expect counts as empty
            result.tables[table] = data
    if expected is not None:
        since = f"since the bundle of {expected.created_at}"
        kept = (expected, result.tables, allow_shrink, since)
        forward = (expected, script, result.current, since)
        result.checks += [
            _checked(database, "expect rows", _check_rows_kept, *kept),
            _checked(database, "expect revision", _check_forward, *forward),
        ]
    return result


def _found(
    database: Database, name: str, check: Callable[..., tuple[T, bool | None, str]], *args: Any
) -> tuple[T | None, Check]:
    """What check(*args) found, and its verdict as the Check called name.

    A database error is the check's failure, told in one line (it found None); a lock wait
    that timed out stops every check, as each later one would wait as long.
    """
    try:
        found, ok, detail = check(*args)
    except database.driver_errors as exc:
        if lock_timed_out(exc):
            raise DatabaseSetupError(lock_wait_message()) from None
        database.rollback()
        return None, Check(name, False, f"could not check: {first_line(exc)}")
    if ok is None:
        return found, Check(name, False, f"could not verify: {detail}", verified=False)
    return found, Check(name, ok, detail)


def _checked(database: Database, name: str, check: Callable[..., Verdict], *args: Any) -> Check:
    """check(*args)'s verdict as the Check called name (see _found), for a check that finds
    nothing a later one needs."""
    return _found(database, name, lambda: (None, *check(*args)))[1]


def _check_revision(
    database: Database, script: ScriptDirectory, heads: list[str]
) -> tuple[list[str], bool, str]:
    current = sorted(MigrationContext.configure(database.connection).get_current_heads())
    bases = script.get_bases()
    if not current and (advice := adoption_advice(database.connection, bases, database.url)):
        return current, False, advice  # tables made without the migrations (the lesson's)
    return current, *_revision_verdict(database.url, script, current, heads)


def _revision_verdict(
    url: URL, script: ScriptDirectory, current: list[str], heads: list[str]
) -> tuple[bool, str]:
    at, head = ", ".join(current), ", ".join(heads)
    name = name_database(url)
    if set(current) == set(heads):
        return True, f"{name} at {head}, the scripts' head"
    elsewhere = where_alembic_works(url)
    if not current:
        return False, f"no revision stamped on {name}; run `alembic upgrade head`{elsewhere}"
    if unknown := set(current) - _known(script):
        unknown_ids = ", ".join(sorted(unknown))
        return False, f"{name} at {unknown_ids}, which the migration scripts do not have"
    if set(current) <= _ancestors(script, heads):
        behind = f"{name} at {at}, behind the scripts' head {head}"
        return False, f"{behind}; run `alembic upgrade head`{elsewhere}"
    return False, f"{name} at {at}, not the scripts' head {head}"


def _check_schema(database: Database) -> Verdict:
    if differences := schema_differences(database.connection, database.owned_sequences):
        return False, f"{len(differences)} difference(s): {'; '.join(differences)}"
    return True, "the database matches the models"


def _check_integrity(database: Database) -> Verdict:
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


def _check_data(database: Database, mapper: Mapper[Any]) -> tuple[TableData, bool | None, str]:
    # what it finds is the raw path's read, which --expect compares
    table = mapper.local_table
    assert isinstance(table, Table)
    columns = mapped_columns(mapper)
    for _attempt in range(DATA_ATTEMPTS):
        database.share_snapshot()
        version = database.data_version()
        try:
            orm = TableData(*orm_checksum(database.connection, mapper, columns))
        except ValueError as exc:  # a stored value its column's type cannot read: text as a date
            database.rollback()
            raw = TableData(*raw_checksum(database.raw, table, columns, database.backend))
            return raw, False, f"the ORM cannot read every row: {first_line(exc)}"
        raw = TableData(*raw_checksum(database.raw, table, columns, database.backend))
        if orm == raw:
            agree = f"{_rows(raw.rows)}, checksum {raw.checksum}; the ORM and raw SQL agree"
            return raw, True, agree
        if database.data_version() == version:
            differ = (
                f"the ORM read {_rows(orm.rows)} (checksum {orm.checksum}), "
                f"raw SQL {_rows(raw.rows)} (checksum {raw.checksum})"
            )
            return raw, False, differ
        # another process committed between the two reads (PostgreSQL's shared snapshot
        # rules that out): the difference says nothing about the data; read again
    busy = (
        f"writes in progress: another process committed to {table.name} during each of "
        f"{DATA_ATTEMPTS} reads; run db-verify again when writes stop"
    )
    return raw, None, busy


def _check_rows_kept(
    expected: Expected,
    tables: dict[str, TableData],
    allow_shrink: Collection[str],
    since: str,
) -> Verdict:
    lost: list[str] = []
    allowed: list[str] = []
    changed: list[str] = []  # the same or more rows, but not the same rows
    for table, before in sorted(expected.rows.items()):
        now = tables[table] if table in tables else TableData(0, "")
        if now.rows < before:
            (allowed if table in allow_shrink else lost).append(f"{table} {before} -> {now.rows}")
        elif expected.checksums.get(table, now.checksum) != now.checksum:
            changed.append(f"{table} {before} -> {now.rows}")
    if lost:
        return False, f"rows lost {since}: {', '.join(lost)} (--allow-shrink TABLE if meant)"
    if changed and expected.same_rows:
        return False, f"rows not the same {since} (checksum differs): {', '.join(changed)}"
    if expected.same_rows:
        return True, f"every table holds the same rows {since} (counts and checksums)"
    return True, f"no table lost rows {since}" + (
        f" (allowed: {', '.join(allowed)})" if allowed else ""
    ) + (
        f"; rows added, changed or replaced: {', '.join(changed)} (checksum differs; "
        "--same-rows refuses that)"
        if changed
        else ""
    )


def _check_forward(
    expected: Expected, script: ScriptDirectory, current: list[str], since: str
) -> Verdict:
    before = set(expected.current)
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
    with raw.cursor() as found_indexes, raw.cursor() as found_constraints:
        with raw.pipeline():  # both queries in one round trip
            found_indexes.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE NOT i.indisvalid AND {in_use} ORDER BY 1"
            )
            found_constraints.execute(
                "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace "
                f"WHERE NOT c.convalidated AND {in_use} ORDER BY 1, 2"
            )
        indexes = [name for (name,) in found_indexes.fetchall()]
        constraints = [f"{table}.{name}" for table, name in found_constraints.fetchall()]
    problems = []
    if indexes:
        problems.append(f"invalid index: {', '.join(indexes)}")
    if constraints:
        problems.append(f"constraint left NOT VALID: {', '.join(constraints)}")
    return problems


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _more(count: int) -> str:
    return f" (and {count} more)" if count else ""
