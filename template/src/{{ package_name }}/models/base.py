# A starting point from the template, yours to change: `copier update` merges its changes.
"""The declarative base whose metadata Alembic compares the migrations against."""

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

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
