# dbkit (the template's): `copier update` brings each release's changes here.
"""The guard against a migration that deletes or changes stored data (docs/decisions/0012).

run_migrations() (migrate.py) calls refuse_data_loss() before the migrations' transaction.
From then on, each statement the migrations send on that connection, whether an Alembic
operation wrote it, batch mode or op.execute(), is read before it runs (SQLAlchemy's public
before_cursor_execute event) and refused, unless `-x allow_data_loss=true` (db-migrate
--allow-data-loss, through allow_data_loss()) says it is meant, when it would:
- drop a table that holds rows (DROP TABLE), or a column that holds values (ALTER TABLE ...
  DROP COLUMN, or a rebuild that copies the table without it);
- change a column's type (ALTER ... TYPE, or a rebuild's CAST) so that a stored value
  changes: the database's own casts, to the new type and back, must give every value back.
A rebuild (CREATE TABLE new, INSERT INTO new ... SELECT ... FROM old, DROP TABLE old, ALTER
TABLE new RENAME), as batch mode writes it or by hand, passes when it copies every row and
every column that holds values. Other statements (DELETE, UPDATE, TRUNCATE, SQL inside a
function or a DO block) are not checked.
"""

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alembic import context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, inspect
from sqlalchemy.exc import DBAPIError

from .errors import DatabaseSetupError

# `alembic -x allow_data_loss=true ...`; db-migrate --allow-data-loss passes the same
ALLOW_DATA_LOSS = "allow_data_loss"
ALLOW = f"run again with -x {ALLOW_DATA_LOSS}=true (db-migrate --allow-data-loss) if that is meant"

# where a connection keeps its guard (Connection.info)
_GUARD = "data_loss_guard"

# the statements read, as SQLAlchemy and Alembic write them and as people do; an identifier
# is bare or "quoted", a table's name may carry its schema
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_ALTER = rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{_NAME})\s+"
_DROP_TABLE = re.compile(
    rf"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<tables>{_NAME}(?:\s*,\s*{_NAME})*)"
    r"(?:\s+(?:CASCADE|RESTRICT))?",
    re.IGNORECASE | re.DOTALL,
)
_DROP_COLUMN = re.compile(
    rf"{_ALTER}DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(?P<column>{_IDENT})"
    r"(?:\s+(?:CASCADE|RESTRICT))?",
    re.IGNORECASE | re.DOTALL,
)
_ALTER_TYPE = re.compile(
    rf"{_ALTER}ALTER\s+(?:COLUMN\s+)?(?P<column>{_IDENT})\s+(?:SET\s+DATA\s+)?TYPE\s+"
    r"(?P<type>.+?)(?:\s+USING\s+(?P<using>.+))?",
    re.IGNORECASE | re.DOTALL,
)
_RENAME = re.compile(rf"{_ALTER}RENAME\s+TO\s+(?P<new>{_NAME})", re.IGNORECASE | re.DOTALL)
_INSERT_SELECT = re.compile(
    rf"INSERT\s+INTO\s+(?P<target>{_NAME})\s*(?:\([^)]*\)\s*)?"
    rf"SELECT\s+(?P<select>.+?)\s+FROM\s+(?P<source>{_NAME})(?P<rest>.*)",
    re.IGNORECASE | re.DOTALL,
)
_CAST = re.compile(
    rf"CAST\s*\(\s*(?P<column>{_NAME})\s+AS\s+(?P<type>.+)\)", re.IGNORECASE | re.DOTALL
)
_ALIAS = re.compile(rf"\s+AS\s+{_IDENT}$", re.IGNORECASE)
_STRING = re.compile(r"'(?:[^']|'')*'")
_WORTH_READING = re.compile(r"\b(?:DROP|ALTER|SELECT)\b", re.IGNORECASE)


