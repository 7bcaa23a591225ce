# dbkit (the template's): `copier update` brings each release's changes here.
"""A table's row count and checksum, read through the ORM or with plain SQL on the driver.

Both paths reduce each row to canonical values (int, str or None), the same whichever path
read it, and sum a 64-bit hash of each: the checksum ignores row order and streams in
chunks, so memory stays flat however big a table is. Only the raw SQL path on SQLite needs
help: it reads a date or time column as the text SQLite stored, and a Numeric column as the
float SQLite stored, where the ORM gives a Decimal rounded to the column's scale (_sqlite_read).
"""

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from functools import partial
from itertools import islice
from typing import Any
from uuid import UUID

from sqlalchemy import Column, Connection, Select, Table, select, tuple_
from sqlalchemy.orm import Mapper, Session

from .bulk import stream_size as _stream_size
from .db import CHUNK_SIZE

# datetime.UTC, which Python 3.10 lacks (a project may support it)
UTC = timezone(timedelta(0))

CHECKSUM_MODULUS = 2**64
# how SQLite's stored text of a date or time column reads as one
ISO_PARSERS: dict[type | None, Callable[[str], object]] = {
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
    time: time.fromisoformat,
}
# the places SQLAlchemy rounds a Numeric without a scale to when it reads SQLite's float (a
# plain Mapped[Decimal]); tests/dbkit/test_verify.py fails if that changes
UNSCALED_DECIMAL_PLACES = 10


def mapped_columns(mapper: Mapper[Any]) -> list[Column[Any]]:
    """The table's own columns, in mapping order; computed column_property()s are not stored."""
    table = mapper.local_table
    columns = [prop.columns[0] for prop in mapper.column_attrs]
    return [c for c in columns if isinstance(c, Column) and c.table is table]


def orm_checksum(
    connection: Connection, mapper: Mapper[Any], columns: Sequence[Column[Any]]
) -> tuple[int, str]:
    """The rows and checksum of mapper's table read through the ORM, in a Session."""
    attributes = [mapper.get_property_by_column(column) for column in columns]
    statement = select(*(getattr(mapper.class_, prop.key) for prop in attributes))
    with Session(connection) as session:
        if connection.dialect.name != "postgresql":
            rows = session.execute(statement, execution_options={"yield_per": CHUNK_SIZE})
            return checksum(rows.partitions(), _is_plain(columns))
        return checksum(_pages(session, statement, mapper, columns), _is_plain(columns))


def _pages(
    session: Session, statement: Select[Any], mapper: Mapper[Any], columns: Sequence[Column[Any]]
) -> Iterator[Sequence[Sequence[object]]]:
    """statement's rows, CHUNK_SIZE at a time in primary key order, each chunk one query
    (keyset pagination): a server-side cursor (yield_per) costs a round trip to declare it,
    one per fetch and one to close it; a small table is read in one. The transaction's
    snapshot (REPEATABLE READ, verify's) makes the pages one consistent read."""
    key = [columns.index(column) for column in mapper.primary_key]
    ordered = statement.order_by(*mapper.primary_key).limit(CHUNK_SIZE)
    page = session.execute(ordered).all()
    while page:
        yield page
        if len(page) < CHUNK_SIZE:
            return
        last = page[-1]
        after = tuple_(*mapper.primary_key) > tuple_(*(last[number] for number in key))
        page = session.execute(ordered.where(after)).all()


def raw_checksum(
    raw: Any, table: Table, columns: Sequence[Column[Any]], backend: str
) -> tuple[int, str]:
    """The rows and checksum of table read with plain SQL on raw, a DB-API connection."""
    names = ", ".join(_quoted(c.name) for c in columns)
    where = (
        f"{_quoted(table.schema)}.{_quoted(table.name)}" if table.schema else _quoted(table.name)
    )
    sql = f"SELECT {names} FROM {where}"
    cursor = raw.cursor()
    try:
        chunks: Iterable[Sequence[Sequence[object]]]
        if backend == "sqlite":  # sqlite3 steps row by row
            cursor.execute(sql)
            chunks = _sqlite_read(iter(lambda: cursor.fetchmany(CHUNK_SIZE), []), columns)
        else:
            # one statement whose rows arrive as the server sends them: a named (server-side)
            # cursor would cost a round trip to declare it, one per fetch and one to close it
            chunks = _chunked(cursor.stream(sql, size=_stream_size()))
        return checksum(chunks, _is_plain(columns))
    finally:
        cursor.close()


