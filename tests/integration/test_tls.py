"""HTTPS on the node's port: two real nodes replicating over TLS on loopback, verifying each other by
a CA bundle and by a pinned certificate; the SDK and CLI verifying; broken certificates refused at start."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest

from node.app import plain_http_warning
from node.config import load
from node.sdk import AgentClient, AtsUnreachable, Auditor
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

OPEN = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_BUDGETS": "false"}
WAIT_S = 30


def openssl(*args: str, cwd: str) -> None:
    path = shutil.which("openssl")
    assert path, "openssl is missing: apt-get install -y openssl"
    run = subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def make_ca(d: str, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)


def make_cert(d: str, ca: str, name: str, ip: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName=IP:{ip},DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


def fingerprint(d: str, name: str) -> str:
    run = subprocess.run(["openssl", "x509", "-in", f"{name}.pem", "-noout", "-fingerprint", "-sha256"], cwd=d,
                         capture_output=True, text=True, timeout=30, check=True)
    return run.stdout.strip().split("=", 1)[1]  # AA:BB:…, as operators copy it


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "ca", "a", "127.0.0.2")
    make_cert(d, "ca", "b", "127.0.0.3")
    return d


def tls_env(pki: str, name: str, **more: str) -> dict[str, str]:
    return {**OPEN, "ATS_TLS_CERT": os.path.join(pki, f"{name}.pem"), "ATS_TLS_KEY": os.path.join(pki, f"{name}.key"),
            **more}


def ats(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ATS_DISCOVERY": "off", **(env or {})})



async def held(url: str, origin: str, ca: str) -> int:
    async with AgentClient(url, bytes(32), tls_ca=ca, retries=0) as client:
        doc = await client.http.json("GET", "/v1/cluster/digest")
    return next((o["size"] for o in doc["origins"] if o["origin"] == origin), 0)


def test_two_nodes_replicate_over_https_verified_by_ca_and_by_pin(pki, tmp_path, nodes):
    ca = os.path.join(pki, "ca.pem")
    a = NodeProcess(str(tmp_path / "a"), host="127.0.0.2", env=tls_env(pki, "a", ATS_TLS_CA=ca)).start()
    nodes.append(a)
    assert a.url.startswith("https://127.0.0.2:")
    # b pins a's certificate (no CA); a verifies b (which it learns by peer exchange) with the CA
    b = NodeProcess(str(tmp_path / "b"), host="127.0.0.3",
                    env=tls_env(pki, "b", ATS_PEERS=a.url, ATS_TLS_PINS=fingerprint(pki, "a"))).start()
    nodes.append(b)

    async def scenario() -> None:
        async with AgentClient(a.url, os.urandom(32), tls_ca=ca) as agent:
            for _ in range(3):
                assert (await agent.submit("act", {"op": "llm.call", "cost": 5, "units": 1}))["status"] == "accepted"
        async with AgentClient(b.url, os.urandom(32), tls_pins=(fingerprint(pki, "b"),)) as agent:
            await agent.submit("act", {"op": "llm.call", "cost": 5, "units": 1})
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if await held(b.url, a.origin, ca) == 3 and await held(a.url, b.origin, ca) == 1:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"no replication over TLS:\nA: {a.stderr()}\nB: {b.stderr()}")

    asyncio.run(scenario())
    checkpoint = ats("checkpoint", "--url", a.url, env={"ATS_TLS_CA": ca})
    assert checkpoint.returncode == 0 and "verified: origin" in checkpoint.stdout, checkpoint.stderr


def test_sdk_and_cli_refuse_a_node_whose_certificate_does_not_verify(pki, tmp_path, nodes):
    a = NodeProcess(str(tmp_path / "a"), host="127.0.0.2", env=tls_env(pki, "a")).start()
    nodes.append(a)

    async def attempts() -> None:
        for kwargs in ({"tls_ca": os.path.join(pki, "other-ca.pem")}, {"tls_pins": (fingerprint(pki, "b"),)}, {}):
            async with Auditor(a.url, retries=0, **kwargs) as auditor:
                with pytest.raises(AtsUnreachable, match="(?i)certificate|fingerprint"):
                    await auditor.checkpoint()

    asyncio.run(attempts())
    wrong = ats("checkpoint", "--url", a.url, env={"ATS_TLS_CA": os.path.join(pki, "other-ca.pem")})
    assert wrong.returncode == 3 and "certificate" in wrong.stderr.lower()
    bad_pin = ats("checkpoint", "--url", a.url, env={"ATS_TLS_PINS": "abc"})
    assert bad_pin.returncode == 2 and "SHA-256 fingerprint" in bad_pin.stderr


def test_broken_certificates_stop_the_node_at_start_with_a_clear_message(pki, tmp_path):
    data = tmp_path / "n"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ({"ATS_TLS_CERT": str(junk), "ATS_TLS_KEY": os.path.join(pki, "a.key")}, "is not a PEM file"),
        ({"ATS_TLS_CERT": os.path.join(pki, "a.pem"), "ATS_TLS_KEY": os.path.join(pki, "b.key")}, "is not the key of"),
        ({"ATS_TLS_CERT": os.path.join(pki, "a.pem"), "ATS_TLS_KEY": str(tmp_path / "missing.key")}, "No such file"),
        ({"ATS_TLS_CERT": os.path.join(pki, "a.pem")}, "tls_cert and tls_key go together"),
        ({"ATS_TLS_CA": str(junk)}, "tls_ca"),
    ]
    for env, message in cases:
        run = ats("node", "--data-dir", str(data), "--port", "0", env=env)
        assert run.returncode == 2 and message in run.stderr, (env, run.stderr)
    assert not os.path.exists(data / "ledger.sqlite") and not os.path.exists(data / "node.key")


def test_plain_http_off_loopback_is_warned_about_at_start():
    assert plain_http_warning(load(None, {"ATS_LISTEN_HOST": "127.0.0.1"})) is None
    assert plain_http_warning(load(None, {"ATS_LISTEN_HOST": "::1"})) is None
    warning = plain_http_warning(load(None, {"ATS_LISTEN_HOST": "0.0.0.0"}))
    assert warning and "without TLS" in warning and "tls_cert" in warning
    assert plain_http_warning(load(None, {"ATS_LISTEN_HOST": "0.0.0.0", "ATS_TLS_CERT": "c", "ATS_TLS_KEY": "k"})) is None