def allow_data_loss(config: Config) -> None:
    """Add -x allow_data_loss=true to config, as the alembic command line would."""
    options = config.cmd_opts or argparse.Namespace()
    options.x = [*(getattr(options, "x", None) or []), f"{ALLOW_DATA_LOSS}=true"]
    config.cmd_opts = options


def refuse_data_loss(migration: MigrationContext, x_arguments: Mapping[str, str]) -> None:
    """Unless -x allow_data_loss=true: raise DatabaseSetupError before a statement of this
    migration run that would delete a stored row or value, or change a value's type so that
    it changes; the migrations' transaction then rolls back.

    The guard watches migration.connection while Alembic's environment runs this migration
    context, and sleeps after: a connection passed in by a caller is left as it was. `--sql`
    (no connection, so no data to count) is not checked.
    """
    allowed = x_arguments.get(ALLOW_DATA_LOSS, "false").lower()
    if allowed not in ("true", "false"):
        raise DatabaseSetupError(f"-x {ALLOW_DATA_LOSS} takes true or false, not {allowed!r}")
    connection = migration.connection
    if connection is None:
        return
    guard = connection.info.get(_GUARD)
    if not isinstance(guard, _Guard):
        guard = connection.info[_GUARD] = _Guard()
        event.listen(connection, "before_cursor_execute", _before_cursor_execute)
    guard.watch(None if allowed == "true" else migration)


def _before_cursor_execute(
    connection: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    _context: Any,
    executemany: bool,
) -> None:
    guard = connection.info.get(_GUARD)
    if not isinstance(guard, _Guard) or guard.busy or executemany or not guard.running():
        return
    guard.busy = True  # its own queries pass unread
    try:
        for sql in _statements(statement):
            guard.check(connection, sql)
    finally:
        guard.busy = False


@dataclass
class _Copy:
    """INSERT INTO target ... SELECT ... FROM source: the source's columns it reads."""

    source: tuple[str | None, str]
    target: tuple[str | None, str]
    columns: set[str] | None  # None: all of them (SELECT *)


