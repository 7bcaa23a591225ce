"""Answers to `copier copy`: derived names, and bad answers refused before anything is written."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, render


def answers_of(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return loaded


def test_names_are_derived_from_the_project_name(tmp_path: Path) -> None:
    project = render(tmp_path / "p", project_name="My Budget-Tracker 2")
    answers = answers_of(project)
    assert answers["project_slug"] == "my-budget-tracker-2"
    assert answers["package_name"] == "my_budget_tracker_2"
    assert (project / "src" / "my_budget_tracker_2" / "models" / "marker.py").is_file()
    assert 'name = "my-budget-tracker-2"' in (project / "pyproject.toml").read_text()


def test_the_answers_file_records_the_template_commit(tmp_path: Path) -> None:
    answers = answers_of(render(tmp_path / "p"))
    assert answers["_commit"]
    assert answers["skills_dir"] == ".claude/skills"


def test_the_skill_goes_where_skills_dir_says(tmp_path: Path) -> None:
    project = render(tmp_path / "p", skills_dir="agents/skills")
    assert (project / "agents" / "skills" / "database-deployment" / "SKILL.md").is_file()
    assert not (project / ".claude").exists()


def test_an_author_email_alone_reaches_pyproject(tmp_path: Path) -> None:
    pyproject = (
        render(tmp_path / "p", author_email="ada@example.com") / "pyproject.toml"
    ).read_text()
    assert 'authors = [{ email = "ada@example.com" }]' in pyproject


def test_optional_author_fields_reach_pyproject(tmp_path: Path) -> None:
    project = render(tmp_path / "p", author_name='Ada "A" Lovelace', author_email="ada@example.com")
    pyproject = (project / "pyproject.toml").read_text()
    assert 'authors = [{ name = "Ada \\"A\\" Lovelace", email = "ada@example.com" }]' in pyproject


def test_sqlite_is_the_default_database_and_needs_no_driver(tmp_path: Path) -> None:
    project = render(tmp_path / "p")
    assert answers_of(project)["database"] == "sqlite"
    dependencies = (
        (project / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]
    )
    assert "psycopg" not in dependencies


def test_postgresql_makes_psycopg_a_dependency_and_the_readme_asks_for_database_url(
    tmp_path: Path,
) -> None:
    project = render(tmp_path / "p", database="postgresql")
    pyproject = (project / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]\n", 1)[0]
    assert '"psycopg[binary]>=3.2.3,<4"' in dependencies
    assert 'postgres = ["psycopg[binary]>=3.2.3,<4"]' in pyproject  # the extra stays
    first_steps = (project / "README.md").read_text().split("## Where the data is")[0]
    assert "cp .env.example .env" in first_steps and "DATABASE_URL" in first_steps
    env_example = (project / ".env.example").read_text()
    assert env_example.index("postgresql://") < env_example.index("neon.tech")


def test_the_database_must_be_one_of_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Invalid choice for 'database'"):
        render(tmp_path / "p", database="mysql")
    assert not (tmp_path / "p").exists()


BAD_ANSWERS = [
    # (question, answer, part of the message that names the rule)
    ("package_name", "class", "must not be a Python keyword"),
    ("package_name", "match", "must not be a Python keyword"),
    ("package_name", "budget-tracker", "must be a lowercase Python identifier"),
    ("package_name", "1budget", "must be a lowercase Python identifier"),
    ("package_name", "budget tracker", "must be a lowercase Python identifier"),
    ("package_name", "büdget", "must be a lowercase Python identifier"),
    ("package_name", "Budget", "must be a lowercase Python identifier"),
    ("package_name", "_budget", "must be a lowercase Python identifier"),
    ("package_name", "json", 'must not shadow the standard library module "json"'),
    ("package_name", "sqlite3", 'must not shadow the standard library module "sqlite3"'),
    ("package_name", "sqlalchemy", 'must not shadow "sqlalchemy", a dependency'),
    ("package_name", "alembic", 'must not shadow "alembic", a dependency'),
    ("package_name", "psycopg", 'must not shadow "psycopg", a dependency'),
    ("package_name", "migrations", 'must not shadow "migrations", a dependency or folder'),
    ("package_name", "pluggy", 'must not shadow "pluggy", a dependency'),
    ("package_name", "test", 'must not shadow "test", a dependency'),
    ("package_name", "pre_commit", 'must not shadow "pre_commit", a dependency'),
    ("project_name", "", "project_name must not be empty"),
    ("project_name", "   ", "project_name must not be empty"),
    ("project_name", "2048 Game", "project_name must start with a letter"),
    ("project_name", "Café Tracker", "project_name may hold only ASCII letters"),
    ("project_name", 'Say "Hi"', "project_name may hold only ASCII letters"),
    ("project_name", "A" * 61, "project_name must be at most 60 characters"),
    ("project_slug", "Budget_Tracker", "project_slug must be lowercase letters and digits"),
    ("project_slug", "budget--tracker", "project_slug must be lowercase letters and digits"),
    ("python_version", "3.9", "python_version must be 3.10 or later"),
    ("python_version", "3", "python_version must be 3.10 or later"),
    ("author_email", "ada-at-example", "author_email must look like name@example.com"),
    ("description", "two\nlines", "description must be a single line"),
    ("skills_dir", "/etc/skills", "skills_dir must be a relative folder path"),
    ("skills_dir", "../skills", 'skills_dir must not contain "." or ".." parts'),
    ("skills_dir", "src/skills", "skills_dir must not be inside the project's src folder"),
]


@pytest.mark.parametrize(("question", "answer", "rule"), BAD_ANSWERS)
def test_a_bad_answer_is_refused_with_its_rule_and_nothing_is_written(
    question: str, answer: str, rule: str, tmp_path: Path
) -> None:
    destination = tmp_path / "project"
    with pytest.raises(ValueError, match=f"question '{question}'") as error:
        render(destination, **{question: answer})
    assert rule in str(error.value)
    assert not destination.exists()


def test_every_question_fits_80_columns_as_copier_prints_it() -> None:
    # Copier prints a question's help line for line after its mark ("🎤 ", three columns);
    # a folded (>-) help is one line however it looks in copier.yml
    questions = yaml.safe_load((ROOT / "copier.yml").read_text())
    too_wide = [
        (name, line)
        for name, question in questions.items()
        if isinstance(question, dict) and "help" in question
        for line in question["help"].splitlines()
        if len("🎤 ") + 1 + len(line) > 80
    ]
    assert too_wide == []


def test_the_project_names_placeholder_reads_as_an_instruction_not_a_default() -> None:
    # Copier shows a placeholder greyed where the answer goes, but Enter answers "" (refused):
    # a bare example name there looks like a default that Enter would take
    question = yaml.safe_load((ROOT / "copier.yml").read_text())["project_name"]
    assert question["placeholder"].startswith("type ")
    assert "required" in question["help"]
