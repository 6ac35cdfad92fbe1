"""Real `ats node` processes for integration tests: start, wait ready, kill, restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

READY_RE = re.compile(r"ats node ready: (https?://\S+) origin=([0-9a-f]{64}) size=(\d+)")
START_TIMEOUT_S = 20


class NodeProcess:
    """One node daemon as a child process, on loopback, with its own data folder."""

    def __init__(self, data_dir: str, *, host: str = "127.0.0.1", port: int = 0, env: dict[str, str] | None = None,
                 args: list[str] | None = None):
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.env = env or {}
        self.args = args or []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.origin = ""
        self.stderr_path = os.path.join(data_dir + ".stderr")

    def start(self) -> "NodeProcess":
        # discovery off unless a test asks for it: nodes of one test must not find another test's
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ATS_DISCOVERY": "off", **self.env}
        cmd = [sys.executable, "-m", "node", "node", "--data-dir", self.data_dir, "--host", self.host,
               "--port", str(self.port), *self.args]
        self._stderr = open(self.stderr_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = READY_RE.search(line)
            if m:
                self.url, self.origin = m.group(1), m.group(2)
                if self.port == 0:
                    self.port = int(self.url.rsplit(":", 1)[1])
                return self
        self.kill()
        raise RuntimeError(f"node did not become ready; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        try:
            with open(self.stderr_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if getattr(self, "_stderr", None):
            self._stderr.close()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        self.kill(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.returncode

    def restart(self) -> "NodeProcess":
        self.kill()
        return self.start()

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
