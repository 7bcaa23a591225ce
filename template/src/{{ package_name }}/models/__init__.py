"""The models: import each one here so Alembic's autogenerate sees its table."""

from .base import Base
from .marker import NAME_MAX_LENGTH, InvalidName, Marker, check_name, check_names

__all__ = ["NAME_MAX_LENGTH", "Base", "InvalidName", "Marker", "check_name", "check_names"]
