"""The models: import each one here so Alembic's autogenerate sees its table.

This file is yours: `copier update` never changes it. The template's own code imports from
the model modules themselves (`.models.marker`), never from here.
"""

from .base import Base
from .marker import Marker

__all__ = ["Base", "Marker"]
