"""Writing files the way other tools do: atomically (temp file + rename) and with the user's umask."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it over `path`.

    A reader never sees a half-written file. The temporary file is created with mode 0666 and the kernel
    applies the process umask, as `open()` would (mkstemp would make it 0600); `write` opens it again by
    name, which keeps that mode.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
