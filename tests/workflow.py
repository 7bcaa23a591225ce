"""The generated project's workflows, read, and their jobs' `run:` steps run as a runner would.

The `uses:` steps are the runner's part: the checkout is the project folder, and uv is on PATH;
the files a runner gives each step (GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, RUNNER_TEMP) are in a
folder beside the project.
"""

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import UV, run

WORKFLOWS = Path(".github/workflows")
WORKFLOW = WORKFLOWS / "ci.yml"
RELEASE = WORKFLOWS / "release.yml"
NEON = WORKFLOWS / "neon-preview.yml"  # neon_previews=true only
# the steps that run the project's tests: pytest itself, or db-evidence running it
TESTS = re.compile(r"^uv run (pytest|db-evidence --run-tests)\b", re.MULTILINE)


def workflow(project: Path, path: Path = WORKFLOW) -> dict[Any, Any]:
    # Any keys: PyYAML reads the key `on` as True
    loaded: dict[Any, Any] = yaml.safe_load((project / path).read_text())
    return loaded


def runner_files(project: Path) -> Path:
    """The folder of the files a runner gives the steps: output, summary and temp/."""
    return project.parent / f"{project.name}-runner"


def path_with_uv(project: Path) -> str:
    """PATH with uv in front, as setup-uv leaves it; nothing else of the template's tools."""
    tools = project.parent / f"{project.name}-tools"
    tools.mkdir(exist_ok=True)
    if not (tools / "uv").exists():
        (tools / "uv").symlink_to(Path(UV).resolve())
    return f"{tools}{os.pathsep}{os.environ['PATH']}"


def run_steps(
    project: Path,
    job: dict[str, Any],
    map_env: Callable[[str, str], str],
    tests_env: dict[str, str] | None = None,
    github: dict[str, str] | None = None,
    stand_ins: Path | None = None,
) -> dict[str, str]:
    """Run the job's `run:` steps in order, as GitHub's bash does; each step's name and output.

    tests_env: variables the machine has set where the tests run, under the job's own.
    github: the runner's own variables the steps read (GITHUB_REF_NAME, ...).
    stand_ins: a folder put first on PATH, for a runner's command this machine cannot run
    (docker, without a daemon).
    """
    outputs = {}
    test_steps = [step for step in job["steps"] if TESTS.search(step.get("run", ""))]
    assert len(test_steps) <= 1, "one step runs the tests (uv run pytest, or db-evidence)"
    files = runner_files(project)
    (files / "temp").mkdir(parents=True, exist_ok=True)
    for name in ("output", "summary.md"):  # each job's own
        (files / name).write_text("")
    runner = {
        "GITHUB_OUTPUT": str(files / "output"),
        "GITHUB_STEP_SUMMARY": str(files / "summary.md"),
        "RUNNER_TEMP": str(files / "temp"),
    }
    for step in job["steps"]:
        if "run" not in step:
            continue
        variables = {**job.get("env", {}), **step.get("env", {})}
        path = path_with_uv(project)
        if stand_ins:
            path = f"{stand_ins}{os.pathsep}{path}"
        env = {"CI": "true", "PATH": path, **runner, **(github or {})}
        if step in test_steps:
            env |= tests_env or {}
        env |= {name: map_env(name, str(value)) for name, value in variables.items()}
        bash = ("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"])
        result = run(*bash, cwd=project, env=env)
        name = step.get("name", step["run"])
        assert result.returncode == 0, (
            f"step {name!r} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        outputs[name] = result.stdout + result.stderr  # db-evidence shows pytest's on stderr
    return outputs


def skip_reasons(pytest_output: str) -> list[str]:
    """Why each skipped test was skipped: only a test for the other database may be."""
    return re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", pytest_output, re.MULTILINE)


# file permissions bind every user but root, as which this machine runs the tests (a
# GitHub runner does not): the tests of an unreadable file or folder skip here, and only here
AS_ROOT = "Not as root:" if os.geteuid() == 0 else None


def check_tests_step(outputs: dict[str, str], only_for: str) -> None:
    """The job's tests step passed, and skipped only tests whose reason starts with only_for
    (the other database's: "PostgreSQL only:" in the SQLite job, "SQLite only:" in the other),
    or, as root, "Not as root:"."""
    tests = next(output for name, output in outputs.items() if name.startswith("Tests"))
    assert re.search(r"\d+ passed", tests), tests
    allowed = tuple(filter(None, (only_for, AS_ROOT)))
    assert all(reason.startswith(allowed) for reason in skip_reasons(tests)), tests
