"""Checkpoints that are either complete or absent, and outputs that appear all at once.

A checkpoint is written by `accelerator.save_state` into `checkpoint-N.partial/`, gets a
`restyle_state.json`, and only then is renamed to `checkpoint-N/`. A run killed at any moment leaves at
worst a `.partial` folder, which is ignored and cleaned up on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from restyle.errors import InvalidParameterError

log = logging.getLogger(__name__)

STATE_FILE = "restyle_state.json"
PATTERN = re.compile(r"^checkpoint-(\d+)$")
# settings a checkpoint must share with the run that resumes it: they change what a step means, or live
# in the saved optimizer/scheduler state (others may change, e.g. validation or max_train_steps)
RESUME_KEYS = (
    "mode",
    "base",
    "learning_rate",
    "lr_scheduler",
    "lr_warmup_steps",
    "use_8bit_adam",
    "mixed_precision",
    "lora_alpha",
    "train_text_encoder",
    "lora_rank",
    "lora_targets",
    "text_lora_targets",
    "resolution",
    "train_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "with_prior",
    "num_processes",
)


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        m = PATTERN.match(path.name)
        if m and (path / STATE_FILE).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: "latest" (None if there is none yet), a name or a path."""
    if not resume:
        return None
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    path = path if path.is_absolute() or path.exists() else output_dir / resume
    if not (path / STATE_FILE).is_file():
        raise InvalidParameterError(
            f"resume_from_checkpoint: {path} is not a finished restyle checkpoint (no {STATE_FILE})",
            field="resume_from_checkpoint",
        )
    return path


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def check_compatible(state: dict[str, Any], run: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to resume a checkpoint made with settings that change what a step means."""
    for key in RESUME_KEYS:
        if key in state.get("run", {}) and state["run"][key] != run.get(key):
            raise InvalidParameterError(
                f"resume_from_checkpoint: {checkpoint.name} was made with {key}={state['run'][key]!r}, "
                f"this run has {run.get(key)!r}; resume with the same value or start a new output_dir",
                field="resume_from_checkpoint",
            )


def partial_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"checkpoint-{step}.partial"


def finish_checkpoint(output_dir: Path, step: int, state: dict[str, Any], keep: int | None) -> Path:
    """Seal `checkpoint-N.partial` (state file, rename) and delete checkpoints beyond `keep`."""
    partial = partial_dir(output_dir, step)
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
    final = output_dir / f"checkpoint-{step}"
    stale = output_dir / f"checkpoint-{step}.stale.partial"
    if final.exists():  # the same step saved again after a resume: the new one wins; the old one is
        os.replace(final, stale)  # renamed away first, so no half-deleted folder ever looks finished
    os.replace(partial, final)
    if stale.exists():
        shutil.rmtree(stale)
    if keep is not None:  # the one just written always stays; of the others, the most recent
        others = sorted(
            (path for _, path in complete_checkpoints(output_dir) if path != final),
            key=lambda p: (p / STATE_FILE).stat().st_mtime,
        )
        for old in others[: max(0, len(others) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def clean_partials(output_dir: Path) -> None:
    """Remove what a killed run left half-written."""
    if not output_dir.is_dir():
        return
    for path in output_dir.iterdir():
        if path.name.endswith(".partial"):
            log.info("removing unfinished %s from an interrupted run", path.name)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


def remove_checkpoints(output_dir: Path) -> None:
    for _, path in complete_checkpoints(output_dir):
        shutil.rmtree(path)


def publish(staged: Path, output_dir: Path, last: str) -> None:
    """Move every entry of `staged` into `output_dir`, `last` at the very end, then drop `staged`.

    `last` is the file a loader opens first (model_index.json, the LoRA file): until it lands, the
    output is not a loadable model, so a reader never sees a half-written one.
    """
    entries = sorted(staged.iterdir(), key=lambda p: p.name == last)
    stale = output_dir / last
    if stale.exists():
        stale.unlink()  # an older model in the same folder stops loading before it is replaced
    for entry in entries:
        target = output_dir / entry.name
        if target.is_dir() and entry.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staged.rmdir()
