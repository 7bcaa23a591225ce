"""The template's own code, its tests and benchmarks, held to what a generated project's is.

What is checked, and what is left out, is the root pyproject.toml's [tool.ruff] and [tool.mypy],
so `uv run ruff check` or `uv run mypy` at the root finds what these tests find.
"""

import sys

import pytest

from tests.helpers import ROOT, run

CHECKS = {
    "ruff check": ["ruff", "check", "--no-fix"],
    "ruff format": ["ruff", "format", "--check"],
    "mypy strict": ["mypy"],
}


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_the_template_tests_and_benchmarks_pass_their_own_checks(check: list[str]) -> None:
    # this venv's tools, whatever is on PATH
    result = run(sys.executable, "-m", *check, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(check)}:\n{result.stdout}\n{result.stderr}"
