# A starting point from the template, yours to change: `copier update` merges its changes.
"""The declarative base whose metadata Alembic compares the migrations against."""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, Double, MetaData
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeEngine

# constraints get predictable names, so a later migration can drop or alter them by name
# (SQLite's batch mode cannot touch an unnamed constraint)
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # what a plain Mapped[...] becomes where SQLAlchemy's default is not what a project wants:
    # a datetime is a moment, timestamptz on PostgreSQL (the default, timestamp without time
    # zone, drops the offset, and squawk refuses it); a float the same 8 bytes whichever
    # SQLAlchemy the Python gets (2.0 says FLOAT, 2.1 DOUBLE). The skill's
    # references/new-model.md lists every plain annotation's type.
    type_annotation_map: ClassVar[dict[type, TypeEngine[Any]]] = {
        datetime: DateTime(timezone=True),
        float: Double(),
    }
