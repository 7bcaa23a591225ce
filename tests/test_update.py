"""Template updates: `copier update` carries each release into a project and loses nothing.

Each scenario makes the template a tagged git repository in a temporary folder, renders a
project from one tag, changes the project as its user would, then updates it to a later tag.
The policy under test is docs/updating.md and docs/decisions/0006-template-updates.md.
"""

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_update
from copier.errors import UnsafeTemplateError

from tests.growth import BUDGET_MODEL, MODELS, grow
from tests.helpers import ROOT, install, ok, render, run, run_program
from tests.workflow import check_tests_step, run_steps, workflow

VERSIONS = Path("template/migrations/versions")
# the revisions the template has released; a new one would give projects that added their
# own revisions two heads, so this set never grows (docs/decisions/0006-template-updates.md)
RELEASED_REVISIONS = {"0001_create_markers.py"}

SHIPPED_CHECK = "tests/dbkit/test_no_conflict_markers.py"
SKILL = Path(".claude/skills/database-deployment")
SKILL_TEMPLATE = Path("template/{{ skills_dir }}/database-deployment")


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git as on a fresh machine, for these tests and for copier: no hooks, signing or aliases."""
    config = tmp_path_factory.mktemp("git") / "config"
    config.write_text(
        "[user]\n\tname = Template Tests\n\temail = tests@example.com\n"
        "[init]\n\tdefaultBranch = main\n"
        "[commit]\n\tgpgSign = false\n[tag]\n\tgpgSign = false\n"
        "[safe]\n\tdirectory = *\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repo: Path, *args: str) -> str:
    return ok(run("git", *args, cwd=repo))


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", message)


def release(repo: Path, tag: str) -> Path:
    """Commit everything in the template repository and tag it, as a maintainer releases."""
    git(repo, "add", "--all")
    # from a clean checkout the working tree may be HEAD already: the release is then empty
    git(repo, "commit", "--quiet", "--allow-empty", "--message", f"Release {tag}")
    git(repo, "tag", tag)
    return repo


def copy_working_tree(source: Path, dst: Path) -> None:
    """The files git would commit in source now: tracked and new, ignored ones left out."""
    for name in sorted(committable(source)):
        if (source / name).is_file():  # a tracked file deleted but not yet committed is skipped
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dst / name)


def template_repo(dst: Path, tag: str = "v1.0.0") -> Path:
    """This repository's working tree as a template repository released as tag."""
    dst.mkdir()
    copy_working_tree(ROOT, dst)
    git(dst, "init", "--quiet")
    return release(dst, tag)


def generate(template: Path, dst: Path, tag: str) -> Path:
    """Render the project at tag and commit it, as `copier copy` then `git init` would."""
    project = render(dst, template=template, vcs_ref=tag)
    git(project, "init", "--quiet")
    commit(project, "Generate from the template")
    return project


def update(
    project: Path, tag: str, *, trust: bool = False, data: dict[str, str] | None = None
) -> None:
    """`copier update --defaults --vcs-ref tag` (plus `--trust` for a release with _migrations,
    `-d question=answer` for each of data)."""
    run_update(
        project, data=data or {}, defaults=True, overwrite=True, vcs_ref=tag, unsafe=trust,
        quiet=True,
    )  # fmt: skip


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def insert_after_first(path: Path, prefix: str, text: str) -> None:
    """Insert text after the first line that starts with prefix."""
    lines = path.read_text().splitlines(keepends=True)
    at = next(number for number, line in enumerate(lines) if line.startswith(prefix))
    path.write_text("".join([*lines[: at + 1], text, *lines[at + 1 :]]))


def project_files(project: Path) -> Iterator[Path]:
    """Every file in the project but git's own and the virtualenv."""
    for path in sorted(project.rglob("*")):
        parts = path.relative_to(project).parts
        if path.is_file() and parts[0] not in (".git", ".venv"):
            yield path


