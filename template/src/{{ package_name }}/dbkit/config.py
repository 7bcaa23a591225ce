# dbkit (the template's): `copier update` brings each release's changes here.
"""Where the database is: one answer for the entry points, Alembic and the tests."""

import os
from pathlib import Path

from dotenv import dotenv_values, load_dotenv

# python-dotenv's parser, not its documented API (which only warns, through its logger, of a
# line it skips, counting the blank lines before it, and says nothing of a name without `=`):
# pyproject.toml pins the releases tests/dbkit/test_urls_and_settings.py checks it on
from dotenv.parser import parse_stream
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import DatabaseSetupError, name_database

# the project folder (src/<package>/dbkit/config.py -> four levels up), in a source checkout,
# where app.db, .env and migrations/ are; an installed wheel has none, and carries its
# migrations in the package (<package>/migrations)
PROJECT_ROOT = Path(__file__).resolve().parents[3]
IN_SOURCE_CHECKOUT = (PROJECT_ROOT / "migrations" / "env.py").is_file()
MIGRATIONS_DIR = (
    PROJECT_ROOT / "migrations" if IN_SOURCE_CHECKOUT else Path(__file__).parents[1] / "migrations"
)
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "app.db"

# what people paste, and the driver SQLAlchemy should use for it
_POSTGRES_SCHEMES = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}


def database_url() -> URL:
    """The application's database: DATABASE_URL, else the project's SQLite file."""
    url = _url_from_env("DATABASE_URL")
    if url is not None:
        return url
    if not IN_SOURCE_CHECKOUT:
        raise DatabaseSetupError(
            "DATABASE_URL is not set, and an installed copy has no project folder to keep "
            "app.db in; set it (sqlite:////var/lib/app/app.db, postgresql://...)"
        )
    return parse_database_url(f"sqlite:///{DEFAULT_SQLITE_PATH}")


def migration_url() -> URL:
    """The database migrations run on: DATABASE_URL_DIRECT when set, else database_url().

    Neon's pooled host runs PgBouncer in transaction mode; schema changes belong on the
    direct host, so a project on Neon sets both.
    """
    return _url_from_env("DATABASE_URL_DIRECT") or database_url()


def test_database_setting() -> str:
    """TEST_DATABASE_URL as the tests read it (the environment, else .env); '' when unset.

    Unset, every test gets a new SQLite file of its own.
    """
    raw = os.environ.get("TEST_DATABASE_URL") or dotenv_values(_checked_dotenv()).get(
        "TEST_DATABASE_URL"
    )
    return (raw or "").strip()


def where_alembic_works(checked: URL) -> str:
    """For a message about checked: '; ' and where `alembic` works, when that may be elsewhere.

    Empty unless DATABASE_URL_DIRECT is set to another URL: then `alembic upgrade head`
    migrates that database, and the advice to run it may not reach this one.
    """
    try:
        direct = _url_from_env("DATABASE_URL_DIRECT")
    except DatabaseSetupError:
        return ""
    if direct is None or direct == checked:
        return ""
    return (
        f"; `alembic` works on DATABASE_URL_DIRECT, {name_database(direct)}: if that is "
        "another database, point it at this one"
    )


def parse_database_url(raw: str, variable: str = "DATABASE_URL") -> URL:
    """Parse a URL as people write it: postgres:// means psycopg 3, SQLite paths are absolute."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        # a ValueError is a bad port: often the rest of a password whose @ or : was not encoded
        raise _not_a_url(variable) from None
    if "@" in (url.host or ""):
        # the password held a bare @ and its tail was read as the host; showing it would leak it
        raise _not_a_url(variable)
    if url.drivername in _POSTGRES_SCHEMES:
        url = url.set(drivername=_POSTGRES_SCHEMES[url.drivername])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        # a relative path would follow the current directory; anchor it to the project
        if not IN_SOURCE_CHECKOUT and not Path(url.database).is_absolute():
            raise DatabaseSetupError(
                f"{variable} holds a relative SQLite path, and an installed copy has no project "
                "folder to take it from; use an absolute one (sqlite:////var/lib/app/app.db)"
            )
        url = url.set(database=str(PROJECT_ROOT / url.database))
    return url


def _not_a_url(variable: str) -> DatabaseSetupError:
    # the value itself is never echoed: it may hold a password
    return DatabaseSetupError(
        f"{variable} is not a database URL; expected something like "
        "sqlite:////abs/path/app.db or postgresql://user:password@host/dbname "
        "(URL-encode special characters in the password: @ -> %40, : -> %3A)"
    )


def _url_from_env(variable: str) -> URL | None:
    # a real environment variable wins over .env (load_dotenv never overrides)
    where = "the environment" if variable in os.environ else ".env"
    load_dotenv(_checked_dotenv())
    raw = os.environ.get(variable, "")
    if raw.strip():
        return parse_database_url(raw, variable)
    if variable == "DATABASE_URL" and variable in os.environ:
        # set, but to nothing: falling back to app.db would write where nobody asked
        raise DatabaseSetupError(
            f"DATABASE_URL is set but empty in {where}; set it to a database URL, or unset it"
        )
    # DATABASE_URL_DIRECT empty means none: migrations go to DATABASE_URL
    return None


def _checked_dotenv() -> Path:
    """The .env file, once python-dotenv's own parser has read every line of it.

    python-dotenv skips a line it cannot parse with a warning, and the setting it held
    would silently fall back to another database: here that is an error naming the line.
    """
    path = _dotenv()
    try:
        with path.open(encoding="utf-8") as stream:
            bindings = list(parse_stream(stream))
    except FileNotFoundError:
        return path
    except UnicodeDecodeError:
        raise DatabaseSetupError(f"cannot read {path}: it is not UTF-8 text") from None
    except OSError as exc:
        raise DatabaseSetupError(f"cannot read {path}: {exc.strerror}") from None
    for binding in bindings:
        if binding.error or (binding.key is not None and binding.value is None):
            text = binding.original.string
            # a binding's text begins with the blank lines before it
            line = binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
            # the line itself is not shown: it may hold a password
            raise DatabaseSetupError(
                f"{path} line {line} cannot be parsed (a quote left open, or no `=`); "
                "write it as NAME=value, or remove it"
            )
    return path


def _dotenv() -> Path:
    # an installed copy reads the .env of the folder it runs in
    return (PROJECT_ROOT if IN_SOURCE_CHECKOUT else Path.cwd()) / ".env"
