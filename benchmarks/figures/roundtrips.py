"""Round trips per command on PostgreSQL, counted exactly, beside issue 26's limits.

scripts/roundtrip_proxy.py sits between each command and the server and counts request and
response turn-arounds from the protocol's messages: a count, not a timing, so it is the same
on any machine. On a remote database a short command takes about its round trips times the
latency; the notes give that at 20 ms (a nearby Neon region) and 100 ms (another continent).
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.helpers import project_env
from tests.postgres import PostgresServer

from .runner import SCRIPTS, Command, Figure, check, step

# issue 26's limits, at SCRAM without TLS, on a database holding one marker
# (db-migrate's at head, over all its connections)
LIMITS = {"write-once": 6, "read-later": 6, "db-migrate": 9, "db-verify": 32, "db-evidence": 46}
LATENCIES_MS = (20, 100)


def proxy_module() -> ModuleType:
    """scripts/roundtrip_proxy.py, a script rather than a package, loaded from its file."""
    spec = importlib.util.spec_from_file_location("roundtrip_proxy", SCRIPTS / "roundtrip_proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("roundtrip_proxy", module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def round_trip_figures(
    tmp: Path, project: Path, bin_dir: Path, server: PostgresServer, notes: list[str]
) -> list[Figure]:
    """Each command's round trips and connections through the counter, beside its limit."""
    step("PostgreSQL: round trips per command, counted through a protocol proxy")
    server.create_database("round_trips")
    commands: dict[str, Command] = {
        "write-once": [bin_dir / "write-once"],
        "read-later": [bin_dir / "read-later"],
        "db-migrate": [bin_dir / "db-migrate"],  # at head: nothing to apply
        "db-verify": [bin_dir / "db-verify"],
        "db-evidence": [bin_dir / "db-evidence", "--output", tmp / "round-trips-bundle"],
    }
    figures, estimates = [], []
    with proxy_module().RoundTripProxy(server.port) as proxy:
        url = server.url("round_trips").replace(f":{server.port}/", f":{proxy.port}/")
        env = project_env({"DATABASE_URL": url})
        check([bin_dir / "alembic", "upgrade", "head"], cwd=project, env=env)
        for name, command in commands.items():
            counts = counted(proxy, command, project, env)
            trips = counts["round_trips"]
            figures.append(
                Figure(
                    f"{name} round trips (PostgreSQL, SCRAM, one marker)",
                    f"{trips} in {counts['connections']} connection(s)",
                    f"limit {LIMITS[name]}",
                    trips / LIMITS[name],
                    1.0,
                )
            )
            at = ", ".join(f"{trips * ms / 1000:.2f} s at {ms} ms" for ms in LATENCIES_MS)
            estimates.append(f"{name} {at}")
    notes.append(
        "network time on a remote database (round trips x latency): " + "; ".join(estimates)
    )
    return figures


def counted(proxy: Any, command: Command, project: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run command through proxy; its round trips and connections."""
    proxy.reset()
    check(command, cwd=project, env=env)
    return dict(proxy.counts())
