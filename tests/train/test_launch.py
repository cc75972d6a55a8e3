"""`restyle train` as a real process: SIGKILL and resume, and two processes under accelerate (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from restyle.train.tracking import read_log

ACCELERATE = Path(sys.executable).with_name("accelerate")


def _args(mode: str, base: Path, instance_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        mode,
        "--base",
        str(base),
        "--instance-dir",
        str(instance_dir),
        "--instance-prompt",
        "a model in sks striped skirt",
        "--output-dir",
        str(out),
        "--resolution",
        "64",
        "--max-train-steps",
        str(steps),
        "--learning-rate",
        "1e-3",
        "--validation-steps",
        "0",
        "--validation-inference-steps",
        "2",
        "--masks",
        "file=1,random=1",
        "--mixed-precision",
        "no",
        "--quiet",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _kill_when(proc: subprocess.Popen, ready: Path, timeout: float = 120) -> None:
    """SIGKILL the whole process group as soon as `ready` exists: no clean-up code gets to run."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training ended before {ready.name} appeared:\n{out}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{ready.name} did not appear in {timeout} s")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _unet(out: Path) -> dict:
    return load_file(out / "unet" / "diffusion_pytorch_model.safetensors")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_models, instance_dir, tmp_path):
    base = tiny_models["inpainter"]
    extra = ("--checkpointing-steps", "3", "--train-text-encoder")
    cmd = [
        sys.executable,
        "-m",
        "restyle",
        *_args("dreambooth", base, instance_dir, tmp_path / "killed", 9, *extra),
    ]
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    _kill_when(proc, tmp_path / "killed" / "checkpoint-3")
    assert not (tmp_path / "killed" / "model_index.json").exists()
    resumed = _run([*cmd, "--resume-from-checkpoint", "latest"])
    assert "resumed from checkpoint-" in resumed.stderr
    summary = json.loads((tmp_path / "killed" / "restyle_train.json").read_text())
    assert summary["steps"] == 9
    assert not list((tmp_path / "killed").glob("checkpoint-*"))
    # the same job without interruption (same process settings: float sums depend on thread count)
    _run(
        [
            sys.executable,
            "-m",
            "restyle",
            *_args("dreambooth", base, instance_dir, tmp_path / "whole", 9, *extra),
        ]
    )
    a, b = _unet(tmp_path / "killed"), _unet(tmp_path / "whole")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    logged = sorted({row["step"] for row in read_log(tmp_path / "killed" / "logs") if "loss" in row})
    assert logged == list(range(1, 10))


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed next to python")
def test_two_processes_under_accelerate_with_kill_and_resume(tiny_models, instance_dir, tmp_path):
    from restyle.inpaint import Inpainter

    base = tiny_models["inpainter"]
    # `accelerate launch --cpu` starts one process unless MPI is set up; torchrun's launcher with no GPU
    # gives two CPU processes, and restyle switches accelerate to gloo for them.
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += [
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "restyle",
    ]
    extra = ("--checkpointing-steps", "2", "--train-text-encoder", "--class-dir", str(tmp_path / "class"))
    extra += ("--class-prompt", "a model in a skirt", "--num-class-images", "3", "--class-steps", "2")
    whole = _run([*launch, *_args("lora", base, instance_dir, tmp_path / "whole", 6, *extra)])
    assert "on 2 process(es)" in whole.stderr
    proc = subprocess.Popen(
        [*launch, *_args("lora", base, instance_dir, tmp_path / "killed", 6, *extra)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _kill_when(proc, tmp_path / "killed" / "checkpoint-2")
    time.sleep(1)  # let the killed group release its port
    _run(
        [
            *launch,
            *_args(
                "lora",
                base,
                instance_dir,
                tmp_path / "killed",
                6,
                *extra,
                "--resume-from-checkpoint",
                "latest",
            ),
        ]
    )
    for out in ("whole", "killed"):
        summary = json.loads((tmp_path / out / "restyle_train.json").read_text())
        assert summary["steps"] == 6 and summary["stats"]["num_processes"] == 2
    a = load_file(tmp_path / "whole" / "pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "killed" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    # the two processes generated the class images between them: all of them, each once
    assert sorted(p.name for p in (tmp_path / "class").glob("generated-*.png")) == [
        f"generated-{i:05d}.png" for i in range(3)
    ]
    inpainter = Inpainter.from_pretrained(str(base), device="cpu")
    inpainter.load_style("two", str(tmp_path / "whole" / "pytorch_lora_weights.safetensors"))
