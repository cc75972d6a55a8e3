"""Catalogue jobs as rows: read a CSV / JSONL manifest or a folder of photos, check its columns, key each row.

A manifest that cannot be read, or whose columns are not restyle's, is one `ManifestError` naming the file,
line and column. A row whose values are wrong (a missing photo, steps out of range) is not: it becomes a
request only when it runs (`Row.request`), and fails alone with a RestyleError naming its field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError, RestyleError

ATTRIBUTES = ("type", "style", "pattern", "color", "fabric", "fit", "length")  # the prompt builder's
TEXT = ("photo", "mask", "prompt", *ATTRIBUTES, "negative", "scheduler", "id")
INTEGER = ("num_images", "seed", "steps", "size", "grow", "feather")
NUMBER = ("guidance", "threshold")
COLUMNS = (*TEXT[:2], "garment", *TEXT[2:], *INTEGER, *NUMBER, "raw")
ALIASES = {"garment_type": "type", "design_style": "style", "negative_prompt": "negative"}  # the API's names
NOT_IN_TEMPLATE = ("photo", "mask", "id")  # one per photo, never shared by a whole folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # an id is a file name stem: nothing else
GARMENT_SEPARATOR = "|"  # "the dress|the belt" in a CSV cell: several garments, unioned


class ManifestError(RestyleError):
    """The manifest itself (not one of its rows) cannot be used."""

    status_code = 422


@dataclass(frozen=True)
class Request:
    """One row as restyle's own inputs, checked: what `Restyler.prepare` takes."""

    photo: Path | str  # a path, or a URL / URI (restyle.batch.storage reads it)
    mask: Path | str | None
    garment: list[str] | None
    params: Any  # StyleParams
    mask_params: Any  # MaskParams | None (None: a given mask is used as is)
    color: str | None


@dataclass(frozen=True)
class Row:
    """One job: its cells as read (canonical column names), where it came from and its stable key."""

    key: str
    line: int  # the manifest line it was read from (1-based; 0 for a folder's photos)
    cells: dict[str, Any]
    base: Path  # relative paths resolve from here (the manifest's folder)
    source: str = ""  # "manifest.csv:3", for messages

    @property
    def photo(self) -> str:
        return str(self.cells.get("photo", ""))

    def value(self, name: str) -> Any:
        """The cell `name` as its type (None when blank).

        Raises:
            InvalidParameterError: the cell is not of its column's type (names the column).
        """
        return convert(name, self.cells.get(name))

    def path(self, name: str) -> Path | str | None:
        """The cell as a path from the manifest's folder, or as it is when it is a URL / URI."""
        from restyle.batch.storage import is_uri

        text = self.value(name)
        if text is None:
            return None
        return text if is_uri(text) else self.base / text

    def request(self, mode: str = "describe", mask_defaults: Any = None) -> Request:
        """The row as restyle's inputs: the prompt built as `restyle style` builds it for an inpainter
        of `mode` ("describe", or "instruction" for edit models), the mask options over `mask_defaults`.

        Args:
            mode: the inpainter family's prompt mode.
            mask_defaults: MaskParams for every row (threshold, grow, feather cells override them).

        Returns:
            The Request. Raises a RestyleError naming the bad field.
        """
        from dataclasses import replace

        from restyle.inpaint.params import StyleParams
        from restyle.segment import MaskParams

        photo, garment, mask = self.path("photo"), self.value("garment"), self.path("mask")
        if photo is None:
            raise InvalidParameterError("photo: required (the photo to restyle)", field="photo")
        if (garment is None) == (mask is None):
            raise InvalidParameterError(
                "garment/mask: give exactly one: the garment to change as text, or a mask file",
                field="garment",
            )
        prompt, negative = self._prompt(mode, garment)
        params = StyleParams(prompt=prompt, **self._param_values(negative))
        params.check()
        mask_params = mask_defaults or MaskParams()
        changes = {k: self.value(k) for k in ("threshold", "grow", "feather") if self.value(k) is not None}
        mask_params = replace(mask_params, **changes)
        mask_params.check()
        if mask is not None and not {"grow", "feather"} & changes.keys():
            mask_params = None  # a given mask is used as is, as `restyle style --mask` does
        return Request(photo, mask, garment, params, mask_params, self.value("color"))

    def _param_values(self, negative: str | None) -> dict[str, Any]:
        from restyle.inpaint.params import StyleParams

        given = {k: self.value(k) for k in ("steps", "guidance", "num_images", "seed", "scheduler", "size")}
        values = {k: v for k, v in given.items() if v is not None}
        values["negative_prompt"] = StyleParams.negative_prompt if negative is None else negative
        return values

    def _prompt(self, mode: str, garment: list[str] | None) -> tuple[str, str | None]:
        from restyle.prompts import build_prompt
        from restyle.prompts.builder import build_instruction

        prompt, negative = self.value("prompt"), self.value("negative")
        if self.value("raw"):
            if not prompt or not prompt.strip():
                raise InvalidParameterError("prompt: required when raw is true", field="prompt")
            return prompt, negative
        names = ("style", "pattern", "color", "fabric", "fit", "length")
        attributes = dict(garment=self.value("type"), text=prompt, negative=negative)
        attributes.update({k: self.value(k) for k in names})
        built = (
            build_instruction(garment, **attributes) if mode == "instruction" else build_prompt(**attributes)
        )
        return built.text, built.negative