def conflicts(project: Path) -> list[str]:
    """`path:line` of every conflict marker, and every .rej file, anywhere in the project."""
    found = []
    for path in project_files(project):
        name = path.relative_to(project).as_posix()
        if name.endswith(".rej"):
            found.append(name)
        content = path.read_bytes()
        if b"\0" not in content:
            found.extend(
                f"{name}:{number}"
                for number, line in enumerate(content.splitlines(), start=1)
                if line.startswith((b"<" * 7, b">" * 7))
            )
    return found


def changed(project: Path) -> set[str]:
    """Paths `git status` shows as changed or new since the project's last commit."""
    return {line[3:] for line in git(project, "status", "--porcelain").splitlines()}


def committable(project: Path) -> set[str]:
    """The files `git add --all` would commit in project (a new repository if need be)."""
    if not (project / ".git").exists():
        git(project, "init", "--quiet")
    names = git(project, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    deleted = git(project, "ls-files", "-z", "--deleted")  # cached, but gone from the tree
    return set(filter(None, names.split("\0"))) - set(deleted.split("\0"))


def revisions(project: Path) -> dict[str, bytes]:
    """The revision scripts in a project's (or the template's) migrations/versions/."""
    return {path.name: path.read_bytes() for path in project.glob("migrations/versions/*.py")}


def answers(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return loaded


# THE RELEASED SCHEMA ---------------------------------------------------------------------


def test_the_template_ships_exactly_the_released_revisions() -> None:
    shipped = {path.name for path in (ROOT / VERSIONS).iterdir() if path.name != "__pycache__"}
    assert shipped == RELEASED_REVISIONS == set(revisions(ROOT / "template"))


def test_no_released_revision_was_edited_since_its_first_commit() -> None:
    # every file ever added under migrations/versions/, in this repository's history
    added = git(ROOT, "log", "--diff-filter=A", "--format=%H", "--name-only", "--", str(VERSIONS))
    first_commit: dict[str, str] = {}
    for line in added.splitlines():
        if re.fullmatch(r"[0-9a-f]{40}", line):
            sha = line
        elif line:
            first_commit[line] = sha  # the log runs newest first: the last one seen is the first
    assert {Path(name).name for name in first_commit} >= RELEASED_REVISIONS
    for name, sha in first_commit.items():
        released = git(ROOT, "show", f"{sha}:{name}")
        assert (ROOT / name).is_file(), f"{name}, released in {sha[:8]}, was deleted"
        assert (ROOT / name).read_text() == released, f"{name} changed since {sha[:8]}"
        touched = git(ROOT, "log", "--format=%H", "--", name).split()
        assert touched == [sha], f"{name} was edited in {touched[:-1]}"


def test_the_changelog_names_the_version_in_pyproject() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", changelog, re.MULTILINE)
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert version is not None
    assert released[0] == version.group(1)


# UPDATES -------------------------------------------------------------------------------


def test_an_update_merges_a_release_with_the_users_work_and_the_ci_job_passes(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    install(project)
    ok(run_program(project, "alembic", "upgrade", "head"))

    # the user's work: docs, the skill, the project grown as its README and skill say (models
    # of their own, a relationship on Marker, the revision, a test, rows in every table)
    append(project / "README.md", "\n## Budgets\n\nOne budget per category, in cents.\n")
    append(project / SKILL / "SKILL.md", "\n## This project\n- Amounts are integer cents.\n")
    append(project / ".env.example", "\n# SENTRY_DSN=https://key@sentry.example.com/1\n")
    migration = grow(project)
    (project / SKILL / "references" / "neon.md").unlink()  # not on Neon: deleted for good
    commit(project, "Budgets and notes")  # uv.lock included; .venv and app.db are git-ignored
    modules = ("budget.py", "note.py", "marker_note.py", "marker.py", "__init__.py")
    own = [*(MODELS / name for name in modules), Path("tests/test_budgets.py"), migration]
    own_before = [(project / path).read_bytes() for path in own]

    # the release: changes beside the user's in the same files, a new file, an env.py change
    insert_after_first(template / "template/README.md.jinja", "# ", "\nRelease two says hello.\n")
    insert_after_first(template / SKILL_TEMPLATE / "SKILL.md.jinja", "# ", "\nRelease two.\n")
    insert_after_first(template / "template/.env.example", "#", "# Release two's setting.\n")
    append(template / "template/migrations/env.py.jinja", "# release two\n")
    append(template / SKILL_TEMPLATE / "references" / "neon.md", "\nRelease two.\n")
    backups = SKILL_TEMPLATE / "references" / "backups.md"
    (template / backups).write_text("# Backups\n\nRelease two's new page.\n")
    release(template, "v2.0.0")

    update(project, "v2.0.0")

    assert answers(project)["_commit"] == "v2.0.0"
    assert conflicts(project) == []
    skill = SKILL.as_posix()
    assert changed(project) == {
        ".copier-answers.yml",
        ".env.example",
        "README.md",
        f"{skill}/SKILL.md",
        f"{skill}/references/backups.md",
        "migrations/env.py",
    }
    readme = (project / "README.md").read_text()
    assert "Release two says hello." in readme and "## Budgets" in readme
    skill_md = (project / SKILL / "SKILL.md").read_text()
    assert "Release two." in skill_md and "Amounts are integer cents." in skill_md
    env_example = (project / ".env.example").read_text()
    assert "Release two's setting." in env_example and "SENTRY_DSN" in env_example
    assert (project / "migrations/env.py").read_text().endswith("# release two\n")
    assert (project / SKILL / "references/backups.md").is_file()
    assert not (project / SKILL / "references/neon.md").exists()
    assert [(project / path).read_bytes() for path in own] == own_before

    # the user's data and schema came through
    install(project)
    assert ok(run_program(project, "read-later")) == "['rent', 'groceries']\n"
    ok(run_program(project, "alembic", "upgrade", "head"))
    assert ok(run_program(project, "alembic", "heads")).count("(head)") == 1
    assert ok(run_program(project, "write-once")) == "Wrote marker\n"
    assert ok(run_program(project, "read-later")) == "['rent', 'groceries', 'persistent-check']\n"

    # pushed, it passes its SQLite CI job, step by step: uv.lock, the project's whole suite
    # (the user's test among it), migrations against the models, lint, format and types
    commit(project, "Update to v2.0.0")
    job = workflow(project)["jobs"]["sqlite"]
    outputs = run_steps(project, job, lambda name, value: value)
    assert len(outputs) == len([step for step in job["steps"] if "run" in step]) >= 7
    check_tests_step(outputs, only_for="PostgreSQL only:")
    assert (project / "ci.db").is_file()  # the migrations step's own database, git-ignored
    assert changed(project) == set()


def test_an_edit_on_the_same_lines_leaves_markers_that_the_shipped_check_reports(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    replace_once(project / "README.md", "# Budget Tracker\n", "# Budget Tracker, by the Smiths\n")
    commit(project, "Our title")
    replace_once(
        template / "template/README.md.jinja",
        "# {{ project_name }}\n",
        "# {{ project_name }}, made with SQLAlchemy\n",
    )
    release(template, "v2.0.0")

    update(project, "v2.0.0")  # returns normally: copier reports no conflict

    assert answers(project)["_commit"] == "v2.0.0"
    markers = conflicts(project)
    assert markers and all(hit.startswith("README.md:") for hit in markers)
    assert git(project, "status", "--porcelain", "README.md").startswith("UU ")
    diff_check = run("git", "diff", "--check", cwd=project)
    assert diff_check.returncode != 0 and "leftover conflict marker" in diff_check.stdout
    install(project)
    shipped_check = ("pytest", "-q", "-p", "no:cacheprovider", SHIPPED_CHECK)
    reported = run_program(project, *shipped_check)
    assert reported.returncode == 1
    for hit in markers:
        assert hit in reported.stdout

    # resolved as docs/updating.md says: keep the right lines, drop the markers, git add
    readme = (project / "README.md").read_text()
    resolved = re.sub(
        r"^<{7} .*?^={7}\n.*?^>{7} .*?\n",
        "# Budget Tracker, by the Smiths\n",
        readme,
        flags=re.MULTILINE | re.DOTALL,
    )
    (project / "README.md").write_text(resolved)
    git(project, "add", "README.md")
    assert conflicts(project) == []
    ok(run_program(project, *shipped_check))
    ok(run("git", "diff", "HEAD", "--check", cwd=project))


def test_a_release_that_renames_a_file_moves_the_users_edits_with_it(tmp_path: Path) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    users_test = "\n\ndef test_our_own_check() -> None:\n    assert True\n"
    append(project / "tests/dbkit/test_persistence.py", users_test)
    commit(project, "Our test")

    # release two renames the file; copier alone would delete it, edits and all
    git(
        template,
        "mv",
        "template/tests/dbkit/test_persistence.py.jinja",
        "template/tests/dbkit/test_proof.py.jinja",
    )
    append(
        template / "copier.yml",
        """
_migrations:
  - version: v2.0.0
    when: "{{ _stage == 'before' }}"
    command: >-
      test ! -f tests/dbkit/test_persistence.py
      || cp tests/dbkit/test_persistence.py tests/.renamed
  - version: v2.0.0
    when: "{{ _stage == 'after' }}"
    command: test ! -f tests/.renamed || mv tests/.renamed tests/dbkit/test_proof.py
""",
    )
    release(template, "v2.0.0")

    with pytest.raises(UnsafeTemplateError):
        update(project, "v2.0.0")  # a release with _migrations needs --trust
    assert changed(project) == set()
    update(project, "v2.0.0", trust=True)

    assert answers(project)["_commit"] == "v2.0.0"
    assert conflicts(project) == []
    assert changed(project) == {
        ".copier-answers.yml",
        "tests/dbkit/test_persistence.py",
        "tests/dbkit/test_proof.py",
    }
    assert not (project / "tests/dbkit/test_persistence.py").exists()
    assert (project / "tests/dbkit/test_proof.py").read_text().endswith(users_test)


def test_a_project_from_the_first_commit_updates_to_the_working_tree(tmp_path: Path) -> None:
    history = tmp_path / "template"
    git(tmp_path, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(history))
    for tag in git(history, "tag", "--list").split():
        git(history, "tag", "--delete", tag)
    first = git(history, "log", "--diff-filter=A", "--format=%H", "--", "copier.yml").split()[-1]
    git(history, "tag", "v0.0.0", first)
    project = generate(history, tmp_path / "budget-tracker", "v0.0.0")
    install(project)
    ok(run_program(project, "alembic", "upgrade", "head"))
    ok(run_program(project, "write-once", "from-the-first-commit"))
    commit(project, "uv.lock")
    shipped = revisions(project)

    # the working tree, committed on top of history and released as the changelog's version
    for name in git(history, "ls-files", "-z").split("\0"):
        if name:
            (history / name).unlink()
    copy_working_tree(ROOT, history)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = re.search(r"^## \[(\d[^\]]*)\]", changelog, re.MULTILINE)
    assert version is not None
    release_tag = f"v{version.group(1)}"
    release(history, release_tag)

    update(project, release_tag, trust=True)

    assert answers(project)["_commit"] == release_tag
    assert conflicts(project) == []
    assert revisions(project) == shipped == revisions(ROOT / "template")
    # file for file what a new project gets (whose own suite the CI job tests run), but for
    # uv.lock and the files an update never writes (_skip_if_exists: the user's from the start)
    fresh = render(tmp_path / "fresh" / project.name, template=history, vcs_ref=release_tag)
    assert committable(project) == committable(fresh) | {"uv.lock"}
    skip_if_exists = yaml.safe_load((ROOT / "copier.yml").read_text())["_skip_if_exists"]
    users = {name.replace("{{ package_name }}", "budget_tracker") for name in skip_if_exists}
    differ = {
        name
        for name in committable(fresh)
        if (project / name).read_bytes() != (fresh / name).read_bytes()
    }
    assert differ - users == set()
    # the user's models/__init__.py from the first commit still imports: alembic reads it below
    install(project)
    ok(run_program(project, "alembic", "upgrade", "head"))
    ok(run_program(project, "alembic", "check"))
    assert ok(run_program(project, "read-later")) == "['from-the-first-commit']\n"


# CHANGING AN ANSWER ----------------------------------------------------------------------


def test_switching_to_postgresql_adds_the_driver_and_touches_nothing_of_the_users(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    assert answers(project)["database"] == "sqlite"
    install(project)
    ok(run_program(project, "alembic", "upgrade", "head"))
    ok(run_program(project, "write-once", "on-sqlite"))
    append(project / "README.md", "\n## Budgets\n\nOne budget per category, in cents.\n")
    (project / MODELS / "budget.py").write_text(BUDGET_MODEL)
    commit(project, "Our notes, our model, uv.lock")
    untouched = {
        path: path.read_bytes()
        for path in project_files(project)
        if path.name not in ("README.md", "pyproject.toml", ".copier-answers.yml")
    }

    # the same release, one answer changed: `copier update --defaults -d database=postgresql`
    update(project, "v1.0.0", data={"database": "postgresql"})

    assert answers(project)["database"] == "postgresql"
    assert answers(project)["_commit"] == "v1.0.0"
    assert conflicts(project) == []
    assert changed(project) == {".copier-answers.yml", "README.md", "pyproject.toml"}
    assert {path: path.read_bytes() for path in untouched} == untouched  # app.db included
    readme = (project / "README.md").read_text()
    assert "set up for **PostgreSQL**" in readme and "## Budgets" in readme
    pyproject = (project / "pyproject.toml").read_text()
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]\n", 1)[0]
    assert '"psycopg[binary]>=3.2.3,<4"' in dependencies
    assert 'postgres = ["psycopg[binary]>=3.2.3,<4"]' in pyproject  # the extra stays

    # a plain `uv sync` installs the driver, and keeps it after `uv sync --extra postgres`
    for extras in ((), ("postgres",), ()):
        install(project, *extras)
        ok(run_program(project, "python", "-c", "import psycopg"))
    assert ok(run_program(project, "read-later")) == "['on-sqlite']\n"


def test_switching_neon_previews_on_adds_their_workflow_and_touches_nothing_of_the_users(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    assert answers(project)["neon_previews"] is False
    neon = Path(".github/workflows/neon-preview.yml")
    assert not (project / neon).exists()
    # the user's own: a note in the README and in CI, their own model
    append(project / "README.md", "\n## Budgets\n\nOne budget per category, in cents.\n")
    append(project / ".github/workflows/ci.yml", "# ours: the staging deploy comes next\n")
    (project / MODELS / "budget.py").write_text(BUDGET_MODEL)
    commit(project, "Our notes, our model")
    before = {path: path.read_bytes() for path in project_files(project)}

    # `copier update --defaults -d neon_previews=true`
    update(project, "v1.0.0", data={"neon_previews": "true"})

    assert answers(project)["neon_previews"] is True
    assert conflicts(project) == []
    assert changed(project) == {".copier-answers.yml", neon.as_posix()}
    after = {path: path.read_bytes() for path in project_files(project)}
    answers_file = project / ".copier-answers.yml"
    assert {p: b for p, b in after.items() if p != answers_file and p != project / neon} == {
        p: b for p, b in before.items() if p != answers_file
    }
    assert (project / neon).read_bytes() == (template / "template" / NEON_SOURCE).read_bytes()

    # and off again: the workflow goes, the rest stays
    commit(project, "Neon previews")
    update(project, "v1.0.0", data={"neon_previews": "false"})
    assert changed(project) == {".copier-answers.yml", neon.as_posix()}
    assert not (project / neon).exists()
    assert {path: path.read_bytes() for path in project_files(project)} == before


NEON_SOURCE = Path(".github/workflows/{% if neon_previews %}neon-preview.yml{% endif %}")


def register_budget_model(project: Path) -> None:
    """The user's own model, registered in models/__init__.py as the README says."""
    (project / MODELS / "budget.py").write_text(BUDGET_MODEL)
    replace_once(
        project / MODELS / "__init__.py", "from .marker", "from .budget import Budget\nfrom .marker"
    )
    replace_once(project / MODELS / "__init__.py", '"Base", ', '"Base", "Budget", ')


RENAME_REFUSED = (
    "package_name cannot change on update (budget_tracker -> money): Copier would delete "
    "src/budget_tracker/ and the models in it; rename it yourself (git mv src/budget_tracker "
    "src/money, replace budget_tracker with money in every file, .copier-answers.yml included), "
    "commit, then update"
)
SLUG_REFUSED = (
    "project_slug cannot change on update (budget-tracker -> money-tracker): it is the "
    "distribution name in pyproject.toml and uv.lock; rename it yourself (replace budget-tracker "
    "with money-tracker in pyproject.toml, Dockerfile and .copier-answers.yml, then uv lock), "
    "commit, then update"
)
MOVE_REFUSED = (
    "skills_dir cannot change on update (.claude/skills -> .agents/skills): Copier would delete "
    "the skill in .claude/skills/database-deployment/ with your edits; move it yourself (mkdir -p "
    ".agents/skills && git mv .claude/skills/database-deployment .agents/skills/, replace "
    ".claude/skills with .agents/skills in every file, .copier-answers.yml included), commit, "
    "then update"
)


@pytest.mark.parametrize(
    ("question", "answer", "refusal"),
    [
        ("package_name", "money", RENAME_REFUSED),
        ("project_slug", "money-tracker", SLUG_REFUSED),
        ("skills_dir", ".agents/skills", MOVE_REFUSED),
    ],
)
def test_an_update_that_renames_a_folder_or_the_distribution_is_refused_and_writes_nothing(
    tmp_path: Path, question: str, answer: str, refusal: str
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    register_budget_model(project)
    append(project / SKILL / "SKILL.md", "\n## This project\n- Amounts are integer cents.\n")
    commit(project, "Budgets")
    before = {path: path.read_bytes() for path in project_files(project)}

    with pytest.raises(ValueError, match=f"question '{question}': {re.escape(refusal)}$"):
        update(project, "v1.0.0", data={question: answer})

    assert changed(project) == set()
    assert {path: path.read_bytes() for path in project_files(project)} == before
    assert "from .budget import Budget" in (project / MODELS / "__init__.py").read_text()

    # `copier update --defaults -d question=answer`: status 1, the refusal as the last line
    # (above it, copier's own traceback, as for every answer its validator refuses)
    command = (sys.executable, "-m", "copier", "update", "--defaults", "-d", f"{question}={answer}")
    refused = run(*command, cwd=project)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        f"ValueError: Validation error for question '{question}': {refusal}"
    )
    assert changed(project) == set()


# copier.yml reads the project's answers file only where one can be (a copy does not, nor do
# an update's scratch renders of the old and new release): a missing one would warn
@pytest.mark.filterwarnings("error::copier.errors.MissingFileWarning")
def test_a_package_renamed_by_hand_as_the_refusal_says_updates_with_its_models_registered(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    register_budget_model(project)
    commit(project, "Budgets")
    append(template / "template/src/{{ package_name }}/dbkit/db.py", "# release two\n")
    release(template, "v2.0.0")

    # docs/updating.md, "Rename the package"
    git(project, "mv", "src/budget_tracker", "src/money")
    named = git(project, "grep", "-l", "-z", "budget_tracker").split("\0")
    ok(run("perl", "-pi", "-e", r"s/\bbudget_tracker\b/money/g", *filter(None, named), cwd=project))
    commit(project, "Rename the package to money")
    assert run("git", "grep", "budget_tracker", cwd=project).returncode == 1  # no file names it

    update(project, "v2.0.0")

    assert answers(project)["package_name"] == "money"
    assert conflicts(project) == []
    assert changed(project) == {".copier-answers.yml", "src/money/dbkit/db.py"}
    assert not (project / "src/budget_tracker").exists()
    assert (project / "src/money/dbkit/db.py").read_text().endswith("# release two\n")
    assert "from .budget import Budget" in (project / "src/money/models/__init__.py").read_text()
    # the user's model is still what Alembic sees: autogenerate creates its table, drops nothing
    install(project)
    ok(run_program(project, "alembic", "upgrade", "head"))
    ok(run_program(project, "alembic", "revision", "--autogenerate", "-m", "add budgets"))
    (revision,) = (project / "migrations/versions").glob("*_add_budgets.py")
    upgrade = revision.read_text().split("def downgrade", 1)[0]
    assert 'op.create_table(\n        "budgets",' in upgrade and "drop_table" not in upgrade
    ok(run_program(project, "alembic", "upgrade", "head"))
    ok(run_program(project, "alembic", "check"))
    assert ok(run_program(project, "write-once", "renamed")) == "Wrote marker\n"


def test_a_new_project_name_keeps_the_slug_and_package_it_once_gave(tmp_path: Path) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")

    # project_slug and package_name default to names made from project_name, but an update
    # keeps the recorded ones, so a new name is no rename and nothing is refused
    update(project, "v1.0.0", data={"project_name": "Money Tracker"})

    names = answers(project)["project_slug"], answers(project)["package_name"]
    assert names == ("budget-tracker", "budget_tracker")
    assert changed(project) == {
        ".copier-answers.yml",
        "README.md",
        "src/budget_tracker/__init__.py",
    }
    assert (project / "README.md").read_text().startswith("# Money Tracker\n")


# 0.2.0: THE TEMPLATE'S MACHINERY MOVED INTO dbkit/ --------------------------------------

USERS_COMMAND = '''"""report: how many markers there are (the user's own command)."""

import argparse
from collections.abc import Sequence

from sqlalchemy import func, select

from budget_tracker.dbkit import open_database, report, run
from budget_tracker.models import Marker


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, name="report", description="Count the markers.", work=count, could_not_run=1)


def count(args: argparse.Namespace) -> int:
    with open_database() as sessions, sessions() as session:
        report(f"{session.scalar(select(func.count()).select_from(Marker))} markers")
    return 0
'''
USERS_TEST = "\n\ndef test_ours_still_runs() -> None:\n    assert True\n"


def history_with_tags(tmp_path: Path) -> Path:
    """This repository's history, 0.1.0 tagged at its commit, the working tree released on top
    as the changelog's version (the update's target)."""
    history = tmp_path / "template"
    git(tmp_path, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(history))
    for tag in git(history, "tag", "--list").split():
        git(history, "tag", "--delete", tag)
    git(history, "tag", "v0.1.0", RELEASE_0_1_0)
    return history


def release_working_tree(history: Path) -> str:
    for name in git(history, "ls-files", "-z").split("\0"):
        if name:
            (history / name).unlink()
    copy_working_tree(ROOT, history)
    version = re.search(r"^## \[(\d[^\]]*)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert version is not None
    release(history, f"v{version.group(1)}")
    return f"v{version.group(1)}"


def resolve_keeping_both(path: Path) -> None:
    """Each conflict resolved as release's lines, then the user's (a later line wins)."""
    text = re.sub(
        r"^<{7} before updating\n(.*?)^(?:\|{7}.*?\n.*?)?={7}\n(.*?)^>{7} after updating\n",
        lambda block: block[2] + block[1],
        path.read_text(),
        flags=re.MULTILINE | re.DOTALL,
    )
    path.write_text(text)


RELEASE_0_1_0 = "f9cc5abc6e58817cf4b6f9978c2851b27d3e5b36"
# the last commit of the flat layout (the template's 21 modules beside the user's models)
FLAT_LAYOUT = "5d68b47"


@pytest.mark.parametrize("start", [RELEASE_0_1_0, FLAT_LAYOUT], ids=["from-0.1.0", "from-flat"])
def test_an_update_into_dbkit_keeps_the_users_model_rows_command_test_and_edit(
    tmp_path: Path, start: str
) -> None:
    history = history_with_tags(tmp_path)
    project = generate(history, tmp_path / "budget-tracker", start)
    install(project)
    ok(run_program(project, "alembic", "upgrade", "head"))
    # the user's work: a model with a revision, rows, a module with a command, a test, and a
    # tuned constant in one of the template's modules
    register_budget_model(project)
    ok(run_program(project, "alembic", "revision", "--autogenerate", "-m", "Add budgets"))
    ok(run_program(project, "alembic", "upgrade", "head"))
    ok(run_program(project, "write-once", "kept-across-the-update"))
    (project / "src/budget_tracker/report.py").write_text(USERS_COMMAND)
    replace_once(project / "src/budget_tracker/db.py", "CONNECT_TIMEOUT = 5", "CONNECT_TIMEOUT = 7")
    append(project / "tests/test_persistence.py", USERS_TEST)
    commit(project, "Our budgets, report and tuning")
    revision = next((project / "migrations/versions").glob("*add_budgets.py"))

    update(project, release_working_tree(history), trust=True)

    # where the release changed the lines around the user's (0.1.0's db.py since; the end of
    # test_persistence.py, where both added tests), git reports the file as unmerged: every
    # marker is in a file git reports, and the user resolves them as docs/updating.md says
    unmerged = git(project, "diff", "--name-only", "--diff-filter=U").split()
    assert {found.split(":")[0] for found in conflicts(project)} == set(unmerged)
    assert set(unmerged) <= {"src/budget_tracker/dbkit/db.py", "tests/dbkit/test_persistence.py"}
    if start == RELEASE_0_1_0:
        assert "src/budget_tracker/dbkit/db.py" in unmerged
    if unmerged:
        for name in unmerged:
            resolve_keeping_both(project / name)
        install(project)
        ok(run_program(project, "ruff", "format", *unmerged))
        git(project, "add", *unmerged)
    assert conflicts(project) == []
    kit = project / "src/budget_tracker/dbkit"
    assert "CONNECT_TIMEOUT = 7" in (kit / "db.py").read_text()
    assert USERS_TEST.strip() in (project / "tests/dbkit/test_persistence.py").read_text()
    assert (project / "src/budget_tracker/report.py").read_text() == USERS_COMMAND
    assert revision.exists() and (project / MODELS / "budget.py").read_text() == BUDGET_MODEL
    # the package root: the user's files and the one template subpackage
    root = {path.name for path in (project / "src/budget_tracker").iterdir()} - {"__pycache__"}
    assert root == {"__init__.py", "models", "dbkit", "report.py"}
    # the user's command, registered as the README says, runs on the kept rows
    replace_once(
        project / "pyproject.toml",
        "[project.scripts]\n",
        '[project.scripts]\nreport = "budget_tracker.report:main"\n',
    )
    install(project)
    ok(run_program(project, "alembic", "check"))
    assert ok(run_program(project, "read-later")) == "['kept-across-the-update']\n"
    assert ok(run_program(project, "report")) == "1 markers\n"
    ok(run_program(project, "pytest", "-q", "-p", "no:cacheprovider", "-m", "not dbkit"))
    ok(
        run_program(
            project, "pytest", "-q", "-p", "no:cacheprovider", "tests/dbkit/test_persistence.py"
        )
    )


def test_a_users_command_and_a_release_that_adds_one_merge_without_a_conflict(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    project = generate(template, tmp_path / "budget-tracker", "v1.0.0")
    # the README's recipe: the user's module, and one line in [project.scripts]
    (project / "src/budget_tracker/report.py").write_text(USERS_COMMAND)
    replace_once(
        project / "pyproject.toml",
        "[project.scripts]\n",
        '[project.scripts]\nreport = "budget_tracker.report:main"\n',
    )
    commit(project, "Our report command")

    # the release adds a command of its own: a module, its cli.py function, its script line
    kit = template / "template/src/{{ package_name }}/dbkit"
    (kit / "db_hello.py").write_text('"""db-hello."""\n')
    append(
        kit / "cli.py", "\n\ndef db_hello(argv: list[str] | None = None) -> int:\n    return 0\n"
    )
    replace_once(
        template / "template/pyproject.toml.jinja",
        'db-migrate = "{{ package_name }}.dbkit.cli:db_migrate"\n',
        'db-migrate = "{{ package_name }}.dbkit.cli:db_migrate"\n'
        'db-hello = "{{ package_name }}.dbkit.cli:db_hello"\n',
    )
    release(template, "v2.0.0")

    update(project, "v2.0.0")

    assert conflicts(project) == []
    scripts = (project / "pyproject.toml").read_text()
    assert 'report = "budget_tracker.report:main"' in scripts
    assert 'db-hello = "budget_tracker.dbkit.cli:db_hello"' in scripts
    assert (project / "src/budget_tracker/report.py").read_text() == USERS_COMMAND
