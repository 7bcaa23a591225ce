"""A rendered project, used as a new user would: the proof, its own checks, its skill."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.growth import MODELS, NOTE_MODEL, add_notes_to_marker, register
from tests.helpers import ROOT, install, ok, prove, render, run, run_program

LESSON = ROOT / "tests" / "lesson"
SKILL_SECTIONS = ["Persona", "When to Use", "Core Patterns", "Decision Logic", "Guardrails"]


def test_the_proof_prints_persistent_check_from_a_new_process(default_project: Path) -> None:
    prove(default_project)
    assert (default_project / "app.db").is_file()


def test_the_programs_share_one_database_from_any_directory(
    default_project: Path, tmp_path: Path
) -> None:
    database = tmp_path / "shared.db"
    env = {"DATABASE_URL": f"sqlite:///{database}"}
    ok(run_program(default_project, "alembic", "upgrade", "head", env=env))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ok(run_program(default_project, "write-once", "from-elsewhere", cwd=elsewhere, env=env))
    read = run_program(default_project, "read-later", cwd=tmp_path, env=env)
    assert ok(read) == "['from-elsewhere']\n"


# The project's own tests, ruff check, ruff format --check and mypy --strict run on a fresh
# render in tests/test_ci.py, as the steps of its CI workflow's SQLite job.


def test_reformatting_a_fresh_render_changes_nothing(tmp_path: Path) -> None:
    project = render(tmp_path / "p")
    ok(run("git", "init", "-q", cwd=project))
    ok(run("git", "add", "-A", cwd=project))
    install(project)
    ok(run_program(project, "ruff", "format", "--no-cache", "."))
    ok(run_program(project, "ruff", "check", "--fix", "--no-cache", "."))
    # the index holds the render as copier wrote it; the working tree what the tools made of it
    assert ok(run("git", "diff", "--name-only", cwd=project)) == ""


@pytest.fixture
def fresh_render(tmp_path: Path) -> Path:
    """A project exactly as `copier copy` leaves it: nothing installed, nothing run."""
    return render(tmp_path / "fresh")


def rendered_files(project: Path) -> list[Path]:
    return [path for path in project.rglob("*") if path.is_file()]


# GitHub Actions expressions, `${{ github.ref }}`: the workflows are copied verbatim (not .jinja),
# so these are GitHub's, not leftovers; any other Jinja syntax in a workflow still counts
GITHUB_EXPRESSION = re.compile(r"\$\{\{[^{}]*\}\}")


def test_no_template_leftovers_in_a_rendered_project(fresh_render: Path) -> None:
    leftovers = []
    for path in rendered_files(fresh_render):
        text = path.read_text(encoding="utf-8")
        if path.relative_to(fresh_render).parts[:2] == (".github", "workflows"):
            text = GITHUB_EXPRESSION.sub("", text)
        if path.suffix == ".jinja" or "{{" in path.name:
            leftovers.append(f"{path}: template file name")
        elif re.search(r"\{\{|\{%|%\}|\{#", text):
            leftovers.append(f"{path}: Jinja syntax")
    assert leftovers == []


@pytest.mark.parametrize(
    "answers",
    [
        {"project_name": "Budget Tracker"},
        # workout_hello_world_log sorts after tests: the import blocks still pass ruff
        {"project_name": "Workout Hello-World Log", "python_version": "3.11"},
        {"project_name": "ACME Orders", "project_slug": "acme-orders-db", "package_name": "acme",
         "skills_dir": "agent/skills", "author_name": "Ada Lovelace",
         "author_email": "ada@example.com"},
    ],
    ids=["spaces", "hyphens-capitals-sorting-after-tests", "own-slug-package-skills-dir-author"],
)  # fmt: skip
def test_every_answer_set_renders_a_working_clean_project(
    tmp_path: Path, answers: dict[str, str]
) -> None:
    project = render(tmp_path / "project", **answers)
    install(project)
    prove(project)
    # the release bundle names the distribution, whatever the package is called
    ok(run_program(project, "db-evidence", "--output", tmp_path / "evidence"))
    bundle = json.loads((tmp_path / "evidence" / "evidence.json").read_text())
    slug = answers.get("project_slug") or re.sub(
        r"[^a-z0-9]+", "-", answers["project_name"].lower()
    )
    assert bundle["project"]["name"] == slug
    ok(run_program(project, "ruff", "check", "--no-cache", "."))
    ok(run_program(project, "ruff", "format", "--check", "--no-cache", "."))
    ok(run_program(project, "mypy", "--no-incremental"))
    skill = project / answers.get("skills_dir", ".claude/skills") / "database-deployment"
    assert (skill / "SKILL.md").is_file()


def test_the_lesson_scripts_read_and_write_the_same_database(
    default_project: Path, tmp_path: Path
) -> None:
    database = tmp_path / "lesson.db"
    env = {"DATABASE_URL": f"sqlite:///{database}"}
    scripts = tmp_path / "lesson"
    scripts.mkdir()
    for name in ("write_once.py", "read_later.py"):
        source = (LESSON / name).read_text()
        assert 'create_engine("sqlite:///quick_persist.db")' in source
        # nothing changed but the URL string
        (scripts / name).write_text(
            source.replace("sqlite:///quick_persist.db", f"sqlite:///{database}")
        )

    ok(run_program(default_project, "alembic", "upgrade", "head", env=env))
    ok(run_program(default_project, "write-once", env=env))
    read = run_program(default_project, "python", scripts / "read_later.py", cwd=scripts)
    assert ok(read) == "['persistent-check']\n"

    written = run_program(default_project, "python", scripts / "write_once.py", cwd=scripts)
    assert ok(written) == "Wrote marker\n"
    expected = "['persistent-check', 'persistent-check']\n"
    assert ok(run_program(default_project, "read-later", env=env)) == expected


# the public skill-creator validator's rules (anthropics/skills, quick_validate.py), carried
# here because it is a script, not a package
SKILL_CREATOR_KEYS = {
    "name",
    "description",
    "license",
    "allowed-tools",
    "metadata",
    "compatibility",
}


def skill_creator_problems(skill: Path) -> list[str]:
    """What the skill-creator validator would refuse in skill's SKILL.md; empty when valid."""
    match = re.match(r"^---\n(.*?)\n---", (skill / "SKILL.md").read_text(), re.DOTALL)
    if not match:
        return ["no YAML frontmatter"]
    frontmatter = yaml.safe_load(match[1])
    if not isinstance(frontmatter, dict):
        return ["frontmatter is not a mapping"]
    problems = [f"unexpected key {key}" for key in sorted(set(frontmatter) - SKILL_CREATOR_KEYS)]
    name, description = frontmatter.get("name"), frontmatter.get("description")
    if (
        not isinstance(name, str)
        or not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name)
        or len(name) > 64
    ):
        problems.append(f"name {name!r} is not kebab-case of at most 64 characters")
    if not isinstance(description, str) or not description.strip():
        problems.append("no description")
    elif "<" in description or ">" in description or len(description) > 1024:
        problems.append("description has angle brackets or more than 1024 characters")
    compatibility = frontmatter.get("compatibility", "")
    if compatibility and (not isinstance(compatibility, str) or len(compatibility) > 500):
        problems.append("compatibility is not a string of at most 500 characters")
    return problems


