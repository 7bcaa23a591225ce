"""Create the markers table.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create markers: a name of 1 to 100 characters per row, enforced on every backend."""
    op.create_table(
        "markers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 100", name=op.f("ck_markers_name_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_markers")),
    )


def downgrade() -> None:
    """Drop markers."""
    op.drop_table("markers")
