"""The data folder's lock: one process at a time runs a node on it or restores into it.

An advisory `flock` on `data_dir/lock`, held for the process's life (the kernel drops it
when the process dies, even by SIGKILL, so a crash never leaves a stale lock). The file
holds the holder's pid, for the message another process prints.
"""

from __future__ import annotations

import fcntl
import os


class DataDirInUse(Exception):
    pass


def lock_path(data_dir: str) -> str:
    return os.path.join(data_dir, "lock")


def hold(data_dir: str, purpose: str = "node") -> int:
    """Take the data folder's lock (creating the folder); returns the fd to close; raises DataDirInUse."""
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(lock_path(data_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise DataDirInUse(f"data folder {data_dir} is in use by another process ({holder}); stop it first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{purpose} pid {os.getpid()}\n".encode("ascii"), 0)
    return fd


def in_use(data_dir: str) -> str | None:
    """Who holds the data folder's lock ("node pid N"), or None when nobody does (nothing is created)."""
    try:
        fd = os.open(lock_path(data_dir), os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
    finally:
        os.close(fd)
    return None
