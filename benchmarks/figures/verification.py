"""db-verify's figures: against read-later, the program that reads the same rows."""

from collections.abc import Callable
from pathlib import Path

from .runner import (
    Command,
    Figure,
    Timing,
    check,
    compare,
    database,
    paired,
    peak_rss,
    rss_figure,
    short,
    step,
    timed,
)


def small_verify_figure(project: Path, bin_dir: Path, runs: int) -> Figure:
    """db-verify on the proof database (runs + 1 rows), against read-later on it."""
    ours_read: Command = [bin_dir / "read-later"]
    # db-verify does more than read-later (Alembic's context, the schema comparison, the
    # database's integrity checks, every row twice), so its baseline is read-later itself
    step(f"db-verify vs read-later on the proof database, {runs} runs each")
    ours_verify: Command = [bin_dir / "db-verify"]
    check(ours_verify, cwd=project)  # warm-up; every check must hold, or the benchmark stops
    verify = paired(lambda: timed(ours_verify, project), lambda: timed(ours_read, project), runs)
    return compare(f"db-verify ({runs + 1} rows) vs read-later", *verify, target=2.0)


def big_verify_figures(
    tmp: Path,
    project: Path,
    bin_dir: Path,
    big: Path,
    small: Path,
    ours_read: Callable[[], Timing],
    rows: int,
    runs: int,
) -> list[Figure]:
    """db-verify on the big database: wall against read-later's, peak memory against 10 rows."""
    step(f"db-verify vs read-later on {rows:,} rows, wall and peak memory, {runs} runs each")

    def ours_verify() -> Timing:
        return timed([bin_dir / "db-verify"], project, database(big))

    verify = paired(ours_verify, ours_read, runs)
    verify_rss, verify_small_rss = [], []
    for _ in range(runs):
        verify_rss.append(peak_rss([bin_dir / "db-verify"], project, database(big), tmp))
        verify_small_rss.append(peak_rss([bin_dir / "db-verify"], project, database(small), tmp))
    return [
        compare(f"db-verify {short(rows)} rows vs read-later, wall", *verify, target=3.0),
        rss_figure(f"db-verify {short(rows)} rows, peak RSS", verify_rss, verify_small_rss),
    ]
