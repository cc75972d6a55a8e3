"""One training run per output folder: a lock file that names its holder and dies with it.

The lock is `OUTPUT/.restyle-train.lock`, held with `fcntl.flock` for the whole run and holding the
holder's pid, host and start time. The kernel drops a flock when its process ends, however it ends
(kill -9 included), so a lock file left by a dead run is free: the next run takes it over and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from restyle.errors import RestyleError

log = logging.getLogger(__name__)

LOCK_FILE = ".restyle-train.lock"


class OutputInUseError(RestyleError):
    """Another training run holds the output folder."""

    status_code = 409


class OutputLock:
    """The held lock of one output folder; `release()` (or the process ending) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):  # unlinked while held: see the inode check in acquire
            self.path.unlink()
        os.close(self.fd)
        self.fd = -1


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host h, since 2024-05-01 10:00:00' (or what is known of it)."""
    if not holder:
        return "holder unknown: its lock file is empty"
    since = holder.get("since")
    when = time.strftime(", since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether `holder` is another process on this host that is still running."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def acquire(output_dir: Path) -> OutputLock:
    """Hold `output_dir` for this run, or raise OutputInUseError naming the run that holds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise OutputInUseError(
                f"output_dir: {output_dir} is in use by another training run ({describe(holder)}); "
                "wait for it to finish, or choose another --output-dir",
                field="output_dir",
            ) from None
        try:  # the holder may have released (and unlinked) it between our open and flock: retry
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read(fd)
    if _alive_here(previous):  # free flock, live holder: this filesystem does not enforce flock
        os.close(fd)
        raise OutputInUseError(
            f"output_dir: {output_dir} is in use by another training run ({describe(previous)}, still "
            "running); wait for it to finish, or choose another --output-dir",
            field="output_dir",
        )
    if previous:
        log.warning(
            "output_dir: took over the lock left by a run that is no longer running (%s): it was "
            "killed or crashed",
            describe(previous),
        )
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(_holder()).encode())
    os.fsync(fd)
    return OutputLock(path, fd)


def hold(output_dir: Path, acc: Any) -> OutputLock | None:
    """The run's lock, held by the main process; every process stops if another run holds the folder."""
    from accelerate.utils import broadcast_object_list

    held: OutputLock | None = None
    refused: list[str | None] = [None]
    if acc.is_main_process:
        try:
            held = acquire(output_dir)
        except OutputInUseError as err:
            refused = [err.message]
    if acc.num_processes > 1:  # the others must not wait at a barrier the main process never reaches
        broadcast_object_list(refused)
    if refused[0] is not None:
        raise OutputInUseError(refused[0], field="output_dir")
    return held
