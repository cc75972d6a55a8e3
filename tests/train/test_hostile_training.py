"""Training against what goes wrong in practice: odd bases, flags that would do nothing, two runs on one
folder, bad photos and metadata, damaged checkpoints, and a kill in the middle of deleting one."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from restyle.cli import app
from restyle.errors import InvalidImageError, InvalidParameterError
from restyle.train import TrainConfig
from restyle.train import checkpoints as ckpt
from restyle.train.lock import LOCK_FILE, OutputInUseError

from .conftest import train


def _fresh() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


# -- the base model ------------------------------------------------------------------------------------


def test_a_base_that_predicts_neither_noise_nor_velocity_is_refused_by_name(
    train_config, tiny_models, tmp_path
):
    base = tmp_path / "sample-base"
    shutil.copytree(tiny_models["inpainter"], base)
    config_file = base / "scheduler" / "scheduler_config.json"
    sched = json.loads(config_file.read_text())
    sched["prediction_type"] = "sample"
    config_file.write_text(json.dumps(sched))
    with pytest.raises(InvalidParameterError) as err:
        train(train_config(base=str(base), max_train_steps=1))
    assert err.value.field == "base"
    assert "'sample'" in str(err.value) and "epsilon or v_prediction" in str(err.value)


# -- settings that would silently do nothing -----------------------------------------------------------


PROMPT = "a model in sks skirt"


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"class_prompt": "a skirt"}, "class_prompt"),
        ({"num_class_images": 50}, "num_class_images"),
        ({"prior_loss_weight": 0.5}, "prior_loss_weight"),
        ({"class_steps": 10}, "class_steps"),
        ({"sample_batch_size": 4}, "sample_batch_size"),
        ({"class_dir": Path("c"), "class_prompt": "a skirt", "prior_loss_weight": 0.0}, "prior_loss_weight"),
        ({"garment": "the skirt"}, "garment"),
        ({"masks": (("file", 1.0),), "garment": "the skirt"}, "garment"),
        ({"lr_warmup_steps": 100}, "lr_warmup_steps"),
        ({"lora_rank": 8}, "lora_rank"),
        ({"lora_alpha": 8.0}, "lora_alpha"),
        ({"lora_targets": ("to_q",)}, "lora_targets"),
        ({"mode": "lora", "text_lora_targets": ("q_proj",)}, "text_lora_targets"),
        ({"checkpointing_steps": 0, "checkpoints_total_limit": 5}, "checkpoints_total_limit"),
        ({"checkpointing_steps": 0, "keep_checkpoints": True}, "keep_checkpoints"),
    ],
)
def test_a_setting_that_would_do_nothing_is_refused(kw: dict, field: str) -> None:
    with pytest.raises(InvalidParameterError) as err:
        TrainConfig(instance_prompt=PROMPT, **kw).check()
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kw",
    [
        {"lr_warmup_steps": 0},  # the reference run's own `--lr_scheduler=constant --lr_warmup_steps=0`
        {"lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 100},
        {"class_dir": Path("c"), "class_prompt": "a skirt", "num_class_images": 50, "prior_loss_weight": 0.5},
        {"masks": (("segment", 1.0),), "garment": "the skirt"},
        {"mode": "lora", "lora_rank": 8, "train_text_encoder": True, "text_lora_targets": ("q_proj",)},
    ],
)
def test_the_same_settings_pass_where_they_take_effect(kw: dict) -> None:
    TrainConfig(instance_prompt=PROMPT, **kw).check()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-class-images", "200"], "--num-class-images: only used for prior preservation"),
        (["--prior_loss_weight=1.0"], "--prior-loss-weight: only used for prior preservation"),
        (["--class-prompt", "a skirt"], "--class-prompt: only used for prior preservation"),
        (["--garment", "the skirt", "--masks", "random"], "--garment: only used by 'segment' masks"),
        (["--segmenter", "CIDAS/clipseg-rd64-refined"], "--segmenter: only used by 'segment' masks"),
        (["--lr-warmup-steps", "10"], "--lr-warmup-steps: the constant schedule has no warm-up"),
        (["--lora-rank", "4"], "--lora-rank: only used by `restyle train lora`"),
    ],
)
def test_cli_flags_given_without_effect_are_refused_even_at_their_default(extra, message, tiny_models):
    args = [
        "train",
        "dreambooth",
        "--base",
        str(tiny_models["inpainter"]),
        "--instance-prompt",
        PROMPT,
        *extra,
    ]
    with pytest.raises(InvalidParameterError, match=message):
        CliRunner().invoke(app, args, catch_exceptions=False)


# -- resuming: every setting that changes what a step means ---------------------------------------------


def test_resume_refuses_each_setting_that_changes_what_a_step_means(train_config, tmp_path):
    first = train_config(
        max_train_steps=1,
        checkpointing_steps=1,
        keep_checkpoints=True,
        class_dir=tmp_path / "class",
        class_prompt="a model in a skirt",
        num_class_images=1,
    )
    train(first)
    for change in (
        {"prior_loss_weight": 0.5},
        {"masks": (("random", 1.0),)},
        {"fit": "pad"},
        {"max_grad_norm": 0.5},
        {"adam_beta2": 0.99},
    ):
        _fresh()
        key = next(iter(change))
        other = dataclasses.replace(first, max_train_steps=2, resume_from_checkpoint="latest", **change)
        with pytest.raises(InvalidParameterError) as err:
            train(other)
        assert err.value.field == "resume_from_checkpoint" and f"{key}=" in str(err.value), key
    _fresh()
    result = train(dataclasses.replace(first, max_train_steps=2, resume_from_checkpoint="latest"))
    assert result.resumed_from == 1  # the same settings still resume (tuples compare to the JSON lists)


# -- one run per output folder -------------------------------------------------------------------------


def _holder(out: Path) -> subprocess.Popen:
    """Another process that holds `out`'s training lock until it is killed."""
    script = f"""
        import sys, time
        from pathlib import Path
        from restyle.train.lock import acquire
        lock = acquire(Path({str(out)!r}))
        print("held", flush=True)
        time.sleep(600)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_held_output_folder_is_refused_naming_the_holder(train_config, tmp_path):
    config = train_config(max_train_steps=1)
    out = config.output_dir
    holder = _holder(out)
    try:
        work = ckpt.partial_dir(out, 3)  # the other run's checkpoint in the making
        work.mkdir()
        with pytest.raises(OutputInUseError) as err:
            train(config)
        message = str(err.value)
        assert err.value.field == "output_dir" and "\n" not in message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert work.is_dir()  # nothing of the other run was touched
    finally:
        holder.kill()
        holder.wait()
    _fresh()
    train(config)  # the holder died: its lock is taken over
    assert not (out / LOCK_FILE).exists()  # and released at the end


def test_a_lock_left_by_a_killed_run_is_taken_over_and_said(train_config, tmp_path, caplog):
    config = train_config(max_train_steps=1)
    out = config.output_dir
    holder = _holder(out)
    holder.kill()  # like kill -9: no clean-up code runs, the lock file stays
    holder.wait()
    assert (out / LOCK_FILE).is_file()
    with caplog.at_level("WARNING", logger="restyle"):
        train(config)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "took over the lock" in said and f"pid {holder.pid}" in said


def test_a_failed_run_releases_its_lock(train_config, tmp_path, monkeypatch):
    from restyle.train.trainer import Trainer

    def boom(self, data, first):
        raise RuntimeError("crash in the loop")

    monkeypatch.setattr(Trainer, "_loop", boom)
    config = train_config(max_train_steps=1)
    with pytest.raises(RuntimeError):
        train(config)
    assert not (config.output_dir / LOCK_FILE).exists()


def test_the_lock_refuses_a_live_holder_even_where_flock_is_not_enforced(tmp_path):
    from restyle.train.lock import acquire

    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:  # a lock file naming a live process here, but no flock held (a filesystem that ignores flock)
        (out / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(OutputInUseError, match=f"pid {sleeper.pid} on host .*still running"):
            acquire(out)
    finally:
        sleeper.kill()
        sleeper.wait()
    acquire(out).release()


# -- photos and metadata -------------------------------------------------------------------------------


def test_a_too_large_photo_anywhere_in_the_folder_is_named_before_any_model_loads(
    train_config, instance_dir, tmp_path
):
    Image.new("RGB", (9000, 6000), (200, 180, 170)).save(instance_dir / "zbig.png")  # 54 MP, sorted last
    config = train_config(base=str(tmp_path / "no-such-model"))  # loading it would fail otherwise
    with pytest.raises(InvalidImageError) as err:
        train(config)
    message = str(err.value)
    assert err.value.field == "instance_dir"
    assert "zbig.png: image is 9000x6000 = 54,000,000 pixels; the limit is 40,000,000" in message
    assert "--zbig" not in message and not config.output_dir.exists()


def test_cli_names_a_photo_by_its_file_never_as_a_flag(tiny_models, instance_dir):
    Image.new("RGB", (9000, 6000)).save(instance_dir / "zbig.png")
    args = ["train", "lora", "--base", str(tiny_models["inpainter"]), "--instance-dir", str(instance_dir)]
    args += ["--instance-prompt", PROMPT, "--resolution", "64"]
    with pytest.raises(InvalidImageError) as err:
        CliRunner().invoke(app, args, catch_exceptions=False)
    assert str(err.value).startswith("--instance-dir: 1 of 7 images cannot be used")
    assert "zbig.png: image is 9000x6000" in str(err.value) and "--zbig" not in str(err.value)


def test_metadata_that_is_not_utf8_is_one_line_naming_file_and_line(instance_dir):
    from restyle.train.data import scan_instances

    rows = [json.dumps({"file_name": "look-0.png", "text": "a skirt"}).encode()]
    rows.append('{"file_name": "look-1.png", "text": "une jupe bleu fonc\u00e9"}'.encode("latin-1"))
    (instance_dir / "metadata.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(InvalidParameterError) as err:
        scan_instances(instance_dir, PROMPT, min_side=32, min_images=1)
    message = str(err.value)
    assert err.value.field == "metadata" and "\n" not in message
    assert f"{instance_dir / 'metadata.jsonl'} line 2: not UTF-8 (byte 0xe9 at column" in message
    assert "save the file as UTF-8" in message


def test_metadata_with_a_byte_order_mark_reads(instance_dir):
    from restyle.train.data import scan_instances

    row = json.dumps({"file_name": "look-0.png", "text": "a model in sks skirt on a beach"})
    (instance_dir / "metadata.jsonl").write_text(row + "\n", encoding="utf-8-sig")
    examples = scan_instances(instance_dir, PROMPT, min_side=32, min_images=1)
    assert examples[0].caption == "a model in sks skirt on a beach"


# -- damaged checkpoints -------------------------------------------------------------------------------


def test_resume_from_a_damaged_checkpoint_is_refused_by_name_offering_the_previous_one(train_config):
    first = train_config(mode="dreambooth", max_train_steps=2, checkpointing_steps=1, keep_checkpoints=True)
    train(first)
    out = first.output_dir
    resume = dataclasses.replace(first, max_train_steps=3, resume_from_checkpoint="latest")
    state = out / "checkpoint-2" / ckpt.STATE_FILE
    saved = state.read_text()
    state.write_text("")  # emptied (disk full, a crash while sealing, a careless edit)
    _fresh()
    with pytest.raises(InvalidParameterError) as err:
        train(resume)
    message = str(err.value)
    assert err.value.field == "resume_from_checkpoint" and "\n" not in message
    assert "checkpoint-2 is damaged (restyle_state.json cannot be read" in message
    assert "--resume-from-checkpoint checkpoint-1" in message
    state.write_text(saved)
    (out / "checkpoint-2" / "model.safetensors").unlink()  # the state is there, the weights are not
    _fresh()
    with pytest.raises(
        InvalidParameterError, match=r"checkpoint-2 is damaged \(model.safetensors is missing\)"
    ):
        train(resume)
    _fresh()
    result = train(dataclasses.replace(resume, resume_from_checkpoint="checkpoint-1"))  # the offer works
    assert result.resumed_from == 1 and result.steps == 3


def test_a_damaged_only_checkpoint_says_to_start_again(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoint-5" / ckpt.STATE_FILE).write_text(
        '{"step": 5, "run": {}, "files": {"optimizer.bin": 9}}'
    )
    with pytest.raises(InvalidParameterError, match="no earlier checkpoint is whole: delete checkpoint-5"):
        ckpt.read_state(out / "checkpoint-5")


def test_a_checkpoint_truncated_after_sealing_is_refused(tmp_path):
    out = tmp_path / "out"
    partial = ckpt.partial_dir(out, 4)
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"x" * 100)
    (partial / "optimizer.bin").write_bytes(b"y" * 10)
    final = ckpt.finish_checkpoint(out, 4, {"step": 4}, keep=None)
    assert ckpt.read_state(final)["step"] == 4
    (final / "model.safetensors").write_bytes(b"x" * 50)
    with pytest.raises(InvalidParameterError, match="model.safetensors is 50 bytes, 100 when it was saved"):
        ckpt.read_state(final)


def test_a_checkpoint_from_before_file_lists_still_resumes_when_whole(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / ckpt.STATE_FILE).write_text('{"step": 3}')
    (folder / "model.safetensors").write_bytes(b"w")
    with pytest.raises(InvalidParameterError, match="its optimizer file is missing"):
        ckpt.read_state(folder)
    (folder / "optimizer.bin").write_bytes(b"o")
    assert ckpt.read_state(folder) == {"step": 3}


# -- kill -9 while pruning -----------------------------------------------------------------------------


def test_kill_9_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path):
    """A real SIGKILL half-way through deleting the oldest checkpoint, then the next start."""
    out = tmp_path / "out"
    for step in (1, 2):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", ckpt.STATE_FILE):
            (folder / name).write_text(json.dumps({"step": step}) if name == ckpt.STATE_FILE else "w")
    (out / "checkpoint-3.partial").mkdir()
    (out / "checkpoint-3.partial" / "model.safetensors").write_text("w")
    script = f"""
        import os, shutil, signal
        from pathlib import Path
        from restyle.train import checkpoints as ckpt

        def killed_half_way(path, *args, **kwargs):
            files = sorted(Path(path).iterdir())
            for f in files[: len(files) // 2]:
                f.unlink()
            os.kill(os.getpid(), signal.SIGKILL)

        shutil.rmtree = killed_half_way
        ckpt.finish_checkpoint(Path({str(out)!r}), 3, {{"step": 3}}, keep=2)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert not (out / "checkpoint-1").exists()  # renamed before the deletion began
    assert [s for s, _ in ckpt.complete_checkpoints(out)] == [2, 3]
    ckpt.clean_partials(out)  # what the next start (or the end of a finished run) does
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "checkpoint-3"]