def _chunked(rows: Iterator[Sequence[object]]) -> Iterator[list[Sequence[object]]]:
    while chunk := list(islice(rows, CHUNK_SIZE)):
        yield chunk


def _sqlite_read(
    chunks: Iterable[Sequence[Sequence[object]]], columns: Sequence[Column[Any]]
) -> Iterator[Sequence[Sequence[object]]]:
    """SQLite's stored values of each date, time and Numeric column read as the ORM reads them.

    A date's text is not one form: the ORM writes microseconds, a server default such as
    CURRENT_TIMESTAMP writes none; the two paths agree on the value, not on the text. A
    Numeric is stored as a float (or an int when whole), which the ORM rounds to the column's
    scale: the raw path rounds it the same way, so the paths agree on what the program reads.
    """
    parsers = {
        number: parse
        for number, column in enumerate(columns)
        if (parse := _sqlite_parser(column)) is not None
    }
    if not parsers:
        yield from chunks
        return
    for chunk in chunks:
        yield [
            tuple(
                parsers[number](value) if number in parsers else value
                for number, value in enumerate(row)
            )
            for row in chunk
        ]


def _sqlite_parser(column: Column[Any]) -> Callable[[object], object] | None:
    """How SQLite's stored value of column reads as the ORM reads it; None: as it is."""
    python_type = _python_type(column)
    if python_type is Decimal:
        scale = getattr(column.type, "scale", None)
        return partial(_rounded, places=UNSCALED_DECIMAL_PLACES if scale is None else scale)
    parse = ISO_PARSERS.get(python_type)
    return None if parse is None else partial(_from_text, parse)


def _rounded(value: object, places: int) -> object:
    # SQLAlchemy's own conversion of the float: written out with that many decimals
    return Decimal(f"{value:.{places}f}") if isinstance(value, float) else value


def _from_text(parse: Callable[[str], object], value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return parse(value)
    except ValueError:  # not a date: left as it is, and the paths disagree
        return value


def checksum(chunks: Iterable[Sequence[Sequence[object]]], plain: bool) -> tuple[int, str]:
    """Rows and an order-independent checksum: the sum of each row's 64-bit hash, mod 2**64.

    A row's text is the UTF-8 repr() of the tuple of its canonical values; its hash is that
    text's CRC-32 in the high 32 bits and its Adler-32 in the low ones. Both are C calls
    over a whole chunk (a cryptographic hash per row doubled the time of a million-row
    check); the sum catches rows lost, added, duplicated or changed, not deliberate forgery.
    plain: every column holds only int, str or NULL, already canonical.
    """
    count = total = 0
    for chunk in chunks:
        count += len(chunk)
        rows = map(tuple, chunk) if plain else (tuple(map(canonical, row)) for row in chunk)
        texts = list(map(str.encode, map(repr, rows)))
        # sum((crc << 32) | adler) == (sum(crc) << 32) + sum(adler): adler is below 2**32
        total += (sum(map(zlib.crc32, texts)) << 32) + sum(map(zlib.adler32, texts))
    return count, f"{total % CHECKSUM_MODULUS:016x}"


def canonical(value: object) -> int | str | None:
    """A value as int, str or None, the same whether the ORM or the driver produced it."""
    if value is None or type(value) is int or type(value) is str:
        return value
    if isinstance(value, bool):
        return int(value)  # SQLite stores booleans as 0 and 1
    if isinstance(value, (float, Decimal)):
        # SQLite hands back a float, or an int for a whole number, where the ORM gives a
        # Decimal; a whole number is its int, any other written plainly
        number = Decimal(repr(value)) if isinstance(value, float) else value
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
        return format(number.normalize(), "f")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            # an instant, whatever zone the session shows it in: in UTC, and without the zone,
            # as SQLite (which keeps none) holds the same one when db-copy moves it there
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")  # SQLite's stored form
    if isinstance(value, time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return value.hex
    if isinstance(value, Enum):
        return value.name
    return str(value)


def _is_plain(columns: Sequence[Column[Any]]) -> bool:
    # int and str columns come back as int, str or None from the ORM and from the driver
    return all(_python_type(column) in (int, str) for column in columns)


def _python_type(column: Column[Any]) -> type | None:
    try:
        python_type: type = column.type.python_type
    except NotImplementedError:  # a type that does not say
        return None
    return python_type


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
