# dbkit (the template's): `copier update` brings each release's changes here.
"""The evidence bundle's format: its files, evidence.json's layout, and reading one back.

A bundle is a folder of four files: evidence.json (machine-readable, following
evidence.schema.json beside this module), evidence.md (the same for people), schema.sql
(the database's schema as it is) and migrations.sql (`alembic upgrade --sql` from base to
head, for review). evidence.json holds `db-verify --json`'s object (Verification.as_dict())
and the release's facts around it; evidence.py collects them. `db-verify --expect` reads a
bundle back, of this format or the previous one.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import first_line

SCHEMA_PATH = Path(__file__).with_name("evidence.schema.json")
# evidence.json's layout; a change that breaks its readers bumps it. 3: db-verify --json's
# object at the top level (tables, current, heads, backend, database as the masked URL), where
# format 2 had row_counts, checksums, alembic.current and alembic.heads, and database.url
FORMAT_VERSION = 3


class BundleError(Exception):
    """An evidence bundle given to --expect that cannot be read; str() is one line."""


@dataclass(frozen=True)
class Expected:
    """What an earlier bundle says db-verify --expect must still find: rows and a revision."""

    created_at: str
    rows: dict[str, int]
    current: list[str]


def load_bundle(path: Path) -> Expected:
    """What the evidence.json of a bundle folder (or the file itself) says, or BundleError.

    Format 3, and format 2 (the previous release's): a user compares a database with their
    last release's bundle after updating the project.
    """
    file = path / "evidence.json" if path.is_dir() else path
    try:
        bundle = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"cannot read evidence bundle {file}: {first_line(exc)}") from None
    if not isinstance(bundle, dict):
        bundle = {}
    alembic = bundle.get("alembic")
    if isinstance(bundle.get("tables"), dict) and isinstance(bundle.get("current"), list):
        tables, current = bundle["tables"].items(), bundle["current"]
        rows = {name: table.get("rows") for name, table in tables if isinstance(table, dict)}
    elif (
        isinstance(bundle.get("row_counts"), dict)
        and isinstance(alembic, dict)
        and isinstance(alembic.get("current"), list)
    ):  # format 2
        rows, current = bundle["row_counts"], alembic["current"]
    else:
        raise BundleError(
            f"{file} is not an evidence bundle (no tables and current, nor row_counts "
            "and alembic.current)"
        )
    return Expected(
        str(bundle.get("created_at") or "an unknown time"),
        {str(name): count for name, count in rows.items() if isinstance(count, int)},
        [str(revision) for revision in current],
    )


def write_bundle(output: Path, evidence: dict[str, Any], schema: str, migrations: str) -> None:
    """The bundle's four files in output, which must be new or empty."""
    output.mkdir(parents=True, exist_ok=True)
    files = {
        "evidence.json": json.dumps(evidence, indent=2, ensure_ascii=False) + "\n",
        "evidence.md": as_markdown(evidence),
        "schema.sql": schema,
        "migrations.sql": migrations,
    }
    for name, text in files.items():
        (output / name).write_text(text, encoding="utf-8")


def as_markdown(evidence: dict[str, Any]) -> str:
    """evidence.json for people: the verdict first, then what it rests on."""
    project, git, versions = evidence["project"], evidence["git"], evidence["versions"]
    commit = git["commit"] or "not a git repository"
    if git["dirty"]:
        commit += " (uncommitted changes)"
    lines = [
        f"# Release evidence: {project['name']} {project['version']}",
        "",
        f"Verdict: **{evidence['verdict']}**",
        "",
        f"- Time (UTC): {evidence['created_at']}",
        f"- Commit: {commit}",
        f"- Database: {evidence['database']} ({versions['server']}, {versions['driver']})",
        f"- Python {versions['python']}, SQLAlchemy {versions['sqlalchemy']}, "
        f"Alembic {versions['alembic']}",
        f"- Alembic: at {', '.join(evidence['current']) or 'no revision'}, "
        f"head {', '.join(evidence['heads'])}",
        f"- Schema hash: `{evidence['schema_hash']}` (schema.sql; migrations.sql for review)",
        "",
        "| table | rows | checksum |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {table['rows']} | `{table['checksum']}` |"
            for name, table in evidence["tables"].items()
        ),
        "",
        "## Checks (db-verify)",
        "",
        *(
            f"- {'ok' if check['ok'] else '**FAIL**'} {check['name']}: {check['detail']}"
            for check in evidence["checks"]
        ),
        "",
        "## Tests",
        "",
    ]
    tests = evidence["tests"]
    if tests is None:
        lines.append("Not run (`db-evidence --run-tests` runs them).")
    else:
        where = tests["database"]["url"] or "a new SQLite file for each test"
        lines.append(
            f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped of {tests['total']} "
            f"(pytest exit code {tests['exit_code']}), on {tests['database']['backend']}: {where}"
        )
        if warning := tests_elsewhere(evidence):
            lines += ["", f"Warning: {warning}."]
    return "\n".join(lines) + "\n"


def tests_elsewhere(evidence: dict[str, Any]) -> str | None:
    """A warning when the tests ran on another backend than the database under release."""
    tests, backend = evidence["tests"], evidence["backend"]
    if tests is None or tests["database"]["backend"] == backend:
        return None
    return (
        f"the tests ran on {tests['database']['backend']}, the database under release is "
        f"{backend}; set TEST_DATABASE_URL to an empty {backend} database to test on it"
    )
