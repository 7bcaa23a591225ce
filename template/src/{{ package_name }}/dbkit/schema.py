# dbkit (the template's): `copier update` brings each release's changes here.
"""Is the database at the migrations' head? Answered without importing Alembic.

Importing Alembic costs about 80 ms, a third of an entry point's run, so the revision ids
are read from the scripts' source directly; the tests check them against `alembic heads`.
"""

import ast
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from .config import MIGRATIONS_DIR, where_alembic_works
from .errors import DatabaseSetupError, name_database

VERSIONS_DIR = MIGRATIONS_DIR / "versions"
VERSION_TABLE = "alembic_version"
# how migrations label, on PostgreSQL, the revisions the database's head builds on
LINEAGE = "alembic lineage:"
# the project's identity in that label: its package's name, which never changes (copier.yml)
PROJECT = (__package__ or __name__).split(".")[0]


class Scripts(NamedTuple):
    """The revisions in the migration scripts, as their source says."""

    revisions: set[str]
    heads: set[str]  # that no other revision builds on
    bases: set[str]  # that build on none: where the migrations begin


def read_scripts(versions: Path = VERSIONS_DIR) -> Scripts:
    """Every revision in the scripts, their heads and their bases, each script read once."""
    revisions: set[str] = set()
    parents: set[str] = set()
    bases: set[str] = set()
    for script in versions.glob("*.py"):
        assigned = _module_constants(script)
        ids = _ids(assigned.get("revision"))
        revisions.update(ids)
        parents.update(_ids(assigned.get("down_revision")))
        if assigned.get("down_revision") is None:
            bases.update(ids)
    return Scripts(revisions, revisions - parents, bases)


def database_revisions(connection: Connection) -> set[str]:
    """The revisions Alembic has stamped on the database (none before the first upgrade).

    Without an alembic_version table, the connection's transaction is rolled back.
    """
    # one query, not a table lookup and then a query: on a remote database each is a round trip
    try:
        return set(connection.scalars(text("SELECT version_num FROM alembic_version")))
    except DBAPIError as exc:
        if not _is_missing_table(exc):
            raise
    connection.rollback()  # PostgreSQL refuses every further statement of a failed transaction
    return set()


def check_at_head(
    connection: Connection, versions: Path | None = None, current: set[str] | None = None
) -> None:
    """Raise DatabaseSetupError unless the database is at the migrations' head.

    The message names the database it checked, and where `alembic` works if that may differ.
    current: the revisions, when the caller has read them already (db.first_round_trip).
    """
    versions = versions or VERSIONS_DIR
    scripts = read_scripts(versions)
    if not scripts.revisions:
        raise DatabaseSetupError(
            f"no migration scripts in {versions}; install the project from its folder "
            "(uv sync, pip install -e .) or as a wheel built by uv build, which carries them"
        )
    heads = scripts.heads
    if current is None:
        current = database_revisions(connection)
    if current == heads:
        return
    url = connection.engine.url
    database = f"the database ({name_database(url)})"
    if not current:
        problem = _no_revision(connection, scripts.bases, database)
    elif current - scripts.revisions:
        lineage, now = _lineage_and_revisions(connection)
        if now is not None and now != current:
            # a migration committed since the revisions were read: judge what is there now
            return check_at_head(connection, versions, now)
        unknown = current - scripts.revisions
        if heads <= _built_on(lineage, current):
            # a later release migrated it past ours, from our head (an expand revision, see
            # the skill's live-migrations.md): every table and column we use is still there
            return
        problem = (
            f"{database} is at revision {', '.join(sorted(unknown))}, which this project's "
            "migrations do not have; check DATABASE_URL and compare with `alembic history`"
        )
        if lineage and lineage.project not in (None, PROJECT):
            problem = (
                f"{database} was migrated by another project ({lineage.project}, at revision "
                f"{', '.join(sorted(current))}), not by {PROJECT}; check DATABASE_URL"
            )
    elif len(current) > 1 and (newest := _newest(versions, current)):
        # `alembic upgrade head` refuses such a table: the revisions overlap
        problem = (
            f"{database} has {len(current)} rows in alembic_version "
            f"({', '.join(sorted(current))}), where revision {newest} builds on the others; if "
            f"the schema is at {newest}, keep only its row with `alembic stamp --purge {newest}`,"
            " then run `alembic upgrade head`"
        )
    else:
        problem = (
            f"{database} is at revision {', '.join(sorted(current))}, older than "
            f"{', '.join(sorted(heads))}; run `alembic upgrade head`"
        )
    raise DatabaseSetupError(problem + where_alembic_works(url))


def _newest(versions: Path, current: set[str]) -> str | None:
    # the one of current that every other builds on, by the scripts' down_revisions
    parents: dict[str, set[str]] = {}
    for script in versions.glob("*.py"):
        assigned = _module_constants(script)
        for revision in _ids(assigned.get("revision")):
            parents[revision] = _ids(assigned.get("down_revision"))

    def ancestors(revision: str) -> set[str]:
        found: set[str] = set()
        todo = list(parents.get(revision, ()))
        while todo:
            if (parent := todo.pop()) not in found:
                found.add(parent)
                todo.extend(parents.get(parent, ()))
        return found

    newest = [revision for revision in current if current - {revision} <= ancestors(revision)]
    return newest[0] if len(newest) == 1 else None


