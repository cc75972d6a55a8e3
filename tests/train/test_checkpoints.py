"""Checkpoints are complete or absent, resumes are refused when a step would mean something else, outputs
appear all at once; and the JSONL loss log (tracking.py) appends across resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from restyle.errors import InvalidParameterError
from restyle.train import checkpoints as ckpt
from restyle.train.checkpoints import (
    RESUME_KEYS,
    STATE_FILE,
    check_compatible,
    clean_partials,
    complete_checkpoints,
    finish_checkpoint,
    partial_dir,
    publish,
    read_state,
    remove_checkpoints,
    resolve_resume,
)
from restyle.train.tracking import LOG_FILE, JsonlTracker, read_log


def checkpoint(out: Path, name: str, state: bool = True) -> Path:
    path = out / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_text("weights")
    if state:
        (path / STATE_FILE).write_text(json.dumps({"step": 0}))
    return path


def partial(out: Path, step: int, content: str = "weights") -> Path:
    path = partial_dir(out, step)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_text(content)
    return path


def names(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


# -- finding and resuming ------------------------------------------------------------------------------


def test_complete_checkpoints_only_sealed_folders_in_step_order(tmp_path: Path) -> None:
    assert complete_checkpoints(tmp_path / "missing") == []
    for step in (100, 9, 20):
        checkpoint(tmp_path, f"checkpoint-{step}")
    checkpoint(tmp_path, "checkpoint-500", state=False)  # killed before its state file
    checkpoint(tmp_path, "checkpoint-600.partial")  # sealed but not yet renamed
    checkpoint(tmp_path, "checkpoint-x")
    checkpoint(tmp_path, "checkpoint-7-old")
    checkpoint(tmp_path, "logs")
    (tmp_path / "checkpoint-3").write_text("a file")
    assert complete_checkpoints(tmp_path) == [
        (9, tmp_path / "checkpoint-9"),
        (20, tmp_path / "checkpoint-20"),
        (100, tmp_path / "checkpoint-100"),
    ]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative names must not resolve against whatever the test runner's cwd holds."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_resolve_resume(tmp_path: Path, elsewhere: Path) -> None:
    out = tmp_path / "out"
    assert resolve_resume(out, None) is None
    assert resolve_resume(out, "") is None
    assert resolve_resume(out, "latest") is None  # nothing yet: a fresh start
    for step in (90, 100):
        checkpoint(out, f"checkpoint-{step}")
    checkpoint(out, "checkpoint-200", state=False)
    assert resolve_resume(out, "latest") == out / "checkpoint-100"
    assert resolve_resume(out, "checkpoint-90") == out / "checkpoint-90"
    assert resolve_resume(tmp_path / "other", str(out / "checkpoint-90")) == out / "checkpoint-90"


@pytest.mark.parametrize("resume", ["checkpoint-200", "checkpoint-404", "checkpoint-90.partial"])
def test_resolve_resume_refuses_what_is_not_a_finished_checkpoint(
    tmp_path: Path, elsewhere: Path, resume: str
) -> None:
    out = tmp_path / "out"
    checkpoint(out, "checkpoint-200", state=False)
    partial(out, 90)
    with pytest.raises(InvalidParameterError) as err:
        resolve_resume(out, resume)
    assert err.value.field == "resume_from_checkpoint"
    assert str(out / resume) in str(err.value)


def test_resolve_resume_bad_absolute_path(tmp_path: Path, elsewhere: Path) -> None:
    with pytest.raises(InvalidParameterError, match="nowhere") as err:
        resolve_resume(tmp_path / "out", str(tmp_path / "nowhere"))
    assert err.value.field == "resume_from_checkpoint"


RUN = {
    "mode": "lora",
    "train_text_encoder": False,
    "lora_rank": 4,
    "lora_targets": ["to_q", "to_v"],
    "text_lora_targets": ["q_proj"],
    "resolution": 512,
    "train_batch_size": 1,
    "gradient_accumulation_steps": 2,
    "seed": 0,
    "with_prior": True,
    "num_processes": 2,
}


def test_check_compatible_accepts_the_same_run_and_other_changes(tmp_path: Path) -> None:
    state = {"step": 10, "run": dict(RUN)}
    check_compatible(state, dict(RUN), tmp_path / "checkpoint-10")
    check_compatible(state, {**RUN, "learning_rate": 1.0, "validation_steps": 5}, tmp_path / "checkpoint-10")
    check_compatible({"step": 10, "run": {"seed": 0}}, dict(RUN), tmp_path / "checkpoint-10")
    check_compatible({"step": 10}, dict(RUN), tmp_path / "checkpoint-10")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mode", "dreambooth"),
        ("lora_rank", 8),
        ("lora_targets", ["to_q"]),
        ("resolution", 768),
        ("seed", 1),
        ("with_prior", False),
        ("num_processes", 1),
        ("gradient_accumulation_steps", 1),
    ],
)
def test_check_compatible_refuses_a_changed_key(tmp_path: Path, key: str, value: object) -> None:
    assert key in RESUME_KEYS
    with pytest.raises(InvalidParameterError) as err:
        check_compatible({"step": 10, "run": dict(RUN)}, {**RUN, key: value}, tmp_path / "checkpoint-10")
    msg = str(err.value)
    assert err.value.field == "resume_from_checkpoint"
    assert "checkpoint-10" in msg and f"{key}={RUN[key]!r}" in msg and repr(value) in msg


def test_check_compatible_refuses_a_key_missing_from_the_run(tmp_path: Path) -> None:
    run = {k: v for k, v in RUN.items() if k != "seed"}
    with pytest.raises(InvalidParameterError, match="seed"):
        check_compatible({"run": dict(RUN)}, run, tmp_path / "checkpoint-1")


# -- sealing, pruning, cleaning ------------------------------------------------------------------------


def test_finish_checkpoint_seals_and_renames(tmp_path: Path) -> None:
    partial(tmp_path, 30)
    state = {"step": 30, "run": dict(RUN), "time": 1.5}
    final = finish_checkpoint(tmp_path, 30, state, keep=None)
    assert final == tmp_path / "checkpoint-30"
    assert names(tmp_path) == ["checkpoint-30"]
    assert (final / "model.safetensors").read_text() == "weights"
    assert read_state(final) == {**state, "files": {"model.safetensors": 7}}  # with its file sizes
    assert resolve_resume(tmp_path, "latest") == final


def test_finish_checkpoint_prunes_the_oldest_by_step(tmp_path: Path) -> None:
    for step in (50, 100, 200):  # "200" < "50" as text: pruning must compare numbers
        checkpoint(tmp_path, f"checkpoint-{step}")
    checkpoint(tmp_path, "checkpoint-10", state=False)  # not a finished checkpoint: not counted
    partial(tmp_path, 300)
    finish_checkpoint(tmp_path, 300, {"step": 300}, keep=2)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [200, 300]
    assert (tmp_path / "checkpoint-10").is_dir()


def test_finish_checkpoint_keep_none_keeps_all(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        partial(tmp_path, step)
        finish_checkpoint(tmp_path, step, {"step": step}, keep=None)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [1, 2, 3]


def test_finish_checkpoint_same_step_again_replaces_it(tmp_path: Path) -> None:
    old = checkpoint(tmp_path, "checkpoint-40")
    (old / "stale.bin").write_text("old")
    partial(tmp_path, 40, content="new")
    final = finish_checkpoint(tmp_path, 40, {"step": 40}, keep=2)
    assert (final / "model.safetensors").read_text() == "new"
    assert not (final / "stale.bin").exists()
    assert names(tmp_path) == ["checkpoint-40"]


def test_finish_checkpoint_never_prunes_the_one_just_sealed(tmp_path: Path) -> None:
    checkpoint(tmp_path, "checkpoint-200")
    checkpoint(tmp_path, "checkpoint-400")
    partial(tmp_path, 300)
    final = finish_checkpoint(tmp_path, 300, {"step": 300}, keep=1)
    assert (final / STATE_FILE).is_file()


def test_clean_partials(tmp_path: Path) -> None:
    clean_partials(tmp_path / "missing")
    checkpoint(tmp_path, "checkpoint-10")
    partial(tmp_path, 20)
    (tmp_path / "model.safetensors.partial").write_text("half")
    (tmp_path / "train_log.jsonl").write_text("{}\n")
    clean_partials(tmp_path)
    assert names(tmp_path) == ["checkpoint-10", "train_log.jsonl"]


def test_remove_checkpoints_only_removes_finished_ones(tmp_path: Path) -> None:
    checkpoint(tmp_path, "checkpoint-10")
    checkpoint(tmp_path, "checkpoint-20")
    checkpoint(tmp_path, "logs")
    remove_checkpoints(tmp_path)
    assert names(tmp_path) == ["logs"]


# -- publish -------------------------------------------------------------------------------------------


def staged_model(root: Path) -> Path:
    staged = root / ".staged"
    (staged / "unet").mkdir(parents=True)
    (staged / "unet" / "weights.bin").write_text("new unet")
    (staged / "model_index.json").write_text("new index")
    (staged / "scheduler.json").write_text("new scheduler")
    return staged


def test_publish_moves_everything_and_the_loader_file_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_index.json").write_text("old index")
    staged = staged_model(tmp_path)
    moves: list[tuple[str, bool]] = []
    real_replace = os.replace

    def spy(src, dst) -> None:
        moves.append((Path(src).name, (out / "model_index.json").exists()))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy)
    publish(staged, out, "model_index.json")
    assert moves[-1][0] == "model_index.json"
    assert sorted(m for m, _ in moves) == ["model_index.json", "scheduler.json", "unet"]
    # the stale loader file is gone before anything moves: no half-old, half-new model is loadable
    assert not any(index_present for _, index_present in moves)
    assert not staged.exists()
    assert (out / "model_index.json").read_text() == "new index"
    assert (out / "unet" / "weights.bin").read_text() == "new unet"


def test_publish_replaces_stale_files_and_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "unet").mkdir(parents=True)
    (out / "unet" / "old-only.bin").write_text("old")
    (out / "scheduler.json").write_text("old scheduler")
    (out / "README.md").write_text("kept")
    publish(staged_model(tmp_path), out, "model_index.json")
    assert names(out) == ["README.md", "model_index.json", "scheduler.json", "unet"]
    assert sorted(p.name for p in (out / "unet").iterdir()) == ["weights.bin"]
    assert (out / "scheduler.json").read_text() == "new scheduler"
    assert (out / "README.md").read_text() == "kept"


# -- tracking ------------------------------------------------------------------------------------------


def test_jsonl_tracker_appends_rows_across_runs(tmp_path: Path) -> None:
    logs = tmp_path / "out" / "logs"
    assert read_log(logs) == []
    first = JsonlTracker(logs)
    first.start()
    assert logs.is_dir() and first.tracker == logs / LOG_FILE
    first.store_init_configuration({"seed": 0, "instance_dir": tmp_path})
    first.log({"loss": 0.5, "lr": 1e-4}, step=1)
    resumed = JsonlTracker(logs)  # a resumed run appends to the same file
    resumed.log({"loss": 0.25}, step=2)
    resumed.log({"note": "no step"})
    rows = read_log(logs)
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows] == [
        {"event": "start", "config": {"seed": 0, "instance_dir": str(tmp_path)}},
        {"step": 1, "loss": 0.5, "lr": 1e-4},
        {"step": 2, "loss": 0.25},
        {"step": None, "note": "no step"},
    ]
    assert all(isinstance(r["time"], float) for r in rows)


def test_read_log_skips_blank_lines(tmp_path: Path) -> None:
    (tmp_path / LOG_FILE).write_text('{"step": 1}\n\n  \n{"step": 2}\n')
    assert read_log(tmp_path) == [{"step": 1}, {"step": 2}]
