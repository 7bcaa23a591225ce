"""db-evidence: write the release evidence bundle for this database, and print its folder."""

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

from alembic.util import CommandError

from .bundle import tests_elsewhere, write_bundle
from .config import IN_SOURCE_CHECKOUT, database_url
from .errors import DatabaseSetupError, explained
from .evidence import collect, default_output, migrations_sql, run_tests, utc_now
from .verify import connect


def main(argv: Sequence[str] | None = None) -> int:
    # a one-shot process: what the imports built lives until exit (see read_later.py)
    gc.freeze()
    parser = argparse.ArgumentParser(
        prog="db-evidence",
        description=(
            "Verify the database (as db-verify does) and write the release evidence bundle: "
            "evidence.json, evidence.md, schema.sql and migrations.sql. Prints the bundle's "
            "folder. Exit 0: verdict pass; 1: verdict fail (the bundle is still written); "
            "2: it could not run."
        ),
    )
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
    args = parser.parse_args(argv)
    if args.run_tests and not IN_SOURCE_CHECKOUT:
        parser.exit(
            2,
            "db-evidence: error: --run-tests runs the project's test suite, which an installed "
            "copy does not carry; run it in the project's source checkout, or leave it out\n",
        )
    now = utc_now()
    output: Path = args.output or default_output(now)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        parser.exit(2, f"db-evidence: error: {output} already exists and is not an empty folder\n")
    try:
        tests = run_tests() if args.run_tests else None
        url = database_url()
        # a database error past the checks (reading the schema) is told like the others
        with connect(url) as database, explained(url):
            evidence, schema = collect(database, now, tests)
        write_bundle(output, evidence, schema, migrations_sql())
    except DatabaseSetupError as exc:
        parser.exit(2, f"db-evidence: error: {exc}\n")
    except CommandError as exc:  # from rendering migrations.sql
        parser.exit(2, f"db-evidence: error: alembic: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"db-evidence: error: cannot write {output}: {exc.strerror}\n")
    except KeyboardInterrupt:
        parser.exit(130, "db-evidence: interrupted\n")
    if warning := tests_elsewhere(evidence):
        print(f"db-evidence: warning: {warning}", file=sys.stderr)
    print(output)
    return 0 if evidence["verdict"] == "pass" else 1
