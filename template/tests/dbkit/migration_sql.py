# dbkit (the template's): `copier update` brings each release's changes here.
"""Each revision's PostgreSQL SQL, written out offline and linted by squawk.

No server is needed: Alembic writes the SQL (`alembic upgrade <down>:<revision> --sql`) for a
URL it never connects to, so a project on SQLite gets its migrations checked for PostgreSQL
too. Each revision is linted alone, as it will run on a live database whose tables already
hold rows: an index built on one of them without CONCURRENTLY, or a NOT NULL column added
without a default, is a finding. Upgrades only; .squawk.toml says why, and which rules are off.

tests/dbkit/test_squawk.py, the pre-commit hook and CI run it:
uv run python -m tests.dbkit.migration_sql
"""

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest.mock import patch

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

PROJECT = Path(__file__).resolve().parents[2]
MIGRATIONS = PROJECT / "migrations"
CONFIG = PROJECT / ".squawk.toml"
# installed by `uv sync` (the dev group): the squawk-cli wheel carries the binary
SQUAWK = Path(sys.executable).parent / "squawk"
# never connected to: Alembic only needs to know which database to write the SQL for
OFFLINE_URL = "postgresql://offline@localhost/offline"
# in a revision: {rule: why} for squawk's rules it breaks on purpose, e.g.
# squawk_ignore = {"ban-drop-column": "the contract step: no deployed version reads it"}
IGNORE = "squawk_ignore"
EXAMPLE = '{"rule": "why"}'


class SquawkFailed(Exception):
    """squawk did not lint the SQL; the message says why."""


def upgrade_sql(migrations: Path) -> dict[str, str]:
    """Each revision's upgrade, as PostgreSQL would run it, keyed by its script's file name."""
    scripts = ScriptDirectory(str(migrations))
    written = {}
    # the migrations' URL (config.migration_url()), for this process only
    with patch.dict(os.environ, {"DATABASE_URL_DIRECT": OFFLINE_URL}):
        for script in scripts.walk_revisions():
            down = script.down_revision
            # a merge revision from its first parent (its SQL holds the other branches too)
            start = (down if isinstance(down, str) else down[0]) if down else "base"
            buffer = io.StringIO()
            config = Config(output_buffer=buffer)
            config.set_main_option("script_location", str(migrations))
            command.upgrade(config, f"{start}:{script.revision}", sql=True)
            ignored: Mapping[str, str] = getattr(script.module, IGNORE, {})
            # last, so that the lines are numbered as `alembic upgrade --sql` writes them
            footer = f"-- squawk-ignore-file {', '.join(ignored)}\n" if ignored else ""
            written[Path(script.path).name] = buffer.getvalue() + footer
    return written


def lint(migrations: Path = MIGRATIONS) -> list[str]:
    """squawk's findings on each revision's upgrade SQL, one line each, naming the revision.

    SquawkFailed when squawk cannot lint: not installed, or a bad .squawk.toml.
    """
    if not SQUAWK.is_file():
        raise SquawkFailed(f"squawk is not installed in {SQUAWK.parent}: run uv sync")
    with tempfile.TemporaryDirectory() as folder:
        names = []
        for name, sql in upgrade_sql(migrations).items():
            # findings name the file: the revision's, with .sql added
            (Path(folder) / f"{name}.sql").write_text(sql, encoding="utf-8")
            names.append(f"{name}.sql")
        result = subprocess.run(
            [SQUAWK, "--config", CONFIG, "--reporter", "json", *sorted(names)],
            cwd=folder,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
            check=False,
        )
    try:
        found = json.loads(result.stdout)
    except ValueError:
        found = None
    if not isinstance(found, list) or (result.returncode and not found):
        # a bad .squawk.toml, say: squawk's own words
        raise SquawkFailed(f"squawk failed: {(result.stderr or result.stdout).strip()}")
    return [_line(finding) for finding in found]


def _line(finding: dict[str, Any]) -> str:
    # squawk counts lines and columns from 0; `alembic upgrade --sql` output, from 1
    where = f"{finding['file']}:{finding['line'] + 1}:{finding['column'] + 1}"
    advice = f" ({finding['help']})" if finding.get("help") else ""
    rule = finding["rule_name"]
    return f"{where}: {rule}: {finding['message']}{advice} https://squawkhq.com/docs/{rule}"


def main() -> int:
    """Print squawk's findings and how to act on them; 1 if there are any."""
    try:
        findings = lint()
    except SquawkFailed as exc:
        print(f"migration SQL not linted: {exc}", file=sys.stderr)
        return 1
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        print(
            "squawk found the problems above in the PostgreSQL SQL of the revisions they name "
            "(to see it: DATABASE_URL_DIRECT=postgresql://localhost/x uv run alembic upgrade "
            "<down_revision>:<revision> --sql); the link after each shows the safe way to "
            f"write it; a revision that breaks one on purpose sets {IGNORE} = {EXAMPLE}",
            file=sys.stderr,
        )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
