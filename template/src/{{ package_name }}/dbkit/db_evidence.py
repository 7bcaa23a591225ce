# dbkit (the template's): `copier update` brings each release's changes here.
"""db-evidence: write the release evidence bundle for this database, and print its folder."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alembic.util import CommandError

from .bundle import tests_elsewhere, write_bundle
from .config import IN_SOURCE_CHECKOUT, database_url
from .errors import explained
from .evidence import collect, default_output, migrations_sql, run_tests, utc_now
from .program import CannotRun, report, run
from .two_paths import connect


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        argv,
        name="db-evidence",
        description=(
            "Verify the database (as db-verify does) and write the release evidence bundle: "
            "evidence.json, evidence.md, schema.sql and migrations.sql. Prints the bundle's "
            "folder. Exit 0: verdict pass; 1: verdict fail (the bundle is still written); "
            "2: it could not run."
        ),
        arguments=add_arguments,
        work=gather,
        could_not_run=2,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help="the bundle's folder, new or empty (default: evidence/<UTC time>/ in the project "
        "folder, git-ignored; for an installed copy, in the current folder)",
    )
    parser.add_argument(
        "--run-tests",
        action="store_true",
        help="run the project's pytest first and record its counts (its output goes to stderr)",
    )


def gather(args: argparse.Namespace) -> int:
    if args.run_tests and not IN_SOURCE_CHECKOUT:
        raise CannotRun(
            "--run-tests runs the project's test suite, which an installed copy does not "
            "carry; run it in the project's source checkout, or leave it out"
        )
    now = utc_now()
    output: Path = args.output or default_output(now)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise CannotRun(f"{output} already exists and is not an empty folder")
    try:
        tests = run_tests() if args.run_tests else None
        url = database_url()
        # a database error past the checks (reading the schema) is told like the others
        with connect(url) as database, explained(url):
            evidence, schema = collect(database, now, tests)
        write_bundle(output, evidence, schema, migrations_sql())
    except CommandError as exc:  # from rendering migrations.sql
        raise CannotRun(f"alembic: {exc}") from None
    except OSError as exc:
        raise CannotRun(f"cannot write {output}: {exc.strerror}") from None
    if warning := tests_elsewhere(evidence):
        print(f"db-evidence: warning: {warning}", file=sys.stderr)
    report(str(output))
    return 0 if evidence["verdict"] == "pass" else 1
