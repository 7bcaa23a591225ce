# dbkit (the template's): `copier update` brings each release's changes here.
"""Failures a user must fix, each told in one line with the password masked."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

# PostgreSQL's SQLSTATE for a lock wait that lock_timeout ended (lock_not_available)
LOCK_NOT_AVAILABLE = "55P03"


class DatabaseSetupError(Exception):
    """Something about the database or its URL that the user must fix; str() is one line."""


def lock_timed_out(exc: BaseException) -> bool:
    """Did PostgreSQL end this statement because it waited for a lock longer than lock_timeout?"""
    reason = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(reason, "sqlstate", None) == LOCK_NOT_AVAILABLE


def lock_wait_message() -> str:
    """What to say when a program gave up waiting for another session's lock."""
    return (
        "gave up waiting for a lock that another session holds (a migration, LOCK TABLE, "
        "VACUUM FULL, a transaction left open), after DATABASE_LOCK_TIMEOUT seconds (default "
        "30); its transaction was rolled back, nothing changed; find the session in "
        "pg_stat_activity (pg_blocking_pids), then run this again once it has ended"
    )


MASK = "***"


def describe(url: URL) -> str:
    """The URL as it may be shown: its password masked, wherever the URL holds one."""
    shown = url.set(
        query={key: MASK if _is_secret(key) else value for key, value in url.query.items()}
    )
    # render_as_string percent-encodes the query's mask; shown as the userinfo's is
    return shown.render_as_string(hide_password=True).replace("%2A%2A%2A", MASK)


def without_secrets(text: str, url: URL) -> str:
    """text, with every secret the URL holds masked: for what a driver says about it."""
    for secret in _secrets(url):
        text = text.replace(secret, MASK)
    return text


def name_database(url: URL) -> str:
    """The database a URL names, for a message: backend, host and name, never a credential."""
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return "an in-memory SQLite database"
        return f"SQLite file {url.database}"
    backend = _BACKENDS.get(url.get_backend_name(), url.get_backend_name())
    host = f"{url.host}:{url.port}" if url.port else url.host or "the local socket"
    return f"{backend} database {url.database} on {host}"


_BACKENDS = {"postgresql": "PostgreSQL"}


@contextmanager
def explained(url: URL) -> Iterator[None]:
    """Turn driver and configuration failures into a DatabaseSetupError that says what to do."""
    try:
        yield
    except NoSuchModuleError:
        raise DatabaseSetupError(
            f"DATABASE_URL names an unknown database or driver ({url.drivername}); "
            "use sqlite:/// or postgresql://"
        ) from None
    except ModuleNotFoundError as exc:
        if exc.name == "psycopg":
            raise DatabaseSetupError(
                "PostgreSQL needs psycopg: install the postgres extra "
                "(uv sync --extra postgres, or pip install -e '.[postgres]')"
            ) from None
        # mysql://, mssql://, postgresql+psycopg2://: a dialect SQLAlchemy knows, a driver absent
        raise DatabaseSetupError(
            f"DATABASE_URL asks for the {exc.name} driver ({url.drivername}), which is not "
            "installed; use sqlite:/// or postgresql:// (psycopg 3, the postgres extra)"
        ) from None
    except DBAPIError as exc:
        raise DatabaseSetupError(_driver_message(url, exc)) from None
    except SQLAlchemyError as exc:
        reason = without_secrets(first_line(exc), url)
        raise DatabaseSetupError(f"database error: {reason}") from None


def in_memory(url: URL) -> str | None:
    """What to say when url is an in-memory SQLite database; None when it is not."""
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
        return None
    return (
        "the URL names an in-memory SQLite database, which vanishes when the program exits: "
        "nothing written there would last, nothing is there to read; use a file "
        "(sqlite:///app.db)"
    )


def unusable_file(path: Path) -> str | None:
    """What to say when a SQLite path is a folder or a file this user cannot read; else None."""
    if path.is_dir():
        return f"{path} is a folder, not a SQLite database; check DATABASE_URL"
    if path.exists() and not os.access(path, os.R_OK):
        return f"cannot read SQLite database {path}: permission denied for this user"
    return None


def missing_folder(path: Path) -> str | None:
    """What to say when a SQLite file's folder does not exist; None when it does."""
    if path.parent.is_dir():
        return None
    return f"cannot open SQLite database {path}: folder {path.parent} does not exist"


def _secrets(url: URL) -> list[str]:
    # the userinfo's password, and libpq's password= and sslpassword= in the query, any case
    found = [url.password] if url.password else []
    for key, value in url.query.items():
        if _is_secret(key):
            found += [value] if isinstance(value, str) else list(value)
    return sorted({str(secret) for secret in found if secret}, key=len, reverse=True)


def _is_secret(key: str) -> bool:
    return "password" in key.lower()


def _driver_message(url: URL, exc: DBAPIError) -> str:
    reason = without_secrets(first_line(exc), url)
    if lock_timed_out(exc):
        return lock_wait_message()
    if url.get_backend_name() != "sqlite":
        return cannot_use(url, exc)
    path = Path(url.database or "")
    if "unable to open database file" in reason and (
        message := missing_folder(path) or unusable_file(path)
    ):
        return message
    return sqlite_problem(path, reason)


def cannot_use(url: URL, exc: BaseException) -> str:
    """A PostgreSQL connection or statement that failed, in one line, the password masked."""
    return f"cannot use {describe(url)}: {without_secrets(first_line(exc), url)}"


def sqlite_problem(path: Path, reason: str) -> str:
    """What sqlite3's reason for failing on the file at path means, in one line."""
    if "file is not a database" in reason:
        return f"{path} is not a SQLite database; check DATABASE_URL"
    if "database is locked" in reason:
        # the busy timeout (db.py) ran out, or SQLite did not wait: docs/decisions/0004
        return (
            f"SQLite database {path} is locked: another connection holds its write lock (a "
            "write or a migration in progress, a transaction left open) and the wait for it "
            "ran out (DATABASE_LOCK_TIMEOUT seconds, default 30; none for a transaction that "
            "read before it wrote); nothing changed; run this again once it has finished"
        )
    if "readonly database" in reason:
        if not os.access(path.parent, os.W_OK):
            # WAL mode: every connection, a reader's too, shares an index in path-shm beside it
            return (
                f"SQLite database {path}: its folder {path.parent} is not writable for this "
                f"user, and SQLite must create {path.name}-shm and {path.name}-wal there even "
                "to read it; make the folder writable for this user, or work on a copy"
            )
        # a reader of a read-only file leaves -wal and -shm as read-only as it was
        files = [path, *(path.with_name(path.name + end) for end in ("-wal", "-shm"))]
        locked = [str(file) for file in files if file.exists() and not os.access(file, os.W_OK)]
        are = "is" if len(locked) < 2 else "are"
        return (
            f"SQLite database {path} cannot be written: {', '.join(locked) or 'it'} {are} "
            "read-only for this user; make the files and their folder writable (chmod u+w)"
        )
    return f"SQLite database {path}: {reason}"


def first_line(exc: BaseException) -> str:
    """What went wrong, in one line: a driver's message (without SQLAlchemy's wrapping) or
    any other exception's, cut to its first line of substance, wrapping and indents folded."""
    said = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [" ".join(line.split()) for line in str(said).splitlines()]
    return next((line for line in lines if line), type(exc).__name__)
