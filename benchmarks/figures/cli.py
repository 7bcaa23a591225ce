"""Benchmarks: a rendered project against the lesson it grew from, as ratios within one run.

The command line of benchmarks/bench.py: it renders and installs a project, then measures
the SQLite figures (sqlite.py, verification.py) and the PostgreSQL ones (postgres.py).
"""

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import install, render

from .postgres import postgres_section
from .runner import (
    LESSON_READ,
    LESSON_WRITE,
    ROOT,
    BenchmarkError,
    Figure,
    check,
    header,
    load,
    report,
    step,
)
from .sqlite import big_figures, copier_with_bytecode, proof_figure, small_figures, suite_figure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per small figure (median)")
    parser.add_argument("--big-runs", type=int, default=3, help="runs per 1M-row figure")
    parser.add_argument("--proof-runs", type=int, default=3, help="render-to-proof runs")
    parser.add_argument(
        "--suite-runs", type=int, default=1, help="runs of the project's own test suite (0: none)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the big figures")
    parser.add_argument(
        "--postgres",
        choices=("yes", "no", "only"),
        default="yes",
        help="the PostgreSQL section (it starts its own server): with the rest, not at all, alone",
    )
    parser.add_argument(
        "--template",
        type=Path,
        default=ROOT,
        help="the template checkout to render (default: this one, uncommitted changes included)",
    )
    args = parser.parse_args(argv)
    args.template = args.template.resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            figures, notes = measure(Path(tmp), args)
    except BenchmarkError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    report(figures, notes)
    return 0


def measure(tmp: Path, args: argparse.Namespace) -> tuple[list[Figure], list[str]]:
    settings = tmp / "copier-settings.yml"
    settings.write_text("{}\n")  # keep the user's own copier defaults out of every render
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    notes = [header()]
    if args.template != ROOT:
        notes.append(f"template: {args.template}")

    step("render and install the project (warms the uv cache)")
    project = render(tmp / "budget-tracker", template=args.template)
    bin_dir = install(project)
    # uv compiles site-packages but not the editable install's src/; a user's first run
    # writes src/__pycache__, which PYTHONDONTWRITEBYTECODE would forbid here on every run
    check([bin_dir / "python", "-m", "compileall", "-q", "src"], cwd=project)
    lesson = tmp / "lesson"
    lesson.mkdir()
    (lesson / "write_once.py").write_text(LESSON_WRITE)
    (lesson / "read_later.py").write_text(LESSON_READ)

    figures: list[Figure] = []
    if args.postgres != "only":
        copier = copier_with_bytecode(tmp, notes)
        figures += small_figures(project, bin_dir, lesson, args.runs)
        if args.suite_runs:
            figures.append(suite_figure(project, bin_dir, lesson, args.suite_runs))
        for lazy in (False, True):
            figures.append(
                proof_figure(tmp, bin_dir, copier, args.template, args.proof_runs, notes, lazy)
            )
        figures += big_figures(tmp, project, bin_dir, args.rows, args.big_runs, notes)
    if args.postgres != "no":
        figures += postgres_section(tmp, project, bin_dir, args, notes)
    notes.append(f"load average at the end: {load()}")
    return figures, notes
