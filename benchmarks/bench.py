"""Benchmarks: a rendered project against the lesson it grew from, as ratios within one run.

Every figure is a ratio to a baseline measured by the same run on the same machine, so a
loaded or slow machine moves both sides; nothing here is a pass/fail test. Run it from the
template's root:

    python3 -m uv run python benchmarks/bench.py

It exits 0 whenever it measured, whether or not the targets were met (docs/benchmarks.md).
"""

import argparse
import hashlib
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/bench.py` puts benchmarks/, not ROOT, first

from tests.conftest import DEFAULT_ANSWERS, UV, install, project_env, render  # noqa: E402
from tests.postgres import PASSWORD, ROLE, PostgresServer, start_postgres  # noqa: E402

Command = Sequence[str | Path]

# the two scripts of the lesson "Build Your Database Skill", verbatim (the tests run them too)
LESSON_WRITE = (ROOT / "tests" / "lesson" / "write_once.py").read_text()
LESSON_READ = (ROOT / "tests" / "lesson" / "read_later.py").read_text()

# the floor for large reads and writes: the standard library's sqlite3 and nothing else
RAW_READ = """\
import sqlite3
import sys

write = sys.stdout.write
separator = ""
write("[")
for (name,) in sqlite3.connect(sys.argv[1]).execute("SELECT name FROM markers ORDER BY id"):
    write(separator + repr(name))
    separator = ", "
write("]\\n")
"""

RAW_WRITE = """\
import sqlite3
import sys

connection = sqlite3.connect(sys.argv[1])
with connection:  # one transaction: committed at the end, rolled back on error
    connection.executemany(
        "INSERT INTO markers (name) VALUES (?)", ((line.rstrip("\\r\\n"),) for line in sys.stdin)
    )
connection.close()
"""

# the floor for large reads on PostgreSQL: psycopg alone, streaming the rows in chunks as
# read-later does (a plain fetch of 1M rows is slower, and holds them all in memory)
RAW_PG_READ = """\
import sys
from itertools import islice

import psycopg

write = sys.stdout.write
separator = ""
write("[")
with psycopg.connect(sys.argv[1]) as connection:
    rows = connection.cursor().stream("SELECT name FROM markers ORDER BY id", size=10_000)
    while chunk := list(islice(rows, 10_000)):
        write(separator + ", ".join([repr(name) for (name,) in chunk]))
        separator = ", "
write("]\\n")
"""

# psycopg's COPY from Python with nothing else: no checks, one row per line of stdin
RAW_PG_COPY = """\
import sys

import psycopg

with psycopg.connect(sys.argv[1]) as connection, connection.cursor() as cursor:
    with cursor.copy("COPY markers (name) FROM STDIN") as copy:
        for line in sys.stdin:
            copy.write_row((line.rstrip("\\r\\n"),))
"""

# a session idle in its transaction after reading markers (it holds ACCESS SHARE), db-migrate
# of a revision that adds a column behind it (it needs ACCESS EXCLUSIVE: it waits, gives up,
# tries again), and a reader that times `SELECT count(*) FROM markers` until db-migrate exits;
# then, the session gone, db-migrate again
BLOCKED_MIGRATION = """\
import subprocess
import sys
import time

import psycopg

url, db_migrate = sys.argv[1], sys.argv[2]
blocker = psycopg.connect(url)
blocker.execute("SELECT count(*) FROM markers")
reader = psycopg.connect(url, autocommit=True)
started = time.monotonic()
migration = subprocess.Popen(
    [db_migrate], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
)
waits = []
while migration.poll() is None:
    begun = time.monotonic()
    reader.execute("SELECT count(*) FROM markers").fetchone()
    waits.append(time.monotonic() - begun)
    time.sleep(0.005)
gave_up = time.monotonic() - started
error = migration.communicate()[1].strip()
blocker.rollback()
after = subprocess.run([db_migrate], capture_output=True, text=True, check=False)
print(max(waits), len(waits), gave_up, migration.returncode, after.returncode)
print(error)
"""

# ru_maxrss of children is a maximum over every child ever waited for, and a child starts
# from its parent's footprint; so each measurement gets its own small wrapper process
PEAK_RSS = """\
import resource
import subprocess
import sys

code = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as report:
    report.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {code}\\n")
"""


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


def small_figures(project: Path, bin_dir: Path, lesson: Path, runs: int) -> list[Figure]:
    """Figure 1: each entry point against the lesson script it replaces."""
    python = bin_dir / "python"
    check([bin_dir / "alembic", "upgrade", "head"], cwd=project)
    ours_write: Command = [bin_dir / "write-once"]
    ours_read: Command = [bin_dir / "read-later"]
    lesson_write: Command = [python, "write_once.py"]
    lesson_read: Command = [python, "read_later.py"]

    step(f"write-once vs lesson write_once.py, {runs} runs each")
    check(ours_write, cwd=project)  # warm-up; also leaves both files one row each
    check(lesson_write, cwd=lesson)
    write = paired(lambda: timed(ours_write, project), lambda: timed(lesson_write, lesson), runs)

    step(f"read-later vs lesson read_later.py, {runs} runs each")
    expected = repr(["persistent-check"] * (runs + 1)) + "\n"
    for command, cwd in ((ours_read, project), (lesson_read, lesson)):
        if (printed := check(command, cwd=cwd)) != expected:
            raise BenchmarkError(f"{command[-1]} printed {printed[:80]!r}, not {expected[:80]!r}")
    read = paired(lambda: timed(ours_read, project), lambda: timed(lesson_read, lesson), runs)

    # db-verify does more than read-later (Alembic's context, the schema comparison, the
    # database's integrity checks, every row twice), so its baseline is read-later itself
    step(f"db-verify vs read-later on the proof database, {runs} runs each")
    ours_verify: Command = [bin_dir / "db-verify"]
    check(ours_verify, cwd=project)  # warm-up; every check must hold, or the benchmark stops
    verify = paired(lambda: timed(ours_verify, project), lambda: timed(ours_read, project), runs)

    return [
        compare("write-once (1 row)", *write, target=1.10),
        compare(f"read-later ({runs + 1} rows)", *read, target=1.10),
        compare(f"db-verify ({runs + 1} rows) vs read-later", *verify, target=2.0),
    ]


# the project's suite on SQLite may take at most 45 s where a lesson script run takes 0.23 s
SUITE_TARGET = 45 / 0.23


def suite_figure(project: Path, bin_dir: Path, lesson: Path, runs: int) -> Figure:
    """Figure 1b: the project's own test suite on SQLite, against one lesson script run.

    The suite spawns real processes (the proof, eight writers, kill -9), so its time is
    mostly theirs; the lesson's write_once.py is the unit a process costs here.
    """
    step(f"the project's own pytest on SQLite vs one lesson script run, {runs} run(s)")
    suite: Command = [bin_dir / "pytest", "-q", "-p", "no:cacheprovider"]
    check(suite, cwd=project)  # warm-up: every test's first import writes its .pyc
    lesson_write: Command = [bin_dir / "python", "write_once.py"]
    ours, baseline = paired(lambda: timed(suite, project), lambda: timed(lesson_write, lesson), runs)
    return compare("the project's test suite (SQLite)", ours, baseline, target=SUITE_TARGET)


def copier_with_bytecode(tmp: Path, notes: list[str]) -> Path:
    """A copier like a user's (`uv tool install copier`): its own venv, bytecode compiled.

    The dev venv's copier would compile its imports on every run under
    PYTHONDONTWRITEBYTECODE, which no user pays; the version is the dev venv's.
    """
    venv = tmp / "copier-venv"
    python = venv / "bin" / "python"
    requirement = f"copier=={metadata.version('copier')}"
    try:
        check([UV, "venv", "--quiet", "--python", sys.executable, venv], cwd=tmp)
        install_copier = ["pip", "install", "--quiet", "--compile-bytecode", requirement]
        check([UV, *install_copier, "--python", python], cwd=tmp)
    except BenchmarkError as exc:
        notes.append(f"render uses the dev venv's copier (no bytecode): {exc}".splitlines()[0])
        return Path(sys.executable).parent / "copier"
    return venv / "bin" / "copier"


def proof_figure(
    tmp: Path,
    bin_dir: Path,
    copier: Path,
    template: Path,
    runs: int,
    notes: list[str],
    lazy: bool = False,
) -> Figure:
    """Figure 2: from nothing to ['persistent-check'], against one run of the lesson's script.

    lazy: install the way `uv sync` does by default (no bytecode) and let each first import
    write its .pyc, as on a machine without PYTHONDONTWRITEBYTECODE.
    """
    label = "uv sync, lazy .pyc" if lazy else "uv sync --compile-bytecode"
    label = f"{label}, offline"
    step(f"rendered-to-proof ({label}) vs one lesson script run, {runs} runs")
    env = project_env()  # a user's: each first import may write its .pyc
    # the cache is warm (the setup install filled it): --offline measures the install itself,
    # not a round trip to the package index that any install on any network may or may not pay
    bytecode = [] if lazy else ["--compile-bytecode"]
    install_command: Command = [UV, "sync", "--quiet", "--offline", *bytecode]
    answer = f"--data=project_name={DEFAULT_ANSWERS['project_name']}"
    render_command: list[str | Path] = [
        copier,
        "copy",
        "--defaults",
        "--quiet",
        "--vcs-ref=HEAD",
        answer,
        template,
    ]
    stages: dict[str, list[float]] = {}
    totals: list[Timing] = []
    baseline: list[Timing] = []
    for number in range(runs):
        project = tmp / f"proof-{'lazy-' if lazy else ''}{number}"
        venv_bin = project / ".venv" / "bin"
        steps: dict[str, tuple[Command, dict[str, str]]] = {
            "render": ([*render_command, project], env),
            "install": (install_command, env),
            "upgrade": ([venv_bin / "alembic", "upgrade", "head"], env),
            "write-once": ([venv_bin / "write-once"], env),
            "read-later": ([venv_bin / "read-later"], env),
        }
        wall = cpu = 0.0
        for stage, (command, stage_env) in steps.items():
            timing = timed(command, project if stage != "render" else tmp, stage_env)
            stages.setdefault(stage, []).append(timing.wall)
            wall, cpu = wall + timing.wall, cpu + timing.cpu
        totals.append(Timing(wall, cpu))
        printed = check(steps["read-later"][0], cwd=project, env=env)
        if printed != "['persistent-check']\n":
            raise BenchmarkError(f"the rendered project's read-later printed {printed!r}")
        for again in range(3):  # a short run is noisy: three baseline samples per proof
            fresh = tmp / f"proof-lesson-{'lazy-' if lazy else ''}{number}-{again}"
            fresh.mkdir()  # the lesson's proof starts from no database file too
            (fresh / "write_once.py").write_text(LESSON_WRITE)
            baseline.append(timed([bin_dir / "python", "write_once.py"], fresh))
    notes.append(
        f"rendered-to-proof ({label}), median wall per stage: "
        + ", ".join(f"{stage} {ms(statistics.median(walls))}" for stage, walls in stages.items())
    )
    figure = compare(f"rendered-to-proof ({label})", totals, baseline, target=12.0)
    # `uv sync` as the README runs it (no bytecode up front) is the figure that counts
    figure.informational = not lazy
    return figure


def big_figures(
    tmp: Path, project: Path, bin_dir: Path, rows: int, runs: int, notes: list[str]
) -> list[Figure]:
    """Figures 3 to 5: a million rows out through read-later and db-verify, in through write-once -."""
    python = bin_dir / "python"
    (tmp / "raw_read.py").write_text(RAW_READ)
    (tmp / "raw_write.py").write_text(RAW_WRITE)
    names = [f"marker-{number:07d}" for number in range(1, rows + 1)]
    names_file = tmp / "names.txt"
    names_file.write_text("".join(f"{name}\n" for name in names))

    step(f"migrate and fill databases ({rows:,} rows, 10 rows, empty)")
    empty, big, small = tmp / "empty.db", tmp / "big.db", tmp / "small.db"
    check([bin_dir / "alembic", "upgrade", "head"], cwd=project, env=database(empty))
    for path, count in ((big, rows), (small, 10)):
        shutil.copyfile(empty, path)
        with sqlite3.connect(path) as connection:
            connection.executemany(
                "INSERT INTO markers (name) VALUES (?)", ((name,) for name in names[:count])
            )
        connection.close()

    step(f"read-later on {rows:,} rows vs a raw sqlite3 loop, {runs} runs each")
    ours_out, raw_out = tmp / "ours.out", tmp / "raw.out"

    def ours_read() -> Timing:
        return timed([bin_dir / "read-later"], project, database(big), stdout=ours_out)

    def raw_read() -> Timing:
        return timed([python, tmp / "raw_read.py", big], tmp, stdout=raw_out)

    read = paired(ours_read, raw_read, runs)
    if digest(ours_out) != digest(raw_out):
        raise BenchmarkError("read-later and the raw sqlite3 loop printed different lists")

    step(f"read-later peak memory, {rows:,} rows vs 10 rows, {runs} runs each")
    big_rss, small_rss = [], []
    for _ in range(runs):
        big_rss.append(peak_rss([bin_dir / "read-later"], project, database(big), tmp))
        small_rss.append(peak_rss([bin_dir / "read-later"], project, database(small), tmp))
    floor = peak_rss([python, "-I", "-S", "-c", "pass"], tmp, None, tmp)
    notes.append(f"peak RSS of a bare `python -I -S -c pass`, for scale: {mib(floor)}")

    step(f"db-verify vs read-later on {rows:,} rows, wall and peak memory, {runs} runs each")

    def ours_verify() -> Timing:
        return timed([bin_dir / "db-verify"], project, database(big))

    verify = paired(ours_verify, ours_read, runs)
    verify_rss, verify_small_rss = [], []
    for _ in range(runs):
        verify_rss.append(peak_rss([bin_dir / "db-verify"], project, database(big), tmp))
        verify_small_rss.append(peak_rss([bin_dir / "db-verify"], project, database(small), tmp))

    step(f"write-once - with {rows:,} names vs raw sqlite3 executemany, {runs} runs each")
    ours_db, raw_db = tmp / "ours-write.db", tmp / "raw-write.db"

    def ours_write() -> Timing:
        shutil.copyfile(empty, ours_db)
        return timed([bin_dir / "write-once", "-"], project, database(ours_db), stdin=names_file)

    def raw_write() -> Timing:
        shutil.copyfile(empty, raw_db)
        return timed([python, tmp / "raw_write.py", raw_db], tmp, stdin=names_file)

    write = paired(ours_write, raw_write, runs)
    for path in (ours_db, raw_db):
        if (stored := stored_names(path)) != names:
            raise BenchmarkError(f"{path.name} holds {len(stored):,} rows, not the {rows:,} names")

    ours_rss, small_median = statistics.median(big_rss), statistics.median(small_rss)
    ours_rate = rows / statistics.median(t.wall for t in write[0])
    raw_rate = rows / statistics.median(t.wall for t in write[1])
    return [
        compare(f"read-later {short(rows)} rows, wall", *read, target=3.0),
        Figure(
            f"read-later {short(rows)} rows, peak RSS",
            mib(ours_rss),
            f"{mib(small_median)} (10 rows)",
            ours_rss / small_median,
            target=1.3,
        ),
        compare(f"db-verify {short(rows)} rows vs read-later, wall", *verify, target=3.0),
        rss_figure(f"db-verify {short(rows)} rows, peak RSS", verify_rss, verify_small_rss),
        Figure(
            f"write-once - {short(rows)} names",
            f"{ours_rate / 1000:,.0f}k rows/s",
            f"{raw_rate / 1000:,.0f}k rows/s",
            ours_rate / raw_rate,
            target=0.5,
            higher_is_better=True,
            cpu_ratio=cpu_median(write[1]) / cpu_median(write[0]),
        ),
    ]


def postgres_section(
    tmp: Path, project: Path, bin_dir: Path, args: argparse.Namespace, notes: list[str]
) -> list[Figure]:
    """The same figures on a PostgreSQL server of its own, started the way the tests start it."""
    step("start a PostgreSQL server (tests/postgres.py) and install the postgres extra")
    try:
        server = start_postgres()
    except (FileNotFoundError, OSError, subprocess.SubprocessError) as exc:
        notes.append(f"PostgreSQL section skipped: {exc}".splitlines()[0])
        return []
    try:
        install(project, "postgres")
        check([bin_dir / "python", "-m", "compileall", "-q", "src"], cwd=project)
        version = server.psql("SHOW server_version")
        notes.append(f"PostgreSQL {version}, psycopg {psycopg_version(bin_dir)}")
        return postgres_figures(tmp, project, bin_dir, server, args, notes)
    finally:
        server.stop()


def postgres_figures(
    tmp: Path,
    project: Path,
    bin_dir: Path,
    server: PostgresServer,
    args: argparse.Namespace,
    notes: list[str],
) -> list[Figure]:
    python = bin_dir / "python"
    rows, runs, big_runs = args.rows, args.runs, args.big_runs

    def url(database: str) -> str:  # the lesson's and the raw scripts' form: psycopg, no rewriting
        return server.url(database).replace("postgresql://", "postgresql+psycopg://", 1)

    def on(database: str) -> dict[str, str]:
        return project_env({"DATABASE_URL": server.url(database)})

    def migrated(database: str) -> None:
        server.create_database(database)
        check([bin_dir / "alembic", "upgrade", "head"], cwd=project, env=on(database))

    # the lesson's scripts, verbatim but for the URL they hard-code
    lesson = tmp / "lesson-pg"
    lesson.mkdir()
    server.create_database("lesson")
    for name, source in (("write_once.py", LESSON_WRITE), ("read_later.py", LESSON_READ)):
        pointed = source.replace('"sqlite:///quick_persist.db"', repr(url("lesson")))
        (lesson / name).write_text(pointed)
    migrated("one_shot")

    step(f"PostgreSQL: write-once vs the lesson's write_once.py on the same server, {runs} runs")
    ours_write: Command = [bin_dir / "write-once"]
    lesson_write: Command = [python, "write_once.py"]
    check(ours_write, cwd=project, env=on("one_shot"))  # warm-up; the lesson's creates its table
    check(lesson_write, cwd=lesson)
    write = paired(
        lambda: timed(ours_write, project, on("one_shot")),
        lambda: timed(lesson_write, lesson),
        runs,
    )

    step(f"PostgreSQL: read-later vs the lesson's read_later.py, {runs} runs")
    ours_read: Command = [bin_dir / "read-later"]
    lesson_read: Command = [python, "read_later.py"]
    expected = repr(["persistent-check"] * (runs + 1)) + "\n"
    for command, cwd, env in ((ours_read, project, on("one_shot")), (lesson_read, lesson, None)):
        if (printed := check(command, cwd=cwd, env=env)) != expected:
            raise BenchmarkError(f"{command[-1]} printed {printed[:80]!r}, not {expected[:80]!r}")
    read = paired(
        lambda: timed(ours_read, project, on("one_shot")),
        lambda: timed(lesson_read, lesson),
        runs,
    )
    notes.append(statement_counts(server, project, bin_dir))

    names_file = tmp / "names.txt"  # written by big_figures, unless it did not run
    if not names_file.exists():
        names_file.write_text("".join(f"marker-{number:07d}\n" for number in range(1, rows + 1)))
    (tmp / "raw_pg_read.py").write_text(RAW_PG_READ)
    (tmp / "raw_pg_copy.py").write_text(RAW_PG_COPY)
    step(f"PostgreSQL: fill databases ({rows:,} rows, 10 rows)")
    for database, count in (("big", rows), ("small", 10)):
        migrated(database)
        head = names_file.read_bytes().split(b"\n", count)[:count]
        with tempfile.NamedTemporaryFile(dir=tmp, suffix=".txt") as part:
            part.write(b"".join(line + b"\n" for line in head))
            part.flush()
            server.psql(f"\\copy markers (name) from '{part.name}'", database)
        server.psql("VACUUM ANALYZE markers", database)

    step(f"PostgreSQL: read-later on {rows:,} rows vs a raw psycopg process, {big_runs} runs each")
    ours_out, raw_out = tmp / "ours-pg.out", tmp / "raw-pg.out"
    raw_read: Command = [python, tmp / "raw_pg_read.py", server.url("big")]
    big_read = paired(
        lambda: timed(ours_read, project, on("big"), stdout=ours_out),
        lambda: timed(raw_read, tmp, stdout=raw_out),
        big_runs,
    )
    if digest(ours_out) != digest(raw_out):
        raise BenchmarkError("read-later and the raw psycopg loop printed different lists")
    # the same on 10 rows: what each side costs before its first row (imports, connecting)
    raw_small: Command = [python, tmp / "raw_pg_read.py", server.url("small")]
    small_read = paired(
        lambda: timed(ours_read, project, on("small")), lambda: timed(raw_small, tmp), runs
    )

    step(f"PostgreSQL: read-later peak memory, {rows:,} rows vs 10 rows, {big_runs} runs each")
    big_rss = [peak_rss(ours_read, project, on("big"), tmp) for _ in range(big_runs)]
    small_rss = [peak_rss(ours_read, project, on("small"), tmp) for _ in range(big_runs)]

    step(f"PostgreSQL: write-once - with {rows:,} names vs psql \\copy, {big_runs} runs each")
    migrated("written")
    psql_env = project_env({"PGPASSWORD": PASSWORD})
    # over TCP with the project's role, as write-once connects
    psql_copy: Command = [
        server.bin_dir / "psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(server.port), "-U", ROLE,
        "-d", "written", "-c", f"\\copy markers (name) from '{names_file}'",
    ]  # fmt: skip
    raw_copy: Command = [python, tmp / "raw_pg_copy.py", server.url("written")]

    def emptied(run: Callable[[], Timing]) -> Callable[[], Timing]:
        def timed_run() -> Timing:
            server.psql("TRUNCATE markers RESTART IDENTITY", "written")
            return run()

        return timed_run

    def ours_big_write() -> Timing:
        return timed([bin_dir / "write-once", "-"], project, on("written"), stdin=names_file)

    write_copy = paired(
        emptied(ours_big_write), emptied(lambda: timed(psql_copy, tmp, psql_env)), big_runs
    )
    write_raw = paired(
        emptied(ours_big_write),
        emptied(lambda: timed(raw_copy, tmp, stdin=names_file)),
        big_runs,
    )
    stored = server.psql("SELECT count(*), min(name), max(name) FROM markers", "written")
    if stored != f"{rows}|marker-0000001|marker-{rows:07d}":
        raise BenchmarkError(f"the written table holds {stored}, not the {rows:,} names")
    notes.append(
        "PostgreSQL write figures: the cpu ratio is the client processes' alone (psql's is "
        "near zero); the server's work, most of a COPY, is on neither side of it"
    )

    blocked = blocked_migration_figure(tmp, project, bin_dir, server, notes)
    return [
        compare("PostgreSQL: write-once (1 row)", *write, target=1.10),
        compare(f"PostgreSQL: read-later ({runs + 1} rows)", *read, target=1.10),
        compare(f"PostgreSQL: read-later {short(rows)} rows, wall", *big_read, target=1.3),
        marginal(f"PostgreSQL: read-later {short(rows)} rows less 10 rows", big_read, small_read),
        rss_figure(f"PostgreSQL: read-later {short(rows)} rows, peak RSS", big_rss, small_rss),
        throughput(f"PostgreSQL: write-once - {short(rows)}, psql \\copy", rows, *write_copy, 0.6),
        throughput(
            f"PostgreSQL: write-once - {short(rows)}, psycopg copy()", rows, *write_raw, 0.6
        ),
        blocked,
    ]


# the migrations' lock timeout for the blocked migration, lowered through the knob an
# operator has (MIGRATION_LOCK_TIMEOUT): the figure is a ratio to it, whatever it is
BLOCKED_LOCK_TIMEOUT = 1.0


def blocked_migration_figure(
    tmp: Path, project: Path, bin_dir: Path, server: PostgresServer, notes: list[str]
) -> Figure:
    """The worst wait of a reader while a migration waits behind an open transaction.

    Against the migrations' lock timeout: a reader that arrives while the migration waits
    for its lock queues behind it until that wait ends, and no longer.
    """
    step("PostgreSQL: readers' worst wait while db-migrate waits behind an open transaction")
    server.create_database("blocked")
    env = project_env(
        {
            "DATABASE_URL": server.url("blocked"),
            "MIGRATION_LOCK_TIMEOUT": str(BLOCKED_LOCK_TIMEOUT),
        }
    )
    check([bin_dir / "db-migrate"], cwd=project, env=env)
    check([bin_dir / "write-once"], cwd=project, env=env)
    (head,) = check([bin_dir / "alembic", "heads"], cwd=project, env=env).split()[:1]
    revision = project / "migrations" / "versions" / "bench_blocked.py"
    revision.write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "bench_blocked"\ndown_revision = "{head}"\n\n\n'
        "def upgrade() -> None:\n"
        '    op.add_column("markers", sa.Column("note", sa.String(20), nullable=True))\n'
    )
    (tmp / "blocked_migration.py").write_text(BLOCKED_MIGRATION)
    try:
        printed = check(
            [bin_dir / "python", tmp / "blocked_migration.py", server.url("blocked"),
             bin_dir / "db-migrate"],
            cwd=project,
            env=env,
        )  # fmt: skip
    finally:
        revision.unlink()  # the other figures' databases stay at the project's own head
    figures, error = printed.split("\n", 1)
    worst, reads, gave_up, code, after = figures.split()
    if (code, after) != ("1", "0") or "held by pid" not in error:
        raise BenchmarkError(
            f"db-migrate behind an open transaction exited {code} ({error.strip()[:200]}), "
            f"then {after} once it ended: not the refusal naming it and the success after"
        )
    notes.append(
        f"PostgreSQL blocked migration: db-migrate gave up after {float(gave_up):.1f} s "
        f"(MIGRATION_LOCK_TIMEOUT={BLOCKED_LOCK_TIMEOUT:g}), naming the session; {reads} reads "
        "meanwhile; it went through once the session ended"
    )
    return Figure(
        "PostgreSQL: worst reader wait, migration blocked",
        ms(float(worst)),
        f"{ms(BLOCKED_LOCK_TIMEOUT)} lock timeout",
        float(worst) / BLOCKED_LOCK_TIMEOUT,
        target=1.5,
    )


def marginal(
    name: str, big: tuple[list[Timing], list[Timing]], small: tuple[list[Timing], list[Timing]]
) -> Figure:
    """The rows' own cost: each side's median on many rows less its median on 10 (context)."""

    def cost(side: int, field: str) -> float:
        return statistics.median(getattr(t, field) for t in big[side]) - statistics.median(
            getattr(t, field) for t in small[side]
        )

    figure = Figure(
        name,
        ms(cost(0, "wall")),
        ms(cost(1, "wall")),
        cost(0, "wall") / cost(1, "wall"),
        target=1.3,
        cpu_ratio=cost(0, "cpu") / cost(1, "cpu"),
    )
    figure.informational = True
    return figure


def throughput(
    name: str, rows: int, ours: list[Timing], baseline: list[Timing], target: float
) -> Figure:
    """A rows-per-second figure: higher is better; the cpu ratio is baseline over ours."""
    ours_rate = rows / statistics.median(t.wall for t in ours)
    baseline_rate = rows / statistics.median(t.wall for t in baseline)
    return Figure(
        name,
        f"{ours_rate / 1000:,.0f}k rows/s",
        f"{baseline_rate / 1000:,.0f}k rows/s",
        ours_rate / baseline_rate,
        target=target,
        higher_is_better=True,
        cpu_ratio=cpu_median(baseline) / cpu_median(ours),
    )


def statement_counts(server: PostgresServer, project: Path, bin_dir: Path) -> str:
    """How many statements write-once and read-later send, from the server's statement log."""
    server.create_database("counted")
    env = project_env({"DATABASE_URL": server.url("counted")})
    check([bin_dir / "alembic", "upgrade", "head"], cwd=project, env=env)
    server.psql("ALTER DATABASE counted SET log_statement = 'all'")
    log = server.base / "server.log"
    counts = []
    for program in ("write-once", "read-later"):
        start = log.stat().st_size
        check([bin_dir / program], cwd=project, env=env)
        time.sleep(0.5)  # the server's logger writes on its own schedule
        with log.open(encoding="utf-8", errors="replace") as lines:
            lines.seek(start)
            logged = lines.read()
        statements = logged.count("LOG:  statement: ") + logged.count("LOG:  execute ")
        counts.append(f"{program} {statements}")
    return "PostgreSQL statements per run (log_statement=all): " + ", ".join(counts)


def psycopg_version(bin_dir: Path) -> str:
    code = "from importlib.metadata import version; print(version('psycopg'))"
    return check([bin_dir / "python", "-c", code], cwd=bin_dir).strip()


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
    wrapper = [sys.executable, "-I", "-S", "-c", PEAK_RSS, result]
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


def stored_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        names = [name for (name,) in connection.execute("SELECT name FROM markers ORDER BY id")]
    connection.close()
    return names


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


if __name__ == "__main__":
    sys.exit(main())
