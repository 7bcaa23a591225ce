"""A throwaway PostgreSQL server for the tests: initdb, pg_ctl and psql, root-safe.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# a role whose password needs URL-encoding and would break configparser interpolation
ROLE = "app_user"
PASSWORD = "s3cr%t@p:ss/w0rd"


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int
    os_user: str | None  # run server commands as this user (when we are root)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    def url(self, database: str, password: str = PASSWORD, user: str = ROLE) -> str:
        """A URL the way people paste it: postgresql://, the password URL-encoded."""
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the server's private socket."""
        result = subprocess.run(
            [self.bin_dir / "psql", "-h", self.base, "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise subprocess.SubprocessError(result.stderr.strip())
        return result.stdout.strip()

    def tables(self, database: str) -> str:
        """The public tables in database, by name, comma-separated."""
        return self.psql(
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
            "WHERE schemaname = 'public'",
            database,
        )

    def plant_users_table(self, database: str) -> None:
        """A table of the user's own beside the project's, no model mapping it, with a row."""
        self.psql("CREATE TABLE keep_me (note text); INSERT INTO keep_me VALUES ('keep')", database)

    def users_data(self, database: str) -> str:
        """What must survive in a user's database: markers' names, the planted table's rows,
        the Alembic revision and the tables, as one string to compare before and after."""
        rows = self.psql(
            "SELECT (SELECT string_agg(name, ',' ORDER BY id) FROM markers), "
            "(SELECT string_agg(note, ',') FROM keep_me), "
            "(SELECT string_agg(version_num, ',') FROM alembic_version)",
            database,
        )
        return f"{rows}|{self.tables(database)}"

    def create_database(self, name: str) -> str:
        """A new empty database owned by the test role; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return self.url(name)

    def stop(self) -> None:
        self._as_server_user(
            [self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", "immediate", "stop"]
        )
        shutil.rmtree(self.base, ignore_errors=True)

    def _as_server_user(self, command: list[object]) -> None:
        args = [str(part) for part in command]
        if self.os_user:
            args = ["runuser", "-u", self.os_user, "--", *args]
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise subprocess.SubprocessError(f"{' '.join(args)}: {result.stderr.strip()}")


def find_bin_dir() -> Path:
    """Where initdb and pg_ctl are: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not found:
        raise FileNotFoundError("no PostgreSQL server binaries (pg_ctl, initdb) on this machine")
    return Path(found[0]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_postgres(
    port: int | None = None, role: str = ROLE, password: str = PASSWORD
) -> PostgresServer:
    """initdb a new cluster in a temporary folder and start it on a free loopback port (or
    port), with a login role that may create databases."""
    bin_dir = find_bin_dir()
    os_user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="template-tests-pg-"))
    if os_user:
        shutil.chown(base, user=os_user)
    server = PostgresServer(bin_dir=bin_dir, base=base, port=port or free_port(), os_user=os_user)
    server._as_server_user([
        bin_dir / "initdb", "-D", server.data_dir, "-U", "postgres", "--no-sync",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
    ])  # fmt: skip
    options = f"-p {server.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    server._as_server_user([
        bin_dir / "pg_ctl", "-D", server.data_dir, "-o", options, "-l", base / "server.log",
        "-w", "-t", "60", "start",
    ])  # fmt: skip
    server.psql(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    return server


__all__ = ["PASSWORD", "ROLE", "PostgresServer", "free_port", "start_postgres"]
