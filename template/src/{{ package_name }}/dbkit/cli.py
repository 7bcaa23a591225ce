# dbkit (the template's): `copier update` brings each release's changes here.
"""The console scripts: Ctrl-C at any moment, even while a program is still importing, is
one line and exit code 130.

A console script runs `from <module> import <function>` before any of the program's code:
were that module a program's own, the interpreter would spend most of a run importing
SQLAlchemy, Alembic and the models with nothing to catch an interrupt. Each function here
imports its program (the module named after it) inside the try, and imports nothing itself
but sys, which the interpreter has loaded already (importlib alone costs a few milliseconds
of imports). The program's main() goes through program.run(), which tells the rest.
"""

import sys


def write_once(argv: list[str] | None = None) -> int:
    return _run("write-once", argv)


def read_later(argv: list[str] | None = None) -> int:
    return _run("read-later", argv)


def db_verify(argv: list[str] | None = None) -> int:
    return _run("db-verify", argv)


def db_evidence(argv: list[str] | None = None) -> int:
    return _run("db-evidence", argv)


def db_migrate(argv: list[str] | None = None) -> int:
    return _run("db-migrate", argv)


def _run(program: str, argv: list[str] | None) -> int:
    try:
        module = __import__(f"{__package__}.{program.replace('-', '_')}", fromlist=["main"])
        return int(module.main(argv))
    except KeyboardInterrupt:
        # program.run() says more (what was written) for an interrupt inside the work; this
        # is one before or after it, where nothing was begun or everything was finished
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
