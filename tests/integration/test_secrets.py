"""Secrets where operators keep them: keys made by openssl and ssh-keygen, any sane file mode,
environment variables; refusals (encrypted, world-writable, missing) say why and start nothing."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from ledger.signing import public_key_from_seed
from node.config import ConfigError, load
from node.keys import KeyFileError, read_key
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

ACT = '{"op": "llm.call", "cost": 10, "units": 1}'


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: apt-get install -y {'openssh-client' if name == 'ssh-keygen' else name}"
    return path


def run(*cmd: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


def openssl_key(path: str, *extra: str) -> bytes:
    """A PKCS#8 PEM Ed25519 key made by openssl; returns its public key (from openssl itself)."""
    assert run(tool("openssl"), "genpkey", "-algorithm", "ed25519", "-out", path, *extra).returncode == 0
    if extra:
        return b""
    der = subprocess.run([tool("openssl"), "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         capture_output=True, timeout=30, check=True).stdout
    return der[-32:]  # SubjectPublicKeyInfo of Ed25519: a 12-byte header, then the key


def ssh_key(path: str, passphrase: str = "") -> bytes:
    """An OpenSSH ed25519 key made by ssh-keygen; returns its public key (from the .pub file)."""
    made = run(tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", path)
    assert made.returncode == 0, made.stderr
    with open(path + ".pub") as f:
        blob = base64.b64decode(f.read().split()[1])
    return blob[-32:]


def ats(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "node", *args, env={**os.environ, "ATS_DISCOVERY": "off", **(env or {})})


def test_openssl_pkcs8_and_ssh_keygen_keys_read_as_the_same_ed25519_identity(tmp_path):
    pem = str(tmp_path / "node.pem")
    pem_public = openssl_key(pem)
    assert public_key_from_seed(read_key(pem)) == pem_public
    ssh = str(tmp_path / "id_ed25519")
    ssh_public = ssh_key(ssh)
    assert public_key_from_seed(read_key(ssh)) == ssh_public


def test_encrypted_keys_are_refused_with_how_to_decrypt(tmp_path):
    pem = str(tmp_path / "enc.pem")
    openssl_key(pem, "-aes-256-cbc", "-pass", "pass:secret")
    with pytest.raises(KeyFileError, match="encrypted.*openssl pkey"):
        read_key(pem)
    ssh = str(tmp_path / "id_enc")
    ssh_key(ssh, "secret")
    with pytest.raises(KeyFileError, match="encrypted.*ssh-keygen -p"):
        read_key(ssh)
    not_key = tmp_path / "cert.pem"
    not_key.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        read_key(str(not_key))


def test_group_readable_key_is_used_with_a_warning_and_world_writable_is_refused(tmp_path, caplog):
    pem = str(tmp_path / "k.pem")
    pub = openssl_key(pem)
    os.chmod(pem, 0o644)
    with caplog.at_level(logging.WARNING, logger="ats.keys"):
        assert public_key_from_seed(read_key(pem)) == pub
    assert "mode 644" in caplog.text and "readable by others" in caplog.text
    os.chmod(pem, 0o666)
    with pytest.raises(KeyFileError, match="mode 666.*anyone may replace it"):
        read_key(pem)


def test_node_starts_with_a_read_only_mounted_pem_key_and_its_origin_is_that_key(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    pem = str(secrets / "node.pem")
    pub = openssl_key(pem)
    os.chmod(pem, 0o444)
    os.chmod(secrets, 0o555)  # as a read-only secret mount
    try:
        node = NodeProcess(str(tmp_path / "n"), env={"ATS_NODE_KEY_FILE": pem}).start()
        try:
            assert node.origin == pub.hex()
        finally:
            node.kill()
        assert not os.path.exists(tmp_path / "n" / "node.key"), "an explicit key file must not be copied or created"
        assert "readable by others" in node.stderr()
    finally:
        os.chmod(secrets, 0o755)


def test_node_key_from_the_environment_and_submit_key_from_ats_key_file(tmp_path):
    seed = bytes(range(32))
    ssh = str(tmp_path / "agent")
    ssh_key(ssh)
    node = NodeProcess(str(tmp_path / "n"), env={"ATS_NODE_KEY": seed.hex()}).start()
    try:
        assert node.origin == public_key_from_seed(seed).hex()
        sent = ats("submit", "act", "--url", node.url, "--body", ACT, "--json", env={"ATS_KEY_FILE": ssh})
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "accepted"
        none = ats("submit", "act", "--url", node.url, "--body", ACT, env={"ATS_KEY_FILE": "", "ATS_KEY": ""})
        assert none.returncode == 2 and "ATS_KEY_FILE" in none.stderr
    finally:
        node.kill()


def test_missing_explicit_key_file_or_bad_key_text_stops_the_node_before_anything_is_written(tmp_path):
    data = tmp_path / "n"
    missing = ats("node", "--data-dir", str(data), "--port", "0", env={"ATS_NODE_KEY_FILE": str(tmp_path / "nope")})
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = ats("node", "--data-dir", str(data), "--port", "0", env={"ATS_NODE_KEY": "not a key"})
    assert bad.returncode == 2 and "ATS_NODE_KEY" in bad.stderr and "not a key" in bad.stderr
    assert not os.path.exists(data / "node.key") and not os.path.exists(data / "ledger.sqlite")


def test_secret_settings_read_from_a_file_named_by_ats_x_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    config = load(None, {"ATS_DASHBOARD_TOKEN_FILE": str(token)})
    assert config.dashboard_token == "0123456789abcdef0123"
    assert "0123456789abcdef" not in repr(config), "secrets must not show in a printed Config"
    os.chmod(token, 0o666)
    with pytest.raises(ConfigError, match="anyone may replace it"):
        load(None, {"ATS_DASHBOARD_TOKEN_FILE": str(token)})
