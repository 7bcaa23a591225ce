"""Process timing and the report: real processes, their wall and CPU time, ratios, the table."""

import hashlib
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.helpers import project_env

ROOT = Path(__file__).resolve().parents[2]
# the benchmark's own scripts, run as files: the raw floors, the memory wrapper, the blocker
SCRIPTS = ROOT / "benchmarks" / "scripts"

Command = Sequence[str | Path]

# the two scripts of the lesson "Build Your Database Skill", verbatim (the tests run them too)
LESSON_WRITE = (ROOT / "tests" / "lesson" / "write_once.py").read_text()
LESSON_READ = (ROOT / "tests" / "lesson" / "read_later.py").read_text()


class BenchmarkError(Exception):
    """A command failed or two sides disagreed on their output: nothing worth a figure."""


@dataclass
class Timing:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child


@dataclass
class Figure:
    name: str
    ours: str
    baseline: str
    ratio: float
    target: float
    higher_is_better: bool = False
    cpu_ratio: float | None = None
    informational: bool = False  # shown for context, left out of the summary

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def verdict(self) -> str:
        if self.informational:
            return "(info)"
        if self.met:
            return "PASS"
        return "under" if self.higher_is_better else "over"


def paired(
    ours: Callable[[], Timing], baseline: Callable[[], Timing], runs: int
) -> tuple[list[Timing], list[Timing]]:
    """Alternate the two sides, swapping who goes first, so load and caches hit both alike."""
    mine: list[Timing] = []
    theirs: list[Timing] = []
    for number in range(runs):
        if number % 2:
            theirs.append(baseline())
            mine.append(ours())
        else:
            mine.append(ours())
            theirs.append(baseline())
    return mine, theirs


def rss_figure(label: str, big: Sequence[float], small: Sequence[float]) -> Figure:
    """The median peak memory of a large run against a 10-row run of the same program."""
    big_median, small_median = statistics.median(big), statistics.median(small)
    return Figure(
        label, mib(big_median), f"{mib(small_median)} (10 rows)", big_median / small_median, 1.3
    )


def compare(name: str, ours: list[Timing], baseline: list[Timing], target: float) -> Figure:
    """A wall-time figure: medians, their ratio, and the ratio of CPU time for context."""
    ours_wall = statistics.median(t.wall for t in ours)
    baseline_wall = statistics.median(t.wall for t in baseline)
    return Figure(
        name,
        ms(ours_wall),
        ms(baseline_wall),
        ours_wall / baseline_wall,
        target,
        cpu_ratio=cpu_median(ours) / cpu_median(baseline),
    )


def timed(
    command: Command,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> Timing:
    """Run command as a real process; its wall time and its own CPU time (from wait4)."""
    with (
        open_or_null(stdin, "rb") as source,
        open_or_null(stdout, "wb") as sink,
        tempfile.TemporaryFile() as errors,
    ):
        start = time.perf_counter()
        child = subprocess.Popen(
            [str(part) for part in command],
            cwd=cwd,
            env=env or project_env(),
            stdin=source,
            stdout=sink,
            stderr=errors,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise BenchmarkError(f"{command_line(command)} failed:\n{errors.read().decode()}")
    return Timing(wall, usage.ru_utime + usage.ru_stime)


def peak_rss(command: Command, cwd: Path, env: dict[str, str] | None, tmp: Path) -> int:
    """The peak resident memory of command, in KiB, measured by a wrapper of its own."""
    result = tmp / "peak-rss.txt"
    wrapper: Command = [sys.executable, "-I", "-S", SCRIPTS / "peak_rss.py", result]
    with open(os.devnull, "wb") as sink:
        code = subprocess.run(
            [str(part) for part in (*wrapper, *command)],
            cwd=cwd,
            env=env or project_env(),
            stdout=sink,
            check=False,
        ).returncode
    if code != 0 or not result.exists():
        raise BenchmarkError(f"{command_line(command)} failed under the memory wrapper")
    kib, child_code = result.read_text().split()
    if child_code != "0":
        raise BenchmarkError(f"{command_line(command)} exited {child_code}")
    return int(kib)


def check(command: Command, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run command; what it printed, or BenchmarkError."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env or project_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchmarkError(f"{command_line(command)} failed:\n{result.stderr}")
    return result.stdout


def open_or_null(path: Path | None, mode: str) -> IO[bytes]:
    return open(path if path else os.devnull, mode)  # the caller's with closes it


def database(path: Path) -> dict[str, str]:
    return project_env({"DATABASE_URL": f"sqlite:///{path}"})


def digest(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def cpu_median(timings: list[Timing]) -> float:
    return statistics.median(t.cpu for t in timings)


def command_line(command: Command) -> str:
    return " ".join(str(part) for part in command)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def short(count: int) -> str:
    return f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count:,}"


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def header() -> str:
    import sqlalchemy

    return (
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}; load average at the start: {load()}"
    )


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def report(figures: list[Figure], notes: list[str]) -> None:
    columns = ("figure", "ours", "baseline", "ratio", "target", "", "cpu ratio")
    rows = [
        (
            figure.name,
            figure.ours,
            figure.baseline,
            f"{figure.ratio:.2f}x",
            f"{'>=' if figure.higher_is_better else '<='} {figure.target:.2f}x",
            figure.verdict,
            f"{figure.cpu_ratio:.2f}x" if figure.cpu_ratio is not None else "-",
        )
        for figure in figures
    ]
    widths = [max(len(row[i]) for row in (columns, *rows)) for i in range(len(columns))]
    for row in (columns, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print()
    for note in notes:
        print(f"note: {note}")
    judged = [figure for figure in figures if not figure.informational]
    missed = [figure.name for figure in judged if not figure.met]
    print(
        f"summary: {len(judged) - len(missed)} of {len(judged)} targets met"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
