"""Writing files the way other tools do: atomically (temp file + rename) and with the user's umask."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


@functools.cache
def current_umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux), else by a swap."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it over `path`.

    A reader never sees a half-written file. The temporary file is created private (mkstemp makes
    0600), so its mode is set to what `open()` would have given, 0666 less the umask, before the rename.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
