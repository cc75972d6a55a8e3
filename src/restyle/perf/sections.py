"""The benchmarks' sections of docs/PERFORMANCE.md: each table sits between its own two markers."""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The comments around a benchmark's section of docs/PERFORMANCE.md."""
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


BEGIN, END = markers("train")  # the training table's section, write_section's default


def write_section(doc: Path, body: str, name: str = "train") -> None:
    """Replace the text between the `<!-- bench:NAME -->` markers in `doc` (appending them if absent)."""
    begin, end = markers(name)
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
