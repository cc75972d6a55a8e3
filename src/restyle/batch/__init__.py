"""Catalogue jobs on one machine: a manifest (CSV / JSONL) or a folder of photos in, `restyle style`'s
files per row and a resumable results.jsonl out. No CLI library here (restyle.cli.batch is the command).
"""

from restyle.batch.manifest import ManifestError, Row, load_template, read_folder, read_manifest, read_rows
from restyle.batch.runner import RESULTS_FILE, BatchOptions, BatchRunner, Summary, run_batch

__all__ = [
    "RESULTS_FILE",
    "BatchOptions",
    "BatchRunner",
    "ManifestError",
    "Row",
    "Summary",
    "load_template",
    "read_folder",
    "read_manifest",
    "read_rows",
    "run_batch",
]
