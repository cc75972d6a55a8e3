"""Where a batch row's files come from: a local (or shared-filesystem) path, an http(s) URL, or any URI
pyarrow's filesystems understand (`s3://`, `gs://`, `abfs://`, `hdfs://`, `file://`), as Ray Data reads.

A row's photo and mask are read here as bytes; `restyle.images` decodes and checks them as for any input.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError

MAX_BYTES = 64 * 1024 * 1024  # a photo file larger than this is refused before it is read whole
HTTP_TIMEOUT_S = 30.0


def is_uri(text: str) -> bool:
    """`scheme://...` (a URL or a pyarrow filesystem URI), not a local path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum() and len(scheme) > 1


def read_source(source: str | Path, *, field: str, limit: int = MAX_BYTES) -> bytes | Path:
    """A local path as it is (restyle.images opens it); a URL or URI read into bytes.

    Raises:
        InvalidParameterError: it cannot be read, or is larger than `limit` (names `field`).
    """
    text = str(source)
    if not is_uri(text):
        return Path(source)
    scheme = text.partition("://")[0].lower()
    if scheme in ("http", "https"):
        return _read_http(text, field, limit)
    return _read_arrow(text, field, limit)


def _read_http(url: str, field: str, limit: int) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "restyle-batch"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
            data = answer.read(limit + 1)
    except urllib.error.HTTPError as err:
        raise InvalidParameterError(f"{field}: {url} answered HTTP {err.code}", field=field) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise InvalidParameterError(f"{field}: cannot fetch {url} ({reason})", field=field) from None
    return _within(data, url, field, limit)


def _read_arrow(uri: str, field: str, limit: int) -> bytes:
    fs, path = _arrow_fs(uri, field)
    import pyarrow.fs as pafs

    try:
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise InvalidParameterError(f"{field}: no such file: {uri}", field=field)
        if info.size is not None and info.size > limit:
            raise InvalidParameterError(
                f"{field}: {uri} is {info.size:,} bytes; the limit is {limit:,}", field=field
            )
        with fs.open_input_stream(path) as stream:
            data = stream.read(limit + 1)
    except InvalidParameterError:
        raise
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid / ArrowIOError are these
        raise InvalidParameterError(f"{field}: cannot read {uri} ({err})", field=field) from None
    return _within(data, uri, field, limit)


def _within(data: Any, where: str, field: str, limit: int) -> bytes:
    if len(data) > limit:
        raise InvalidParameterError(f"{field}: {where} is over the limit of {limit:,} bytes", field=field)
    return bytes(data)


class Destination:
    """Where a batch's row files go: a local (or shared-filesystem) folder, written in place, or a pyarrow
    URI (`s3://bucket/out`, `gs://...`, `file:///...`), each row's files written to a local staging folder
    first, then uploaded under a temporary key and moved to their names (an interrupted upload never
    stands under a row's file name)."""

    def __init__(self, out: str | Path) -> None:
        text = str(out)
        self.uri = text if is_uri(text) else None
        self.folder = None if self.uri else Path(out)
        self._fs: Any = None
        self._base = ""
        if self.uri is not None:
            if text.partition("://")[0].lower() in ("http", "https"):
                raise InvalidParameterError(
                    f"output: {text}: an http(s) URL cannot be written; use a folder or an s3:// / gs:// URI",
                    field="output",
                )
            self._fs, self._base = _arrow_fs(text, "output")

    @property
    def remote(self) -> bool:
        return self.uri is not None

    def where(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}" if self.uri else str(self.folder / name)  # type: ignore[operator]

    def exist(self, names: list[str]) -> bool:
        """Whether every one of `names` is there."""
        if self.folder is not None:
            return all((self.folder / name).is_file() for name in names)
        import pyarrow.fs as pafs

        infos = self._fs.get_file_info([f"{self._base}/{name}" for name in names])
        return all(info.type == pafs.FileType.File for info in infos)

    def publish(self, staging: Path, names: list[str]) -> None:
        """Upload the staged files (remote only; a local folder was written in place), then drop them."""
        if self.folder is not None:
            return
        try:
            for name in names:
                self.copy_in(staging / name, name)
        finally:  # uploaded or not, the staged copies go (a failed row is run again from scratch)
            for name in names:
                (staging / name).unlink(missing_ok=True)

    def copy_in(self, path: Path, name: str) -> None:
        """Upload a copy of a local file (remote only) to a temporary key, then move it to `name`: closing
        a pyarrow output stream commits what was written, so an interrupted upload must never be under the
        final name (an S3 move is a server-side copy; the object appears whole)."""
        if self.folder is not None:
            return
        import contextlib
        import uuid

        final = f"{self._base}/{name}"
        part = f"{final}.part-{uuid.uuid4().hex[:12]}"
        try:
            with path.open("rb") as src, self._fs.open_output_stream(part) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            self._fs.move(part, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self._fs.delete_file(part)
            raise

    def fetch(self, name: str, path: Path) -> bool:
        """Download `name` to a local `path` (remote only); False when it is not there."""
        if self.folder is not None:
            return False
        import pyarrow.fs as pafs

        source = f"{self._base}/{name}"
        if self._fs.get_file_info(source).type != pafs.FileType.File:
            return False
        with self._fs.open_input_stream(source) as src, path.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return True

    def remove(self, name: str) -> None:
        import contextlib

        if self.folder is not None:
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
            return
        with contextlib.suppress(OSError, FileNotFoundError):
            self._fs.delete_file(f"{self._base}/{name}")

    def prepare(self) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        else:
            self._fs.create_dir(self._base, recursive=True)


def _arrow_fs(uri: str, field: str) -> tuple[Any, str]:
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise InvalidParameterError(
            f"{field}: {uri} needs pyarrow (pip install 'restyle[ray]' brings it)", field=field
        ) from None
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise InvalidParameterError(f"{field}: cannot open {uri} ({err})", field=field) from None
    return fs, path.rstrip("/")
