"""compose.yaml, every generated project's local PostgreSQL: valid Compose, published on this
machine alone, and the README's steps on it, with the URL as the README and .env.example give it.

No Docker daemon runs where these tests run, so the image itself never starts here: in its
place is a real PostgreSQL server (this machine's binaries, tests/postgres.py) given exactly
the settings compose.yaml gives the image (its user, password, database and published port,
read from the file). So these tests check the file's settings, its healthcheck command and the
project's URL on a real server; the image (`postgres:17`, the major version CI and the release
test on) runs in the generated CI's PostgreSQL job, which starts this same file.
"""

import errno
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.compose import COMPOSE, ComposeDatabase, compose_database
from tests.helpers import ok, render, run, start_or_skip
from tests.postgres import PostgresServer, free_port, start_postgres
from tests.workflow import RELEASE, path_with_uv, workflow

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
# the line of .env.example that names the compose database, commented out
LOCAL_LINE = re.compile(r"^# (DATABASE_URL=postgresql://\S+@localhost:\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def postgresql_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project generated for PostgreSQL, as `copier copy` leaves it."""
    return render(tmp_path_factory.mktemp("compose") / "budget-tracker", database="postgresql")


def test_compose_yaml_passes_the_compose_specification(postgresql_project: Path) -> None:
    assert CHECK_JSONSCHEMA.is_file(), "check-jsonschema comes with the template's dev group"
    schema = ("--builtin-schema", "vendor.compose-spec")
    ok(run(CHECK_JSONSCHEMA, *schema, COMPOSE, cwd=postgresql_project))
    # the check can fail: a key Compose does not know is refused
    wrong = postgresql_project.parent / "compose-wrong.yaml"
    wrong.write_text((postgresql_project / COMPOSE).read_text().replace("retries:", "retry:"))
    refused = run(CHECK_JSONSCHEMA, *schema, wrong, cwd=postgresql_project)
    assert refused.returncode == 1 and "retry" in refused.stdout + refused.stderr


def test_every_project_gets_the_same_compose_yaml(
    postgresql_project: Path, default_project: Path
) -> None:
    assert (default_project / COMPOSE).read_text() == (postgresql_project / COMPOSE).read_text()


def test_compose_publishes_postgresql_on_localhost_only_with_a_volume_and_a_healthcheck(
    postgresql_project: Path,
) -> None:
    compose = compose_database(postgresql_project)
    assert compose.image.startswith("postgres:")
    assert (compose.host_ip, compose.port) == ("127.0.0.1", 5432)
    # the data outlives the container, in a named volume, mounted where this major version
    # keeps it (18 moved it up to /var/lib/postgresql)
    (mount,) = compose.service["volumes"]
    volume, target = mount.split(":")
    assert volume in yaml.safe_load((postgresql_project / COMPOSE).read_text())["volumes"]
    data = "/var/lib/postgresql" if int(compose.major_version) >= 18 else "/var/lib/postgresql/data"
    assert target == data
    assert compose.healthcheck == ["pg_isready", "-U", compose.user, "-d", compose.database]
    # the one password the hook passes (on localhost alone), and says what it is for
    assert compose.password == "local-only"


def test_ci_starts_compose_yaml_and_the_release_tests_on_its_major_version(
    postgresql_project: Path,
) -> None:
    compose = compose_database(postgresql_project)
    job = workflow(postgresql_project)["jobs"]["postgresql"]
    assert "services" not in job
    runs = [step.get("run") for step in job["steps"]]
    assert "docker compose up -d --wait" in runs
    urls = [value for step in job["steps"] for value in step.get("env", {}).values()]
    assert urls == [compose.url(), compose.url()]  # the tests', then the migrations'
    # the release keeps its two service containers; they run the same image
    release = workflow(postgresql_project, RELEASE)["jobs"]["build"]["services"]
    assert {service["image"] for service in release.values()} == {compose.image}


def port_is_free(port: int) -> bool:
    """Whether nothing listens on port at localhost, either address."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as sock:
                sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            # no IPv6 on this machine: nothing listens there either
    return True


@pytest.fixture(scope="module")
def compose_server(postgresql_project: Path) -> Iterator[tuple[PostgresServer, ComposeDatabase]]:
    """A real server standing in for compose's image: its user, password and database, on its
    published port (another free one if that is taken here)."""
    compose = compose_database(postgresql_project)
    port = compose.port if port_is_free(compose.port) else free_port()
    server = start_or_skip(
        "PostgreSQL",
        lambda: start_postgres(port=port, role=compose.user, password=compose.password),
    )
    server.psql(f'CREATE DATABASE "{compose.database}" OWNER "{compose.user}"')
    yield server, compose
    server.stop()


def readme_steps(project: Path) -> list[str]:
    """The commands of the README's first block, the PostgreSQL proof, comments dropped."""
    readme = (project / "README.md").read_text()
    section = readme.split("## Prove it on a local PostgreSQL", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line) for line in block.splitlines()]


def test_the_readmes_steps_prove_persistence_on_the_compose_database(
    postgresql_project: Path, compose_server: tuple[PostgresServer, ComposeDatabase]
) -> None:
    server, compose = compose_server
    # this is the machine's PostgreSQL (15 on Debian 12), not the image's major version: what
    # is proved here is the file's settings and the URL; the image runs in the generated CI
    steps = readme_steps(postgresql_project)
    assert steps == [
        "docker compose up -d --wait",
        "cp .env.example .env",
        "uv sync",
        "uv run db-migrate",
        "uv run write-once",
        "uv run read-later",
    ]
    # the healthcheck, given the stand-in's address (in the container it uses the socket):
    # exit 2 where nothing answers, 0 from the server
    pg_isready, *args = compose.healthcheck

    def healthcheck(port: int) -> int:
        where = ("-h", "127.0.0.1", "-p", str(port))
        return run(server.bin_dir / pg_isready, *args, *where, cwd=postgresql_project).returncode

    assert (healthcheck(free_port()), healthcheck(server.port)) == (2, 0)

    # .env.example's local line is compose's database, exactly: one URL, in the file's values
    env_example = (postgresql_project / ".env.example").read_text()
    (line,) = LOCAL_LINE.findall(env_example)
    assert line == f"DATABASE_URL={compose.url()}"
    readme = (postgresql_project / "README.md").read_text()
    assert compose.url() in readme
    # the stand-in's port differs only if 5432 was taken on this machine: then, and only then,
    # the port in the URL is the one thing changed
    used = line if server.port == compose.port else line.replace(
        f"@localhost:{compose.port}/", f"@localhost:{server.port}/"
    )  # fmt: skip

    env = {"PATH": path_with_uv(postgresql_project)}
    outputs = {}
    for step in steps:
        if step.startswith("docker compose"):
            continue  # the stand-in is running (the fixture), healthy (above)
        result = run("bash", "-euc", step, cwd=postgresql_project, env=env)
        outputs[step] = ok(result) + result.stderr
        if step == "cp .env.example .env":
            # what the README's comment asks: uncomment the local DATABASE_URL
            dotenv = postgresql_project / ".env"
            dotenv.write_text(dotenv.read_text().replace(f"# {line}\n", f"{used}\n"))
            assert f"\n{used}\n" in dotenv.read_text()
    migrated = f"Database at head: 0001 (PostgreSQL database {compose.database} on localhost:"
    assert migrated in outputs["uv run db-migrate"]
    assert outputs["uv run read-later"] == "['persistent-check']\n"
    assert server.psql("SELECT string_agg(name, ',') FROM markers", compose.database) == (
        "persistent-check"
    )
