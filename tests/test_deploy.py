"""Outside the source folder: a wheel that migrates its database, and the container's steps.

An installed copy has no project folder: it finds its migrations in the package, and it needs
DATABASE_URL. The Dockerfile's uv commands and CMD run here as written, in a copy of the
project reduced to its virtualenv, as the image's final stage is (no container engine needed).
"""

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import UV, database_name, ok, render, run
from tests.postgres import PostgresServer


def no_project_folder(program: Path, env: dict[str, str], cwd: Path) -> str:
    """One line from a program that has no DATABASE_URL and no project folder to fall back on."""
    result = run(program, cwd=cwd, env=env)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default project built as a wheel, the way `uv build` builds it."""
    project = render(tmp_path_factory.mktemp("wheel") / "budget-tracker")
    dist = project.parent / "dist"
    ok(run(UV, "build", "--quiet", "--out-dir", dist, cwd=project))
    (built,) = dist.glob("*.whl")
    return built


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_installed_wheel_migrates_and_proves_from_an_empty_folder(
    backend: str,
    wheel: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    ok(run(UV, "venv", "--quiet", venv, cwd=tmp_path))
    extra = [f"{wheel}[postgres]"] if backend == "postgresql" else [str(wheel)]
    bin_dir = venv / "bin"
    ok(run(UV, "pip", "install", "--quiet", "--python", bin_dir / "python", *extra, cwd=tmp_path))

    assert "DATABASE_URL is not set" in no_project_folder(bin_dir / "db-migrate", {}, empty)
    assert "relative SQLite path" in no_project_folder(
        bin_dir / "write-once", {"DATABASE_URL": "sqlite:///app.db"}, empty
    )

    if backend == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        new_database: Callable[[str], str] = request.getfixturevalue("new_database")
        url = postgres.url(new_database("wheel"))
    else:
        url = f"sqlite:///{tmp_path / 'data' / 'app.db'}"
        (tmp_path / "data").mkdir()
    env = {"DATABASE_URL": url}
    at_head = f"Database at head: 0001 ({database_name(url)})\n"
    assert ok(run(bin_dir / "db-migrate", cwd=empty, env=env)) == at_head
    assert ok(run(bin_dir / "db-migrate", cwd=empty, env=env)) == at_head
    assert ok(run(bin_dir / "write-once", cwd=empty, env=env)) == "Wrote marker\n"
    assert ok(run(bin_dir / "read-later", cwd=empty, env=env)) == "['persistent-check']\n"
    assert "FAIL" not in ok(run(bin_dir / "db-verify", cwd=empty, env=env))
    assert list(empty.iterdir()) == []  # nothing written where it ran

    # db-evidence writes its bundle where it runs, never inside the virtualenv, and records
    # no commit: the installed code is no checkout's
    bundle = Path(ok(run(bin_dir / "db-evidence", cwd=empty, env=env)).strip())
    assert bundle.parent == empty / "evidence"
    assert json.loads((bundle / "evidence.json").read_text())["git"] == {
        "commit": None,
        "dirty": None,
    }
    assert not list(venv.rglob("evidence.json"))
    tests = run(bin_dir / "db-evidence", "--run-tests", cwd=empty, env=env)
    assert (tests.returncode, tests.stdout) == (2, "")
    assert tests.stderr == (
        "db-evidence: error: --run-tests runs the project's test suite, which an installed "
        "copy does not carry; run it in the project's source checkout, or leave it out\n"
    )
    assert "DATABASE_URL is set but empty" in no_project_folder(
        bin_dir / "read-later", {"DATABASE_URL": ""}, empty
    )


def dockerfile_steps(dockerfile: str) -> tuple[list[str], str]:
    """The `uv sync` commands of the RUN instructions, without their mounts, and the CMD."""
    instructions = re.sub(r"\\\n\s*", " ", dockerfile)
    syncs = [
        re.sub(r"--mount=\S+\s*", "", line.removeprefix("RUN ")).strip()
        for line in instructions.splitlines()
        if line.startswith("RUN ") and "uv sync" in line
    ]
    (cmd,) = re.findall(r'^CMD \["sh", "-c", "(.+)"\]$', dockerfile, re.MULTILINE)
    return syncs, cmd


def test_the_images_uv_commands_and_cmd_run_as_written(
    tmp_path: Path, postgres: PostgresServer, new_database: Callable[[str], str]
) -> None:
    project = render(tmp_path / "budget-tracker")
    ok(run(UV, "lock", "--quiet", cwd=project))  # committed with the project, as CI asks
    ignored = (project / ".dockerignore").read_text().split()
    assert {".env", "*.db", ".venv/", ".git/"} <= set(ignored)
    syncs, cmd = dockerfile_steps((project / "Dockerfile").read_text())
    assert len(syncs) == 2 and all("--locked" in sync and "--no-dev" in sync for sync in syncs)
    assert "--no-editable" in syncs[-1]

    # the build stage: /app is the project; the image keeps /app/.venv and nothing else
    app = tmp_path / "app"
    shutil.copytree(project, app)
    for sync in syncs:
        ok(run("bash", "-c", sync.replace("uv ", f"{UV} ", 1), cwd=app))
    for path in app.iterdir():
        if path.name != ".venv":
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def in_image(command: str, url: str) -> "subprocess.CompletedProcess[str]":
        # the image's ENV: the virtualenv first on PATH; DATABASE_URL from `docker run -e`
        path = f"{app / '.venv' / 'bin'}:/usr/bin:/bin"
        return run("sh", "-c", command, cwd=app, env={"DATABASE_URL": url, "PATH": path})

    url = postgres.url(new_database("image"))
    at_head = f"Database at head: 0001 ({database_name(url)})\n"
    assert ok(in_image(cmd, url)) == f"{at_head}[]\n"
    ok(in_image("write-once", url))
    assert ok(in_image(cmd, url)) == f"{at_head}['persistent-check']\n"
    assert "DATABASE_URL is set but empty" in in_image(cmd, "").stderr
