"""The PostgreSQL figures on a server of their own: the same comparisons, a blocked migration."""

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import install, project_env
from tests.postgres import PASSWORD, ROLE, PostgresServer, start_postgres

from .roundtrips import round_trip_figures
from .runner import (
    LESSON_READ,
    LESSON_WRITE,
    SCRIPTS,
    BenchmarkError,
    Command,
    Figure,
    Timing,
    check,
    compare,
    cpu_median,
    digest,
    ms,
    paired,
    peak_rss,
    rss_figure,
    short,
    step,
    timed,
)


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
    round_trips = round_trip_figures(tmp, project, bin_dir, server, notes)

    names_file = tmp / "names.txt"  # written by big_figures, unless it did not run
    if not names_file.exists():
        names_file.write_text("".join(f"marker-{number:07d}\n" for number in range(1, rows + 1)))
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
    raw_read: Command = [python, SCRIPTS / "raw_pg_read.py", server.url("big")]
    big_read = paired(
        lambda: timed(ours_read, project, on("big"), stdout=ours_out),
        lambda: timed(raw_read, tmp, stdout=raw_out),
        big_runs,
    )
    if digest(ours_out) != digest(raw_out):
        raise BenchmarkError("read-later and the raw psycopg loop printed different lists")
    # the same on 10 rows: what each side costs before its first row (imports, connecting)
    raw_small: Command = [python, SCRIPTS / "raw_pg_read.py", server.url("small")]
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
    raw_copy: Command = [python, SCRIPTS / "raw_pg_copy.py", server.url("written")]

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
        *round_trips,
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
    try:
        printed = check(
            [bin_dir / "python", SCRIPTS / "blocked_migration.py", server.url("blocked"),
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
        return statistics.median(float(getattr(t, field)) for t in big[side]) - statistics.median(
            float(getattr(t, field)) for t in small[side]
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
    version: Command = [bin_dir / "python", SCRIPTS / "package_version.py", "psycopg"]
    return check(version, cwd=bin_dir).strip()