@dataclass
class _Guard:
    migration: MigrationContext | None = None
    busy: bool = False
    copies: list[_Copy] = field(default_factory=list)

    def watch(self, migration: MigrationContext | None) -> None:
        self.migration = migration
        self.copies.clear()

    def running(self) -> bool:
        """Whether this guard's migration context is the one Alembic's environment runs."""
        if self.migration is None:
            return False
        try:
            if context.get_context() is self.migration:
                return True
        except (NameError, AttributeError):  # no environment (Alembic's proxy): env.py ended
            pass
        self.migration = None  # for good: a later run on this connection calls watch() again
        return False

    def check(self, connection: Connection, sql: str) -> None:
        if match := _DROP_TABLE.fullmatch(sql):
            for table in _split(match["tables"], ","):
                self.dropping_table(connection, table)
        elif match := _DROP_COLUMN.fullmatch(sql):
            dropped = _unquote(match["column"])
            held = _count_values(connection, match["table"], dropped)
            if held:
                self.refuse(_holds(match["table"], dropped, held), "drop_column")
        elif match := _ALTER_TYPE.fullmatch(sql):
            column = match["column"]
            converted = match["using"] or column
            self.converting(connection, match["table"], column, converted, match["type"])
        elif match := _INSERT_SELECT.fullmatch(sql):
            self.copying(connection, match["target"], match["source"], match["select"])
        elif match := _RENAME.fullmatch(sql):
            old, new = _key(match["table"]), _key(match["new"])
            for copy in self.copies:
                copy.source = new if copy.source == old else copy.source
                copy.target = new if copy.target == old else copy.target

    def dropping_table(self, connection: Connection, table: str) -> None:
        rows = _count_rows(connection, table)
        key = _key(table)
        if not rows:
            self.copies = [copy for copy in self.copies if copy.source != key]
            return
        # a copy whose original is still there (a rebuild that failed and is cleaned up)
        if any(copy.target == key and _exists(connection, copy.source) for copy in self.copies):
            return
        copies = [
            copy for copy in self.copies if copy.source == key and _exists(connection, copy.target)
        ]
        kept = max((_count_rows(connection, _raw(copy.target)) for copy in copies), default=0)
        if kept < rows:
            what = f"table {_shown(table)} holds {_count(rows, 'row')}"
            if copies:
                what += f", {_count(rows - kept, 'row')} of them not copied"
            self.refuse(what, "drop_table")
        read: set[str] = set()
        for copy in copies:
            read |= copy.columns if copy.columns is not None else _lowered(connection, table)
        for column in _columns(connection, table):
            if column.lower() not in read and (held := _count_values(connection, table, column)):
                self.refuse(_holds(table, column, held), "drop_column")
        self.copies = [copy for copy in self.copies if copy.source != key]

    def copying(self, connection: Connection, target: str, source: str, select: str) -> None:
        items = _split(select, ",")
        columns: set[str] | None = set()
        for item in items:
            expression = _ALIAS.sub("", item)  # at the end, so outside any parentheses
            if cast := _CAST.fullmatch(expression):
                column = _unquote(_split(cast["column"], ".")[-1])
                self.converting(connection, source, column, cast["column"], cast["type"])
            if expression == "*" or expression.endswith(".*"):
                columns = None
            elif columns is not None:
                columns |= {_unquote(name).lower() for name in _identifiers(expression)}
        self.copies.append(_Copy(_key(source), _key(target), columns))

    def converting(
        self, connection: Connection, table: str, column: str, expression: str, new_type: str
    ) -> None:
        """Refuse unless every value of table.column, cast to new_type (expression: the
        column, or a USING clause) and back to what it is now, comes back unchanged."""
        name = _unquote(column)
        changed = _changed_by_cast(connection, table, name, expression, new_type.strip())
        if changed:
            what = (
                f"column {_shown(table)}.{name} holds {_count(changed, 'value')} that "
                f"{new_type.strip()} does not keep"
            )
            self.refuse(what, "alter_column", "change stored values")

    def refuse(self, what: str, operation: str, would: str = "delete data") -> None:
        where = _running_revision(self.migration)
        raise DatabaseSetupError(
            f"the migration would {would}, nothing changed: {what} ({operation} in {where}); "
            f"{ALLOW}"
        )


def _changed_by_cast(
    connection: Connection, table: str, column: str, expression: str, new_type: str
) -> int:
    quoted = connection.dialect.identifier_preparer.quote(column)
    converted = f"CAST(({expression}) AS {new_type})"
    if connection.dialect.name == "sqlite":
        # back to each value's own storage class: a declared type's affinity (DATETIME is
        # NUMERIC) would change the value by itself
        back = (
            f"CASE typeof({quoted}) WHEN 'integer' THEN CAST({converted} AS INTEGER) "
            f"WHEN 'real' THEN CAST({converted} AS REAL) WHEN 'text' THEN CAST({converted} "
            f"AS TEXT) ELSE CAST({converted} AS BLOB) END IS NOT {quoted}"
        )
    else:
        old_type = connection.exec_driver_sql(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "to_regclass(%(table)s) AND attname = %(column)s AND NOT attisdropped",
            {"table": table, "column": column},
        ).scalar()
        if old_type is None:
            return 0  # no such column: the statement fails by itself
        back = f"CAST({converted} AS {old_type}) IS DISTINCT FROM {quoted}"
    query = f"SELECT count(*) FROM {table} WHERE {quoted} IS NOT NULL AND {back}"
    if connection.dialect.name != "postgresql":
        return int(connection.exec_driver_sql(query).scalar() or 0)
    # a value the cast refuses fails the statement itself, and changes nothing; the
    # savepoint keeps the migration's transaction usable for that statement's own error
    try:
        connection.exec_driver_sql("SAVEPOINT data_loss_guard")
    except DBAPIError:
        saved = False  # in an autocommit_block(): no transaction to keep usable
    else:
        saved = True
    try:
        changed = int(connection.exec_driver_sql(query).scalar() or 0)
    except DBAPIError:
        changed = 0
        if saved:
            connection.exec_driver_sql("ROLLBACK TO SAVEPOINT data_loss_guard")
    if saved:
        connection.exec_driver_sql("RELEASE SAVEPOINT data_loss_guard")
    return changed


