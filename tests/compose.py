"""A rendered project's compose.yaml, read: the PostgreSQL service's image, credentials,
database and published port, as `docker compose up` would hand them to the image."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path("compose.yaml")


@dataclass(frozen=True)
class ComposeDatabase:
    image: str
    user: str
    password: str
    database: str
    host_ip: str  # where the port is published on the host
    port: int  # the host's port
    healthcheck: list[str]  # the command, without Compose's leading "CMD"
    service: dict[str, Any]

    @property
    def major_version(self) -> str:
        """postgres:17 -> 17 (the tag up to its first dot or dash)."""
        tag = self.image.split(":", 1)[1]
        return tag.split(".")[0].split("-")[0]

    def url(self, port: int | None = None) -> str:
        """The URL a user gives for it: localhost, the published port (or port)."""
        return (
            f"postgresql://{self.user}:{self.password}@localhost:{port or self.port}"
            f"/{self.database}"
        )


def compose_database(project: Path) -> ComposeDatabase:
    """The one service of project's compose.yaml, a PostgreSQL."""
    config = yaml.safe_load((project / COMPOSE).read_text())
    (service,) = config["services"].values()
    env = service["environment"]
    (published,) = service["ports"]
    host_ip, host_port, container_port = published.split(":")
    assert container_port == "5432", published
    kind, *command = service["healthcheck"]["test"]
    assert kind == "CMD", service["healthcheck"]
    return ComposeDatabase(
        image=service["image"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        database=env["POSTGRES_DB"],
        host_ip=host_ip,
        port=int(host_port),
        healthcheck=command,
        service=service,
    )
