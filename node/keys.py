"""Key files: an Ed25519 seed in a small JSON file, written atomically, mode 0600.

Format (also what `ats keygen` writes for agents):
    {"type": "ed25519", "seed": "<64 hex>", "public_key": "<64 hex>"}

Read back are also PKCS#8 PEM and OpenSSH private keys (node/keyformats.py), and a key
may come from an environment variable instead of a file. A key file's mode is the
operator's choice (a secret mounted read-only at 0644 is common): group- or other-readable
is logged as a warning, and only a world-writable file is refused, since anyone could
replace the key.
"""

from __future__ import annotations

import json
import logging
import os
import stat

import nacl.utils

from node.keyformats import KEY_TEXT_BYTES_MAX, KeyFormatError, parse_key_text

from ledger.signing import SEED_SIZE, public_key_from_seed


logger = logging.getLogger("ats.keys")


class KeyFileError(Exception):
    pass


def new_seed() -> bytes:
    return nacl.utils.random(SEED_SIZE)


def write_key(path: str, seed: bytes) -> None:
    """Write the key file atomically (temp file, fsync, rename) with mode 0600."""
    doc = {"type": "ed25519", "seed": seed.hex(), "public_key": public_key_from_seed(seed).hex()}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def check_secret_mode(path: str, what: str = "key file") -> None:
    """Refuse a world-writable secret file; warn when group or others may read it."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise KeyFileError(f"{what} {path}: {e.strerror}") from None
    if mode & 0o002:
        raise KeyFileError(f"{what} {path} has mode {mode:o}: anyone may replace it; refusing it (chmod o-w, or 600)")
    if mode & 0o044:
        logger.warning("%s %s has mode %o: readable by %s (chmod 600 keeps it to its owner)",
                       what, path, mode, "others" if mode & 0o004 else "its group")


def read_secret_file(path: str, what: str = "secret file", bytes_max: int = KEY_TEXT_BYTES_MAX) -> str:
    """The text of a small secret file, mode-checked (check_secret_mode); raises KeyFileError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(bytes_max + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"{what} {path}: {e.strerror}") from None
    if len(raw) > bytes_max:
        raise KeyFileError(f"{what} {path} is larger than {bytes_max} bytes")
    check_secret_mode(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} {path} is not UTF-8 text") from None


def read_key(path: str) -> bytes:
    """The seed in a key file (ATS JSON, PKCS#8 PEM or OpenSSH); raises KeyFileError with a clear message."""
    if not os.path.exists(path):
        raise KeyFileError(f"key file {path} does not exist (create one with `ats keygen {path}`)")
    text = read_secret_file(path, "key file")
    try:
        return parse_key_text(text)
    except KeyFormatError as e:
        raise KeyFileError(f"key file {path}: {e}") from None


def key_from_text(text: str, source: str) -> bytes:
    """The seed in key text from an environment variable (any format read_key reads, or 64 hex)."""
    try:
        return parse_key_text(text)
    except KeyFormatError as e:
        raise KeyFileError(f"{source}: {e}") from None


def node_seed(key_text: str, key_file: str, default_path: str) -> tuple[bytes, str]:
    """The node's seed and where it came from: key text (ATS_NODE_KEY), else an explicit key
    file that must exist (node_key_file), else default_path, created on first start."""
    if key_text:
        return key_from_text(key_text, "node_key (ATS_NODE_KEY)"), "node_key"
    if key_file:
        # An explicit file is never created: a typo must not start the node under a new identity.
        return read_key(key_file), key_file
    seed, created = load_or_create(default_path)
    if created:
        logger.info("created node key %s", default_path)
    return seed, default_path


def load_or_create(path: str) -> tuple[bytes, bool]:
    """The node key at path, created on first start; returns (seed, created)."""
    if os.path.exists(path):
        return read_key(path), False
    seed = new_seed()
    write_key(path, seed)
    return seed, True