def _running_revision(migration: MigrationContext | None) -> str:
    """'the upgrade of revision X' (or downgrade) for the revision that runs now.

    Alembic records each revision in alembic_version as it finishes, inside the migrations'
    transaction (MigrationContext.get_current_heads() reads it): the revision that runs is
    the next one from those heads toward the destination (get_revision_argument()).
    """
    if migration is None:
        return "a revision"
    script = context.script
    heads = set(migration.get_current_heads())
    destination = context.get_revision_argument()  # a revision, None for base, or -1 / +2
    if isinstance(destination, str) and destination.startswith(("-", "+")):
        downgrading = destination.startswith("-")
    else:
        wanted = set(destination) if isinstance(destination, tuple) else {destination}
        below_heads = {
            below.revision
            for below in script.iterate_revisions(tuple(heads), "base")
            if below.revision not in heads
        }
        downgrading = destination is None or wanted <= below_heads
    if downgrading:
        running = sorted(heads)
    else:
        running = sorted(
            after.revision
            for after in script.walk_revisions()
            if (_down_revisions(after.down_revision) & heads) or (not heads and after.is_base)
        )
    if not running:
        return "a revision"
    direction = "downgrade" if downgrading else "upgrade"
    return f"the {direction} of revision {' or '.join(running)}"


def _down_revisions(down: str | Sequence[str] | None) -> set[str]:
    return set() if down is None else {down} if isinstance(down, str) else set(down)


def _count_rows(connection: Connection, table: str) -> int:
    if not _exists(connection, _key(table)):
        return 0  # nothing to lose (DROP TABLE IF EXISTS), or the statement fails by itself
    return int(connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0)


def _count_values(connection: Connection, table: str, column: str) -> int:
    if column not in _columns(connection, table):
        return 0
    quoted = connection.dialect.identifier_preparer.quote(column)
    return int(connection.exec_driver_sql(f"SELECT count({quoted}) FROM {table}").scalar() or 0)


def _columns(connection: Connection, table: str) -> list[str]:
    schema, name = _key(table)
    if not _exists(connection, (schema, name)):
        return []
    return [found["name"] for found in inspect(connection).get_columns(name, schema=schema)]


def _lowered(connection: Connection, table: str) -> set[str]:
    return {column.lower() for column in _columns(connection, table)}


def _exists(connection: Connection, key: tuple[str | None, str]) -> bool:
    schema, name = key
    return inspect(connection).has_table(name, schema=schema)


def _holds(table: str, column: str, held: int) -> str:
    return f"column {_shown(table)}.{column} holds {_count(held, 'value')}"


def _key(name: str) -> tuple[str | None, str]:
    """A table's name in SQL as (schema, name), as the database stores them."""
    parts = [_unquote(part) for part in _split(name, ".")]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _raw(key: tuple[str | None, str]) -> str:
    return ".".join(f'"{part}"' for part in key if part is not None)


def _shown(table: str) -> str:
    return ".".join(part for part in _key(table) if part)


def _unquote(identifier: str) -> str:
    identifier = identifier.strip()
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def _identifiers(expression: str) -> list[str]:
    return re.findall(_IDENT, _STRING.sub("''", expression))


def _statements(sql: str) -> Iterator[str]:
    """Each statement in sql that could lose data (most have no DROP, ALTER or SELECT)."""
    if not _WORTH_READING.search(sql):
        return
    for statement in _split(sql, ";"):
        if statement:
            yield statement


def _split(text: str, separator: str) -> list[str]:
    """text split at separator where it is outside quotes and parentheses, parts stripped."""
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return parts


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
