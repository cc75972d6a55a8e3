"""Checkpoints that are either complete or absent, and outputs that appear all at once.

A checkpoint is written by `accelerator.save_state` into `checkpoint-N.partial/`, gets a
`restyle_state.json` (with the size of every file in it), and only then is renamed to `checkpoint-N/`.
A checkpoint is deleted the same way round: renamed to `checkpoint-N.deleting.partial/` first, then
removed. A run killed at any moment leaves at worst a `.partial` folder, which is ignored and cleaned up
on the next start; a resume checks the whole checkpoint against its state file before trusting it.
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
DELETING = ".deleting.partial"  # suffix of a checkpoint being deleted (see delete)
PATTERN = re.compile(r"^checkpoint-(\d+)$")
# settings a checkpoint must share with the run that resumes it: they change what a step means, or live
# in the saved optimizer/scheduler state (others may change, e.g. validation or max_train_steps)
RESUME_KEYS = (
    "mode",
    "base",
    "learning_rate",
    "scale_lr",
    "lr_scheduler",
    "lr_warmup_steps",
    "use_8bit_adam",
    "adam_beta1",  # the optimizer's hyper-parameters: its loaded state would override new ones silently
    "adam_beta2",
    "adam_epsilon",
    "adam_weight_decay",
    "max_grad_norm",
    "prior_loss_weight",
    "masks",
    "garment",
    "fit",
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
    """The state of a checkpoint checked whole; a damaged one is refused by name, offering the one before."""
    state, problem = _inspect(checkpoint)
    if problem is None:
        return state
    step = _step(checkpoint)
    earlier = [
        path
        for s, path in complete_checkpoints(checkpoint.parent)
        if step is None or s < step
        if _inspect(path)[1] is None
    ]
    offer = (
        f"resume from {earlier[-1].name} instead (--resume-from-checkpoint {earlier[-1].name}), "
        f"or delete {checkpoint.name}"
        if earlier
        else f"no earlier checkpoint is whole: delete {checkpoint.name} and start without "
        "--resume-from-checkpoint"
    )
    raise InvalidParameterError(
        f"resume_from_checkpoint: {checkpoint.name} is damaged ({problem}); {offer}",
        field="resume_from_checkpoint",
    )


def _step(checkpoint: Path) -> int | None:
    m = PATTERN.match(checkpoint.name)
    return int(m.group(1)) if m else None


def _inspect(checkpoint: Path) -> tuple[dict[str, Any], str | None]:
    """(state, None) for a whole checkpoint, else ({}, what is wrong with it)."""
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{STATE_FILE} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {}, f"{STATE_FILE} cannot be read: {err.__class__.__name__}: {err}"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return {}, f"{STATE_FILE} has no step"
    files = state.get("files")
    if files is None:  # written before restyle listed the files: at least the weights and optimizer
        wanted = {"model weights": ("model*.safetensors", "pytorch_model*.bin"), "optimizer": ("optimizer*",)}
        for what, patterns in wanted.items():
            if not any(next(checkpoint.glob(pattern), None) for pattern in patterns):
                return {}, f"its {what} file is missing"
        return state, None
    for name, size in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            return {}, f"{name} is missing"
        if path.stat().st_size != size:
            return {}, f"{name} is {path.stat().st_size} bytes, {size} when it was saved"
    return state, None


def _manifest(folder: Path) -> dict[str, int]:
    """Every file under `folder` (but the state file) and its size in bytes."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != STATE_FILE
    }


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
    """Seal `checkpoint-N.partial` (state file with its file list, rename); delete those beyond `keep`."""
    partial = partial_dir(output_dir, step)
    state = {**state, "files": _manifest(partial)}
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
    final = output_dir / f"checkpoint-{step}"
    # the same step saved again after a resume: the new one wins; the old one is renamed away first
    doomed = _rename_away(final) if final.exists() else None
    os.replace(partial, final)
    if doomed is not None:
        shutil.rmtree(doomed)
    if keep is not None:  # the one just written always stays; of the others, the most recent
        others = sorted(
            (path for _, path in complete_checkpoints(output_dir) if path != final),
            key=lambda p: (p / STATE_FILE).stat().st_mtime,
        )
        for old in others[: max(0, len(others) - (keep - 1))]:
            delete(old)
    return final


def delete(folder: Path) -> None:
    """Remove a checkpoint folder: renamed to `<name>.deleting.partial` first, so a kill half-way leaves
    a `.partial` folder (cleaned up at the next start), never a half-deleted `checkpoint-N/`."""
    doomed = _rename_away(folder)
    try:
        shutil.rmtree(doomed)
    except OSError as err:  # renamed already: it no longer counts, and the next start removes it
        log.warning("could not remove %s (%s); the next run removes it", doomed.name, err)


def _rename_away(folder: Path) -> Path:
    doomed = folder.with_name(folder.name + DELETING)
    if doomed.exists():  # left by a run killed while deleting
        shutil.rmtree(doomed)
    os.replace(folder, doomed)
    return doomed


def clean_partials(output_dir: Path) -> None:
    """Remove what a killed run left half-written or half-deleted."""
    if not output_dir.is_dir():
        return
    for path in output_dir.iterdir():
        if path.name.endswith(".partial"):
            log.info("removing unfinished %s from an interrupted run", path.name)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


def remove_checkpoints(output_dir: Path) -> None:
    for _, path in complete_checkpoints(output_dir):
        delete(path)


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
