"""PgBouncer in transaction mode in front of the tests' PostgreSQL server, root-safe.

What Neon's pooled host is: each transaction may run on a different server session, so
nothing may outlive a transaction (prepared statements, session settings, a COPY left open).
PgBouncer refuses to run as root, so as root it runs as the server's user, like the server.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.postgres import PASSWORD, ROLE, PostgresServer, free_port

CONFIG = """\
[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
pool_mode = transaction
auth_type = scram-sha-256
auth_file = {base}/userlist.txt
logfile = {base}/pgbouncer.log
pidfile = {base}/pgbouncer.pid
max_client_conn = 200
default_pool_size = 20
"""


@dataclass
class PgBouncer:
    base: Path
    port: int

    def url(self, database: str) -> str:
        """The URL of a database through the pooler, the password URL-encoded."""
        return f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        pidfile = self.base / "pgbouncer.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 15)
            for _ in range(100):  # it removes its pidfile as it exits
                if not pidfile.exists():
                    break
                time.sleep(0.05)
        shutil.rmtree(self.base, ignore_errors=True)


def find_pgbouncer() -> Path:
    """The pgbouncer binary: PATH first, then where Debian puts it (/usr/sbin)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if not found:
        raise FileNotFoundError("no pgbouncer on this machine (apt-get install -y pgbouncer)")
    return Path(found)


def start_pgbouncer(server: PostgresServer) -> PgBouncer:
    """Start PgBouncer on a free loopback port, in transaction mode, in front of server."""
    binary = find_pgbouncer()
    base = Path(tempfile.mkdtemp(prefix="template-tests-pgbouncer-"))
    bouncer = PgBouncer(base=base, port=free_port())
    # the auth file holds the password itself: PgBouncer checks the client's SCRAM exchange
    # with it and logs in to the server with it (a '"' would be written twice)
    (base / "userlist.txt").write_text(f'"{ROLE}" "{PASSWORD.replace(chr(34), chr(34) * 2)}"\n')
    (base / "pgbouncer.ini").write_text(
        CONFIG.format(server_port=server.port, port=bouncer.port, base=base)
    )
    command = [str(binary), "-d", "-q", str(base / "pgbouncer.ini")]
    if server.os_user:
        for path in (base, base / "userlist.txt", base / "pgbouncer.ini"):
            shutil.chown(path, user=server.os_user)
        command = ["runuser", "-u", server.os_user, "--", *command]
    os.chmod(base / "userlist.txt", 0o600)
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise subprocess.SubprocessError(f"pgbouncer did not start: {result.stderr.strip()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), timeout=1).close()
            return bouncer
        except OSError:
            time.sleep(0.1)
    log = (base / "pgbouncer.log").read_text() if (base / "pgbouncer.log").exists() else ""
    bouncer.stop()
    raise subprocess.SubprocessError(f"pgbouncer is not listening after 30 s: {log[-500:]}")


__all__ = ["PgBouncer", "start_pgbouncer"]
