"""The per-class prompt table: which wording and threshold masks each garment class best, per segmenter.

`restyle eval masks --write-table prompts.toml` writes it from the wording sweep; whatever takes garment
text (the CLI, the server) can `load_mask_table(path).lookup("the dress")` to mask with the wording that
scored best instead of the user's own words. A table belongs to one segmenter: CLIPSeg, SAM 3 and a parser
read words differently, so the header names the segmenter and the labelled set it was measured on.

The file is plain TOML, one table per class:

    format = 1
    segmenter = "CIDAS/clipseg-rd64-refined"
    dataset = "data/atr"

    [classes.dress]
    prompt = "a dress"          # the winning wording, passed to the segmenter as is
    threshold = 0.4             # MaskParams.threshold to use with it
    candidates = ["the dress", "a dress", "dress"]   # wordings a request may use for this class
    iou = 0.71                  # optional scores, for people reading the file
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError

TABLE_FORMAT = 1  # the layout version written to and checked in every table
_ARTICLES = {"the", "a", "an", "my", "her", "his", "their", "your", "this", "that"}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SCORE_KEYS = ("iou", "default_iou", "boundary_f", "fp_rate", "missed_rate", "photos")


def normalize_garment(text: str) -> str:
    """Text as the table compares it: lower case, `_`/`-` as spaces, one space, no leading article or end dot.

    "The  Dress." -> "dress", "upper_clothes" -> "upper clothes".
    """
    words = re.sub(r"[_\-]+", " ", text.lower()).strip().rstrip(".!?,;:").split()
    while len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


@dataclass(frozen=True)
class TableEntry:
    """One class of the table."""

    name: str  # the class, e.g. "dress"
    prompt: str  # the wording the segmenter is given
    threshold: float  # the MaskParams.threshold it scored best at
    candidates: tuple[str, ...] = ()  # other wordings that name this class in a request
    scores: dict[str, float] = field(default_factory=dict)  # iou, default_iou, fp_rate, ... (informative)


@dataclass(frozen=True)
class MaskTable:
    """A loaded prompt table: class -> entry, and where it came from."""

    entries: dict[str, TableEntry]
    segmenter: str = ""
    dataset: str = ""
    path: str = ""

    def lookup(self, garment_text: str) -> tuple[str, float] | None:
        """The (prompt, threshold) of the class `garment_text` names, or None when it names none.

        Args:
            garment_text: a request's garment, e.g. "the dress", "Dress", "a  dress".

        Returns:
            The class's winning wording and threshold; None when the text matches no class name or wording.
        """
        wanted = normalize_garment(garment_text)
        if not wanted:
            return None
        for entry in self.entries.values():
            names = (entry.name, entry.prompt, *entry.candidates)
            if any(normalize_garment(n) == wanted for n in names):
                return entry.prompt, entry.threshold
        return None


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, non-ASCII kept as is (TOML rejects JSON surrogates)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _toml_string(name)


def _toml_number(value: float) -> str:
    return repr(round(float(value), 4))


def _header(winners: dict[str, dict[str, Any]], segmenter: str, dataset: str, note: str) -> list[str]:
    lines = [
        "# restyle mask prompt table: the wording and threshold that masked each garment class best.",
        "# Written by `restyle eval masks --write-table`; edit freely, `restyle` reads it back.",
        f"# Segmenter: {segmenter or 'unknown'}; labelled set: {dataset or 'unknown'}.",
        "# Scores: mean IoU over the photos that show the class (default: its first wording at the default",
        "# threshold); FP rate: masks returned on photos without the class.",
    ]
    lines += [f"# {note}"] if note else []
    for name, win in winners.items():
        iou, default = win.get("iou"), win.get("default_iou")
        lines.append(
            f"#   {name}: {win.get('wording', win.get('prompt'))!r} @ {float(win['threshold']):.2f}, "
            f"IoU {_fmt(iou)} (default {_fmt(default)}), FP rate {_fmt(win.get('fp_rate'))}, "
            f"photos: {win.get('photos', '?')}"
        )
    return lines


def _fmt(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if number != number else f"{number:.3f}"


def write_mask_table(
    path: str | Path,
    winners: dict[str, dict[str, Any]],
    *,
    segmenter: str = "",
    dataset: str = "",
    note: str = "",
) -> Path:
    """Write the sweep's winners as a TOML prompt table.

    Args:
        path: the .toml file to write (parents are created).
        winners: class -> {"wording" (or "prompt"), "threshold", "candidates", and optional scores
            "iou", "default_iou", "boundary_f", "fp_rate", "missed_rate", "photos"}; NaN scores are left out.
        segmenter: the segmenter the scores are of (its hub id or folder).
        dataset: the labelled set they were measured on.
        note: one more header comment line, e.g. that the scores are of the tiny preview model.

    Returns:
        The path written.
    """
    lines = [*_header(winners, segmenter, dataset, note), ""]
    lines += [f"format = {TABLE_FORMAT}", f"segmenter = {_toml_string(segmenter)}"]
    lines += [f"dataset = {_toml_string(dataset)}"]
    for name, win in winners.items():
        prompt = str(win.get("wording", win.get("prompt", "")))
        candidates = [str(c) for c in win.get("candidates", ())]
        lines += ["", f"[classes.{_toml_key(name)}]", f"prompt = {_toml_string(prompt)}"]
        lines.append(f"threshold = {_toml_number(win['threshold'])}")
        lines.append(f"candidates = [{', '.join(_toml_string(c) for c in candidates)}]")
        for key in _SCORE_KEYS:
            value = win.get(key)
            if isinstance(value, int | float) and value == value:  # NaN has no TOML form worth reading
                lines.append(f"{key} = {value if key == 'photos' else _toml_number(value)}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _line_of(text: str, name: str) -> int:
    """The line of `[classes.NAME]` in the file (1-based; 0 when it cannot be told)."""
    pattern = re.compile(r'^\s*\[\s*classes\s*\.\s*["\']?' + re.escape(name) + r'["\']?\s*\]')
    return next((i for i, line in enumerate(text.splitlines(), 1) if pattern.match(line)), 0)


def _entry(name: str, raw: Any, where: str) -> TableEntry:
    if not isinstance(raw, dict):
        raise InvalidParameterError(f"{where}: classes.{name} must be a table", field="table")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidParameterError(
            f"{where}: classes.{name}.prompt must be a non-empty string", field="table"
        )
    threshold = raw.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise InvalidParameterError(
            f"{where}: classes.{name}.threshold must be a number in [0, 1], got {threshold!r}", field="table"
        )
    candidates = raw.get("candidates", [])
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        raise InvalidParameterError(f"{where}: classes.{name}.candidates must be strings", field="table")
    scores = {k: float(raw[k]) for k in _SCORE_KEYS if isinstance(raw.get(k), int | float)}
    return TableEntry(name, prompt, float(threshold), tuple(candidates), scores)


def load_mask_table(path: str | Path) -> MaskTable:
    """Read a prompt table written by `write_mask_table` (or by hand).

    Args:
        path: the .toml file.

    Returns:
        The MaskTable. Raises InvalidParameterError naming the file and line of what is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidParameterError(
            f"{path}: cannot read the prompt table: {error}", field="table"
        ) from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InvalidParameterError(f"{path}: not valid TOML: {error}", field="table") from error
    if data.get("format", TABLE_FORMAT) != TABLE_FORMAT:
        raise InvalidParameterError(
            f"{path}: format {data.get('format')!r}; this restyle reads format {TABLE_FORMAT}", field="table"
        )
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise InvalidParameterError(f"{path}: no [classes.NAME] tables", field="table")
    entries = {
        name: _entry(name, raw, f"{path}: line {_line_of(text, name) or '?'}")
        for name, raw in classes.items()
    }
    return MaskTable(entries, str(data.get("segmenter", "")), str(data.get("dataset", "")), path=str(path))
