# dbkit (the template's): `copier update` brings each release's changes here.
"""The guard against a migration that deletes stored data (docs/decisions/0012).

run_migrations() (migrate.py) calls refuse_data_loss() before the migrations' transaction:
a drop of a table that holds rows, or of a column that holds values, is refused unless
`-x allow_data_loss=true` (db-migrate --allow-data-loss, through allow_data_loss()) says it
is meant. Empty tables, all-NULL columns and batch mode's rebuilds pass.
"""

import argparse
from collections.abc import Mapping
from inspect import currentframe
from typing import Any

from alembic.config import Config
from alembic.operations.batch import ApplyBatchImpl
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, Table, func, inspect, select
from sqlalchemy.sql import expression

from .errors import DatabaseSetupError

# `alembic -x allow_data_loss=true ...`; db-migrate --allow-data-loss passes the same
ALLOW_DATA_LOSS = "allow_data_loss"


def allow_data_loss(config: Config) -> None:
    """Add -x allow_data_loss=true to config, as the alembic command line would."""
    options = config.cmd_opts or argparse.Namespace()
    options.x = [*(getattr(options, "x", None) or []), f"{ALLOW_DATA_LOSS}=true"]
    config.cmd_opts = options


def refuse_data_loss(migration: MigrationContext, x_arguments: Mapping[str, str]) -> None:
    """Unless -x allow_data_loss=true: raise DatabaseSetupError before a drop that loses data.

    A drop of a table that holds rows, or of a column that holds non-NULL values (op.drop_column,
    or batch_op.drop_column, which on SQLite rebuilds the table without it), is refused before
    it runs; the migrations' transaction then rolls back. Batch mode's rebuild itself (copy the
    table, drop the original, rename the copy) keeps the rows, so it passes. SQL that a revision
    runs itself (op.execute("DROP TABLE ...")) is not seen.
    """
    allowed = x_arguments.get(ALLOW_DATA_LOSS, "false").lower()
    if allowed not in ("true", "false"):
        raise DatabaseSetupError(f"-x {ALLOW_DATA_LOSS} takes true or false, not {allowed!r}")
    connection = migration.connection
    if allowed == "true" or connection is None:  # --sql: no data to count
        return
    # every Alembic drop goes through the context's impl; these wrap this context's impl only
    impl = migration.impl
    drop_table, drop_column, prep_table = (
        impl.drop_table,
        impl.drop_column,
        impl.prep_table_for_batch,
    )
    rebuilds: list[ApplyBatchImpl] = []

    def noting_rebuild(batch_impl: ApplyBatchImpl, table: Table) -> None:
        # batch mode next creates batch_impl.new_table, copies the rows, drops table, renames
        rebuilds.append(batch_impl)
        prep_table(batch_impl, table)

    def checked_drop_table(table: Table, **kw: Any) -> None:
        rebuild = next((b for b in rebuilds if table is b.table or table is b.new_table), None)
        if rebuild is None:
            _refuse_if_held(connection, "drop_table", table.name, table.schema)
        elif table is rebuild.table:  # its rows are copied; the columns left out are not
            for lost in table.columns:
                if "expr" not in rebuild.column_transfers.get(lost.name, {}):
                    _refuse_if_held(connection, "drop_column", table.name, table.schema, lost)
        drop_table(table, **kw)

    def checked_drop_column(
        table_name: str, column: Column[Any], *, schema: str | None = None, **kw: Any
    ) -> None:
        _refuse_if_held(connection, "drop_column", table_name, schema, column)
        drop_column(table_name, column, schema=schema, **kw)

    impl.prep_table_for_batch = noting_rebuild  # type: ignore[method-assign]
    impl.drop_table = checked_drop_table  # type: ignore[method-assign]
    impl.drop_column = checked_drop_column  # type: ignore[method-assign]


def _refuse_if_held(
    connection: Connection,
    operation: str,
    table_name: str,
    schema: str | None,
    dropped: Column[Any] | None = None,
) -> None:
    inspector = inspect(connection)
    if not inspector.has_table(table_name, schema=schema):
        return  # nothing to lose (drop_table(if_exists=True)), or the drop fails by itself
    if dropped is not None and dropped.name not in {
        found["name"] for found in inspector.get_columns(table_name, schema=schema)
    }:
        return
    counted = func.count() if dropped is None else func.count(expression.column(dropped.name))
    source = expression.table(table_name, schema=schema)
    held = connection.scalar(select(counted).select_from(source))
    if not held:
        return
    if dropped is None:
        what = f"table {table_name} holds {_count(held, 'row')}"
    else:
        what = f"column {table_name}.{dropped.name} holds {_count(held, 'value')}"
    raise DatabaseSetupError(
        f"the migration would delete data, nothing changed: {what} ({operation} in "
        f"{_running_revision()}); run again with -x {ALLOW_DATA_LOSS}=true "
        "(db-migrate --allow-data-loss) if that is meant"
    )


def _running_revision() -> str:
    # the revision script's upgrade() or downgrade() is further up the call stack
    frame = currentframe()
    while frame is not None:
        revision = frame.f_globals.get("revision")
        if frame.f_code.co_name in ("upgrade", "downgrade") and isinstance(revision, str):
            return f"the {frame.f_code.co_name} of revision {revision}"
        frame = frame.f_back
    return "a revision"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
