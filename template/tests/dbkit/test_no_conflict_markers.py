# dbkit (the template's): `copier update` brings each release's changes here.
"""No file holds a merge left unfinished: no conflict markers, no rejected hunks.

`copier update` exits 0 even when it cannot merge a template change with yours: like git, it
writes both versions into the file between conflict markers. These tests fail naming each one.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

# the lines git and copier write around a conflict (written as {7} so this file is not one)
CONFLICT_MARKER = re.compile(rb"^(<{7}|\|{7}|>{7})( |$)")


def project_files() -> list[str]:
    """Every file git tracks here or would add (ignored ones, like .venv/ and app.db, left out)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=PROJECT,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if listed.returncode != 0:
        pytest.skip("not a git repository, so `copier update` cannot have run here")
    # a file in conflict is listed once per side; keep one
    return list(dict.fromkeys(os.fsdecode(name) for name in listed.stdout.split(b"\0") if name))


def conflict_lines(name: str) -> list[str]:
    """`path:line` for each conflict marker in the file; none for a binary or missing file."""
    try:
        content = (PROJECT / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return []  # deleted but not yet committed, or a submodule
    if b"\0" in content:
        return []
    return [
        f"{name}:{number}"
        for number, line in enumerate(content.splitlines(), start=1)
        if CONFLICT_MARKER.match(line)
    ]


def test_no_file_holds_conflict_markers() -> None:
    found = [hit for name in project_files() for hit in conflict_lines(name)]
    assert not found, (
        "conflict markers (keep the right lines, delete the markers, then `git add`):\n"
        + "\n".join(found)
    )


def test_no_rejected_hunks_are_left_over() -> None:
    rejected = [name for name in project_files() if name.endswith(".rej")]
    assert not rejected, (
        "hunks an update could not apply (apply them by hand, then delete the file):\n"
        + "\n".join(rejected)
    )
