"""db-verify: is this database what the project believes it is? Checked through other paths."""

import argparse
import gc
import json
from collections.abc import Sequence
from pathlib import Path

from .config import database_url
from .errors import DatabaseSetupError, describe
from .verify import BundleError, Verification, connect, load_bundle, verify


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
    print(as_json(result, describe(url)) if args.json else as_lines(result))
    if result.ok:
        return 0
    return 1 if result.failed else 2  # could not verify: no verdict on the database


def as_lines(result: Verification) -> str:
    return "\n".join(check.line() for check in result.checks)


def as_json(result: Verification, url: str) -> str:
    return json.dumps(
        {
            "ok": result.ok,
            "database": url,
            "backend": result.backend,
            "current": result.current,
            "heads": result.heads,
            "tables": {
                name: {"rows": table.rows, "checksum": table.checksum}
                for name, table in result.tables.items()
            },
            "checks": [
                {"name": check.name, "ok": check.ok, "detail": check.detail}
                for check in result.checks
            ],
        },
        indent=2,
    )
