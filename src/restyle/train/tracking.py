"""A JSON-lines accelerate tracker: the loss log every run has, with no extra package."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

LOG_FILE = "train_log.jsonl"


class JsonlTracker(GeneralTracker):
    """Appends one JSON object per `accelerator.log` call to `<logging_dir>/train_log.jsonl`.

    Appending (not truncating) keeps the log of a run that was killed and resumed in one file; rows
    carry their step, so a resumed stretch shows up as steps counting on from the checkpoint.
    """

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, logging_dir: Path) -> None:
        super().__init__()
        self.path = Path(logging_dir) / LOG_FILE

    @property
    def tracker(self) -> Path:
        return self.path

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def store_init_configuration(self, values: dict) -> None:
        self._write({"event": "start", "config": values})

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        self._write({"step": step, **values})

    def _write(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **row}, default=str) + "\n")


def read_log(logging_dir: Path) -> list[dict]:
    """Rows of a run's loss log (for tests, plots and `restyle bench`)."""
    path = Path(logging_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