def convert(name: str, value: Any) -> Any:
    """A cell as its column's type: text, a list of garment texts, an integer, a number or a flag.

    Returns:
        The typed value; None for a missing cell. Raises InvalidParameterError naming the column.
    """
    if value is None:
        return None
    if name == "garment":
        texts = value.split(GARMENT_SEPARATOR) if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidParameterError(
                f"garment: expected text or a list of texts, got {value!r}", field=name
            )
        texts = [t.strip() for t in texts if t.strip()]
        if not texts:
            raise InvalidParameterError("garment: must not be empty", field=name)
        return texts
    if name in INTEGER:
        return _integer(name, value)
    if name in NUMBER:
        return _number(name, value)
    if name == "raw":
        return _flag(name, value)
    return value if isinstance(value, str) else json.dumps(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise InvalidParameterError(f"{name}: must be an integer, got {value!r}", field=name)


def _number(name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name}: must be a number, got {value!r}", field=name) from None


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1"):
        return True
    if text in ("false", "no", "n", "0", ""):
        return False
    raise InvalidParameterError(f"{name}: must be true or false, got {value!r}", field=name)


def column_name(name: Any, where: str, *, template: bool = False) -> str:
    """A header or JSON key as its canonical column; an unknown one is a ManifestError at `where`."""
    text = str(name).strip().lower()
    text = ALIASES.get(text, text)
    if text not in COLUMNS or (template and text in NOT_IN_TEMPLATE):
        allowed = [c for c in COLUMNS if not (template and c in NOT_IN_TEMPLATE)]
        raise ManifestError(
            f"{where}: unknown column {name!r}; the columns are {', '.join(allowed)}", field="manifest"
        )
    return text


@dataclass
class _Keys:
    """Keys handed out so far: an `id` must be unique; equal content gets KEY-2, KEY-3, ..."""

    seen: dict[str, str] = field(default_factory=dict)  # key -> where it was first read

    def key(self, cells: dict[str, Any], where: str, column: str) -> str:
        if "id" in cells:
            ident = str(cells["id"]).strip()
            if not ID_PATTERN.fullmatch(ident):
                raise ManifestError(
                    f"{column}: id {ident!r} must be letters, digits, '.', '_' or '-' (a file name)",
                    field="manifest",
                )
            if ident in self.seen:
                raise ManifestError(f"{where}: id {ident!r} is also {self.seen[ident]}", field="manifest")
            self.seen[ident] = where
            return ident
        base, n = content_key(cells), 1
        key = base
        while key in self.seen:
            n += 1
            key = f"{base}-{n}"
        self.seen[key] = where
        return key


def content_key(cells: dict[str, Any]) -> str:
    """A stable key from a row's content: the photo's name and a hash of every cell (sorted)."""
    canonical = json.dumps({k: v for k, v in cells.items() if k != "id"}, sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(cells.get("photo", "row"))).stem).strip("-.")
    return f"{stem[:40] or 'row'}-{digest}"


