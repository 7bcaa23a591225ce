# dbkit (the template's): `copier update` brings each release's changes here.
"""README.md's erDiagram of the tables matches the models, as paracelsus draws them now."""

import subprocess
from pathlib import Path

from {{ package_name }}.dbkit.testing import SCRIPTS

PROJECT = Path(__file__).resolve().parents[2]
REDRAW = "uv run paracelsus inject README.md"


def test_the_readme_diagram_matches_the_models() -> None:
    # paracelsus reads [tool.paracelsus] in pyproject.toml: which base, which models
    checked = subprocess.run(
        [SCRIPTS / "paracelsus", "inject", "README.md", "--check"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, (
        f"README.md's diagram of the tables no longer matches the models: run `{REDRAW}` "
        f"and commit README.md\n{checked.stdout}{checked.stderr}"
    )
