# A starting point from the template, yours to change: `copier update` merges its changes.
"""Marker: one named row, the smallest proof that data outlives the process that wrote it."""

from collections.abc import Sequence

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

# to change it, autogenerate a revision (it alters the column) and add to it by hand the
# replacement of the check constraint below, which autogenerate does not compare
NAME_MAX_LENGTH = 100


class Marker(Base):
    __tablename__ = "markers"
    # SQLite ignores VARCHAR lengths; the check holds the limit for every writer, on every backend
    __table_args__ = (
        CheckConstraint(f"length(name) BETWEEN 1 AND {NAME_MAX_LENGTH}", name="name_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))

    def __repr__(self) -> str:
        return f"Marker(id={self.id!r}, name={self.name!r})"


class InvalidName(ValueError):
    """A name the markers table would refuse."""


def check_name(name: str) -> str:
    """Return name if the markers table will take it, else raise InvalidName saying why."""
    if not name:
        raise InvalidName("a marker name must not be empty")
    if "\x00" in name or not _is_utf8_text(name):
        raise InvalidName("a marker name must be UTF-8 text without NUL characters")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidName(
            f"a marker name must be at most {NAME_MAX_LENGTH} characters, not {len(name)}"
        )
    return name


def check_names(names: Sequence[str], first_number: int = 1) -> None:
    """Raise InvalidName, naming the first bad one by its number, unless every name is good."""
    # loops in C over the whole batch: a million names cost milliseconds
    lengths = list(map(len, names))
    text = "\n".join(names)
    if not lengths or (
        min(lengths) >= 1
        and max(lengths) <= NAME_MAX_LENGTH
        and "\x00" not in text
        and _is_utf8_text(text)
    ):
        return
    for number, name in enumerate(names, start=first_number):
        try:
            check_name(name)
        except InvalidName as exc:
            raise InvalidName(f"name {number}: {exc}") from None


def _is_utf8_text(text: str) -> bool:
    # bytes that were not UTF-8 (a Latin-1 file on stdin) arrive as lone surrogates
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
