# dbkit (the template's): `copier update` brings each release's changes here.
"""The one way into every command: its parser, and one line with its exit code for each way
it can stop short (a setup error, Ctrl-C, a reader that went away).

A command declares itself in its module's main(), once (write_once.py is the pattern):

    return run(argv, name="write-once", description=..., arguments=add_arguments,
               work=write, could_not_run=1, interrupted="nothing was written")

work(args) does the command's work and returns its exit code; whatever stops it from doing
so, it raises as CannotRun (or DatabaseSetupError), which run() prints as
`write-once: error: <the reason>` and answers with could_not_run.
"""

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from .errors import DatabaseSetupError

# the exit code of a command stopped by Ctrl-C, as a shell reports one that SIGINT ended
INTERRUPTED = 130


class CannotRun(Exception):
    """What stops a command from doing its work, in one line: printed as `prog: error: ...`."""


def run(
    argv: Sequence[str] | None,
    *,
    name: str,
    description: str,
    work: Callable[[argparse.Namespace], int],
    could_not_run: int,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    interrupted: str = "",
) -> int:
    """Parse argv and run work(args); its exit code, or could_not_run when a reader went
    away before the output ended (without a word). A CannotRun or DatabaseSetupError exits
    as argparse does for a bad argument (SystemExit): its one line, then could_not_run; Ctrl-C
    says `name: interrupted; <interrupted>` and exits 130.
    """
    # a one-shot process: what the imports built lives until exit, so no garbage collection,
    # the one at exit included, needs to walk it (about 50 ms of a 250 ms run)
    gc.freeze()
    parser = argparse.ArgumentParser(prog=name, description=description)
    if arguments:
        arguments(parser)
    args = parser.parse_args(argv)
    try:
        code = work(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
    except (CannotRun, DatabaseSetupError) as exc:
        parser.exit(could_not_run, f"{name}: error: {exc}\n")
    except KeyboardInterrupt:  # (cli.py tells one that comes while the command imports)
        said = f"; {interrupted}" if interrupted else ""
        parser.exit(INTERRUPTED, f"{name}: interrupted{said}\n")
    except BrokenPipeError:
        # whoever read the output stopped before its end (`read-later | head`)
        _silence_stdout()
        return could_not_run
    return code


def report(text: str) -> None:
    """Print a command's last words, its work done: a reader gone by then (`db-verify |
    head -3`) changes nothing about the result, so the command exits as it would have."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    # say nothing more to a reader that has gone: what is still buffered, flushed at exit,
    # would raise again there
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Run the block (a commit) to its end whatever Ctrl-C does meanwhile.

    An interrupt raised as the database's commit returns would land after the rows were
    committed, and the command would say that nothing was written. One that comes during the
    block is dropped: the work it meant to stop is done, and the command says so. (Signals
    reach the main thread only; elsewhere the block runs as it is.)
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
