# dbkit (the template's): `copier update` brings each release's changes here.
"""db-migrate: `alembic upgrade head` for wherever the project is installed.

It needs no alembic.ini and no project folder, and finds the migration scripts in the package
of an installed wheel; migrate.py holds what makes each migration whole and alone.
"""

import argparse
from collections.abc import Sequence

from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from .config import migration_url
from .data_loss import allow_data_loss
from .errors import first_line, name_database, without_secrets
from .migrate import alembic_config
from .program import CannotRun, report, run


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        argv,
        name="db-migrate",
        description="Bring the database (DATABASE_URL_DIRECT, else DATABASE_URL) to the "
        "migrations' head, as `alembic upgrade head` does, from wherever the project is installed.",
        arguments=add_arguments,
        work=migrate,
        could_not_run=1,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-data-loss",
        action="store_true",
        help="let a migration drop a table that holds rows or a column that holds values "
        "(as alembic -x allow_data_loss=true)",
    )


def migrate(args: argparse.Namespace) -> int:
    config = alembic_config()
    if args.allow_data_loss:
        allow_data_loss(config)
    try:
        heads = ScriptDirectory.from_config(config).get_heads()
        command.upgrade(config, "head")
    except CommandError as exc:  # env.py's one-line errors: the URL, the connection, the keys
        raise CannotRun(str(exc)) from None
    except DBAPIError as exc:
        reason = without_secrets(first_line(exc), migration_url())
        raise CannotRun(f"the migration failed and was rolled back: {reason}") from None
    report(f"Database at head: {', '.join(sorted(heads))} ({name_database(migration_url())})")
    return 0
