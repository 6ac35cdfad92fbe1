"""Key files: an Ed25519 seed in a small JSON file, written atomically, mode 0600.

Format (also what `ats keygen` writes for agents):
    {"type": "ed25519", "seed": "<64 hex>", "public_key": "<64 hex>"}
"""

from __future__ import annotations

import json
import os
import stat

import nacl.utils

from ledger.signing import SEED_SIZE, public_key_from_seed


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


def read_key(path: str) -> bytes:
    """The seed in a key file; raises KeyFileError with a clear message."""
    try:
        with open(path) as f:
            doc = json.load(f)
        seed = bytes.fromhex(doc["seed"])
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist (create one with `ats keygen {path}`)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KeyFileError(f"key file {path} is not a valid ATS key file: {e}") from None
    if len(seed) != SEED_SIZE:
        raise KeyFileError(f"key file {path}: seed must be {SEED_SIZE} bytes")
    if "public_key" in doc and doc["public_key"] != public_key_from_seed(seed).hex():
        raise KeyFileError(f"key file {path}: public_key does not match the seed")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(f"key file {path} has mode {mode:o}; it must not be readable by others (chmod 600)")
    return seed


def load_or_create(path: str) -> tuple[bytes, bool]:
    """The node key at path, created on first start; returns (seed, created)."""
    if os.path.exists(path):
        return read_key(path), False
    seed = new_seed()
    write_key(path, seed)
    return seed, True
