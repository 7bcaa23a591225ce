"""Benchmarks: a rendered project against the lesson it grew from, as ratios within one run.

Every figure is a ratio to a baseline measured by the same run on the same machine, so a
loaded or slow machine moves both sides; nothing here is a pass/fail test. Run it from the
template's root:

    python3 -m uv run python benchmarks/bench.py

It exits 0 whenever it measured, whether or not the targets were met (docs/benchmarks.md).
The figures live in benchmarks/figures/, the scripts they run in benchmarks/scripts/.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/bench.py` puts benchmarks/, not ROOT, first

# benchmarks/ is on sys.path as the script's own folder; ROOT, for tests.helpers
from figures.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
