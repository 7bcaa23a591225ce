"""The generated README's erDiagram of the tables stays true: a model added without redrawing
it fails the project's own test and its pre-commit hook, each naming the command that redraws
it; after that command both pass and the diagram shows the new table."""

from pathlib import Path

from tests.growth import BUDGET_MODEL, MODELS, NOTE_MODEL, add_notes_to_marker, register
from tests.helpers import UV, git_commit_all, install, ok, render, run, run_program
from tests.workflow import path_with_uv

REDRAW = "uv run paracelsus inject README.md"


def diagram(readme: Path) -> str:
    text = readme.read_text()
    return text[text.index("<!-- BEGIN_SQLALCHEMY_DOCS -->") : text.index("<!-- END_SQLALCHEMY")]


def test_a_new_model_fails_the_diagram_checks_until_the_readme_is_redrawn(tmp_path: Path) -> None:
    project = render(tmp_path / "budget-tracker")
    install(project)
    git_commit_all(project, "Generated from the template, with uv.lock")
    hook_env = {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit"), "PATH": path_with_uv(project)}

    def diagram_test() -> str:
        result = run_program(
            project, "pytest", "-q", "-p", "no:cacheprovider", "tests/dbkit/test_diagram.py"
        )
        return result.stdout + result.stderr if result.returncode else ""

    def diagram_hook() -> str:
        result = run_program(
            project, "pre-commit", "run", "schema-diagram", "--all-files", env=hook_env
        )
        return result.stdout + result.stderr if result.returncode else ""

    # a fresh render's README already holds the diagram of its one table
    assert diagram_test() == "" and diagram_hook() == ""
    assert "markers {" in diagram(project / "README.md")

    # the user's own models: a table of its own, and a child of markers
    (project / MODELS / "budget.py").write_text(BUDGET_MODEL)
    (project / MODELS / "note.py").write_text(NOTE_MODEL)
    register(project / MODELS / "__init__.py", {"budget": "Budget", "note": "Note"})
    add_notes_to_marker(project / MODELS / "marker.py")
    ok(run("git", "add", "-A", cwd=project))

    failed = diagram_test()
    assert f"run `{REDRAW}`" in failed, failed
    assert "budgets {" in failed  # the diff shows what is missing
    failed = diagram_hook()
    assert f"(redraw: {REDRAW})" in failed and "Failed" in failed, failed

    ok(run(UV, "run", "paracelsus", "inject", "README.md", cwd=project))  # the command, as named

    drawn = diagram(project / "README.md")
    assert "budgets {" in drawn and "markers {" in drawn and "notes {" in drawn
    # types and keys as the models declare them, and the foreign key as a relationship
    assert "VARCHAR(50) category UK" in drawn
    assert "INTEGER marker_id FK" in drawn
    assert "markers ||--o{ notes : marker_id" in drawn
    assert diagram_test() == "" and diagram_hook() == ""
