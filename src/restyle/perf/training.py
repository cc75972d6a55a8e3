"""The fine-tuning benchmark: figures for docs/PERFORMANCE.md, with the device and library versions.

`restyle bench train` times the reference fine-tuning configuration (batch 1, gradient checkpointing,
8-bit Adam where bitsandbytes is installed, with and without the text encoder) for both modes. Each
configuration runs in a fresh process so its peak memory is its own.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from restyle.perf.measure import device_label
from restyle.train.tracking import read_log


@dataclass
class TrainFigure:
    mode: str
    text_encoder: bool
    eight_bit: bool
    steps: int
    s_per_step: float  # median over steps after the first (warm-up) one
    peak_mb: float  # CUDA peak allocated on a GPU, else peak RSS of the process
    memory_kind: str


def make_instance_set(folder: Path, count: int = 12, size: tuple[int, int] = (384, 576)) -> Path:
    """`count` synthetic photos (the sample figure, recoloured) with skirt-region masks."""
    from PIL import Image, ImageOps

    from restyle.samples import sample_photo

    (folder / "masks").mkdir(parents=True, exist_ok=True)
    photo = sample_photo(*size)
    for i in range(count):
        hue = ImageOps.colorize(ImageOps.grayscale(photo), (20 * i % 255, 40, 80), (250, 240, 220 - 5 * i))
        Image.blend(photo, hue, 0.3).save(folder / f"look-{i:02d}.png")
        mask = Image.new("L", size, 0)
        mask.paste(255, (int(0.26 * size[0]), int(0.4 * size[1]), int(0.74 * size[0]), int(0.68 * size[1])))
        mask.save(folder / "masks" / f"look-{i:02d}.png")
    return folder


def _eight_bit_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _precision() -> str:
    """fp16 on a GPU, as the reference run; full precision on CPU (fp16 is refused there)."""
    import torch

    return "fp16" if torch.cuda.is_available() else "no"


def run_train_config(
    base: str, work: Path, mode: str, text_encoder: bool, resolution: int, steps: int, eight_bit: bool
) -> TrainFigure:
    """One configuration in a fresh `python -m restyle train` process; returns its figures."""
    out = work / f"{mode}-{'te' if text_encoder else 'unet'}"
    args = [
        sys.executable,
        "-m",
        "restyle",
        "train",
        mode,
        "--base",
        base,
        "--instance-dir",
        str(work / "instance"),
    ]
    args += ["--instance-prompt", "a model in sks long summer travel skirt", "-o", str(out), "-q"]
    args += ["--resolution", str(resolution), "--train-batch-size", "1", "--gradient-checkpointing"]
    args += ["--max-train-steps", str(steps), "--checkpointing-steps", "0", "--validation-steps", "0"]
    args += ["--validation-inference-steps", "1", "--masks", "file"]
    args += ["--mixed-precision", _precision()]  # pinned: the user's accelerate config must not decide
    args += ["--train-text-encoder"] if text_encoder else []
    args += ["--use-8bit-adam"] if eight_bit else []
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark run {out.name} failed:\n{done.stderr[-2000:]}")
    times = [row["step_s"] for row in read_log(out / "logs") if "step_s" in row]
    stats = json.loads((out / "restyle_train.json").read_text())["stats"]
    cuda = "peak_cuda_mb" in stats
    return TrainFigure(
        mode=mode,
        text_encoder=text_encoder,
        eight_bit=eight_bit,
        steps=steps,
        s_per_step=statistics.median(times[1:] or times),
        peak_mb=stats["peak_cuda_mb"] if cuda else stats["peak_rss_mb"],
        memory_kind="CUDA peak allocated" if cuda else "process peak RSS",
    )


def bench_train(base: str, resolution: int, steps: int) -> tuple[list[TrainFigure], dict[str, str]]:
    """Both modes, with and without the text encoder, on a synthetic dozen-photo set."""
    eight_bit = _eight_bit_available()
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_instance_set(work / "instance")
        for mode in ("dreambooth", "lora"):
            for te in (False, True):
                figures.append(run_train_config(base, work, mode, te, resolution, steps, eight_bit))
    return figures, environment(base, resolution)


def environment(base: str, resolution: int) -> dict[str, str]:
    import accelerate
    import diffusers
    import torch
    import transformers

    return {
        "device": device_label(),
        "base": base,
        "resolution": str(resolution),
        "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}, accelerate {accelerate.__version__}, "
        f"python {platform.python_version()}" + _bnb_version(),
    }


def _bnb_version() -> str:
    try:
        import bitsandbytes
    except ImportError:
        return ""
    return f", bitsandbytes {bitsandbytes.__version__}"


def train_table(figures: list[TrainFigure], env: dict[str, str]) -> str:
    rows = [
        f"Device: {env['device']}. Base: `{env['base']}` at {env['resolution']} px, batch 1, gradient "
        f"checkpointing, mixed precision {_precision()}, {figures[0].steps} steps. {env['versions']}.",
        "",
        "| mode | text encoder | optimizer | s / step (median) | peak memory |",
        "|---|---|---|---|---|",
    ]
    for f in figures:
        encoder = "trained" if f.text_encoder else "frozen"
        optimizer = "AdamW 8-bit" if f.eight_bit else "AdamW"
        rows.append(
            f"| {f.mode} | {encoder} | {optimizer} | {f.s_per_step:.3f} "
            f"| {f.peak_mb:,.0f} MB ({f.memory_kind}) |"
        )
    return "\n".join(rows)
