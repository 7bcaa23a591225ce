"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade schema."""
    # on PostgreSQL a statement may wait for a lock and run only as long as the package's
    # migrate.py allows (LOCK_TIMEOUT, STATEMENT_TIMEOUT); a backfill or VALIDATE CONSTRAINT
    # that needs longer raises it first: op.execute("SET LOCAL statement_timeout = '10min'")
    # on a database in use: the skill's references/live-migrations.md (index, constraint, rename)
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade schema."""
    ${downgrades if downgrades else "pass"}
