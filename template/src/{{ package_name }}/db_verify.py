"""db-verify: is this database what the project believes it is? Checked through other paths."""

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .bundle import BundleError, load_bundle
from .config import database_url
from .errors import DatabaseSetupError
from .verify import connect, verify


def main(argv: Sequence[str] | None = None) -> int:
    # a one-shot process: what the imports built lives until exit (see read_later.py)
    gc.freeze()
    parser = argparse.ArgumentParser(
        prog="db-verify",
        description=(
            "Check the database through other paths than the programs use: Alembic's revision, "
            "the schema against the models, the database's own integrity checks, and every "
            "table read by the ORM and by raw SQL. Exit 0: all hold; 1: a check failed; "
            "2: it could not run, or a check could not verify (writes in progress)."
        ),
    )
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
    args = parser.parse_args(argv)
    try:
        expected = load_bundle(args.expect) if args.expect else None
        url = database_url()
        with connect(url) as database:
            result = verify(database, expected, args.allow_shrink)
    except (DatabaseSetupError, BundleError) as exc:
        parser.exit(2, f"db-verify: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "db-verify: interrupted\n")
    try:
        output = json.dumps(result.as_dict(), indent=2) if args.json else result.as_lines()
        print(output, flush=True)
    except BrokenPipeError:
        # whoever read the output stopped early (`db-verify | head -3`); say nothing more to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if result.ok:
        return 0
    return 1 if result.failed else 2  # could not verify: no verdict on the database