def lineage_comment(heads: set[str], revisions: set[str]) -> str:
    """What migrations write on PostgreSQL's alembic_version: the project, its heads and
    their ancestors."""
    return (
        f"{LINEAGE} project {PROJECT}; heads {' '.join(sorted(heads))}; "
        f"revisions {' '.join(sorted(revisions))}"
    )


class Lineage(NamedTuple):
    """What the last migration recorded on alembic_version (lineage_comment())."""

    project: str | None  # None: recorded before projects were named there
    heads: set[str]
    revisions: set[str]


def read_lineage(connection: Connection) -> Lineage | None:
    """The lineage recorded on PostgreSQL's alembic_version; None when none is.

    Only a database whose revisions are not in this release's scripts costs the query.
    """
    return _lineage_and_revisions(connection)[0]


def _lineage_and_revisions(connection: Connection) -> tuple[Lineage | None, set[str] | None]:
    # the lineage and the revisions it speaks of, read in one statement (one snapshot): a
    # migration may commit both between two statements of a READ COMMITTED transaction, and
    # a lineage newer than the revisions read before it would not describe them
    if connection.dialect.name != "postgresql":
        return None, None
    comment, revisions = connection.execute(
        text(
            f"SELECT obj_description('{VERSION_TABLE}'::regclass, 'pg_class'), "
            f"ARRAY(SELECT version_num FROM {VERSION_TABLE})"
        )
    ).one()
    return _parsed_lineage(comment), set(revisions)


def _parsed_lineage(comment: str | None) -> Lineage | None:
    match = re.fullmatch(
        rf"{LINEAGE} (?:project (\S+); )?heads ([^;]*); revisions (.*)", comment or ""
    )
    if match is None:
        return None
    return Lineage(match[1], set(match[2].split()), set(match[3].split()))


def migrated_from(connection: Connection, current: set[str]) -> set[str]:
    """The revisions the database's current ones build on, as its last migration recorded
    them (PostgreSQL); empty when nothing was recorded for exactly these revisions, or when
    another project recorded them."""
    return _built_on(read_lineage(connection), current)


def _built_on(lineage: Lineage | None, current: set[str]) -> set[str]:
    if lineage is None or lineage.heads != current or lineage.project not in (None, PROJECT):
        return set()  # none recorded, recorded before someone set another revision, or not ours
    return lineage.revisions


def adoption_advice(
    connection: Connection, bases: Iterable[str], url: URL | None = None
) -> str | None:
    """For a database with no revision stamped: the advice to adopt the tables it holds, by
    stamping the base revision (the one that creates them). url: the database's as the user
    gave it, where the connection's is another (db-verify's read-only one).

    None when it holds none (a new database, or what `alembic downgrade base` leaves).
    """
    tables = [name for name in inspect(connection).get_table_names() if name != "alembic_version"]
    if not tables:
        return None
    # made without the migrations (the lesson's scripts call create_all): upgrading would try
    # to create tables that are there, and stamping a revision whose tables differ hides it
    first = ", ".join(sorted(bases))
    return (
        f"the database ({name_database(url or connection.engine.url)}) has tables "
        f"({', '.join(sorted(tables))}) but no migration history; if they are what revision "
        f"{first} creates, adopt them with `alembic stamp {first}`, then `alembic upgrade head` "
        "and `alembic check` (see the skill's alembic-migrations.md)"
    )


def _no_revision(connection: Connection, bases: set[str], database: str) -> str:
    # an empty alembic_version is what `alembic downgrade base` leaves: no schema either
    advice = adoption_advice(connection, bases)
    return advice or f"{database} has no schema yet; run `alembic upgrade head`"


def _is_missing_table(exc: DBAPIError) -> bool:
    # psycopg gives PostgreSQL's SQLSTATE (42P01: undefined_table); sqlite3 only a message
    reason = exc.orig
    return getattr(reason, "sqlstate", None) == "42P01" or "no such table" in str(reason)


# CPython 3.11 can fail two ast.parse() calls made at once in two threads ("AST constructor
# recursion depth mismatch", seen with 3.11.7 in the live-migration test): one at a time
_PARSING = threading.Lock()


def _module_constants(script: Path) -> dict[str, object]:
    # `revision = "..."` and `down_revision: ... = (...)`, as Alembic writes them
    constants: dict[str, object] = {}
    source = script.read_bytes()
    with _PARSING:
        module = ast.parse(source, str(script))
    for node in module.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                constants[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError):
                continue  # not a literal: not a revision id
    return constants


def _ids(value: object) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, (tuple, list)):
        return {item for item in value if isinstance(item, str)}
    return set()