def with_defaults(cells: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults` under a row's own cells; a row that chose its garment or mask takes neither default."""
    merged = dict(defaults)
    if "garment" in cells or "mask" in cells:
        merged.pop("garment", None)
        merged.pop("mask", None)
    return {**merged, **cells}


def read_manifest(path: str | Path, defaults: dict[str, Any] | None = None) -> list[Row]:
    """The rows of a CSV (header row) or JSONL (an object a line) manifest; paths relative to its folder.

    Args:
        path: the manifest (.csv, or .jsonl / .ndjson).
        defaults: cells every row gets where it leaves them blank (a template, the command's flags).

    Returns:
        The rows in file order. Raises ManifestError naming the file, line and column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ManifestError(
            f"{path}: a manifest is .csv or .jsonl, not {suffix or 'no suffix'}", field="manifest"
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(
            f"{path}: cannot read the manifest ({err.strerror or err})", field="manifest"
        ) from err
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(f"{path}:{line}: not UTF-8 text", field="manifest") from err
    records = _csv_records(text, str(path)) if suffix == ".csv" else _jsonl_records(text, str(path))
    rows = _rows(records, path.parent, defaults or {})
    if not rows:
        raise ManifestError(f"{path}: no rows", field="manifest")
    return rows


Record = tuple[int, dict[str, Any], Callable[[str], str]]  # line, cells, where-column namer


def _rows(records: Iterable[Record], base: Path, defaults: dict[str, Any]) -> list[Row]:
    keys, rows = _Keys(), []
    for line, cells, where in records:
        merged = with_defaults(cells, defaults)
        rows.append(Row(keys.key(merged, where(""), where("id")), line, merged, base, where("")))
    return rows


def _csv_records(text: str, name: str) -> Iterable[Record]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{name}: empty file (expected a header row)", field="manifest")
        columns = [column_name(h, f"{name}:1:{i + 1}") for i, h in enumerate(header)]
        for dup in {c for c in columns if columns.count(c) > 1}:
            raise ManifestError(f"{name}:1: column {dup!r} is given twice", field="manifest")
        if "photo" not in columns:
            raise ManifestError(f"{name}:1: no 'photo' column (the photo of each row)", field="manifest")
        for cells in reader:
            line = reader.line_num
            if len(cells) > len(columns):
                raise ManifestError(
                    f"{name}:{line}:{len(columns) + 1}: {len(cells)} cells, the header has {len(columns)}",
                    field="manifest",
                )
            row = {c: v.strip() for c, v in zip(columns, cells) if v.strip()}
            if row:
                yield line, row, _namer(name, line, columns)
    except csv.Error as err:
        raise ManifestError(f"{name}:{reader.line_num}: not valid CSV ({err})", field="manifest") from err


def _namer(name: str, line: int, columns: list[str]) -> Callable[[str], str]:
    def where(column: str) -> str:
        if column in columns:
            return f"{name}:{line}:{columns.index(column) + 1}"
        return f"{name}:{line}"

    return where


def _jsonl_records(text: str, name: str) -> Iterable[Record]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ManifestError(
                f"{name}:{line}:{err.colno}: not valid JSON ({err.msg})", field="manifest"
            ) from err
        if not isinstance(obj, dict):
            raise ManifestError(
                f"{name}:{line}: expected a JSON object, got {type(obj).__name__}", field="manifest"
            )
        cells = {column_name(k, f"{name}:{line} (key {k!r})"): v for k, v in obj.items() if v is not None}
        yield line, cells, _json_namer(name, line)


def _json_namer(name: str, line: int) -> Callable[[str], str]:
    def where(column: str) -> str:
        return f"{name}:{line}" + (f" ({column})" if column else "")

    return where


def _fixed(text: str) -> Callable[[str], str]:
    return lambda _column: text


def load_template(path: str | Path) -> dict[str, Any]:
    """A request template: one JSON object of manifest columns (no photo, mask or id) for every photo.

    Returns:
        Its cells by canonical column. Raises ManifestError naming the file (and key).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as err:
        raise ManifestError(
            f"{path}: cannot read the template ({err.strerror or err})", field="template"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"{path}:{err.lineno}:{err.colno}" if isinstance(err, json.JSONDecodeError) else str(path)
        raise ManifestError(f"{where}: not valid JSON ({err})", field="template") from err
    if not isinstance(obj, dict):
        raise ManifestError(f"{path}: a template is one JSON object", field="template")
    return {column_name(k, f"{path} (key {k!r})", template=True): v for k, v in obj.items() if v is not None}


def read_folder(folder: str | Path, defaults: dict[str, Any]) -> list[Row]:
    """One row per photo in `folder` (not its subfolders), each with the `defaults` request.

    Returns:
        The rows, by file name. Raises ManifestError when the folder holds no photo.
    """
    folder = Path(folder)
    for name in NOT_IN_TEMPLATE:
        if name in defaults:
            raise ManifestError(f"{name}: not in a template: it differs per photo", field="template")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise ManifestError(f"{folder}: no photos ({', '.join(IMAGE_SUFFIXES)})", field="manifest")
    records: list[Record] = [(0, {"photo": p.name}, _fixed(str(p))) for p in photos]
    return _rows(records, folder, defaults)


def read_rows(source: str | Path, defaults: dict[str, Any] | None = None) -> list[Row]:
    """A manifest file's rows, or a folder's photos with the `defaults` request (see read_folder)."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source, defaults or {})
    if not source.exists():
        raise ManifestError(f"{source}: no such manifest file or photo folder", field="manifest")
    return read_manifest(source, defaults)
