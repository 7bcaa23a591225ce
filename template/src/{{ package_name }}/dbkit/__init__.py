# dbkit (the template's): `copier update` brings each release's changes here.
"""dbkit: the template's machinery, the part of the package that `copier update` replaces.

What your code calls is here, and only here (the modules inside are the template's own and
may change between releases; their changes are in UPGRADING.md):

    from <package>.dbkit import open_database, DatabaseSetupError

- open_database(): `with open_database() as sessions:`, sessions on a database at head
- make_engine(url): an engine tuned for its backend, for work outside a session
- database_url(): the application's database (DATABASE_URL, .env, else app.db);
  migration_url(): the one migrations use (DATABASE_URL_DIRECT, else database_url())
- describe(url): the URL as it may be shown, its password masked
- DatabaseSetupError: the database or its URL is not usable; str() is one line saying why
- run(), CannotRun, report(): the way into a command (README: "Add a command")

Imported on first use, so that a console script can catch Ctrl-C while it imports.
"""

# typing's TYPE_CHECKING, without importing typing before a console script catches Ctrl-C
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .config import database_url, migration_url
    from .db import Database, make_engine, open_database
    from .errors import DatabaseSetupError, describe
    from .program import CannotRun, report, run

__all__ = [
    "CannotRun",
    "Database",
    "DatabaseSetupError",
    "database_url",
    "describe",
    "make_engine",
    "migration_url",
    "open_database",
    "report",
    "run",
]

_HOME = {
    "CannotRun": "program",
    "Database": "db",
    "DatabaseSetupError": "errors",
    "database_url": "config",
    "describe": "errors",
    "make_engine": "db",
    "migration_url": "config",
    "open_database": "db",
    "report": "program",
    "run": "program",
}


def __getattr__(name: str) -> "Any":
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = __import__(f"{__name__}.{_HOME[name]}", fromlist=[name])
    return getattr(module, name)
