"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, ``initdb`` into
a temporary directory, ``postgres`` on a free port of 127.0.0.1, password authentication
over TCP (the reconciler reads its password from a file, as in production).

The server refuses to run as root: as root, the cluster's directory is given to the
``postgres`` user (the Debian package makes it) and the server runs as that user.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

USER = "reconciler"
PASSWORD = "s3cret-for-tests"  # a throwaway cluster's


def _bindir() -> Path:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path is None:
        raise RuntimeError("no PostgreSQL server: apt-get install postgresql")
    return Path(on_path).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """One cluster: :meth:`start`, :meth:`stop`, :meth:`restart`, :meth:`new_database`."""

    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def password_file(self) -> Path:
        return self.base / "password"

    def _as_owner(self) -> dict[str, str]:
        return {"user": "postgres"} if os.geteuid() == 0 else {}

    @classmethod
    def create(cls) -> PgCluster:
        """A cluster in a new temporary directory that the ``postgres`` user can reach
        (pytest's own temporary directories are private to root)."""
        import tempfile

        top = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
        top.chmod(0o711)
        cluster = cls(top / "cluster")
        cluster.init()
        return cluster

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(PASSWORD + "\n")
        pwfile = self.base / "initdb-password"
        pwfile.write_text(PASSWORD + "\n")
        (self.base / "sockets").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(pwfile, "postgres")
            shutil.chown(self.base / "sockets", "postgres")
        subprocess.run(
            [str(_bindir() / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120, **self._as_owner(),  # type: ignore[arg-type]
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        log = (self.base / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [str(_bindir() / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.base / "sockets"), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"],
            stdout=log, stderr=log, **self._as_owner(),  # type: ignore[call-overload]
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.connect("postgres"):
                    return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start: {(self.base / 'server.log').read_text()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, nothing is lost."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, down: float = 0.0) -> None:
        """Stop, stay down ``down`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down)
        self.start()

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=database,
            autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def url(self, database: str) -> str:
        """The URL the reconciler is configured with (its password is in password_file)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def state_config(self, database: str, **extra: object) -> dict[str, object]:
        """The host config's ``state`` section for ``database``."""
        return {"url": self.url(database), "password_file": str(self.password_file), **extra}

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base.parent, ignore_errors=True)
