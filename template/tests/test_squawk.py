"""Each revision's PostgreSQL SQL passes squawk; an unsafe one turns the suite red, named.

The SQL is written offline, so these run on SQLite too, with no PostgreSQL server.
"""

from pathlib import Path

import pytest
from alembic.util import CommandError

from tests.conftest import migrations_plus
from tests.migration_sql import MIGRATIONS, lint, upgrade_sql


def revision(upgrade: str, *, extra: str = "") -> str:
    """A revision on top of the head whose upgrade() is the given lines."""
    body = "\n".join(f"    {line}" for line in upgrade.strip().splitlines())
    return (
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        'revision = "5a5a"\n'
        'down_revision = "{head}"\n'  # migrations_plus() puts the head's id there
        f"{extra}\n\n"
        f"def upgrade() -> None:\n{body}\n\n\ndef downgrade() -> None:\n    pass\n"
    )


def planted(findings: list[str]) -> list[str]:
    """The findings on the revision migrations_plus() put on top: the project's own
    revisions, the user's included, are test_every_revision_passes_squawk's to report."""
    return [finding for finding in findings if finding.startswith("next_revision.py.sql:")]


# what a live table cannot take, each with the squawk rule that names it
UNSAFE = {
    # a plain CREATE INDEX blocks every write to markers until the index is built
    "require-concurrent-index-creation": revision(
        'op.create_index("ix_markers_name", "markers", ["name"])'
    ),
    # fails on a table that holds rows (and rewrites it on PostgreSQL before 11)
    "adding-required-field": revision(
        'op.add_column("markers", sa.Column("kind", sa.Text(), nullable=False))'
    ),
    # PostgreSQL refuses it inside the migrations' transaction: it needs autocommit_block()
    "ban-concurrent-index-creation-in-transaction": revision(
        """
op.create_index(
    "ix_markers_name", "markers", ["name"], postgresql_concurrently=True, if_not_exists=True
)
"""
    ),
}

# the same changes, written the way a live table takes them
SAFE = {
    "index built concurrently": revision(
        """
with op.get_context().autocommit_block():
    op.create_index(
        "ix_markers_name", "markers", ["name"], postgresql_concurrently=True, if_not_exists=True
    )
"""
    ),
    "NOT NULL column with a default": revision(
        'op.add_column("markers", sa.Column("kind", sa.Text(), server_default="plain", '
        "nullable=False))"
    ),
}


def test_every_revision_passes_squawk() -> None:
    assert lint() == []


@pytest.mark.parametrize("rule", sorted(UNSAFE))
def test_an_unsafe_revision_fails_naming_the_rule_and_the_revision(
    rule: str, tmp_path: Path
) -> None:
    migrations = migrations_plus(tmp_path, UNSAFE[rule])
    # the new revision's one finding
    (finding,) = planted(lint(migrations))
    where, named, _message = finding.split(": ", 2)
    assert named == rule
    # the line where `alembic upgrade --sql` writes the statement, counted from 1
    name, line, _column = where.split(":")
    assert name == "next_revision.py.sql"
    sql = upgrade_sql(migrations)["next_revision.py"].splitlines()
    assert sql[int(line) - 1].startswith(("CREATE INDEX", "ALTER TABLE")), sql
    assert finding.endswith(f"https://squawkhq.com/docs/{rule}")


@pytest.mark.parametrize("change", sorted(SAFE))
def test_the_safe_way_to_write_it_passes(change: str, tmp_path: Path) -> None:
    assert planted(lint(migrations_plus(tmp_path, SAFE[change]))) == []


def test_a_revision_may_break_a_rule_on_purpose_saying_why(tmp_path: Path) -> None:
    ignoring = revision(
        'op.create_index("ix_markers_name", "markers", ["name"])',
        extra='squawk_ignore = {"require-concurrent-index-creation": "markers is tiny"}',
    )
    assert planted(lint(migrations_plus(tmp_path, ignoring))) == []


def test_the_sql_sets_the_migrations_timeouts_as_a_run_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the overrides a deploy may set, read as migrate.py reads them for a run
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", "1.5")
    monkeypatch.setenv("MIGRATION_STATEMENT_TIMEOUT", "90")
    sql = upgrade_sql(MIGRATIONS)["0001_create_markers.py"]
    begin = sql.index("BEGIN;")
    timeouts = ["SET LOCAL lock_timeout = '1500ms';", "SET LOCAL statement_timeout = '90000ms';"]
    for statement in timeouts:
        # inside the transaction, before the first table is touched
        assert begin < sql.index(statement) < sql.index("CREATE TABLE"), sql


def test_a_bad_timeout_setting_is_one_line_not_sql_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", "soon")
    with pytest.raises(CommandError, match="MIGRATION_LOCK_TIMEOUT must be a number of seconds"):
        upgrade_sql(MIGRATIONS)
