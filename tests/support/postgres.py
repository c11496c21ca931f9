"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster, loopback only.

The server's cluster is created with ``initdb`` in a temporary folder and run with ``pg_ctl``
on a free loopback port (and a unix socket in the same folder), trusting local connections.
``initdb`` refuses to run as root, so as root the cluster belongs to ``nobody``. When this
machine has no PostgreSQL binaries, Debian's ``postgresql`` package is installed first (as root,
the way the dashboard tests install Chromium): the test command must pass on a fresh machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

#: Where Debian puts each PostgreSQL version's server binaries.
_BINARIES = "/usr/lib/postgresql/*/bin"
_SUPERUSER = "postgres"


def postgres_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``, installing Debian's package if needed.

    Raises:
        RuntimeError: No binaries and no way to install them (not root, no apt-get).
    """
    found = sorted(glob.glob(f"{_BINARIES}/initdb"))
    if not found:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError("the history tests need PostgreSQL: install Debian's postgresql")
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "postgresql"],
        ):
            subprocess.run(command, check=True, capture_output=True, timeout=900, env=environment)
        found = sorted(glob.glob(f"{_BINARIES}/initdb"))
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """One throwaway PostgreSQL cluster; :meth:`start` and :meth:`stop` may be called again."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rapport-pg-")))
    port: int = field(default_factory=_free_port)
    binaries: Path = field(default_factory=postgres_binaries)

    @property
    def _data(self) -> Path:
        return self.folder / "data"

    @property
    def _user(self) -> str | None:
        return "nobody" if os.geteuid() == 0 else None

    def _run(self, *command: str) -> None:
        subprocess.run(
            [str(self.binaries / command[0]), *command[1:]],
            check=True,
            capture_output=True,
            timeout=120,
            user=self._user,
        )

    def create(self) -> None:
        """Create the cluster (its superuser ``postgres``, local connections trusted)."""
        if self._user is not None:
            shutil.chown(self.folder, user=self._user)
        self._run("initdb", "-D", str(self._data), "-U", _SUPERUSER, "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        self._run(
            "pg_ctl", "start", "-w", "-D", str(self._data), "-o", options,
            "-l", str(self.folder / "server.log"),
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server at once (open connections are cut, as in an outage)."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self._data))

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        subprocess.run(
            [str(self.binaries / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self._data)],
            capture_output=True,
            timeout=60,
            user=self._user,
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = _SUPERUSER) -> str:
        """A ``postgresql://`` URL of one database on this server."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """Create an empty database for one test; returns its URL."""
        name = f"rapport_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(self.url())
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)
