# dbkit (the template's): `copier update` brings each release's changes here.
"""db-verify: is this database what the project believes it is? Checked through other paths."""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .bundle import BundleError, load_bundle
from .config import database_url
from .program import CannotRun, report, run
from .two_paths import connect
from .verify import verify


def main(argv: Sequence[str] | None = None) -> int:
    return run(
        argv,
        name="db-verify",
        description=(
            "Check the database through other paths than the programs use: Alembic's revision, "
            "the schema against the models, the database's own integrity checks, and every "
            "table read by the ORM and by raw SQL. Exit 0: all hold; 1: a check failed; "
            "2: it could not run, or a check could not verify (writes in progress)."
        ),
        arguments=add_arguments,
        work=check,
        could_not_run=2,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect",
        metavar="BUNDLE",
        type=Path,
        help="an earlier db-evidence bundle: no table may have lost rows, the revision only "
        "moved forward",
    )
    parser.add_argument(
        "--allow-shrink",
        metavar="TABLE",
        action="append",
        default=[],
        help="a table that may have fewer rows than in --expect's bundle (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def check(args: argparse.Namespace) -> int:
    try:
        expected = load_bundle(args.expect) if args.expect else None
    except BundleError as exc:
        raise CannotRun(str(exc)) from None
    with connect(database_url()) as database:
        result = verify(database, expected, args.allow_shrink)
    report(json.dumps(result.as_dict(), indent=2) if args.json else result.as_lines())
    if result.ok:
        return 0
    return 1 if result.failed else 2  # could not verify: no verdict on the database
