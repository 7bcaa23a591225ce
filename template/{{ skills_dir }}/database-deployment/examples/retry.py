"""Stage 5: run a transaction again when it failed only because another one got in its way.

Retry a transient failure, never a refused write: an IntegrityError fails the same way every
time. Transient: PostgreSQL's serialization failure (SQLSTATE 40001) and deadlock (40P01),
SQLite's "database is locked" (a writer held the lock past the busy timeout or, for a
transaction that has already read, held it at all: SQLite then fails at once, without waiting).
"""

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

RETRYABLE_SQLSTATES = {"40001", "40P01"}


def is_transient(exc: DBAPIError) -> bool:
    """True when a new attempt of the same transaction may succeed."""
    if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)


def with_retry(
    sessions: sessionmaker[Session],
    work: Callable[[Session], T],
    attempts: int = 8,
    first_delay: float = 0.05,
) -> T:
    """Run work(session) in one transaction; after a transient failure, wait and run it again.

    Each attempt is a new transaction: the failed one rolled back, so work starts from scratch
    and must not depend on objects loaded in an earlier attempt.
    """
    for attempt in range(1, attempts + 1):
        try:
            with sessions.begin() as session:
                return work(session)
        except DBAPIError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            # exponential backoff with jitter, so that rivals do not collide again in step
            time.sleep(first_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable: the last attempt returns or raises")
