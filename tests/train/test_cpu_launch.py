"""Which `accelerate launch` lines train on a machine without a GPU (docs/TRAINING.md, section 5).

`--cpu --num_processes N` goes to accelerate's simple launcher, which starts one process unless mpirun
runs it: restyle refuses that before any work instead of training alone. `--multi_gpu` (torchrun's
launcher) gives N processes that restyle runs on CPU with gloo (test_launch.py); `--cpu` alone, one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ACCELERATE = Path(sys.executable).with_name("accelerate")
pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")


def _env(tmp_path: Path) -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "ACCELERATE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # no accelerate config file of the user's: the launch lines alone decide
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"))
    return env


def _launch(tmp_path, base, instance_dir, out, *launch: str) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", *launch, "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "restyle", "train", "lora", "--base", str(base), "--instance-dir", str(instance_dir)]
    cmd += ["--instance-prompt", "a model in sks skirt", "-o", str(out), "--resolution", "64"]
    cmd += ["--max-train-steps", "1", "--validation-inference-steps", "1", "--validation-seeds", "0", "-q"]
    return subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="without a GPU only: a GPU changes accelerate's choices"
)
@pytest.mark.parametrize("launch", [["--cpu", "--num_processes", "2"], ["--num_processes", "2"]])
def test_a_launch_that_would_start_one_process_of_several_is_refused(
    tiny_models, instance_dir, tmp_path, launch
):
    done = _launch(tmp_path, tiny_models["inpainter"], instance_dir, tmp_path / "out", *launch)
    # restyle exits 2 with one line; accelerate's launcher then exits 1 with its own CalledProcessError
    assert done.returncode == 1 and "returned non-zero exit status 2" in done.stderr, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "accelerate launch started 1 process where several were asked for" in error[0]
    assert "--multi_gpu --num_processes N" in error[0]
    assert "restyle/train" not in done.stderr  # no traceback of restyle's
    assert not (tmp_path / "out").exists()  # refused before any work


def test_cpu_alone_trains_in_one_process(tiny_models, instance_dir, tmp_path):
    done = _launch(tmp_path, tiny_models["inpainter"], instance_dir, tmp_path / "out", "--cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 1 process(es), device cpu" in done.stderr
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