def skill_body(skill: Path) -> str:
    return (skill / "SKILL.md").read_text().split("---", 2)[2]


class TestSkill:
    @pytest.fixture
    def skill(self, default_project: Path) -> Path:
        return default_project / ".claude" / "skills" / "database-deployment"

    def test_is_valid_by_the_agent_skills_spec(self, skill: Path) -> None:
        result = subprocess.run(
            [Path(sys.executable).parent / "agentskills", "validate", skill],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    def test_is_valid_by_the_skill_creator_rules(self, skill: Path) -> None:
        assert skill_creator_problems(skill) == []

    def test_the_skill_creator_rules_refuse_a_bad_frontmatter(self, tmp_path: Path) -> None:
        (tmp_path / "SKILL.md").write_text("---\nname: Database_Deployment\nversion: 1\n---\n")
        assert skill_creator_problems(tmp_path) == [
            "unexpected key version",
            "name 'Database_Deployment' is not kebab-case of at most 64 characters",
            "no description",
        ]

    def test_has_the_five_sections_in_order(self, skill: Path) -> None:
        headings = re.findall(r"^## (.+)$", (skill / "SKILL.md").read_text(), re.MULTILINE)
        assert headings == SKILL_SECTIONS

    def test_opens_with_numbered_steps_before_the_sections(self, skill: Path) -> None:
        opening = skill_body(skill).split("\n## ")[0]
        assert re.findall(r"^(\d+)\. ", opening, re.MULTILINE) == ["1", "2", "3"]

    def test_the_body_is_at_most_500_words(self, skill: Path) -> None:
        assert len(skill_body(skill).split()) <= 500

    def test_frontmatter_names_the_folder_and_says_when_to_use_it_and_not(
        self, skill: Path
    ) -> None:
        frontmatter = (skill / "SKILL.md").read_text().split("---")[1]
        assert re.search(r"^name: database-deployment$", frontmatter, re.MULTILINE)
        assert "Use when" in frontmatter and "Not for" in frontmatter

    def test_every_reference_is_linked_where_it_is_needed(self, skill: Path) -> None:
        body = skill_body(skill)
        for reference in (skill / "references").iterdir():
            assert f"(references/{reference.name})" in body, reference.name
        assert "see also" not in body.lower()

    def test_core_patterns_cover_the_eight_stages(self, skill: Path) -> None:
        patterns = skill_body(skill).split("## Core Patterns")[1].split("\n## ")[0]
        assert re.findall(r"^(\d)\. \*\*", patterns, re.MULTILINE) == [str(n) for n in range(1, 9)]
        table = (skill / "references" / "stages.md").read_text()
        assert re.findall(r"^\| (\d) ", table, re.MULTILINE) == [str(n) for n in range(1, 9)]

    def test_every_file_it_points_at_exists(self, skill: Path, default_project: Path) -> None:
        for name in [
            "SKILL.md",
            *(f"references/{p.name}" for p in (skill / "references").iterdir()),
        ]:
            text = (skill / name).read_text()
            for path in re.findall(
                r"`((?:src|migrations|tests|references|examples)/[\w./-]*)`", text
            ):
                base = skill if path.startswith(("references", "examples")) else default_project
                assert (base / path).exists(), f"{name}: {path}"

    def test_has_references_and_examples(self, skill: Path) -> None:
        assert {p.name for p in (skill / "references").iterdir()} >= {
            "stages.md",
            "sqlalchemy-patterns.md",
            "alembic-migrations.md",
            "relationships.md",
            "failures.md",
            "neon.md",
        }
        assert {p.name for p in (skill / "examples").iterdir()} >= {
            "write_once.py", "read_later.py", "crud.py", "retry.py", "failures.py", "README.md"
        }  # fmt: skip


# a problem planted at the end of a document, after every block that runs, and what the
# project's suite must say of it; one document each, so that one run finds them all
PLANTED_IN_SKILL = {
    "references/failures.md": (
        "```bash\nuv run alembic upgrade heda\n```\n",
        "this block failed: {block}:",
    ),
    "references/sqlalchemy-patterns.md": (
        "```bash\necho \"['persistent-chek']\"  # prints ['persistent-check']\n```\n",
        "no line `['persistent-check']`: {block}:",
    ),
    "examples/README.md": (
        "```text\nuv run alembic upgrade head\n```\n",
        "{block}: a ```text block is neither run nor marked",
    ),
    # a recipe never replaces the user's files, nor what they hold
    "references/relationships.md": (
        (
            "<!-- file: src/budget_tracker/models/__init__.py -->\n"
            "```python\nfrom .base import Base\n```\n"
        ),
        (
            "{block}: the project has src/budget_tracker/models/__init__.py already, and this "
            "recipe would replace it"
        ),
    ),
    "references/new-model.md": (
        (
            "<!-- add to: src/budget_tracker/models/marker.py -->\n"
            "```python\nclass Marker(Base):\n    name: Mapped[str]\n```\n"
        ),
        (
            "{block}: Marker.name is in src/budget_tracker/models/marker.py already, and this "
            "recipe would replace it"
        ),
    ),
}


def test_a_broken_or_unmarked_block_in_the_skill_fails_the_projects_suite(tmp_path: Path) -> None:
    project = render(tmp_path / "p")
    install(project)
    skill = project / ".claude" / "skills" / "database-deployment"
    expected = []
    for document, (block, failure) in PLANTED_IN_SKILL.items():
        text = (skill / document).read_text()
        (skill / document).write_text(f"{text}\n{block}")
        line = len(text.splitlines()) + 2 + block.split("```")[0].count("\n")
        expected.append(failure.format(block=f"{document}, line {line}"))
    node = "tests/dbkit/test_skill.py::test_every_block_runs_as_written"
    tests = [f"{node}[{document}]" for document in PLANTED_IN_SKILL]
    result = run_program(project, "pytest", "-q", "-p", "no:cacheprovider", *tests)
    assert result.returncode == 1, result.stdout[-3000:]
    assert f"{len(PLANTED_IN_SKILL)} failed" in result.stdout, result.stdout[-3000:]
    missing = [failure for failure in expected if failure not in result.stdout]
    assert missing == [], result.stdout[-6000:]


def test_the_skills_recipes_keep_the_users_own_models(tmp_path: Path) -> None:
    # the recipes add to models/__init__.py and to Marker; one that replaced either would lose
    # Note, and Marker.notes would name a model that is gone (KeyError: 'Note')
    project = render(tmp_path / "p")
    install(project)
    # a model of the user's own, related to Marker both ways, as the tests grow a project
    models = project / MODELS
    (models / "note.py").write_text(NOTE_MODEL)
    register(models / "__init__.py", {"note": "Note"})
    add_notes_to_marker(models / "marker.py")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    ok(run_program(project, "alembic", "upgrade", "head", env=env))
    ok(run_program(project, "alembic", "revision", "--autogenerate", "-m", "add notes", env=env))

    result = run_program(
        project, "pytest", "-q", "-p", "no:cacheprovider", "tests/dbkit/test_skill.py"
    )
    assert result.returncode == 0, result.stdout[-6000:]


CREDENTIAL_IN_URL = re.compile(r"[a-z0-9+]+://([^\s/:@'\"]+):([^\s@'\"]+)@")
PLACEHOLDER_PASSWORDS = {"change-me", "password", "***"}


def test_a_fresh_render_holds_no_credentials(fresh_render: Path) -> None:
    found = []
    for path in rendered_files(fresh_render):
        for user, password in CREDENTIAL_IN_URL.findall(path.read_text(encoding="utf-8")):
            if password not in PLACEHOLDER_PASSWORDS:
                found.append(f"{path}: {user}:{password}")
    assert found == []
    assert not re.search(
        r"^\s*sqlalchemy\.url\s*=", (fresh_render / "alembic.ini").read_text(), re.M
    )
    assert not (fresh_render / ".env").exists()


def test_env_files_and_databases_are_git_ignored(tmp_path: Path) -> None:
    project = render(tmp_path / "p")
    ok(run("git", "init", "-q", cwd=project))
    for name in (".env", ".env.local", "app.db", "app.db-wal", ".venv/x"):
        assert run("git", "check-ignore", "-q", name, cwd=project).returncode == 0, name
    assert run("git", "check-ignore", "-q", ".env.example", cwd=project).returncode == 1


def pip_route() -> list[str]:
    """The commands that copier's closing message gives for installing without uv."""
    message = yaml.safe_load((ROOT / "copier.yml").read_text())["_message_after_copy"]
    route = message.split("Without uv", 1)[1].split("then run the same commands", 1)[0]
    return [line.strip() for line in route.splitlines() if line.startswith("    ")]


def test_the_project_installs_and_proves_with_plain_pip(tmp_path: Path) -> None:
    # the route copier's message gives: a venv, pip new enough for dependency groups, an
    # editable install, each line run as it is written
    project = render(tmp_path / "p")
    commands = pip_route()
    assert len(commands) == 2 and "--group dev" in commands[1]
    ok(run("bash", "-euc", " && ".join(commands), cwd=project))
    prove(project)
    assert ok(run_program(project, "pytest", "-q", "tests/dbkit/test_persistence.py"))


def test_the_project_tests_refuse_to_wipe_the_database_it_uses(
    default_project: Path, tmp_path: Path
) -> None:
    database = tmp_path / "precious.db"
    same = f"sqlite:///{database}"
    ok(run_program(default_project, "alembic", "upgrade", "head", env={"DATABASE_URL": same}))
    ok(run_program(default_project, "write-once", "precious", env={"DATABASE_URL": same}))

    env = {"DATABASE_URL": same, "TEST_DATABASE_URL": same}
    result = run_program(default_project, "pytest", "-q", "-p", "no:cacheprovider", env=env)

    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert (
        "TEST_DATABASE_URL's database already holds tables (alembic_version, markers)"
        in result.stderr
    )
    read = run_program(default_project, "read-later", env={"DATABASE_URL": same})
    assert ok(read) == "['precious']\n"


def test_a_database_the_lessons_scripts_made_is_adopted_with_its_rows(
    default_project: Path, tmp_path: Path
) -> None:
    # the lesson first, the project later: its table is there, Alembic's history is not
    scripts, database = tmp_path / "lesson", tmp_path / "lesson.db"
    scripts.mkdir()
    source = (LESSON / "write_once.py").read_text()
    (scripts / "write_once.py").write_text(source.replace("quick_persist.db", str(database)))
    written = run_program(default_project, "python", scripts / "write_once.py", cwd=scripts)
    assert ok(written) == "Wrote marker\n"
    env = {"DATABASE_URL": f"sqlite:///{database}"}

    refused = run_program(default_project, "read-later", env=env)
    assert refused.returncode == 1
    assert "`alembic stamp 0001`, then `alembic upgrade head` and `alembic check`" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    # the adoption path the message and the skill's alembic-migrations.md give
    for step in (["stamp", "0001"], ["upgrade", "head"], ["check"]):
        ok(run_program(default_project, "alembic", *step, env=env))
    assert ok(run_program(default_project, "write-once", "adopted", env=env)) == "Wrote marker\n"
    expected = "['persistent-check', 'adopted']\n"
    assert ok(run_program(default_project, "read-later", env=env)) == expected


# WHAT IS WHOSE -------------------------------------------------------------------------------


def test_the_package_root_holds_the_users_files_and_one_template_subpackage(
    fresh_render: Path,
) -> None:
    package = fresh_render / "src" / "budget_tracker"
    assert sorted(path.name for path in package.iterdir()) == ["__init__.py", "dbkit", "models"]
    owner = "# dbkit (the template's): `copier update` brings each release's changes here.\n"
    for folder in (package / "dbkit", fresh_render / "tests" / "dbkit"):
        for module in folder.glob("*.py"):
            assert module.read_text().startswith(owner), module
    # the user's tests: no test module imports another test module
    for module in (fresh_render / "tests").rglob("test_*.py"):
        assert not re.search(r"^from tests\.(dbkit\.)?test_", module.read_text(), re.M), module


def readme_section(project: Path, title: str) -> str:
    readme = (project / "README.md").read_text()
    start = readme.index(f"## {title}\n")
    return readme[start : readme.find("\n## ", start + 1)]


def test_the_readmes_add_a_command_recipe_runs_as_written(fresh_render: Path) -> None:
    default_project = fresh_render
    recipe = readme_section(default_project, "Add a command")
    module, line = re.findall(r"```(?:python|toml)\n(.*?)```", recipe, re.S)
    path = re.search(r"in `(src/budget_tracker/\w+\.py)`", recipe)
    assert path is not None
    (default_project / path[1]).write_text(module)
    pyproject = default_project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace("[project.scripts]\n", f"[project.scripts]\n{line}", 1))
    try:
        install(default_project)
        for check in (("ruff", "check", path[1]), ("ruff", "format", "--check", path[1])):
            ok(run_program(default_project, *check))
        ok(run_program(default_project, "mypy", path[1]))
        ok(run_program(default_project, "alembic", "upgrade", "head"))
        ok(run_program(default_project, "write-once", "rent"))
        renamed = run_program(default_project, "rename-marker", "rent", "housing")
        assert ok(renamed) == "Renamed 'rent' to 'housing'\n"
        assert ok(run_program(default_project, "read-later")) == "['housing']\n"
        missing = run_program(default_project, "rename-marker", "rent", "food")
        assert (missing.returncode, missing.stdout) == (1, "")
        assert missing.stderr == "rename-marker: error: no marker named 'rent'; nothing changed\n"
        # a name the table's CHECK refuses: the IntegrityError, caught as the recipe says
        refused = run_program(default_project, "rename-marker", "housing", "")
        assert (refused.returncode, refused.stderr) == (
            1,
            "rename-marker: error: the markers table refuses ''; nothing changed\n",
        )
        assert ok(run_program(default_project, "read-later")) == "['housing']\n"
    finally:
        pyproject.write_text(text)
