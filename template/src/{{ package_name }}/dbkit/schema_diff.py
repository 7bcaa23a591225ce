# dbkit (the template's): `copier update` brings each release's changes here.
"""How the database's schema differs from the models, each difference in words.

Alembic's comparison (what `alembic check` runs) tells tables, columns, types and server
defaults; it skips CHECK constraints and primary keys, so every named constraint and index of
the models' tables is compared here by reflection instead, by name and by columns.
"""

import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    BIGINT,
    INTEGER,
    CheckConstraint,
    Column,
    Connection,
    DefaultClause,
    ForeignKeyConstraint,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    event,
)
from sqlalchemy.exc import SAWarning
from sqlalchemy.sql.schema import ColumnCollectionConstraint

from ..models.base import Base  # models/__init__.py, run first, imports every model
from .db import read_default_schema

# Alembic's differences that _constraint_differences reports instead, each named once
CONSTRAINT_OPERATIONS = {
    "add_index",
    "remove_index",
    "add_constraint",
    "remove_constraint",
    "add_fk",
    "remove_fk",
}

# PostgreSQL: every sequence a column owns (a SERIAL's), by the name a nextval() default gives
# it (regclass's text, as pg_get_expr writes it there), with the owning column's name
OWNED_SEQUENCES = """
SELECT COALESCE(json_object_agg(c.oid::regclass::text, a.attname), '{}')
FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
  AND d.refclassid = 'pg_class'::regclass
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE c.relkind = 'S'
"""
# a default that draws from a sequence, as Alembic's PostgreSQL comparison matches it
NEXTVAL = re.compile(r"nextval\('(.+?)'::regclass\)")


def schema_differences(
    connection: Connection, owned_sequences: Mapping[str, str] | None = None
) -> list[str]:
    """Every difference between the database's schema and the models', in words; [] if none.

    owned_sequences: OWNED_SEQUENCES's answer, when the caller has read it (in a round trip
    it makes anyway: two_paths.py); on PostgreSQL it is read here otherwise.
    """
    # the options migrations/env.py gives `alembic check`, so that the two agree
    opts = {"target_metadata": Base.metadata, "compare_type": True, "compare_server_default": True}
    # the tables as Alembic's comparison reflected them, for the constraints: reflecting them
    # again would cost as many queries as the comparison (one round trip each, remotely)
    reflected: dict[str, Table] = {}

    def keep_reflected(item: Any, name: Any, kind: str, _reflected: bool, compare_to: Any) -> bool:
        if kind == "table" and isinstance(compare_to, Table):
            reflected[item.key] = compare_to
        return True

    context = MigrationContext.configure(
        connection, opts={**opts, "include_object": keep_reflected}
    )
    read_default_schema(connection)
    if connection.dialect.name == "postgresql" and owned_sequences is None:
        owned_sequences = connection.exec_driver_sql(OWNED_SEQUENCES).scalar_one()
    with reflecting(), serials_known(owned_sequences or {}):
        differences = [
            describe_difference(difference)
            for difference in compare_metadata(context, Base.metadata)
            if not _is_constraint_difference(difference)
        ]
        return differences + _constraint_differences(reflected)


@contextmanager
def serials_known(owned_sequences: Mapping[str, str]) -> Iterator[None]:
    """Around Alembic's comparison on PostgreSQL: each SERIAL column's default dropped as it is
    reflected, as Alembic's own column_reflect hook (PostgresqlImpl.autogen_column_reflect)
    drops it, but from owned_sequences, read once, where that hook asks the database which
    column owns the sequence: a query per table, a round trip each on a remote database.

    The same test as Alembic's: an INTEGER or BIGINT column whose default is nextval() of a
    sequence that a column of the same name owns. A default this leaves is Alembic's to judge.
    Listeners on the Table class run before those Alembic puts on each table it reflects.
    """

    def drop_serial_default(_inspector: Any, _table: Table, column: Any) -> None:
        default = column.get("default")
        if default and isinstance(column["type"], (INTEGER, BIGINT)):
            drawn = NEXTVAL.match(default)
            if drawn and owned_sequences.get(drawn[1]) == column["name"]:
                del column["default"]

    event.listen(Table, "column_reflect", drop_serial_default)
    try:
        yield
    finally:
        event.remove(Table, "column_reflect", drop_serial_default)


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


def _constraint_differences(reflected: dict[str, Table]) -> list[str]:
    """Each named constraint and index of the models' tables that the database lacks or adds,
    from the tables as reflected (by the table's key in the models' metadata).

    Compared by name, and by columns where they have some; a CHECK constraint by name only
    (each backend gives back its SQL in its own words). A table missing from the database is
    not compared here: Alembic's comparison names it.
    """
    differences = []
    for table in sorted(Base.metadata.tables.values(), key=lambda table: table.name):
        if (found := reflected.get(table.key)) is not None:
            in_database = _model_constraints(found)
            differences += _compare_named(table.name, _model_constraints(table), in_database)
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
        if index.info.get("duplicates_constraint"):
            # PostgreSQL's index behind a unique constraint, as Alembic's comparison reflects
            # it (and marks it): the constraint is compared above
            continue
        name = str(index.name) if isinstance(index.name, str) else None
        plain = all(isinstance(expression, Column) for expression in index.expressions)
        shape = _columns(column.name for column in index.columns) if plain else None
        named.append(Named("index", name, _unique(index.unique, shape)))
    return named


def _columns(names: Iterable[str]) -> str:
    return f"({', '.join(names)})"


def _unique(unique: bool | None, shape: str | None) -> str | None:
    return f"unique {shape}" if unique and shape is not None else shape
