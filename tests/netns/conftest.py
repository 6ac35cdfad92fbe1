"""The `cluster` fixture: a factory of Clusters (tests/netns/cluster.py), torn down after the test.

These tests need root and `ip netns`. They are never skipped: without them every test here
fails with a message saying what is missing (CI runs the suite as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.netns.cluster import Cluster


def require_netns() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append(f"must run as root (euid is {os.geteuid()}): the tests create network namespaces")
    if shutil.which("ip") is None:
        problems.append("the `ip` command (iproute2) is not installed")
    else:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            problems.append(f"`ip netns list` failed: {r.stderr.strip()}")
    if shutil.which("bridge") is None:
        problems.append("the `bridge` command (iproute2) is not installed")
    if problems:
        pytest.fail("tests/netns cannot run here:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def cluster(tmp_path):
    """cluster(n=3, env=None, node_env=None) -> a started Cluster; all are torn down after the test."""
    require_netns()
    made: list[Cluster] = []

    def make(n: int = 3, **kwargs) -> Cluster:
        c = Cluster(n, base_dir=str(tmp_path / f"cluster{len(made)}"), **kwargs)
        made.append(c)
        return c.up()

    yield make
    errors = []
    for c in reversed(made):
        try:
            c.teardown()
        except Exception as e:  # tear the others down all the same
            errors.append(e)
    if errors:
        raise errors[0]
