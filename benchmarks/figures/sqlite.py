"""The SQLite figures: the programs against the lesson's scripts, the proof, a million rows."""

import shutil
import sqlite3
import statistics
import sys
from importlib import metadata
from pathlib import Path

from tests.helpers import DEFAULT_ANSWERS, UV, project_env

from .runner import (
    LESSON_WRITE,
    SCRIPTS,
    BenchmarkError,
    Command,
    Figure,
    Timing,
    check,
    compare,
    cpu_median,
    database,
    digest,
    mib,
    ms,
    paired,
    peak_rss,
    short,
    step,
    timed,
)
from .verification import big_verify_figures, small_verify_figure


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

    return [
        compare("write-once (1 row)", *write, target=1.10),
        compare(f"read-later ({runs + 1} rows)", *read, target=1.10),
        small_verify_figure(project, bin_dir, runs),
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
    ours, baseline = paired(
        lambda: timed(suite, project), lambda: timed(lesson_write, lesson), runs
    )
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
    """Figures 3 to 5: a million rows out through read-later and db-verify, in by write-once -."""
    python = bin_dir / "python"
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
        return timed([python, SCRIPTS / "raw_read.py", big], tmp, stdout=raw_out)

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

    verify = big_verify_figures(tmp, project, bin_dir, big, small, ours_read, rows, runs)

    step(f"write-once - with {rows:,} names vs raw sqlite3 executemany, {runs} runs each")
    ours_db, raw_db = tmp / "ours-write.db", tmp / "raw-write.db"

    def ours_write() -> Timing:
        shutil.copyfile(empty, ours_db)
        return timed([bin_dir / "write-once", "-"], project, database(ours_db), stdin=names_file)

    def raw_write() -> Timing:
        shutil.copyfile(empty, raw_db)
        return timed([python, SCRIPTS / "raw_write.py", raw_db], tmp, stdin=names_file)

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
        *verify,
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


def stored_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        names = [name for (name,) in connection.execute("SELECT name FROM markers ORDER BY id")]
    connection.close()
    return names
