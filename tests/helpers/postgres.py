"""A throwaway PostgreSQL cluster for tests: ``initdb`` and ``pg_ctl`` in a temporary folder.

The cluster listens on a free loopback port (TCP, password auth) and on a unix
socket inside its own folder, with ``fsync=off``: nothing here must survive a
power cut, but a stopped or crashed server keeps every commit it acknowledged.
``initdb`` and ``pg_ctl`` refuse to run as root, and CI runs as root: then the
cluster runs as ``nobody`` (or a dedicated user made with ``useradd`` where
there is no ``nobody``). Each test gets a database of its
own (``PostgresCluster.new_database``)::

    with throwaway_cluster() as cluster:
        url = cluster.new_database()        # postgresql://postgres:PW@127.0.0.1:PORT/t1

``tests/conftest.py`` wraps it in fixtures: one cluster per pytest(-xdist)
worker, started on first use.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

BINARIES = Path("/usr/lib/postgresql")
# Used when the machine has no ``nobody``: a system user of our own, made once.
OWN_USER = "farmtui-postgres"
SUPERUSER = "postgres"
START_TIMEOUT = 30


class PostgresMissing(Exception):
    """No PostgreSQL server binaries on this machine."""


def server_binaries() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``; else PostgresMissing."""
    found: list[tuple[int, Path]] = []
    for folder in BINARIES.glob("*/bin"):
        version = folder.parent.name
        if version.isdigit() and (folder / "initdb").is_file():
            found.append((int(version), folder))
    if not found:
        raise PostgresMissing(
            f"PostgreSQL is not installed (no {BINARIES}/*/bin/initdb): "
            "`apt-get install postgresql`, or FARMTUI_SKIP_POSTGRES=1 to skip these tests"
        )
    return max(found)[1]


def _cluster_user() -> pwd.struct_passwd | None:
    """Who runs the cluster: None (ourselves) unless we are root, whom initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", OWN_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OWN_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(OWN_USER)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresCluster:
    """A running cluster; ``url`` and ``new_database`` give connection URLs with the password."""

    binaries: Path
    folder: Path
    port: int
    password: str
    user: pwd.struct_passwd | None
    # False: fsync off (tests); True: PostgreSQL's defaults (for measurements).
    durable: bool = False
    _databases: int = field(default=0)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs as the cluster's user; raise with its output."""
        user = self.user
        done = subprocess.run(
            [str(self.binaries / args[0]), *args[1:]],
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            # Not root's HOME or locale: the cluster's user may read neither.
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": "/"},
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stdout} {done.stderr} "
                f"{self.log.read_text() if self.log.exists() else ''}"
            )
        return done

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.folder}",
            "-c max_connections=50",
        ]
        if not self.durable:
            # Commits still wait for their WAL write (not for its fsync): a server
            # stopped with ``-m immediate`` keeps every commit it acknowledged.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self.run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log),
                 "-o", " ".join(options))  # fmt: skip

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: a crash, as far as its data can tell)."""
        self.run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        self._databases += 1
        name = f"t{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def throwaway_cluster(durable: bool = False) -> Iterator[PostgresCluster]:
    """initdb, start, yield, stop and remove. PostgresMissing when there is no PostgreSQL."""
    binaries = server_binaries()
    user = _cluster_user()
    folder = Path(tempfile.mkdtemp(prefix="farmtui-pg-"))
    cluster = PostgresCluster(binaries, folder, _free_port(), secrets.token_hex(12), user, durable)
    try:
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        password_file = folder / "password"
        password_file.write_text(cluster.password + "\n")
        if user is not None:
            os.chown(password_file, user.pw_uid, user.pw_gid)
        cluster.run(
            "initdb", "-D", str(cluster.data), "-U", SUPERUSER, "--no-sync",
            "--no-locale", "--encoding=UTF8", f"--pwfile={password_file}",
            # The socket is ours alone; over TCP the password is checked, as on a farm.
            "--auth-local=trust", "--auth-host=scram-sha-256",
        )  # fmt: skip
        _start_on_a_free_port(cluster)
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if (cluster.data / "postmaster.pid").exists():
                cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _start_on_a_free_port(cluster: PostgresCluster, tries: int = 3) -> None:
    """Start; another process may take the free port between the probe and the start."""
    for attempt in range(tries):
        try:
            cluster.start()
            return
        except RuntimeError as exc:
            in_use = re.search(r"Address already in use|could not bind", str(exc))
            if not in_use or attempt == tries - 1:
                raise
            cluster.port = _free_port()
